"""Every route of the gateway's API description, fuzzed by schemathesis
against the real gateway, server and PostgreSQL: valid and invalid requests
alike never get a 5xx, and every answer matches the description (status,
content type, headers, body schema).

The description comes from the app itself (offline). Cases carry a key of
the test's organization (mostly admin; some read, some ingest, some none)
and, half of the time, that organization's real ids in place of generated
ones, so that the fuzzing reaches past the ownership checks. Generation is
seeded and derandomized: CI sees the same cases every run.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from bad_input import Figures
from support import GatewayThread, ServerThread, Tenant, make_tenant

from gateway.app import create_app
from gateway.settings import GatewaySettings
from server.domain import Role

# Fuzzed examples per operation; the coverage phase adds its boundary cases.
EXAMPLES = 30
SEED = 20261129

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "max-stream-events": 1,
        "request-timeout": 20,
        "generation": {
            "max-examples": EXAMPLES,
            "deterministic": True,
            "with-security-parameters": False,
            "database": "none",
        },
        "phases": {"stateful": {"enabled": False}},
        "checks": {
            # The description is a guide to the JSON, not its full rules (a
            # trend's timeWindow / step at most 1,500 points, numbers sent as
            # numeric text, ...): a request it allows may still get 400.
            "positive_data_acceptance": {"enabled": False},
        },
        "operations": [
            # A batch is decoded event by event: an event that cannot be
            # decoded is rejected in a 200 answer, not the request.
            {
                "include-path": "/api/analytics/real-time",
                "include-method": "POST",
                "checks": {"negative_data_rejection": {"enabled": False}},
            },
        ],
    }
)
schema = schemathesis.openapi.from_dict(
    create_app(GatewaySettings(grpc_target="127.0.0.1:9")).openapi(), config=CONFIG
)


# The routes that take events, and the simulator's, whose events count too.
INGEST_ROUTES = {
    ("POST", "/api/analytics/real-time"),
    ("POST", "/api/campaigns/{campaign_id}/analytics/real-time"),
}
SIMULATE_ROUTE = ("POST", "/api/analytics/real-time/simulate")


@dataclass
class FuzzRun:
    tenant: Tenant
    subscription_id: str
    figures: Figures = field(default_factory=lambda: Figures("schemathesis (every route)"))
    by_status: dict[int, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def run(
    analytics_server: ServerThread, gateway: GatewayThread, database_url: str
) -> Iterator[FuzzRun]:
    tenant = make_tenant(analytics_server)
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        created = http.post(
            "/api/analytics/real-time/subscribe",
            json={"organizationId": tenant.organization_id},
            headers=tenant.headers(Role.READ),
        )
        assert created.status_code == 200, created.text
        fuzz = FuzzRun(tenant, created.json()["subscription"]["id"])
        yield fuzz
        # Simulations the fuzzing started: stop them, and count what they sent.
        stopped = http.post(
            "/api/analytics/real-time/simulate",
            json={"action": "stop", "organizationId": tenant.organization_id},
            headers=tenant.headers(Role.ADMIN),
        )
        assert stopped.status_code == 200, stopped.text
        status = http.get(
            "/api/analytics/real-time/simulate", headers=tenant.headers(Role.READ)
        ).json()["status"]
    figures = fuzz.figures
    simulated = sum(s["eventsSent"] for s in status["simulations"])
    figures.accepted += simulated
    figures.sent += simulated
    figures.count_stored(database_url, [tenant.organization_id])
    figures.report()
    print(f"schemathesis answers by status: {dict(sorted(fuzz.by_status.items()))}")
    assert figures.lost == 0 and figures.duplicated == 0


def _own_ids(case: schemathesis.Case, run: FuzzRun) -> None:
    """Puts the organization's real ids where the case names ids."""
    tenant = run.tenant
    if case.path_parameters and "campaign_id" in case.path_parameters:
        case.path_parameters["campaign_id"] = tenant.campaign_ids[0]
    query = case.query if isinstance(case.query, dict) else None
    if query is not None:
        for name, value in (
            ("organizationId", tenant.organization_id),
            ("campaignId", tenant.campaign_ids[1]),
            ("subscriptionId", run.subscription_id),
        ):
            if name in query:
                query[name] = value
    body = case.body if isinstance(case.body, dict) else None
    if body is None:
        return
    if "organizationId" in body:
        body["organizationId"] = tenant.organization_id
    if isinstance(body.get("campaignIds"), list):
        body["campaignIds"] = tenant.campaign_ids[:2]
    for event in _events_of(body):
        if isinstance(event, dict):
            event["campaignId"] = tenant.campaign_ids[0]
            event["organizationId"] = tenant.organization_id
    if isinstance(body.get("options"), dict):
        # Keep simulated traffic small: a short burst, a slow and short run.
        options = body["options"]
        options.update({"count": 20, "eventsPerMinute": 60, "duration": 1})


def _events_of(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("events"), list):
        return list(body["events"])
    if body.get("event") is not None:
        return [body["event"]]
    if "eventType" in body:
        return [body]
    return []


# The key of each case in turn (None: no key). Taken in turn rather than drawn,
# since schemathesis cannot draw extra arguments beside the schema's examples.
KEYS = (Role.ADMIN, Role.ADMIN, Role.READ, Role.ADMIN, Role.INGEST, Role.ADMIN, None)


@schema.parametrize()
@hypothesis.settings(
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_route_answers_within_its_description(
    case: schemathesis.Case, run: FuzzRun, gateway: GatewayThread
) -> None:
    figures = run.figures
    figures.trials += 1
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if figures.trials % 2 and not negative:
        _own_ids(case, run)
    role = KEYS[figures.trials % len(KEYS)]
    headers = {} if role is None else run.tenant.headers(role)
    response = case.call(base_url=gateway.url, headers=headers)
    route = (case.method.upper(), case.path)
    run.by_status[response.status_code] = run.by_status.get(response.status_code, 0) + 1
    case.validate_response(response, headers=headers)

    events = _events_of(case.body) if route in INGEST_ROUTES else []
    figures.sent += len(events)
    if route in INGEST_ROUTES and response.status_code == 200:
        body = response.json()
        if "accepted" in body:
            figures.add_reply(body["accepted"], body["duplicates"], len(body["rejected"]))
        else:  # the campaign route: one event
            figures.add_reply(0 if body["duplicate"] else 1, int(body["duplicate"]), 0)
    elif events:
        figures.refused += len(events)
    if route == SIMULATE_ROUTE and response.status_code == 200:
        body = response.json()
        figures.sent += body["accepted"]
        figures.accepted += body["accepted"]
