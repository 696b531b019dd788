"""A key never appears in the logs: not when it is used, refused, mistyped or
revoked, over gRPC or REST, with every logger at debug."""

import logging
import time

import grpc
import httpx
import pytest
from support import ServerThread, event, make_tenant

from clients import pb
from server.auth import key_id_of, revoke_key
from server.domain import Role


def test_keys_never_appear_in_the_logs(
    analytics_server: ServerThread, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant, other = make_tenant(analytics_server), make_tenant(analytics_server)
    org, campaign = tenant.organization_id, tenant.campaign_ids[0]
    mistyped = tenant.keys[Role.ADMIN][:-1] + "x"
    path = f"/api/campaigns/{campaign}/analytics/real-time"

    with grpc.insecure_channel(analytics_server.target) as channel:
        ingest = pb.IngestServiceStub(channel)
        ingest.IngestEvents(
            pb.IngestEventsRequest(events=[event("click", campaign, org)]),
            metadata=tenant.auth(Role.INGEST),
        )
        for metadata in ((("authorization", f"Bearer {mistyped}"),), other.auth(Role.ADMIN)):
            with pytest.raises(grpc.RpcError):
                ingest.IngestEvents(
                    pb.IngestEventsRequest(events=[event("click", campaign, org)]),
                    metadata=metadata,
                )
    assert http.get(path, headers=tenant.headers(Role.READ)).status_code == 200
    assert http.get(path, headers={"authorization": f"Bearer {mistyped}"}).status_code == 401
    assert http.get(path, headers=other.headers(Role.READ)).status_code == 403
    subscription = http.post(
        "/api/analytics/real-time/subscribe",
        json={"organizationId": org},
        headers=tenant.headers(Role.READ),
    ).json()["subscription"]["id"]
    assert http.get(
        "/api/analytics/real-time/updates", params={"subscriptionId": subscription}
    ).is_success

    analytics_server.call(
        revoke_key(analytics_server.components.engine, key_id_of(tenant.keys[Role.READ]))
    )
    deadline = time.monotonic() + 10
    while http.get(path, headers=tenant.headers(Role.READ)).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key was still accepted"
        time.sleep(0.02)

    # The logs were captured (the revocation is logged, by key id), and hold no key.
    assert f"API key {key_id_of(tenant.keys[Role.READ])} revoked" in caplog.text
    for key in [*tenant.keys.values(), *other.keys.values(), mistyped]:
        assert key not in caplog.text
        assert key.split("_", 2)[2] not in caplog.text
