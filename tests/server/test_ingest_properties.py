"""Property-based tests (hypothesis) of validation, the metric formulas and
the whole ingest path.

- Validation alone: any event, of any field values, is accepted exactly
  when it keeps every documented limit, and otherwise rejected with the code
  of a limit it breaks; it never raises.
- The formulas: the metrics of any window totals equal the plain reference
  computation (``reference.py``) over the same events.
- The ingest path, over real gRPC into PostgreSQL: arbitrary batches (valid
  and invalid fields, repeated ids, retries) never fail the call; every
  event is accepted, a duplicate or rejected with a code; rejected ones are
  dead letters; and the metrics read back equal the reference computation
  over the accepted events.

Examples are bounded and derandomized, so CI runs the same ones every time.
"""

import math
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from bad_input import Figures
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reference import Expected, expected_by_campaign
from support import ServerThread, Stubs, Tenant, make_tenant

from clients import pb
from server import codec
from server.domain import EventType, Rejection, Role
from server.ingest.validation import IncomingEvent, Limits, validate
from server.metrics.formulas import CampaignMetrics, Totals
from server.store.database import libpq_url

PROPERTIES = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
NOW_US = int(NOW.timestamp()) * 1_000_000
LIMITS = Limits()
TYPES = [int(t) for t in EventType]
METRIC_FIELDS = list(Expected().metrics())
# The forms of an event id the contract names: canonical, or 32 hex digits.
UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}")

# -- validation alone ---------------------------------------------------------

texts = st.text(max_size=40) | st.sampled_from(["", "\x00", "a\x00b", "x" * 129])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.just("\x00")
    | st.just("x" * 2049),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


# Each field: (a value within the limits, any value). An event takes any
# value in a few of its fields (or in all), so that both accepted and
# rejected events, and events breaking several limits at once, are common.
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "size": (st.integers(0, 32 * 1024), st.integers(0, 40_000)),
    "event_id": (
        st.just("") | st.uuids().map(str) | st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: str(u).upper()) | texts,
    ),
    "event_type": (st.sampled_from(TYPES), st.integers(-(2**31), 2**31 - 1)),
    "campaign": (
        st.sampled_from([("c1", "o1"), ("c2", "o1"), ("c3", "o2")]),
        st.tuples(
            st.sampled_from(["c1", "c2", "c3", "c4"]) | texts, st.sampled_from(["o1", "o2"]) | texts
        ),
    ),
    "occurred_us": (
        st.none() | st.integers(NOW_US - 29 * 86_400_000_000, NOW_US + 23 * 3_600_000_000),
        st.integers(NOW_US - 31 * 86_400_000_000, NOW_US + 2 * 86_400_000_000)
        | st.integers(-(2**62), 2**62),
    ),
    "timestamp_error": (st.just(""), st.just("timestamp is not a valid date")),
    "value": (st.none() | st.floats(0, 1e9), st.floats()),
    "session_id": (st.just("") | st.text(max_size=20), st.text(min_size=250, max_size=300)),
    "duration": (st.none() | st.floats(0, 86_400), st.floats()),
    "metadata": (
        st.none()
        | st.dictionaries(st.sampled_from(["deviceType", "showId"]), st.text(max_size=20)),
        st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    ),
    "metadata_error": (st.just(""), st.just("metadata.extra cannot be stored")),
}


@st.composite
def incoming_events(draw: st.DrawFn) -> IncomingEvent:
    free = draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=3) | st.just(set(FIELDS)))
    v = {
        name: draw(any_value if name in free else valid)
        for name, (valid, any_value) in FIELDS.items()
    }
    metadata = v["metadata"]
    if metadata is not None and draw(st.booleans()):
        metadata["ipAddress"] = draw(st.ip_addresses().map(str) | st.text(max_size=10))
    campaign_id, organization_id = v["campaign"]
    return IncomingEvent(
        index=draw(st.integers(0, 5000)),
        size=v["size"],
        event_id=v["event_id"],
        event_type=v["event_type"],
        campaign_id=campaign_id,
        organization_id=organization_id,
        occurred_us=v["occurred_us"],
        timestamp_error=v["timestamp_error"],
        value=v["value"],
        session_id=v["session_id"],
        duration=v["duration"],
        metadata=metadata,
        metadata_error=v["metadata_error"],
    )


