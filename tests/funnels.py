"""What a simulated user journey must look like: one session's funnel."""

from collections import Counter

# (type name, time in seconds, view duration or None, value in millionths or None)
JourneyEvent = tuple[str, float, float | None, int | None]


def assert_valid_funnel(events: list[JourneyEvent]) -> None:
    """``events`` (in time order) are one valid journey: an impression first;
    at most one of each step; a view ends in a completion (past 20 s) or a
    skip, with an engagement only past 10 s; a click costs 0.50 to 2.50; a
    conversion, worth 10 to 60, only follows a completion."""
    types = [name.removeprefix("EVENT_TYPE_").lower() for name, *_ in events]
    times = [at for _, at, *_ in events]
    assert types[0] == "impression", types
    assert times == sorted(times), "the steps happen in order"
    assert max(Counter(types).values()) == 1, f"a step happens at most once: {types}"
    at = dict(zip(types, times, strict=True))
    detail = {
        t: (duration, value) for t, (_, _, duration, value) in zip(types, events, strict=True)
    }
    if "view" in at:
        watched = detail["view"][0]
        assert watched is not None and 5 <= watched <= 35, watched
        ends = [t for t in ("completion", "skip") if t in at]
        assert ends == (["completion"] if watched > 20 else ["skip"]), (watched, types)
        assert ("engagement" in at) == (watched > 10), (watched, types)
        if "engagement" in at:
            assert at["view"] <= at["engagement"] <= at[ends[0]]
        assert abs(at[ends[0]] - at["view"] - watched) < 0.01
    else:
        assert not {"engagement", "completion", "skip"} & set(types), types
    if "click" in at:
        cost = detail["click"][1]
        assert cost is not None and 500_000 <= cost <= 2_500_000, cost
    if "conversion" in at:
        assert "completion" in at and at["conversion"] > at["completion"], types
        worth = detail["conversion"][1]
        assert worth is not None and 9_990_000 <= worth <= 60_000_000, worth
