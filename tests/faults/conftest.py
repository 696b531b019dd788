"""Fixtures of the fault tests: a PostgreSQL of their own, and the table of
figures (sent, counted, lost, duplicated) that every trial adds to."""

import json
from collections.abc import Callable, Iterator

import pytest
from fault_processes import ROOT, Postgres, Trial, own_folder

ARTIFACT = ROOT / "test-artifacts" / "faults.json"


@pytest.fixture(scope="session")
def fault_postgres() -> Iterator[Postgres]:
    """A PostgreSQL for the fault tests that kill servers (not PostgreSQL)."""
    with own_folder("faults-pg-") as folder:
        postgres = Postgres(folder)
        yield postgres
        postgres.close()


@pytest.fixture(scope="session")
def fault_table() -> Iterator[list[Trial]]:
    trials: list[Trial] = []
    yield trials
    if trials:
        ARTIFACT.parent.mkdir(exist_ok=True)
        ARTIFACT.write_text(
            json.dumps(
                [
                    {
                        "fault": t.fault,
                        "trial": t.trial,
                        "sent": t.sent,
                        "acknowledged": t.acknowledged,
                        "counted": t.counted,
                        "stored": t.stored,
                        "lost": t.lost,
                        "duplicated": t.duplicated,
                        "note": t.note,
                    }
                    for t in trials
                ],
                indent=2,
            )
            + "\n"
        )


@pytest.fixture
def record(fault_table: list[Trial]) -> Callable[[Trial], None]:
    """Adds a trial to the table and prints its line (shown by ``pytest -s``)."""

    def add(trial: Trial) -> None:
        fault_table.append(trial)
        print(trial.line(), flush=True)

    return add
