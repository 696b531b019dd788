"""The simulator over gRPC: bursts and journeys are committed through the
ordinary ingest path, continuous simulations run, stop and end, and bad
options are refused with a reason."""

import math
import time
from collections import Counter
from collections.abc import Callable

import grpc
import psycopg
import pytest
from funnels import assert_valid_funnel
from support import ServerThread, Stubs, Tenant, make_tenant

from clients import pb
from server.domain import Role
from server.store.database import libpq_url

Action = pb.SimulationAction
State = pb.SimulationState


def simulate(
    stubs: Stubs,
    tenant: Tenant,
    action: int,
    campaign_ids: list[str] | None = None,
    role: Role = Role.INGEST,
    **options: float,
) -> pb.SimulateResponse:
    return stubs.simulation.Simulate(
        pb.SimulateRequest(
            action=action,  # type: ignore[arg-type]
            organization_id=tenant.organization_id,
            campaign_ids=tenant.campaign_ids if campaign_ids is None else campaign_ids,
            options=pb.SimulationOptions(**options),
        ),
        metadata=tenant.auth(role),
        timeout=60,
    )


def status(stubs: Stubs, tenant: Tenant) -> pb.SimulationStatus:
    reply = stubs.simulation.GetSimulationStatus(
        pb.GetSimulationStatusRequest(), metadata=tenant.auth(Role.READ)
    )
    return reply.status


def totals(stubs: Stubs, tenant: Tenant) -> Counter[str]:
    """The tenant's event counts by type, summed over its campaigns (last hour)."""
    counted: Counter[str] = Counter()
    for campaign_id in tenant.campaign_ids:
        m = stubs.metrics.GetCampaignMetrics(
            pb.GetCampaignMetricsRequest(campaign_id=campaign_id, time_window=3600),
            metadata=tenant.auth(Role.READ),
        ).metrics
        for name in ("impressions", "clicks", "conversions", "engagements", "completions", "skips"):
            counted[name] += getattr(m, name)
        counted["views"] += m.ad_playbacks
    return counted


def wait_for(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.05)


def within(observed: int, share: float, total: int) -> bool:
    """Whether ``observed`` is within five standard deviations of ``share`` of ``total``."""
    expected = share * total
    spread = 5 * math.sqrt(total * share * (1 - share)) + 1
    return abs(observed - expected) <= spread


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        pytest.param({}, {"impressions": 0.7, "clicks": 0.25, "conversions": 0.05}, id="seed"),
        pytest.param(
            {"impression_rate": 0.5, "click_rate": 0.1, "conversion_rate": 0.02},
            {
                "impressions": 0.5,
                "clicks": 0.1,
                "conversions": 0.02,
                **dict.fromkeys(["views", "engagements", "completions", "skips"], 0.38 / 4),
            },
            id="custom",
        ),
    ],
)
def test_a_large_burst_holds_the_configured_rates(
    analytics_server: ServerThread,
    stubs: Stubs,
    rates: dict[str, float],
    expected: dict[str, float],
) -> None:
    tenant = make_tenant(analytics_server, campaigns=2)
    count = 20_000
    reply = simulate(stubs, tenant, Action.SIMULATION_ACTION_BURST, count=count, seed=7, **rates)
    assert reply.success and reply.message == f"Generated {count} events"
    assert (reply.count, reply.accepted) == (count, count)
    assert list(reply.campaign_ids) == tenant.campaign_ids

    counted = totals(stubs, tenant)
    assert sum(counted.values()) == count  # acknowledged means committed
    for name in ("impressions", "clicks", "conversions", "views", "engagements", "completions"):
        share = expected.get(name, 0.0)
        assert within(counted[name], share, count), (name, counted[name], share * count)


def test_journeys_form_a_valid_funnel_per_session(
    analytics_server: ServerThread, stubs: Stubs, tenant: Tenant
) -> None:
    sessions: list[str] = []
    for seed in range(15):
        reply = simulate(stubs, tenant, Action.SIMULATION_ACTION_JOURNEY, seed=seed)
        assert reply.message == f"Simulated user journeys for {len(tenant.campaign_ids)} campaigns"
        assert reply.accepted == reply.count >= len(tenant.campaign_ids)
        assert len(reply.session_ids) == len(tenant.campaign_ids)
        sessions += reply.session_ids

    with psycopg.connect(libpq_url(analytics_server.database_url)) as conn:
        rows = conn.execute(
            "SELECT session_id, campaign_id, event_type, occurred_at, duration, value_micros,"
            " metadata FROM events WHERE organization_id = %s ORDER BY occurred_at, event_type",
            (tenant.organization_id,),
        ).fetchall()
    by_session: dict[str, list[tuple]] = {}
    for row in rows:
        by_session.setdefault(row[0], []).append(row)
    assert sorted(by_session) == sorted(sessions)
    for session_id in sessions:
        events = by_session[session_id]
        assert len({e[1] for e in events}) == 1, "a journey stays in one campaign"
        assert_valid_funnel(
            [(pb.EventType.Name(e[2]), e[3].timestamp(), e[4], e[5]) for e in events]
        )
        metadata = events[0][6]
        assert metadata["sessionId"] == session_id
        assert metadata["deviceType"] in {"desktop", "mobile", "tablet"}
        assert metadata["userAgent"] and metadata["location"]
        # The address is kept only truncated.
        assert metadata["ipAddress"].endswith((".0", "::"))


