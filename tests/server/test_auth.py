"""Keys: no key or an unknown one is 401 / UNAUTHENTICATED; another
organization's data is 403 / PERMISSION_DENIED, on every RPC and route; roles
limit what a key may do."""

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy
from support import ServerThread, Stubs, Tenant, event, make_tenant

from clients import pb
from server.auth import KeyStore
from server.domain import Role
from server.errors import Unauthenticated

Call = Callable[[Stubs, Tenant, Tenant, Any], Any]


def _rpcs() -> dict[str, Call]:
    """Each RPC, called by ``me`` on ``them``'s data, with ``metadata``."""
    return {
        "IngestEvents": lambda s, me, them, md: s.ingest.IngestEvents(
            pb.IngestEventsRequest(
                events=[event("click", them.campaign_ids[0], them.organization_id)]
            ),
            metadata=md,
        ),
        "IngestCampaignEvent": lambda s, me, them, md: s.ingest.IngestCampaignEvent(
            pb.IngestCampaignEventRequest(
                campaign_id=them.campaign_ids[0], event=pb.Event(event_type=2)
            ),
            metadata=md,
        ),
        "StreamEvents": lambda s, me, them, md: s.ingest.StreamEvents(
            iter(
                [
                    pb.StreamEventsRequest(
                        events=[event("click", them.campaign_ids[0], them.organization_id)]
                    )
                ]
            ),
            metadata=md,
        ),
        "GetCampaignMetrics": lambda s, me, them, md: s.metrics.GetCampaignMetrics(
            pb.GetCampaignMetricsRequest(campaign_id=them.campaign_ids[0]), metadata=md
        ),
        "GetPipelineStatus": lambda s, me, them, md: s.metrics.GetPipelineStatus(
            pb.GetPipelineStatusRequest(organization_id=them.organization_id), metadata=md
        ),
        "GetPipelineStatus(campaign)": lambda s, me, them, md: s.metrics.GetPipelineStatus(
            pb.GetPipelineStatusRequest(campaign_id=them.campaign_ids[0]), metadata=md
        ),
        "GetDashboard": lambda s, me, them, md: s.metrics.GetDashboard(
            pb.GetDashboardRequest(organization_id=them.organization_id), metadata=md
        ),
        "CreateCampaign": lambda s, me, them, md: s.campaigns.CreateCampaign(
            pb.CreateCampaignRequest(
                campaign=pb.Campaign(
                    campaign_id="x_" + me.organization_id, organization_id=them.organization_id
                )
            ),
            metadata=md,
        ),
        "ListCampaigns": lambda s, me, them, md: s.campaigns.ListCampaigns(
            pb.ListCampaignsRequest(organization_id=them.organization_id), metadata=md
        ),
    }


RPCS = _rpcs()