OWNERS: dict[str, str | None] = {"c1": "o1", "c2": "o1", "c3": "o2", "c4": None}


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def broken_limits(e: IncomingEvent) -> set[str]:
    """The codes of every documented limit the event breaks (a plain oracle)."""
    broken = set()
    if e.size > LIMITS.max_event_bytes:
        broken.add("event_too_large")
    if e.event_type not in TYPES:
        broken.add("invalid_event_type")
    for text in (e.campaign_id, e.organization_id):
        if not text:
            broken.add("missing_field")
        elif len(text) > LIMITS.max_id_length:
            broken.add("field_too_long")
        elif "\x00" in text:
            broken.add("invalid_character")
    if e.event_id and not UUID_TEXT.fullmatch(e.event_id):
        broken.add("invalid_event_id")
    if e.timestamp_error:
        broken.add("invalid_timestamp")
    elif e.occurred_us is not None:
        if e.occurred_us > NOW_US + LIMITS.max_future_us:
            broken.add("timestamp_in_future")
        if e.occurred_us < NOW_US - LIMITS.max_age_us:
            broken.add("timestamp_too_old")
    if e.value is not None and not (math.isfinite(e.value) and 0 <= e.value <= 1e9):
        broken.add("invalid_value")
    if e.duration is not None and not (math.isfinite(e.duration) and 0 <= e.duration <= 86_400):
        broken.add("invalid_duration")
    if e.metadata_error:
        broken.add("invalid_metadata")
    if len(e.session_id) > LIMITS.max_session_id_length:
        broken.add("field_too_long")
    for value in (e.metadata or {}).values():
        if isinstance(value, str) and len(value) > LIMITS.max_text_length:
            broken.add("field_too_long")
    if e.metadata and _holds_nul(e.metadata):
        broken.add("invalid_character")
    owner = OWNERS.get(e.campaign_id)
    if owner is None:
        broken.add("campaign_not_found")
    elif owner != e.organization_id:
        broken.add("campaign_organization_mismatch")
    return broken


def test_validation_accepts_exactly_the_events_within_every_limit() -> None:
    figures = Figures("hypothesis: validation alone, any field values", stores=False)
    check_validation(figures)
    figures.report()
    assert figures.accepted and figures.rejected  # both sides were reached


@settings(PROPERTIES, max_examples=600)
@given(event=incoming_events())
def check_validation(figures: Figures, event: IncomingEvent) -> None:
    figures.trials += 1
    figures.sent += 1
    broken = broken_limits(event)
    original = (event.value, event.duration, event.campaign_id, event.organization_id)
    checked = validate(event, NOW_US, OWNERS, LIMITS)
    if isinstance(checked, Rejection):
        figures.rejected += 1
        assert checked.code in broken, (checked, broken)
        assert checked.index == event.index and checked.reason
        return
    figures.accepted += 1
    assert not broken, broken
    value, duration, campaign_id, organization_id = original
    row_org, row_id, row_campaign, row_type, occurred, micros, session, row_duration, _ = checked
    assert (row_org, row_campaign, row_type) == (organization_id, campaign_id, event.event_type)
    assert len(row_id) == 16 and uuid.UUID(bytes=row_id) == uuid.UUID(event.event_id)
    assert occurred == (NOW_US if event.occurred_us is None else event.occurred_us)
    assert micros == (None if value is None else round(value * 1_000_000))
    assert session == (event.session_id or None) and row_duration == duration


# -- the hot path: a row straight from the message ------------------------------

SECONDS = NOW_US // 1_000_000
# EventMetadata's text fields, by attribute (the IP address apart: it is
# truncated, so never taken straight).
METADATA_TEXTS = ["session_id", "user_agent", "device_type", "location", "show_id", "referrer"]


