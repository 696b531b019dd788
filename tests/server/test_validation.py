"""Validation on its own: the NUL check on metadata, which looks at the
metadata's JSON first, tells a NUL character from the text that spells one."""

import orjson

from server.domain import Rejection
from server.ingest.validation import IncomingEvent, Limits, now_us, validate


def _event(metadata: dict[str, object]) -> IncomingEvent:
    return IncomingEvent(
        index=3,
        size=0,
        event_id="",
        event_type=1,
        campaign_id="c",
        organization_id="o",
        occurred_us=None,
        timestamp_error="",
        value=None,
        session_id="",
        duration=None,
        metadata=metadata,
    )


def test_a_nul_anywhere_in_metadata_is_rejected() -> None:
    for metadata in ({"note": "a\x00b"}, {"k\x00": 1}, {"extra": {"deep": ["x", "\x00"]}}):
        checked = validate(_event(metadata), now_us(), {"c": "o"}, Limits())
        assert isinstance(checked, Rejection)
        assert (checked.index, checked.field, checked.code) == (3, "metadata", "invalid_character")


def test_text_that_spells_a_nul_is_kept() -> None:
    metadata = {"note": "\\u0000", "ipAddress": "203.0.113.77"}
    checked = validate(_event(dict(metadata)), now_us(), {"c": "o"}, Limits())
    assert not isinstance(checked, Rejection)
    stored = checked[8]
    assert stored is not None and stored[:1] == b"\x01"  # jsonb's version byte
    assert orjson.loads(stored[1:]) == {"note": "\\u0000", "ipAddress": "203.0.113.0"}