def _code(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code()


@pytest.mark.parametrize("name", RPCS)
def test_rpc_without_a_key_is_unauthenticated(
    name: str, stubs: Stubs, tenant: Tenant, other_tenant: Tenant
) -> None:
    call = RPCS[name]
    assert _code(lambda: call(stubs, tenant, tenant, ())) is grpc.StatusCode.UNAUTHENTICATED
    wrong = (("authorization", "Bearer ca_nope_nope"),)
    assert _code(lambda: call(stubs, tenant, tenant, wrong)) is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("name", RPCS)
def test_rpc_on_another_organization_is_denied(
    name: str, stubs: Stubs, tenant: Tenant, other_tenant: Tenant
) -> None:
    call = RPCS[name]
    code = _code(lambda: call(stubs, tenant, other_tenant, tenant.auth(Role.ADMIN)))
    assert code is grpc.StatusCode.PERMISSION_DENIED


def test_roles_limit_keys(stubs: Stubs, tenant: Tenant) -> None:
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    read = tenant.auth(Role.READ)
    ingest = tenant.auth(Role.INGEST)
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert (
        _code(
            lambda: stubs.ingest.IngestEvents(
                pb.IngestEventsRequest(events=[event("click", campaign, org)]), metadata=read
            )
        )
        is denied
    )
    assert (
        _code(
            lambda: stubs.metrics.GetCampaignMetrics(
                pb.GetCampaignMetricsRequest(campaign_id=campaign), metadata=ingest
            )
        )
        is denied
    )
    assert (
        _code(
            lambda: stubs.campaigns.CreateCampaign(
                pb.CreateCampaignRequest(campaign=pb.Campaign(campaign_id="new_" + org)),
                metadata=read,
            )
        )
        is denied
    )
    # And what each role may do, it can.
    stubs.ingest.IngestEvents(
        pb.IngestEventsRequest(events=[event("click", campaign, org)]), metadata=ingest
    )
    stubs.metrics.GetCampaignMetrics(
        pb.GetCampaignMetricsRequest(campaign_id=campaign), metadata=read
    )
    created = stubs.campaigns.CreateCampaign(
        pb.CreateCampaignRequest(campaign=pb.Campaign(campaign_id="new_" + org)),
        metadata=tenant.auth(Role.ADMIN),
    )
    assert created.campaign.organization_id == org


def _routes(me: Tenant, them: Tenant) -> list[tuple[str, str, dict[str, Any]]]:
    """Each REST route as (method, path, request options), acting on ``them``."""
    theirs = them.campaign_ids[0]
    click = {"eventType": "click", "campaignId": theirs, "organizationId": them.organization_id}
    return [
        ("POST", "/api/analytics/real-time", {"json": {"event": click}}),
        ("POST", "/api/analytics/real-time", {"json": {"events": [click]}}),
        ("POST", f"/api/campaigns/{theirs}/analytics/real-time", {"json": {"eventType": "click"}}),
        ("GET", f"/api/campaigns/{theirs}/analytics/real-time", {}),
        ("GET", "/api/analytics/real-time", {"params": {"organizationId": them.organization_id}}),
        ("GET", "/api/analytics/real-time", {"params": {"campaignId": theirs}}),
        (
            "GET",
            "/api/analytics/real-time/dashboard",
            {"params": {"organizationId": them.organization_id}},
        ),
        (
            "POST",
            "/api/campaigns",
            {
                "json": {
                    "campaignId": "y_" + me.organization_id,
                    "organizationId": them.organization_id,
                }
            },
        ),
        ("GET", "/api/campaigns", {"params": {"organizationId": them.organization_id}}),
    ]


def test_every_route_needs_a_key_and_refuses_other_organizations(
    http: httpx.Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    for method, path, options in _routes(tenant, other_tenant):
        where = f"{method} {path} {options}"
        missing = http.request(method, path, **options)
        assert missing.status_code == 401, where
        assert "error" in missing.json() and "timestamp" in missing.json(), where
        unknown = http.request(method, path, headers={"authorization": "Bearer ca_x_y"}, **options)
        assert unknown.status_code == 401, where
        denied = http.request(method, path, headers=tenant.headers(Role.ADMIN), **options)
        assert denied.status_code == 403, f"{where}: {denied.text}"
        assert denied.json()["error"], where


def test_calls_that_find_a_key_uncached_share_one_lookup(analytics_server: ServerThread) -> None:
    """When a key's cache time ends under load, the calls that arrive meanwhile
    wait for one database lookup instead of each making one; a caller that
    gives up does not end the lookup for the others."""
    tenant = make_tenant(analytics_server, campaigns=1)
    engine = analytics_server.components.engine
    queries: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "api_keys" in statement:
            queries.append(statement)

    async def authenticate_at_once() -> list[Any]:
        keys = KeyStore(engine)  # nothing cached
        authorization = f"Bearer {tenant.keys[Role.INGEST]}"
        impatient = asyncio.ensure_future(keys.authenticate(authorization))
        calls = [asyncio.ensure_future(keys.authenticate(authorization)) for _ in range(50)]
        await asyncio.sleep(0)
        impatient.cancel()
        principals = await asyncio.gather(*calls)
        unknown = [keys.authenticate("Bearer ca_000000000000_unknown") for _ in range(5)]
        refusals = await asyncio.gather(*unknown, return_exceptions=True)
        again = await keys.authenticate(authorization)  # cached by now
        return [*principals, again, *refusals]

    sqlalchemy.event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        results = analytics_server.call(authenticate_at_once())
    finally:
        sqlalchemy.event.remove(engine.sync_engine, "before_cursor_execute", count)
    principals, refusals = results[:51], results[51:]
    assert {(p.organization_id, p.role) for p in principals} == {
        (tenant.organization_id, Role.INGEST)
    }
    assert all(isinstance(r, Unauthenticated) for r in refusals), refusals
    assert len(queries) == 2, queries  # one for the key, one for the unknown key


def test_spellings_of_one_key_share_its_lookup_and_its_place_in_the_cache(
    analytics_server: ServerThread,
) -> None:
    """However a caller spells the scheme and the spaces around the key, the
    key is looked up once and cached once: sending it in ever new spellings
    makes no more lookups, and cannot crowd other keys out of the cache."""
    tenant = make_tenant(analytics_server, campaigns=1)
    engine = analytics_server.components.engine
    key = tenant.keys[Role.READ]
    spellings = [f"Bearer {key}", f"bearer {key}", f"BEARER  {key} ", f"  Bearer {key}"]
    spellings += [f"Bearer{' ' * n}{key}" for n in range(2, 300)]
    queries: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "api_keys" in statement:
            queries.append(statement)

    async def authenticate_each() -> tuple[list[Any], Any, Any]:
        keys = KeyStore(engine)  # nothing cached
        principals = await asyncio.gather(*(keys.authenticate(s) for s in spellings))
        principals += [await keys.authenticate(s) for s in spellings]
        return principals, keys.cached(f"Bearer {key}"), keys.cached(f"bearer {key}")

    sqlalchemy.event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        principals, canonical, other = analytics_server.call(authenticate_each())
    finally:
        sqlalchemy.event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert {(p.organization_id, p.role) for p in principals} == {
        (tenant.organization_id, Role.READ)
    }
    assert len(queries) == 1, queries
    # Cached under the spelling clients send; another is read into it first.
    assert canonical is not None and other is None


def test_a_key_is_not_kept_in_memory_long_after_its_calls(
    analytics_server: ServerThread,
) -> None:
    """The cache holds keys as they are sent: one whose time is up is dropped
    at the next lookup of any key, not kept for the life of the process."""
    tenant = make_tenant(analytics_server, campaigns=1)
    engine = analytics_server.components.engine
    first, second = tenant.keys[Role.READ], tenant.keys[Role.INGEST]

    async def one_then_the_other() -> tuple[bool, bool]:
        keys = KeyStore(engine, cache_seconds=0.05)
        await keys.authenticate(f"Bearer {first}")
        held_at_first = any(first in value for value in keys._cache)
        await asyncio.sleep(0.1)
        await keys.authenticate(f"Bearer {second}")
        return held_at_first, any(first in value for value in keys._cache)

    held_at_first, held_later = analytics_server.call(one_then_the_other())
    assert held_at_first and not held_later