@st.composite
def valid_messages(draw: st.DrawFn) -> pb.Event:
    """Events that keep every rule, their values up to the limits."""
    campaign_id, organization_id = draw(FIELDS["campaign"][0])
    message = pb.Event(
        event_id=draw(st.uuids().map(str) | st.uuids().map(lambda u: u.hex.upper())),
        event_type=draw(st.sampled_from(TYPES)),
        campaign_id=campaign_id,
        organization_id=organization_id,
    )
    if draw(st.booleans()):
        message.timestamp.seconds = draw(
            st.integers(SECONDS - 30 * 86_400 + 1, SECONDS + 24 * 3_600 - 1)
        )
        message.timestamp.nanos = draw(st.integers(0, 999_999_999))
    value = draw(st.none() | st.floats(0, 1e9) | st.sampled_from([0.0, -0.0, 1e9]))
    if value is not None:
        message.value = value
    metadata = message.metadata
    for name in sorted(draw(st.sets(st.sampled_from(METADATA_TEXTS)))):
        limit = LIMITS.max_session_id_length if name == "session_id" else LIMITS.max_text_length
        text = st.text(
            st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
            min_size=1,
            max_size=20,
        )
        setattr(metadata, name, draw(text | st.just("é" * limit)))
    duration = draw(st.none() | st.floats(0, 86_400) | st.just(86_400.0))
    if duration is not None:
        metadata.duration = duration
    if draw(st.booleans()):
        metadata.position = draw(st.integers(-(2**31), 2**31 - 1))
    if not draw(st.booleans()) and not metadata.ListFields():
        message.ClearField("metadata")
    return message


def _set(path: str, value: Any) -> Callable[[pb.Event], None]:
    def change(message: pb.Event) -> None:
        *parents, name = path.split(".")
        target: Any = message
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return change


# Each breaks one rule, just past its limit, or asks for a closer look.
BREAKAGES: dict[str, Callable[[pb.Event], None]] = {
    "event type unknown": _set("event_type", 99),
    "event type unspecified": _set("event_type", 0),
    "event id not a uuid": _set("event_id", "0192f3a0-5b7c-7d2e-9f10-12345678zzzz"),
    "event id with spaces": _set("event_id", "0192f3a0-5b7c-7d2e-9f10-12 34 678abc"),
    "event id of 15 bytes": _set("event_id", "0192f3a05b7c7d2e9f10123456789a"),
    "event id to assign": _set("event_id", ""),
    "campaign unknown": _set("campaign_id", "c4"),
    "campaign absent": _set("campaign_id", ""),
    "campaign of another organization": _set("organization_id", "o2"),
    "organization absent": _set("organization_id", ""),
    "timestamp in the future": _set("timestamp.seconds", SECONDS + 24 * 3_600 + 1),
    "timestamp too old": _set("timestamp.seconds", SECONDS - 30 * 86_400 - 1),
    "timestamp not a date": _set("timestamp.nanos", -1),
    "value negative": _set("value", -0.01),
    "value too large": _set("value", 1e9 + 1),
    "value NaN": _set("value", math.nan),
    "value infinite": _set("value", math.inf),
    "duration negative": _set("metadata.duration", -0.5),
    "duration too long": _set("metadata.duration", 86_400.5),
    "duration NaN": _set("metadata.duration", math.nan),
    "text too long": _set("metadata.user_agent", "a" * (LIMITS.max_text_length + 1)),
    "session id too long": _set("metadata.session_id", "s" * (LIMITS.max_session_id_length + 1)),
    "text holding a NUL": _set("metadata.location", "a\x00b"),
    "IP address": _set("metadata.ip_address", "203.0.113.7"),
    "extra keys": lambda m: m.metadata.extra.update({"k": 1}),
    "event too large": lambda m: m.metadata.extra.update({"pad": "x" * LIMITS.max_event_bytes}),
    "location making it too large": _set("metadata.location", "x" * LIMITS.max_event_bytes),
}


def test_a_row_read_straight_from_a_message_is_the_row_validation_makes() -> None:
    taken = check_hot_path()
    # Every event keeping every rule was read straight, and every breakage was met.
    assert taken["valid: row"] and not taken["valid: full path"]
    assert {name for name in BREAKAGES if taken[name]} == set(BREAKAGES)


