"""Keys: no key or an unknown one is 401 / UNAUTHENTICATED; another
organization's data is 403 / PERMISSION_DENIED, on every RPC and route; roles
limit what a key may do."""

from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from support import Stubs, Tenant, event

from clients import pb
from server.domain import Role

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
