"""The isolation matrix over gRPC: every RPC of every service (taken from the
service descriptors, so a new RPC without its cases fails here), called with
each role's key of organization A,

- on B's data (ingest, read, subscribe, simulate, admin): refused;
- on A's own data: allowed exactly for the roles that may (an ingest key
  cannot read, a read key cannot ingest or simulate, only admin creates
  campaigns), refused with PERMISSION_DENIED for the others.

How B's data is refused: PERMISSION_DENIED where the request names B's
organization, B's campaign (campaign ids are unique across organizations and
creating a taken one says so, so they are no secret) or B's subscription
(its id is a capability: whoever holds it may read it without a key, and a
key sent along must be of its organization). NOT_FOUND for B's simulation,
whose id is no capability: for A it does not exist. Subscription statistics
name no organization: A's count only A's.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from roles import ADMIN, INGEST, READ, allowed
from support import ServerThread, Tenant, event, make_tenant

from clients import pb
from server.domain import Role

Action = pb.SimulationAction


@dataclass
class Clients:
    ingest: pb.IngestServiceStub
    metrics: pb.MetricsServiceStub
    campaigns: pb.CampaignServiceStub
    subscriptions: pb.SubscriptionServiceStub
    simulation: pb.SimulationServiceStub


@dataclass
class World:
    """Organizations A and B, each with a subscription and an ended simulation."""

    clients: Clients
    a: Tenant
    b: Tenant
    subscription: dict[str, str]  # organization id -> its subscription's id
    simulation: dict[str, str]  # organization id -> its (ended) simulation's id

    def new_subscription(self, tenant: Tenant) -> str:
        reply = self.clients.subscriptions.CreateSubscription(
            pb.CreateSubscriptionRequest(organization_id=tenant.organization_id),
            metadata=tenant.auth(Role.READ),
        )
        return reply.subscription.id


Metadata = tuple[tuple[str, str], ...]
# A call by ``me`` on ``target``'s data (``target`` is ``me`` for the role checks).
Call = Callable[[World, Tenant, Tenant, Metadata], Any]


def _first(stream: Any) -> Any:
    """The first message of a server stream, then the stream cancelled."""
    try:
        return next(iter(stream))
    finally:
        stream.cancel()


def _calls() -> dict[str, Call]:
    """Each RPC's call, by "Service/Method" (with a variant after a colon)."""

    def ingest(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        e = event("click", t.campaign_ids[0], t.organization_id)
        return w.clients.ingest.IngestEvents(pb.IngestEventsRequest(events=[e]), metadata=md)

    def ingest_campaign(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.IngestCampaignEventRequest(
            campaign_id=t.campaign_ids[0], event=pb.Event(event_type=pb.EventType.EVENT_TYPE_VIEW)
        )
        return w.clients.ingest.IngestCampaignEvent(request, metadata=md)

    def stream_events(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        batch = pb.StreamEventsRequest(
            events=[event("impression", t.campaign_ids[0], t.organization_id)]
        )
        return w.clients.ingest.StreamEvents(iter([batch]), metadata=md)

    def campaign_metrics(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetCampaignMetricsRequest(campaign_id=t.campaign_ids[0])
        return w.clients.metrics.GetCampaignMetrics(request, metadata=md)

    def status(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetPipelineStatusRequest(organization_id=t.organization_id)
        return w.clients.metrics.GetPipelineStatus(request, metadata=md)

    def status_of_campaign(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetPipelineStatusRequest(campaign_id=t.campaign_ids[0])
        return w.clients.metrics.GetPipelineStatus(request, metadata=md)

    def dashboard(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetDashboardRequest(organization_id=t.organization_id)
        return w.clients.metrics.GetDashboard(request, metadata=md)

    def trends(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetTrendsRequest(organization_id=t.organization_id, time_window=600)
        return w.clients.metrics.GetTrends(request, metadata=md)

    def trends_of_campaign(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetTrendsRequest(campaign_id=t.campaign_ids[0], time_window=600)
        return w.clients.metrics.GetTrends(request, metadata=md)

    def create_campaign(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        campaign = pb.Campaign(
            campaign_id=f"iso_{uuid.uuid4().hex[:12]}", organization_id=t.organization_id
        )
        request = pb.CreateCampaignRequest(campaign=campaign)
        return w.clients.campaigns.CreateCampaign(request, metadata=md)

    def list_campaigns(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.ListCampaignsRequest(organization_id=t.organization_id)
        return w.clients.campaigns.ListCampaigns(request, metadata=md)

    def subscribe(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.CreateSubscriptionRequest(organization_id=t.organization_id)
        return w.clients.subscriptions.CreateSubscription(request, metadata=md)

    def subscribe_to_campaign(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.CreateSubscriptionRequest(
            organization_id=me.organization_id, campaign_ids=[t.campaign_ids[0]]
        )
        return w.clients.subscriptions.CreateSubscription(request, metadata=md)

    def unsubscribe(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        subscription_id = w.new_subscription(t) if t is me else w.subscription[t.organization_id]
        request = pb.DeleteSubscriptionRequest(subscription_id=subscription_id)
        return w.clients.subscriptions.DeleteSubscription(request, metadata=md)

    def updates(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetUpdatesRequest(subscription_id=w.subscription[t.organization_id])
        return w.clients.subscriptions.GetUpdates(request, metadata=md)

    def subscription(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetSubscriptionRequest(subscription_id=w.subscription[t.organization_id])
        return w.clients.subscriptions.GetSubscription(request, metadata=md)

    def stream_updates(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.StreamUpdatesRequest(
            subscription_id=w.subscription[t.organization_id], resume=True
        )
        return _first(w.clients.subscriptions.StreamUpdates(request, metadata=md, timeout=10))

    def stream_updates_inline(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.StreamUpdatesRequest(organization_id=t.organization_id, resume=True)
        return _first(w.clients.subscriptions.StreamUpdates(request, metadata=md, timeout=10))

    def stats(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetSubscriptionStatsRequest()
        return w.clients.subscriptions.GetSubscriptionStats(request, metadata=md)

    def burst(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.SimulateRequest(
            action=Action.SIMULATION_ACTION_BURST,
            organization_id=t.organization_id,
            campaign_ids=t.campaign_ids[:1],
            options=pb.SimulationOptions(count=1),
        )
        return w.clients.simulation.Simulate(request, metadata=md, timeout=30)

    def burst_on_campaign(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.SimulateRequest(
            action=Action.SIMULATION_ACTION_BURST,
            organization_id=me.organization_id,
            campaign_ids=t.campaign_ids[:1],
            options=pb.SimulationOptions(count=1),
        )
        return w.clients.simulation.Simulate(request, metadata=md, timeout=30)

    def stop_simulation(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.SimulateRequest(
            action=Action.SIMULATION_ACTION_STOP,
            simulation_id=w.simulation[t.organization_id],
        )
        return w.clients.simulation.Simulate(request, metadata=md)

    def simulation_status(w: World, me: Tenant, t: Tenant, md: Metadata) -> Any:
        request = pb.GetSimulationStatusRequest(organization_id=t.organization_id)
        return w.clients.simulation.GetSimulationStatus(request, metadata=md)

    return {
        "IngestService/IngestEvents": ingest,
        "IngestService/IngestCampaignEvent": ingest_campaign,
        "IngestService/StreamEvents": stream_events,
        "MetricsService/GetCampaignMetrics": campaign_metrics,
        "MetricsService/GetPipelineStatus": status,
        "MetricsService/GetPipelineStatus:campaign": status_of_campaign,
        "MetricsService/GetDashboard": dashboard,
        "MetricsService/GetTrends": trends,
        "MetricsService/GetTrends:campaign": trends_of_campaign,
        "CampaignService/CreateCampaign": create_campaign,
        "CampaignService/ListCampaigns": list_campaigns,
        "SubscriptionService/CreateSubscription": subscribe,
        "SubscriptionService/CreateSubscription:campaign": subscribe_to_campaign,
        "SubscriptionService/DeleteSubscription": unsubscribe,
        "SubscriptionService/GetUpdates": updates,
        "SubscriptionService/GetSubscription": subscription,
        "SubscriptionService/StreamUpdates": stream_updates,
        "SubscriptionService/StreamUpdates:inline": stream_updates_inline,
        "SubscriptionService/GetSubscriptionStats": stats,
        "SimulationService/Simulate": burst,
        "SimulationService/Simulate:campaign": burst_on_campaign,
        "SimulationService/Simulate:stop": stop_simulation,
        "SimulationService/GetSimulationStatus": simulation_status,
    }


CALLS = _calls()

# How B's data is refused, where not PERMISSION_DENIED.
REFUSED_OTHERWISE: dict[str, str] = {
    "SimulationService/Simulate:stop": "not_found",
    "SubscriptionService/GetSubscriptionStats": "hidden",
}


def rpc_of(name: str) -> str:
    return name.partition(":")[0]


def every_rpc() -> set[str]:
    pool = descriptor_pool.Default()
    return {
        f"{method.containing_service.name}/{method.name}"
        for name in pb.SERVICE_NAMES
        for method in pool.FindServiceByName(name).methods
    }


def test_every_rpc_has_its_isolation_cases() -> None:
    assert {rpc_of(name) for name in CALLS} == every_rpc()


@pytest.fixture(scope="module")
def world(analytics_server: ServerThread, channel: grpc.Channel) -> Iterator[World]:
    clients = Clients(
        pb.IngestServiceStub(channel),
        pb.MetricsServiceStub(channel),
        pb.CampaignServiceStub(channel),
        pb.SubscriptionServiceStub(channel),
        pb.SimulationServiceStub(channel),
    )
    a, b = make_tenant(analytics_server), make_tenant(analytics_server)
    w = World(clients, a, b, {}, {})
    for tenant in (a, b):
        # Events in the window, so that a resumed stream answers at once.
        clients.ingest.IngestEvents(
            pb.IngestEventsRequest(
                events=[event("impression", tenant.campaign_ids[0], tenant.organization_id)]
            ),
            metadata=tenant.auth(INGEST),
        )
        w.subscription[tenant.organization_id] = w.new_subscription(tenant)
        started = clients.simulation.Simulate(
            pb.SimulateRequest(
                action=Action.SIMULATION_ACTION_START,
                organization_id=tenant.organization_id,
                campaign_ids=tenant.campaign_ids[:1],
                options=pb.SimulationOptions(events_per_minute=1, duration=1),
            ),
            metadata=tenant.auth(INGEST),
        )
        w.simulation[tenant.organization_id] = started.simulation.id
        clients.simulation.Simulate(
            pb.SimulateRequest(
                action=Action.SIMULATION_ACTION_STOP, organization_id=tenant.organization_id
            ),
            metadata=tenant.auth(INGEST),
        )
    yield w


def _outcome(call: Callable[[], Any]) -> tuple[grpc.StatusCode, Any]:
    try:
        return grpc.StatusCode.OK, call()
    except grpc.RpcError as error:
        return error.code(), error


ROLES = [INGEST, READ, ADMIN]


@pytest.mark.parametrize("role", ROLES, ids=str)
@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_key_of_a_never_acts_on_b(name: str, role: Role, world: World) -> None:
    a, b = world.a, world.b
    code, answer = _outcome(lambda: CALLS[name](world, a, b, a.auth(role)))
    if role not in allowed(rpc_of(name)):
        assert code is grpc.StatusCode.PERMISSION_DENIED, answer
        assert "role" in answer.details()
        return
    expected = REFUSED_OTHERWISE.get(name, "denied")
    if expected == "denied":
        assert code is grpc.StatusCode.PERMISSION_DENIED, answer
        assert answer.details()
    elif expected == "not_found":
        assert code is grpc.StatusCode.NOT_FOUND, answer
    else:  # hidden: answered, with nothing of B
        assert code is grpc.StatusCode.OK, answer
        assert b.organization_id not in answer.subscriptions_by_organization
        assert set(answer.subscriptions_by_organization) == {a.organization_id}


@pytest.mark.parametrize("role", ROLES, ids=str)
@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_key_acts_on_its_own_organization_only_as_its_role_allows(
    name: str, role: Role, world: World
) -> None:
    a = world.a
    code, answer = _outcome(lambda: CALLS[name](world, a, a, a.auth(role)))
    if role in allowed(rpc_of(name)):
        assert code is grpc.StatusCode.OK, answer
    else:
        assert code is grpc.StatusCode.PERMISSION_DENIED, answer
        assert f"role ({role})" in answer.details()


def test_a_subscription_id_alone_reads_it_but_a_key_of_a_does_not(world: World) -> None:
    """The id is the capability (a browser's EventSource sends no key)."""
    theirs = world.subscription[world.b.organization_id]
    request = pb.GetUpdatesRequest(subscription_id=theirs)
    assert world.clients.subscriptions.GetUpdates(request).subscription_id == theirs
    code, _ = _outcome(
        lambda: world.clients.subscriptions.GetUpdates(request, metadata=world.a.auth(READ))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