def plain_event(event_type: Any = pb.EventType.EVENT_TYPE_CLICK) -> pb.Event:
    """A valid event of campaign c1 (of o1), its fields but these unset."""
    return pb.Event(
        event_id=str(uuid.uuid4()), event_type=event_type, campaign_id="c1", organization_id="o1"
    )


def _each_breakage_once(test: Any) -> Any:
    """Explicit examples: each breakage of a plain valid event, whatever the
    draws meet (they favour the first names of the list)."""
    for name in sorted(BREAKAGES):
        plain = plain_event()
        plain.value = 1.5
        plain.timestamp.seconds = SECONDS
        plain.metadata.session_id = "s1"
        plain.metadata.duration = 2.0
        test = example(message=plain, broken=[name])(test)
    return test


@settings(PROPERTIES, max_examples=600)
@given(
    message=valid_messages(),
    broken=st.lists(st.sampled_from(sorted(BREAKAGES)), max_size=2, unique=True),
)
@_each_breakage_once
def _check_hot_path(taken: Counter[str], message: pb.Event, broken: list[str]) -> None:
    for name in broken:
        BREAKAGES[name](message)
        taken[name] += 1
    row = hot_row(message)
    full = validate(codec.decode_event(message, 0), NOW_US, OWNERS, LIMITS)
    if not broken:
        # An event keeping every rule is read straight (with nothing to look at closer).
        taken["valid: row" if row is not None else "valid: full path"] += 1
        assert row is not None, message
    if row is not None:
        assert row == full, (broken, message)


def hot_row(message: pb.Event, limits: Limits = LIMITS) -> Any:
    return codec.event_rows([message], NOW_US, OWNERS, limits)[0]


@settings(PROPERTIES, max_examples=150)
@given(
    st.lists(
        st.tuples(valid_messages(), st.lists(st.sampled_from(sorted(BREAKAGES)), max_size=1)),
        max_size=6,
    )
)
def test_a_slice_of_events_reads_as_each_event_alone(
    items: list[tuple[pb.Event, list[str]]],
) -> None:
    # The hot path reads a slice at once: nothing of one event carries over
    # to the next.
    for message, broken in items:
        for name in broken:
            BREAKAGES[name](message)
    messages = [message for message, _ in items]
    rows = codec.event_rows(messages, NOW_US, OWNERS, LIMITS)
    assert rows == [hot_row(message) for message in messages]
    for (message, broken), row in zip(items, rows, strict=True):
        if not broken:
            assert row == validate(codec.decode_event(message, 0), NOW_US, OWNERS, LIMITS)


def check_hot_path() -> Counter[str]:
    taken: Counter[str] = Counter()
    _check_hot_path(taken)
    return taken


def test_the_size_limit_holds_on_the_hot_path() -> None:
    # Under the default limits no event within the text limits is too large;
    # the limit is configurable, so the hot path checks it all the same.
    message = plain_event(pb.EventType.EVENT_TYPE_VIEW)
    message.metadata.session_id = "s1"
    message.metadata.duration = 3.5
    size = message.ByteSize()
    row = hot_row(message, Limits(max_event_bytes=size))
    assert row is not None
    assert row == validate(codec.decode_event(message, 0), NOW_US, OWNERS, LIMITS)
    assert hot_row(message, Limits(max_event_bytes=size - 1)) is None


def test_no_event_of_a_request_within_the_size_limit_is_sized() -> None:
    message = plain_event()
    request = pb.StreamEventsRequest(events=[message, message])
    size = request.ByteSize()
    assert codec.smaller_than_an_event(request, 2, Limits(max_event_bytes=size))
    assert not codec.smaller_than_an_event(request, 2, Limits(max_event_bytes=size - 1))
    # Told so, the hot path takes the events as within the limit, unsized:
    # even under a limit they break.
    events = list(request.events)
    tight = Limits(max_event_bytes=message.ByteSize() - 1)
    assert codec.event_rows(events, NOW_US, OWNERS, tight) == [None, None]
    rows = codec.event_rows(events, NOW_US, OWNERS, tight, sizes_checked=True)
    assert rows == codec.event_rows(events, NOW_US, OWNERS, LIMITS)
    assert None not in rows


