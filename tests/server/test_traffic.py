"""Simulated traffic, without a server: journeys are valid funnels with the
seed's odds, the data looks real, and a seed reproduces a run."""

from collections import Counter

from funnels import assert_valid_funnel

from server.domain import EventType
from server.simulation.traffic import USER_AGENTS, Rates, Traffic

NOW_US = 1_767_225_600_000_000  # 2026-01-01


def described(events):  # type: ignore[no-untyped-def]
    return [
        (EventType(e.event_type).name, e.occurred_us / 1e6, e.duration,
         None if e.value is None else round(e.value * 1e6))
        for e in events
    ]  # fmt: skip


def test_journeys_are_funnels_with_the_seeds_odds() -> None:
    traffic = Traffic("org_1", ["camp_1"], seed=11)
    runs = 4000
    steps: Counter[str] = Counter()
    for _ in range(runs):
        journey = traffic.journey("camp_1", NOW_US)
        assert journey[-1].occurred_us == NOW_US
        assert len({e.session_id for e in journey}) == 1
        assert_valid_funnel(described(journey))
        steps.update(EventType(e.event_type).name.lower() for e in journey)
    assert steps["impression"] == runs
    assert abs(steps["view"] / runs - 0.8) < 0.03
    assert abs(steps["click"] / runs - 0.3) < 0.03
    # Completion past 20 of 5..35 s: half the views.
    assert abs(steps["completion"] / steps["view"] - 0.5) < 0.04
    assert 0 < steps["conversion"] < steps["completion"] * 0.1


def test_the_data_looks_real() -> None:
    traffic = Traffic("org_1", ["camp_1", "camp_2"], seed=5)
    events = traffic.events(20_000, NOW_US)
    devices = Counter(e.metadata["deviceType"] for e in events if e.metadata)
    sessions = {e.session_id for e in events}
    assert abs(devices["desktop"] / len(events) - 0.5) < 0.05
    assert abs(devices["mobile"] / len(events) - 0.4) < 0.05
    assert abs(devices["tablet"] / len(events) - 0.1) < 0.03
    # Sessions come back: fewer sessions than events, but many.
    assert 1_000 < len(sessions) < len(events)
    for e in events[:500]:
        m = e.metadata
        assert m is not None
        assert m["userAgent"] in USER_AGENTS[m["deviceType"]]
        assert m["sessionId"] == e.session_id and m["location"]
        assert m["adSlotId"].startswith("slot_") and 0 <= m["position"] <= 3
        assert m["showId"].startswith("show_") and m["episodeId"]
        if e.event_type == EventType.CLICK:
            assert e.value is not None and 0.5 <= e.value <= 2.5 and round(e.value, 2) == e.value
        elif e.event_type == EventType.CONVERSION:
            assert e.value is not None and 9.99 <= e.value <= 60
        else:
            assert e.value is None
    assert {e.campaign_id for e in events} == {"camp_1", "camp_2"}


def test_rates_leave_the_rest_to_the_other_types() -> None:
    weights = dict(Rates(0.5, 0.1, 0.02).weights())
    assert weights[EventType.IMPRESSION] == 0.5
    assert abs(weights[EventType.SKIP] - 0.095) < 1e-12
    # The seed's defaults add up to 1: nothing else.
    assert set(dict(Rates().weights())) == {
        EventType.IMPRESSION,
        EventType.CLICK,
        EventType.CONVERSION,
    }


def test_a_seed_reproduces_the_events() -> None:
    def run(seed: int) -> list[tuple]:
        traffic = Traffic("org_1", ["camp_1", "camp_2"], seed=seed)
        events = traffic.events(300, NOW_US) + traffic.journey("camp_2", NOW_US)
        return [(e.event_type, e.campaign_id, e.value, e.occurred_us, e.metadata) for e in events]

    assert run(42) == run(42)
    assert run(42) != run(43)
