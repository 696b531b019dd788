"""The figures of the bad-input tests: how many trials ran and what became of
the events they sent. Each test prints one line (seen with ``pytest -s``) and
adds its figures to ``test-artifacts/bad_input.json``.

- trials: hypothesis examples, schemathesis cases, or hand-made cases;
- sent: events in the requests;
- accepted, duplicates, rejected: what the replies said of them (a request
  refused whole, such as a 403 or a corrupt message, counts its events as
  refused instead);
- counted: events the service holds for the test's organizations (rows of
  the events table, or the metrics read back);
- dead_lettered: rows of the dead-letter table for those organizations;
- lost: accepted events not counted, and rejected events not dead-lettered;
- duplicated: events counted beyond those accepted.

Tests of a pure function (validation, the formulas) store nothing: for them
lost and duplicated do not apply (``None``, printed n/a).
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from server.store.database import libpq_url

ARTIFACT = Path(__file__).resolve().parents[1] / "test-artifacts" / "bad_input.json"


@dataclass
class Figures:
    test: str
    trials: int = 0
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    refused: int = 0
    counted: int = 0
    dead_lettered: int = 0
    stores: bool = True  # False for a pure function's test

    @property
    def lost(self) -> int | None:
        if not self.stores:
            return None
        return max(0, self.accepted - self.counted) + max(0, self.rejected - self.dead_lettered)

    @property
    def duplicated(self) -> int | None:
        return max(0, self.counted - self.accepted) if self.stores else None

    def add_reply(self, accepted: int, duplicates: int, rejected: int) -> None:
        self.accepted += accepted
        self.duplicates += duplicates
        self.rejected += rejected

    def count_stored(self, database_url: str, organization_ids: list[str]) -> None:
        """Counts the events and dead letters the database holds for the organizations."""
        with psycopg.connect(libpq_url(database_url)) as conn:
            events, dead = conn.execute(
                "SELECT (SELECT count(*) FROM events WHERE organization_id = ANY(%(o)s)),"
                " (SELECT count(*) FROM dead_letters WHERE organization_id = ANY(%(o)s))",
                {"o": organization_ids},
            ).fetchone() or (0, 0)
        self.counted += events
        self.dead_lettered += dead

    def report(self) -> None:
        """Prints the figures and keeps them in the artifact, by test."""
        row = {**asdict(self), "lost": self.lost, "duplicated": self.duplicated}
        print(
            f"\nbad input | {self.test} | trials {self.trials} | sent {self.sent} | "
            f"accepted {self.accepted} | duplicates {self.duplicates} | "
            f"rejected {self.rejected} | refused {self.refused} | counted {self.counted} | "
            f"dead-lettered {self.dead_lettered} | lost {_figure(self.lost)} | "
            f"duplicated {_figure(self.duplicated)}"
        )
        ARTIFACT.parent.mkdir(exist_ok=True)
        try:
            rows = json.loads(ARTIFACT.read_text())
        except (FileNotFoundError, ValueError):
            rows = {}
        rows[self.test] = row
        ARTIFACT.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


def _figure(value: int | None) -> str:
    return "n/a" if value is None else str(value)