# -- the formulas -------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What an event is, in the terms the formulas and the reference share."""

    event_type: int
    cents: int | None
    half_seconds: int | None
    session: str


specs = st.builds(
    Spec,
    event_type=st.sampled_from(TYPES),
    cents=st.none() | st.integers(0, 10**11),
    half_seconds=st.none() | st.integers(0, 2 * 86_400),
    session=st.sampled_from(["", "s0", "s1", "s2", "s3"]),
)


def as_event(spec: Spec, campaign_id: str = "c", organization_id: str = "o") -> pb.Event:
    message = pb.Event(
        event_id=str(uuid.uuid4()),
        event_type=spec.event_type,  # type: ignore[arg-type]
        campaign_id=campaign_id,
        organization_id=organization_id,
    )
    if spec.cents is not None:
        message.value = spec.cents / 100
    if spec.session:
        message.metadata.session_id = spec.session
    if spec.half_seconds is not None:
        message.metadata.duration = spec.half_seconds / 2
    return message


def totals_of(events: list[pb.Event]) -> Totals:
    """The window totals of the events, as the rollups sum them."""
    totals = Totals()
    names = {1: "impressions", 2: "clicks", 3: "conversions", 4: "views"}
    names |= {5: "engagements", 6: "completions", 7: "skips"}
    sessions: Counter[str] = Counter()
    for e in events:
        setattr(totals, names[e.event_type], getattr(totals, names[e.event_type]) + 1)
        if e.HasField("value"):
            micros = round(e.value * 1_000_000)
            if e.event_type == 3:
                totals.conversion_value_micros += micros
            else:
                totals.spent_micros += micros
        if e.event_type == 4 and e.metadata.HasField("duration"):
            totals.view_time_sum += e.metadata.duration
            totals.view_time_count += 1
        if e.metadata.session_id:
            sessions[e.metadata.session_id] += 1
    totals.sessions = len(sessions)
    totals.bounced_sessions = sum(1 for n in sessions.values() if n == 1)
    return totals


def test_formulas_equal_the_reference_computation() -> None:
    figures = Figures("hypothesis: metric formulas vs reference", stores=False)
    check_formulas(figures)
    figures.report()


@settings(PROPERTIES, max_examples=300)
@given(parts=st.lists(st.lists(specs, max_size=25), min_size=1, max_size=3))
def check_formulas(figures: Figures, parts: list[list[Spec]]) -> None:
    events = [[as_event(spec) for spec in part] for part in parts]
    flat = [e for part in events for e in part]
    figures.trials += 1
    figures.sent += len(flat)
    figures.accepted += len(flat)
    # Totals add up: the window's totals are the sum of its parts' (the rollups).
    summed = Totals()
    for part in events:
        summed += totals_of(part)
    whole = totals_of(flat)
    for name in ("impressions", "clicks", "spent_micros", "view_time_count", "views"):
        assert getattr(summed, name) == getattr(whole, name)
    metrics = CampaignMetrics("c", "o", NOW, NOW, 3600, whole)
    reference = Expected()
    for e in flat:
        reference.add(e)
    expected = reference.metrics()
    got = {name: getattr(metrics, name) for name in expected if hasattr(metrics, name)}
    got |= {"ad_playbacks": whole.views, "sessions": whole.sessions}
    got |= {n: getattr(whole, n) for n in ("impressions", "clicks", "conversions")}
    got |= {n: getattr(whole, n) for n in ("engagements", "completions", "skips")}
    assert got == expected
    for rate in ("ctr", "conversion_rate", "engagement_rate", "bounce_rate"):
        assert math.isfinite(got[rate]) and got[rate] >= 0