def test_continuous_simulations_run_side_by_side_and_stop_by_id(
    analytics_server: ServerThread, stubs: Stubs, tenant: Tenant
) -> None:
    first = simulate(
        stubs,
        tenant,
        Action.SIMULATION_ACTION_START,
        tenant.campaign_ids[:1],
        events_per_minute=3000,
        duration=10,
    )
    second = simulate(
        stubs,
        tenant,
        Action.SIMULATION_ACTION_START,
        tenant.campaign_ids[1:],
        events_per_minute=3000,
        duration=10,
    )
    assert first.message == "Analytics simulation started"
    assert first.simulation.state == State.SIMULATION_STATE_RUNNING
    assert first.options.events_per_minute == 3000 and first.options.click_rate == 0.25
    assert first.simulation.id != second.simulation.id

    def both_sending() -> bool:
        listed = {s.id: s for s in status(stubs, tenant).simulations}
        return all(listed[r.simulation.id].events_sent > 0 for r in (first, second))

    wait_for(both_sending)
    now = status(stubs, tenant)
    assert now.is_running and len(now.simulations) == 2

    stop = stubs.simulation.Simulate(
        pb.SimulateRequest(action=Action.SIMULATION_ACTION_STOP, simulation_id=first.simulation.id),
        metadata=tenant.auth(Role.INGEST),
    )
    assert stop.message == "Analytics simulation stopped"
    assert [s.id for s in stop.stopped] == [first.simulation.id]
    assert stop.stopped[0].state == State.SIMULATION_STATE_STOPPED
    listed = {s.id: s for s in status(stubs, tenant).simulations}
    assert listed[second.simulation.id].state == State.SIMULATION_STATE_RUNNING

    stop_all = simulate(stubs, tenant, Action.SIMULATION_ACTION_STOP, [])
    assert [s.id for s in stop_all.stopped] == [second.simulation.id]
    after = status(stubs, tenant)
    assert not after.is_running
    assert {s.state for s in after.simulations} == {State.SIMULATION_STATE_STOPPED}
    # Everything the simulations counted as sent is in the metrics, exactly.
    assert sum(totals(stubs, tenant).values()) == after.events_sent > 0
    nothing = simulate(stubs, tenant, Action.SIMULATION_ACTION_STOP, [])
    assert nothing.success and not nothing.stopped


def test_duration_ends_a_run(analytics_server: ServerThread, stubs: Stubs, tenant: Tenant) -> None:
    # 16 events a second for 3.75 s (numbers exact in binary): 60 events.
    started = simulate(
        stubs, tenant, Action.SIMULATION_ACTION_START, events_per_minute=960, duration=0.0625
    )
    simulation_id = started.simulation.id

    def ended() -> bool:
        return not status(stubs, tenant).is_running

    wait_for(ended)
    (simulation,) = [s for s in status(stubs, tenant).simulations if s.id == simulation_id]
    assert simulation.state == State.SIMULATION_STATE_COMPLETED
    ran = simulation.end_time.ToNanoseconds() - simulation.start_time.ToNanoseconds()
    assert abs(ran - 3.75e9) < 1e6
    assert simulation.events_sent == 60
    assert sum(totals(stubs, tenant).values()) == simulation.events_sent


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"click_rate": -0.1}, "options.clickRate must be between 0 and 1"),
        ({"impression_rate": 1.5}, "options.impressionRate must be between 0 and 1"),
        ({"impression_rate": 0.8, "click_rate": 0.3}, "must be at most 1"),
        ({"conversion_rate": math.nan}, "options.conversionRate must be a finite number"),
        ({"events_per_minute": 0}, "options.eventsPerMinute must be above 0"),
        ({"events_per_minute": 1e9}, "at most 600,000"),
        ({"duration": -1}, "options.duration must be above 0"),
        ({"count": 0}, "options.count must be between 1 and 100,000"),
        ({"count": 100_001}, "options.count must be between 1 and 100,000"),
    ],
)
def test_invalid_options_are_refused_with_the_reason(
    stubs: Stubs, tenant: Tenant, options: dict[str, float], field: str
) -> None:
    for action in (Action.SIMULATION_ACTION_START, Action.SIMULATION_ACTION_BURST):
        error = refusal(lambda a=action: simulate(stubs, tenant, a, **options))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in error.details()
    assert not status(stubs, tenant).simulations


