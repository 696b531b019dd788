"""Simulated traffic: start, stop, bursts and journeys, and their status
(SimulationService)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from clients.pb import (
    GetSimulationStatusRequest,
    SimulateRequest,
    SimulationAction,
    SimulationOptions,
)
from gateway import codec, models
from gateway.deps import Call, RawBody, SimulationStub
from gateway.errors import bad_request
from gateway.responses import JsonResponse, respond

router = APIRouter(tags=["simulation"])

INVALID_ACTION = "Invalid action. Use: start, stop, burst, or journey"
CAMPAIGN_IDS_REQUIRED = "campaignIds array is required"
ORGANIZATION_ID_REQUIRED = "organizationId is required"

_ACTIONS: dict[str, int] = {}
for _value in SimulationAction.DESCRIPTOR.values:
    if _value.number:
        _ACTIONS[str(codec.enum_word(SimulationAction.DESCRIPTOR, _value.number))] = _value.number
        _ACTIONS[_value.name] = _value.number

# JSON name -> (field, whole number): the knobs of ``options``.
_OPTIONS = {
    "eventsPerMinute": ("events_per_minute", False),
    "duration": ("duration", False),
    "impressionRate": ("impression_rate", False),
    "clickRate": ("click_rate", False),
    "conversionRate": ("conversion_rate", False),
    "count": ("count", True),
    "seed": ("seed", True),
}
_JSON_NAMES = {field: json_name for json_name, (field, _) in _OPTIONS.items()}
_INT_RANGE = {"count": 2**31 - 1, "seed": 2**63 - 1}


@router.post(
    "/api/analytics/real-time/simulate",
    summary="Control simulated traffic: start, stop, burst or journey",
    response_model=models.SimulateResponse,
    responses=models.error_responses(404, 429),
    openapi_extra=models.request_body(
        models.SimulateRequest,
        description="`action` (default start), the organization, its campaigns (required but "
        "for stop) and `options`. Simulated events go through the same validation and writer "
        "as real ones and count in the metrics. A burst or a journey answers once its events "
        "are committed.",
    ),
)
async def simulate(body: RawBody, stub: SimulationStub, call: Call) -> JsonResponse:
    fields = codec.parse_body(body) if body.strip() else {}
    if not isinstance(fields, dict):
        raise bad_request("The body must be a JSON object")
    action_name = fields.get("action", "start")
    action = _ACTIONS.get(action_name) if isinstance(action_name, str) else None
    if action is None:
        raise bad_request(INVALID_ACTION, "action")
    campaign_ids = fields.get("campaignIds", fields.get("campaign_ids"))
    if campaign_ids is not None and (
        not isinstance(campaign_ids, list) or not all(isinstance(c, str) for c in campaign_ids)
    ):
        raise bad_request("campaignIds must be an array of campaign ids", "campaignIds")
    if not campaign_ids and action != SimulationAction.SIMULATION_ACTION_STOP:
        raise bad_request(CAMPAIGN_IDS_REQUIRED, "campaignIds")
    organization_id = fields.get("organizationId", fields.get("organization_id"))
    if not organization_id or not isinstance(organization_id, str):
        raise bad_request(ORGANIZATION_ID_REQUIRED, "organizationId")
    # null is "not given"; 0 or false must not pass for it (stop would stop them all).
    simulation_id = fields.get("simulationId", fields.get("simulation_id"))
    if simulation_id is None:
        simulation_id = ""
    if not isinstance(simulation_id, str):
        raise bad_request("simulationId must be a string", "simulationId")
    request = SimulateRequest(
        action=action,  # type: ignore[arg-type]
        organization_id=organization_id,
        campaign_ids=campaign_ids or [],
        options=_options(fields.get("options")),
        simulation_id=simulation_id,
    )
    response = await stub.Simulate(request, metadata=call.metadata, timeout=call.timeout)
    return respond(codec.message_to_dict(response))


def _options(given: Any) -> SimulationOptions:
    """``options`` as the message; unset (or null) knobs take the server's defaults."""
    options = SimulationOptions()
    if given is None:
        return options
    if not isinstance(given, dict):
        raise bad_request("options must be an object", "options")
    for key, value in given.items():
        json_name = _JSON_NAMES.get(key, key)  # snake_case keys are accepted too
        if json_name not in _OPTIONS:
            known = ", ".join(_OPTIONS)
            raise bad_request(f"options.{key} is not an option; the options are {known}", "options")
        if value is None:
            continue
        field, whole = _OPTIONS[json_name]
        path = f"options.{json_name}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_request(f"{path} must be a number", path)
        if whole:
            if isinstance(value, float) and not value.is_integer():
                raise bad_request(f"{path} must be a whole number", path)
            value = int(value)
            if abs(value) > _INT_RANGE[field]:
                raise bad_request(f"{path} is out of range", path)
        setattr(options, field, value)
    return options


@router.get(
    "/api/analytics/real-time/simulate",
    summary="Simulation status: running simulations and the most recent ended ones",
    response_model=models.SimulationStatusResponse,
    responses=models.error_responses(),
)
async def simulation_status(
    stub: SimulationStub,
    call: Call,
    organization_id: Annotated[
        str | None,
        Query(alias="organizationId", description="Default: the key's organization."),
    ] = None,
) -> JsonResponse:
    response = await stub.GetSimulationStatus(
        GetSimulationStatusRequest(organization_id=organization_id or ""),
        metadata=call.metadata,
        timeout=call.timeout,
    )
    return respond(codec.message_to_dict(response))