# -- the ingest path ----------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """An event to send, drawn before its organization exists: a valid event
    (``campaign`` one of the organization's three) and the defects to give it."""

    event_id: str
    event_type: int
    campaign: int
    when: str  # "now", "window" (seconds_ago), "outside" (days ago), "future" (hours ahead)
    seconds_ago: int
    cents: int | None
    half_seconds: int | None
    session: str
    user_agent: str
    extra: dict[str, Any]
    defects: tuple[str, ...]


ID_POOL = [str(uuid.UUID(int=n)) for n in range(1, 6)]
# Each breaks one limit; an event may have several.
DEFECTS = [
    "bad_id",
    "type_0",
    "type_8",
    "type_max",
    "no_campaign",
    "missing_campaign",
    "foreign_campaign",
    "long_campaign",
    "nul_campaign",
    "no_organization",
    "too_old",
    "too_new",
    "invalid_time",
    "nan_value",
    "inf_value",
    "negative_value",
    "huge_value",
    "nan_duration",
    "long_duration",
    "long_session",
    "long_agent",
    "nul_agent",
    "nan_extra",
    "nul_key",
    "too_large",
]
drafts = st.builds(
    Draft,
    event_id=st.just("") | st.uuids().map(str) | st.sampled_from(ID_POOL),
    event_type=st.sampled_from(TYPES),
    campaign=st.integers(0, 2),
    when=st.sampled_from(["now", "window", "window", "outside", "future"]),
    seconds_ago=st.integers(0, 2900),
    cents=st.none() | st.integers(0, 10**8),
    half_seconds=st.none() | st.integers(0, 1200),
    session=st.sampled_from(["", "s0", "s1", "s2", "s3"]),
    user_agent=st.just("") | st.text(max_size=20).filter(lambda t: "\x00" not in t),
    extra=st.dictionaries(
        st.text(max_size=6).filter(lambda t: "\x00" not in t),
        st.none() | st.integers(-5, 5) | st.text(max_size=10) | st.just(1.5),
        max_size=3,
    ).filter(lambda d: not any("\x00" in v for v in d.values() if isinstance(v, str))),
    defects=st.just(())
    | st.just(())
    | st.just(())
    | st.lists(st.sampled_from(DEFECTS), min_size=1, max_size=2, unique=True).map(tuple),
)


def build(draft: Draft, tenant: Tenant, foreign: Tenant, now: datetime) -> pb.Event:
    defects = set(draft.defects)
    campaign_id = tenant.campaign_ids[draft.campaign]
    for defect, bad in (
        ("no_campaign", ""),
        ("missing_campaign", "camp_missing"),
        ("foreign_campaign", foreign.campaign_ids[0]),
        ("long_campaign", "x" * 129),
        ("nul_campaign", "n\x00ul"),
    ):
        if defect in defects:
            campaign_id = bad
    message = pb.Event(
        event_id="nope" if "bad_id" in defects else draft.event_id,
        event_type=draft.event_type,  # type: ignore[arg-type]
        campaign_id=campaign_id,
        # (Another organization's id refuses the whole batch: see the isolation tests.)
        organization_id="" if "no_organization" in defects else tenant.organization_id,
    )
    for defect, number in (("type_0", 0), ("type_8", 8), ("type_max", 2**31 - 1)):
        if defect in defects:
            message.event_type = number  # type: ignore[assignment]
    outside = draft.when in ("outside", "future")
    when = {
        "window": now - timedelta(seconds=draft.seconds_ago),
        "outside": now - timedelta(days=2, seconds=draft.seconds_ago),
        "future": now + timedelta(hours=2, seconds=draft.seconds_ago),
    }.get(draft.when)
    if "too_old" in defects:
        when = now - timedelta(days=31, seconds=draft.seconds_ago)
    if "too_new" in defects:
        when = now + timedelta(hours=25, seconds=draft.seconds_ago)
    if when is not None:
        message.timestamp.FromDatetime(when)
    if "invalid_time" in defects:
        message.timestamp.seconds = 10**12
    if draft.cents is not None:
        message.value = draft.cents / 100
    for defect, value in (
        ("nan_value", math.nan),
        ("inf_value", math.inf),
        ("negative_value", -0.01),
        ("huge_value", 2e9),
    ):
        if defect in defects:
            message.value = value
    # Sessions only in the window: the bounce rate counts the sessions whose
    # first event falls in it.
    if draft.session and not outside:
        message.metadata.session_id = draft.session
    if "long_session" in defects:
        message.metadata.session_id = "s" * 257
    if draft.half_seconds is not None:
        message.metadata.duration = draft.half_seconds / 2
    if "nan_duration" in defects:
        message.metadata.duration = math.nan
    if "long_duration" in defects:
        message.metadata.duration = 86_400.5
    if draft.user_agent:
        message.metadata.user_agent = draft.user_agent
    if "long_agent" in defects:
        message.metadata.user_agent = "u" * 2049
    if "nul_agent" in defects:
        message.metadata.user_agent = "Mozilla\x00"
    if draft.extra:
        message.metadata.extra.update(draft.extra)
    if "nan_extra" in defects:
        message.metadata.extra.update({"score": math.nan})
    if "nul_key" in defects:
        message.metadata.extra.update({"k\x00": "v" * 2049})
    if "too_large" in defects:
        message.metadata.extra.update({"blob": "b" * 40_000})
    return message


def in_window(draft: Draft) -> bool:
    return draft.when in ("now", "window") and not draft.defects


def read_metrics(stubs: Stubs, tenant: Tenant) -> dict[str, dict[str, float]]:
    reply = stubs.metrics.GetPipelineStatus(
        pb.GetPipelineStatusRequest(organization_id=tenant.organization_id, time_window=3600),
        metadata=tenant.auth(Role.READ),
    )
    return {
        m.campaign_id: {name: getattr(m, name) for name in METRIC_FIELDS}
        for m in reply.organization_metrics
    }


def stored_rejections(database_url: str, organization_id: str) -> Counter[tuple[int, str]]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT event_index, code FROM dead_letters WHERE organization_id = %s",
            (organization_id,),
        ).fetchall()
    return Counter((index, code) for index, code in rows)


