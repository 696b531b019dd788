"""The events the load clients send, encoded fast enough not to be the bottleneck.

Every event is a realistic ad event (a mix of the seven types over the
campaigns, with a value where the type has one, a session id, a device type
and, for views, a duration) with a fresh UUIDv7 ``eventId``. Building each one
with ``make_event`` and serialising it costs the load client more than the
service spends on it, so the wire bytes are put together from pieces that are
encoded once: everything but the event id is serialised per mix position with
the generated classes, and a protobuf message is the concatenation of its
fields. ``check_encoding`` proves at start-up that the result parses to the
events ``clients.make_event`` builds, and the REST JSON to the same events.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils
from google.protobuf.timestamp_pb2 import Timestamp

from clients import make_event, pb

# The share of each type in the mix: an ad funnel, mostly impressions.
TYPE_MIX = (
    ("impression", 60),
    ("view", 15),
    ("click", 8),
    ("completion", 6),
    ("engagement", 5),
    ("skip", 5),
    ("conversion", 1),
)
VALUES = {"impression": 0.002, "click": 1.5, "conversion": 25.0}
DEVICES = ("desktop", "mobile", "tablet")
VIEW_SECONDS = 30.0
SESSIONS = 2_000
MIX_LENGTH = 10_007  # positions before the mix repeats (a prime, so no short cycles)

# Field tags: Event.event_id (1, length-delimited, always 36 characters);
# StreamEventsRequest.events (1), IngestEventsRequest.event (1) and .events (2).
_EVENT_ID_TAG = b"\x0a\x24"
STREAM_EVENTS_TAG = b"\x0a"
UNARY_EVENT_TAG = b"\x0a"
UNARY_EVENTS_TAG = b"\x12"


@dataclass(frozen=True, slots=True)
class MixedEvent:
    """One position of the mix: everything about an event but its id and time."""

    campaign_id: str
    event_type: str
    value: float | None
    session_id: str
    device_type: str
    duration: float | None

    def fields(self) -> dict[str, Any]:
        """Keyword arguments of ``make_event`` (besides ids and timestamp)."""
        metadata: dict[str, object] = {
            "session_id": self.session_id,
            "device_type": self.device_type,
        }
        if self.duration is not None:
            metadata["duration"] = self.duration
        return {"value": self.value, **metadata}


def event_mix(campaign_ids: list[str], seed: int) -> list[MixedEvent]:
    rng = random.Random(seed)
    words = [word for word, _ in TYPE_MIX]
    weights = [share for _, share in TYPE_MIX]
    mix = []
    for _ in range(MIX_LENGTH):
        word = rng.choices(words, weights)[0]
        mix.append(
            MixedEvent(
                campaign_id=rng.choice(campaign_ids),
                event_type=word,
                value=VALUES.get(word),
                session_id=f"s{seed}-{rng.randrange(SESSIONS)}",
                device_type=rng.choice(DEVICES),
                duration=VIEW_SECONDS if word == "view" else None,
            )
        )
    return mix


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _timestamp_field(seconds: int) -> bytes:
    """Event.timestamp (field 5) holding whole ``seconds``."""
    body = Timestamp(seconds=seconds).SerializeToString()
    return b"\x2a" + _varint(len(body)) + body


class EventEncoder:
    """Wire bytes of batches of fresh events for one organization.

    Events carry the current second as their timestamp (each batch reads the
    clock once) and walk the mix in order, so every batch covers many
    campaigns and types.
    """

    def __init__(self, organization_id: str, campaign_ids: list[str], seed: int = 0) -> None:
        self.organization_id = organization_id
        self.mix = event_mix(campaign_ids, seed)
        self._position = 0
        self._second = 0
        self._timestamp = b""
        # Per mix position: the event's fields but its id and timestamp.
        self._bodies = [self._body(m) for m in self.mix]
        self._protobuf: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._json = [self._json_body(m) for m in self.mix]

    def _body(self, m: MixedEvent) -> bytes:
        event = make_event(
            m.event_type, m.campaign_id, self.organization_id, event_id="x", **m.fields()
        )
        event.ClearField("event_id")
        event.ClearField("timestamp")
        return event.SerializeToString()

    def _json_body(self, m: MixedEvent) -> bytes:
        document: dict[str, object] = {
            "eventType": m.event_type,
            "campaignId": m.campaign_id,
            "organizationId": self.organization_id,
        }
        if m.value is not None:
            document["value"] = m.value
        metadata: dict[str, object] = {"sessionId": m.session_id, "deviceType": m.device_type}
        if m.duration is not None:
            metadata["duration"] = m.duration
        document["metadata"] = metadata
        # Everything after the event id: '","eventType":...' up to the timestamp.
        return b'",' + orjson.dumps(document)[1:-1]

    def _tick(self) -> None:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._timestamp = _timestamp_field(second)
            self._protobuf.clear()
            iso = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._json_timestamp = f',"timestamp":"{iso}"}}'.encode()

    def _heads(self, tag: bytes) -> list[tuple[bytes, bytes]]:
        """Per mix position: (tag, length and id tag) and (body and timestamp)."""
        heads = self._protobuf.get(tag)
        if heads is None:
            ts = self._timestamp
            heads = [
                (tag + _varint(2 + 36 + len(body) + len(ts)) + _EVENT_ID_TAG, body + ts)
                for body in self._bodies
            ]
            self._protobuf[tag] = heads
        return heads

    @property
    def position(self) -> int:
        """The mix position of the next event: a batch encoded now holds the
        events at ``position`` and after (``Tally`` counts them by it)."""
        return self._position

    def _next_positions(self, count: int) -> range | list[int]:
        start = self._position
        end = start + count
        self._position = end % MIX_LENGTH
        if end <= MIX_LENGTH:
            return range(start, end)
        return [i % MIX_LENGTH for i in range(start, end)]

    def protobuf(self, count: int, tag: bytes) -> bytes:
        """``count`` events as repeated field ``tag`` of a request message."""
        self._tick()
        heads = self._heads(tag)
        parts: list[bytes] = []
        append = parts.append
        uuid7 = uuid_utils.uuid7
        for i in self._next_positions(count):
            head, tail = heads[i]
            append(head)
            append(str(uuid7()).encode())
            append(tail)
        return b"".join(parts)

    def stream_message(self, count: int) -> bytes:
        """A serialised StreamEventsRequest."""
        return self.protobuf(count, STREAM_EVENTS_TAG)

    def unary_batch(self, count: int) -> bytes:
        """A serialised IngestEventsRequest with ``events``."""
        return self.protobuf(count, UNARY_EVENTS_TAG)

    def unary_single(self) -> bytes:
        """A serialised IngestEventsRequest with ``event``."""
        return self.protobuf(1, UNARY_EVENT_TAG)

    def json_batch(self, count: int) -> bytes:
        """The REST body ``{"events": [...]}``."""
        self._tick()
        bodies = self._json
        ts = self._json_timestamp
        uuid7 = uuid_utils.uuid7
        parts = [
            b'{"eventId":"' + str(uuid7()).encode() + bodies[i] + ts
            for i in self._next_positions(count)
        ]
        return b'{"events":[' + b",".join(parts) + b"]}"


class Tally:
    """How many times each position of the mix was acknowledged.

    A batch is a run of consecutive mix positions, so acknowledging one costs
    two additions (a difference array) whatever its size; ``by_campaign``
    turns the tally into events per campaign and type at the end.
    """

    def __init__(self) -> None:
        self._edges = [0] * (MIX_LENGTH + 1)
        self._cycles = 0  # whole passes over the mix

    def add(self, position: int, count: int) -> None:
        """Counts the ``count`` events from mix ``position`` on."""
        cycles, rest = divmod(count, MIX_LENGTH)
        self._cycles += cycles
        end = position + rest
        if end <= MIX_LENGTH:
            self._edges[position] += 1
            self._edges[end] -= 1
        else:
            self._edges[position] += 1
            self._edges[MIX_LENGTH] -= 1
            self._edges[0] += 1
            self._edges[end - MIX_LENGTH] -= 1

    def by_campaign(self, mix: list[MixedEvent]) -> dict[str, dict[str, int]]:
        """Events counted, per campaign and event type."""
        counts: dict[str, dict[str, int]] = {}
        times = self._cycles
        for m, edge in zip(mix, self._edges, strict=False):
            times += edge
            if times:
                types = counts.setdefault(m.campaign_id, {})
                types[m.event_type] = types.get(m.event_type, 0) + times
        return counts


def check_encoding(organization_id: str, campaign_ids: list[str]) -> None:
    """Raises AssertionError unless the encoder's bytes are exactly the events
    ``make_event`` builds (and the REST JSON decodes to the same events)."""
    encoder = EventEncoder(organization_id, campaign_ids, seed=99)
    count = 50
    for tag, parse in (
        (STREAM_EVENTS_TAG, lambda b: list(pb.StreamEventsRequest.FromString(b).events)),
        (UNARY_EVENTS_TAG, lambda b: list(pb.IngestEventsRequest.FromString(b).events)),
    ):
        encoder._position = 0
        events = parse(encoder.protobuf(count, tag))
        _compare(encoder, events, count)
    encoder._position = 0
    single = pb.IngestEventsRequest.FromString(encoder.unary_single())
    assert single.HasField("event") and not single.events, "unary single: wrong field"
    _compare(encoder, [single.event], 1)

    encoder._position = 0
    document = orjson.loads(encoder.json_batch(count))
    try:
        from gateway import codec as gateway_codec
    except ImportError:  # the gateway is optional for this check
        return
    decoded = [gateway_codec.decode_event(item, i) for i, item in enumerate(document["events"])]
    assert all(isinstance(e, pb.Event) for e in decoded), "REST JSON: undecodable events"
    _compare(encoder, decoded, count)  # type: ignore[arg-type]


def _compare(encoder: EventEncoder, events: list[pb.Event], count: int) -> None:
    assert len(events) == count, f"expected {count} events, parsed {len(events)}"
    ids = set()
    for i, event in enumerate(events):
        m = encoder.mix[i]
        expected = make_event(
            m.event_type,
            m.campaign_id,
            encoder.organization_id,
            event_id=event.event_id,
            timestamp=float(event.timestamp.seconds),
            **m.fields(),
        )
        assert event == expected, f"event {i} differs from make_event:\n{event}\n{expected}"
        assert uuid_utils.UUID(event.event_id).version == 7, "event ids must be UUIDv7"
        assert abs(event.timestamp.seconds - time.time()) < 5, "timestamp is not now"
        ids.add(event.event_id)
    assert len(ids) == count, "event ids repeat"
