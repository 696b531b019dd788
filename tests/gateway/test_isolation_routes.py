"""The isolation matrix over REST, against the real gateway, server and
PostgreSQL: every route (taken from the protos' google.api.http annotations,
so a new route without its cases fails here), called with each role's key
of organization A,

- on B's data: 403, or 404 for B's simulation (see tests/server/test_isolation.py);
- on A's own data: 200 exactly for the roles that may (tests/roles.py), 403
  for the others.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool
from roles import ADMIN, INGEST, READ, allowed
from support import ServerThread, Tenant, make_tenant

from clients import pb
from server.domain import Role


@dataclass
class World:
    http: httpx.Client
    a: Tenant
    b: Tenant
    subscription: dict[str, str]
    simulation: dict[str, str]

    def new_subscription(self, tenant: Tenant) -> str:
        reply = self.http.post(
            "/api/analytics/real-time/subscribe",
            json={"organizationId": tenant.organization_id},
            headers=tenant.headers(READ),
        )
        assert reply.status_code == 200, reply.text
        subscription_id: str = reply.json()["subscription"]["id"]
        return subscription_id


# A request by ``me`` on ``target``'s data: (method, path, httpx options).
Request = tuple[str, str, dict[str, Any]]
Build = Callable[[World, Tenant, Tenant], Request]


def _event(t: Tenant) -> dict[str, str]:
    return {
        "eventType": "click",
        "campaignId": t.campaign_ids[0],
        "organizationId": t.organization_id,
    }


def _burst(organization: Tenant, campaigns: Tenant) -> dict[str, Any]:
    return {
        "action": "burst",
        "organizationId": organization.organization_id,
        "campaignIds": campaigns.campaign_ids[:1],
        "options": {"count": 1},
    }


# By "VERB path" (with a variant after " | "): how each route acts on a target's data.
ROUTES: dict[str, Build] = {
    "post /api/analytics/real-time": lambda w, me, t: (
        "POST",
        "/api/analytics/real-time",
        {"json": {"events": [_event(t)]}},
    ),
    "post /api/analytics/real-time | event": lambda w, me, t: (
        "POST",
        "/api/analytics/real-time",
        {"json": {"event": _event(t)}},
    ),
    "get /api/analytics/real-time": lambda w, me, t: (
        "GET",
        "/api/analytics/real-time",
        {"params": {"organizationId": t.organization_id}},
    ),
    "get /api/analytics/real-time | campaign": lambda w, me, t: (
        "GET",
        "/api/analytics/real-time",
        {"params": {"campaignId": t.campaign_ids[0]}},
    ),
    "post /api/campaigns/{campaign_id}/analytics/real-time": lambda w, me, t: (
        "POST",
        f"/api/campaigns/{t.campaign_ids[0]}/analytics/real-time",
        {"json": {"eventType": "view"}},
    ),
    "get /api/campaigns/{campaign_id}/analytics/real-time": lambda w, me, t: (
        "GET",
        f"/api/campaigns/{t.campaign_ids[0]}/analytics/real-time",
        {},
    ),
    "get /api/analytics/real-time/dashboard": lambda w, me, t: (
        "GET",
        "/api/analytics/real-time/dashboard",
        {"params": {"organizationId": t.organization_id}},
    ),
    "get /api/analytics/real-time/trends": lambda w, me, t: (
        "GET",
        "/api/analytics/real-time/trends",
        {"params": {"organizationId": t.organization_id, "timeWindow": 600}},
    ),
    "get /api/campaigns/{campaign_id}/analytics/trends": lambda w, me, t: (
        "GET",
        f"/api/campaigns/{t.campaign_ids[0]}/analytics/trends",
        {"params": {"timeWindow": 600}},
    ),
    "post /api/campaigns": lambda w, me, t: (
        "POST",
        "/api/campaigns",
        {
            "json": {
                "campaignId": f"iso_{uuid.uuid4().hex[:12]}",
                "organizationId": t.organization_id,
            }
        },
    ),
    "get /api/campaigns": lambda w, me, t: (
        "GET",
        "/api/campaigns",
        {"params": {"organizationId": t.organization_id}},
    ),
    "post /api/analytics/real-time/subscribe": lambda w, me, t: (
        "POST",
        "/api/analytics/real-time/subscribe",
        {"json": {"organizationId": t.organization_id}},
    ),
    "post /api/analytics/real-time/subscribe | campaign": lambda w, me, t: (
        "POST",
        "/api/analytics/real-time/subscribe",
        {"json": {"organizationId": me.organization_id, "campaignIds": t.campaign_ids[:1]}},
    ),
    "delete /api/analytics/real-time/subscribe": lambda w, me, t: (
        "DELETE",
        "/api/analytics/real-time/subscribe",
        {
            "params": {
                "subscriptionId": w.new_subscription(t)
                if t is me
                else w.subscription[t.organization_id]
            }
        },
    ),
    "get /api/analytics/real-time/updates": lambda w, me, t: (
        "GET",
        "/api/analytics/real-time/updates",
        {"params": {"subscriptionId": w.subscription[t.organization_id]}},
    ),
    "get /api/analytics/real-time/updates | sse": lambda w, me, t: (
        "GET",
        "/api/analytics/real-time/updates",
        {"params": {"subscriptionId": w.subscription[t.organization_id], "format": "sse"}},
    ),
    "post /api/analytics/real-time/simulate": lambda w, me, t: (
        "POST",
        "/api/analytics/real-time/simulate",
        {"json": _burst(t, t)},
    ),
    "post /api/analytics/real-time/simulate | campaign": lambda w, me, t: (
        "POST",
        "/api/analytics/real-time/simulate",
        {"json": _burst(me, t)},
    ),
    "post /api/analytics/real-time/simulate | stop": lambda w, me, t: (
        "POST",
        "/api/analytics/real-time/simulate",
        {
            "json": {
                "action": "stop",
                "organizationId": me.organization_id,
                "simulationId": w.simulation[t.organization_id],
            }
        },
    ),
    "get /api/analytics/real-time/simulate": lambda w, me, t: (
        "GET",
        "/api/analytics/real-time/simulate",
        {"params": {"organizationId": t.organization_id}},
    ),
}
NOT_FOUND_FOR_B = {"post /api/analytics/real-time/simulate | stop"}


def annotated_routes() -> dict[str, str]:
    """Each route the protos annotate ("verb path") -> its RPC ("Service/Method")."""
    routes = {}
    for name in pb.SERVICE_NAMES:
        service = descriptor_pool.Default().FindServiceByName(name)
        for method in service.methods:
            main = method.GetOptions().Extensions[annotations_pb2.http]
            for rule in (main, *main.additional_bindings):
                verb = rule.WhichOneof("pattern")
                if verb:
                    routes[f"{verb} {getattr(rule, verb)}"] = f"{service.name}/{method.name}"
    return routes


RPC_OF = annotated_routes()


def route_of(name: str) -> str:
    return name.partition(" | ")[0]


def test_every_route_has_its_isolation_cases() -> None:
    assert {route_of(name) for name in ROUTES} == set(RPC_OF)


@pytest.fixture(scope="module")
def world(analytics_server: ServerThread, http: httpx.Client) -> Iterator[World]:
    a, b = make_tenant(analytics_server), make_tenant(analytics_server)
    w = World(http, a, b, {}, {})
    for tenant in (a, b):
        w.subscription[tenant.organization_id] = w.new_subscription(tenant)
        started = http.post(
            "/api/analytics/real-time/simulate",
            json={
                "action": "start",
                "organizationId": tenant.organization_id,
                "campaignIds": tenant.campaign_ids[:1],
                "options": {"eventsPerMinute": 1, "duration": 1},
            },
            headers=tenant.headers(INGEST),
        )
        assert started.status_code == 200, started.text
        w.simulation[tenant.organization_id] = started.json()["simulation"]["id"]
        stopped = http.post(
            "/api/analytics/real-time/simulate",
            json={"action": "stop", "organizationId": tenant.organization_id},
            headers=tenant.headers(INGEST),
        )
        assert stopped.status_code == 200, stopped.text
    yield w


def _send(world: World, request: Request, role: Role, me: Tenant) -> tuple[int, str]:
    method, path, options = request
    headers = me.headers(role)
    # An SSE stream that starts is only looked at: its status, then closed.
    with world.http.stream(method, path, headers=headers, timeout=30, **options) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, ""
        response.read()
        return response.status_code, response.text


ROLES = [INGEST, READ, ADMIN]


@pytest.mark.parametrize("role", ROLES, ids=str)
@pytest.mark.parametrize("name", sorted(ROUTES))
def test_a_key_of_a_never_acts_on_b(name: str, role: Role, world: World) -> None:
    a, b = world.a, world.b
    status, text = _send(world, ROUTES[name](world, a, b), role, a)
    if role not in allowed(RPC_OF[route_of(name)]):
        assert status == 403, text
        assert "role" in text
    elif name in NOT_FOUND_FOR_B:
        assert status == 404, text
    else:
        assert status == 403, text


@pytest.mark.parametrize("role", ROLES, ids=str)
@pytest.mark.parametrize("name", sorted(ROUTES))
def test_a_key_acts_on_its_own_organization_only_as_its_role_allows(
    name: str, role: Role, world: World
) -> None:
    a = world.a
    status, text = _send(world, ROUTES[name](world, a, a), role, a)
    if role in allowed(RPC_OF[route_of(name)]):
        assert status == 200, text
    else:
        assert status == 403, text
        assert f"role ({role})" in text