def test_campaigns_must_exist_and_be_the_organizations(
    stubs: Stubs, tenant: Tenant, other_tenant: Tenant
) -> None:
    missing = refusal(lambda: simulate(stubs, tenant, Action.SIMULATION_ACTION_START, ["nope"]))
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "campaign 'nope' does not exist" in missing.details()

    empty = refusal(lambda: simulate(stubs, tenant, Action.SIMULATION_ACTION_BURST, []))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.details() == "campaignIds array is required"

    foreign = other_tenant.campaign_ids[:1]
    for action in (
        Action.SIMULATION_ACTION_START,
        Action.SIMULATION_ACTION_BURST,
        Action.SIMULATION_ACTION_JOURNEY,
    ):
        error = refusal(lambda a=action: simulate(stubs, tenant, a, foreign))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "belongs to another organization" in error.details()

    # Another organization named outright, and a key without the ingest role.
    named = refusal(
        lambda: stubs.simulation.Simulate(
            pb.SimulateRequest(
                organization_id=other_tenant.organization_id,
                campaign_ids=other_tenant.campaign_ids,
            ),
            metadata=tenant.auth(Role.INGEST),
        )
    )
    assert named.code() == grpc.StatusCode.PERMISSION_DENIED
    read_key = refusal(
        lambda: simulate(stubs, tenant, Action.SIMULATION_ACTION_BURST, role=Role.READ)
    )
    assert read_key.code() == grpc.StatusCode.PERMISSION_DENIED
    assert sum(totals(stubs, other_tenant).values()) == 0


def test_unknown_actions_and_simulations(
    stubs: Stubs, tenant: Tenant, other_tenant: Tenant
) -> None:
    unknown = refusal(lambda: simulate(stubs, tenant, 9))
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.details() == "Invalid action. Use: start, stop, burst, or journey"

    theirs = simulate(
        stubs, other_tenant, Action.SIMULATION_ACTION_START, events_per_minute=60, duration=5
    )
    for simulation_id in ("sim_unknown", theirs.simulation.id):
        error = refusal(
            lambda s=simulation_id: stubs.simulation.Simulate(
                pb.SimulateRequest(action=Action.SIMULATION_ACTION_STOP, simulation_id=s),
                metadata=tenant.auth(Role.INGEST),
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
    # The other organization's simulation is neither listed nor stopped.
    assert not status(stubs, tenant).simulations
    assert status(stubs, other_tenant).is_running
    simulate(stubs, other_tenant, Action.SIMULATION_ACTION_STOP, [])


def test_an_organization_runs_a_bounded_number_of_simulations(stubs: Stubs, tenant: Tenant) -> None:
    for _ in range(10):
        simulate(stubs, tenant, Action.SIMULATION_ACTION_START, events_per_minute=6, duration=5)
    error = refusal(lambda: simulate(stubs, tenant, Action.SIMULATION_ACTION_START))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "stop one first" in error.details()
    assert len(simulate(stubs, tenant, Action.SIMULATION_ACTION_STOP, []).stopped) == 10


def test_the_server_stops_its_simulations_cleanly(database_url: str) -> None:
    server = ServerThread(database_url)
    tenant = make_tenant(server)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb.SimulationServiceStub(channel)
            stub.Simulate(
                pb.SimulateRequest(
                    campaign_ids=tenant.campaign_ids,
                    options=pb.SimulationOptions(events_per_minute=6000, duration=10),
                ),
                metadata=tenant.auth(Role.INGEST),
            )
            simulations = server.components.simulations
            wait_for(lambda: simulations.status(tenant.organization_id)[0].events_sent > 0)
    finally:
        assert server.stop()
    (simulation,) = simulations.status(tenant.organization_id)
    assert simulation.state.value == "stopped"
    with psycopg.connect(libpq_url(database_url)) as conn:
        (stored,) = conn.execute(
            "SELECT count(*) FROM events WHERE organization_id = %s", (tenant.organization_id,)
        ).fetchone()
    assert stored == simulation.events_sent