@pytest.fixture(scope="module")
def foreign(analytics_server: ServerThread) -> Tenant:
    return make_tenant(analytics_server, campaigns=1)


def test_any_batch_is_accepted_duplicate_or_rejected_and_counted_exactly(
    analytics_server: ServerThread, stubs: Stubs, foreign: Tenant, database_url: str
) -> None:
    figures = Figures("hypothesis: arbitrary batches over gRPC, metrics vs reference")
    organizations: list[str] = []

    @settings(PROPERTIES, max_examples=100)
    @given(batch=st.lists(drafts, min_size=1, max_size=30), retry=st.booleans())
    def check(batch: list[Draft], retry: bool) -> None:
        tenant = make_tenant(analytics_server)
        organizations.append(tenant.organization_id)
        now = datetime.now(UTC)
        events = [build(d, tenant, foreign, now) for d in batch]
        kept: list[pb.Event] = []  # accepted events in the window, each time it was accepted
        rejected_total: Counter[tuple[int, str]] = Counter()
        for attempt in range(2 if retry else 1):
            try:
                reply = stubs.ingest.IngestEvents(
                    pb.IngestEventsRequest(events=events),
                    metadata=tenant.auth(Role.INGEST),
                    timeout=30,
                )
            except grpc.RpcError as error:
                raise AssertionError(f"{error.code()}: {error.details()}") from None
            figures.trials += 1
            figures.sent += len(events)
            figures.add_reply(reply.accepted, reply.duplicates, len(reply.rejected))
            assert reply.accepted + reply.duplicates + len(reply.rejected) == len(events)
            rejected = {r.index for r in reply.rejected}
            assert len(rejected) == len(reply.rejected)
            assert all(r.code and r.reason for r in reply.rejected)
            rejected_total.update((r.index, r.code) for r in reply.rejected)
            # Which were accepted: the first valid event of each id, the
            # first time; an event without an id is new every time.
            seen: set[str] = set()
            accepted = 0
            for index, (draft, e) in enumerate(zip(batch, events, strict=True)):
                if index in rejected:
                    continue
                if e.event_id:
                    key = uuid.UUID(e.event_id).hex
                    if key in seen or attempt > 0:
                        continue
                    seen.add(key)
                accepted += 1
                if in_window(draft):
                    kept.append(e)
            assert reply.accepted == accepted
        # Every rejection is a dead letter, at its index with its code.
        assert stored_rejections(database_url, tenant.organization_id) == rejected_total
        assert read_metrics(stubs, tenant) == expected_by_campaign(kept)

    check()
    figures.count_stored(database_url, organizations)
    figures.report()
    assert figures.lost == 0 and figures.duplicated == 0
