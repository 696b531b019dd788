"""SimulationService: start, stop and watch simulations; bursts and journeys."""

import grpc

from clients import pb
from server import codec
from server.auth import KeyStore
from server.domain import Role
from server.errors import InvalidArgument
from server.services.common import (
    Authenticated,
    commit_budget,
    reports_errors,
    same_organization,
)
from server.simulation import simulations
from server.simulation.simulations import Simulations

Action = pb.SimulationAction


class SimulationServicer(Authenticated, pb.SimulationServiceServicer):
    def __init__(self, keys: KeyStore, simulations: Simulations) -> None:
        super().__init__(keys)
        self._simulations = simulations

    @reports_errors
    async def Simulate(
        self, request: pb.SimulateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimulateResponse:
        principal = await self.caller(context, Role.INGEST)
        organization_id = same_organization(principal, request.organization_id)
        action = request.action or Action.SIMULATION_ACTION_START
        if action not in Action.values():
            raise InvalidArgument(simulations.INVALID_ACTION)
        if action == Action.SIMULATION_ACTION_STOP:
            stopped = await self._simulations.stop(organization_id, request.simulation_id)
            return pb.SimulateResponse(
                success=True,
                message="Analytics simulation stopped"
                if stopped
                else "No simulation was running; nothing to stop",
                stopped=[codec.encode_simulation(s) for s in stopped],
                timestamp=codec.now_timestamp(),
            )

        options = simulations.options(codec.decode_simulation_options(request.options))
        campaign_ids = await self._simulations.campaigns(organization_id, request.campaign_ids)
        response = pb.SimulateResponse(
            success=True,
            campaign_ids=campaign_ids,
            options=codec.encode_simulation_options(options),
            timestamp=codec.now_timestamp(),
        )
        if action == Action.SIMULATION_ACTION_START:
            simulation = await self._simulations.start(principal, campaign_ids, options)
            response.message = "Analytics simulation started"
            response.simulation.CopyFrom(codec.encode_simulation(simulation))
            return response

        timeout = commit_budget(context)
        if action == Action.SIMULATION_ACTION_BURST:
            generated = await self._simulations.burst(principal, campaign_ids, options, timeout)
            response.message = f"Generated {generated.count} events"
        else:
            generated = await self._simulations.journeys(principal, campaign_ids, options, timeout)
            response.message = f"Simulated user journeys for {len(campaign_ids)} campaigns"
            response.session_ids.extend(generated.session_ids)
        response.count = generated.count
        response.accepted = generated.accepted
        response.timestamp.CopyFrom(codec.now_timestamp())
        return response

    @reports_errors
    async def GetSimulationStatus(
        self, request: pb.GetSimulationStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSimulationStatusResponse:
        principal = await self.caller(context, Role.READ, Role.INGEST)
        organization_id = same_organization(principal, request.organization_id)
        listed = self._simulations.status(organization_id)
        return pb.GetSimulationStatusResponse(
            success=True,
            status=pb.SimulationStatus(
                is_running=any(s.state is simulations.State.RUNNING for s in listed),
                simulations=[codec.encode_simulation(s) for s in listed],
                events_sent=sum(s.events_sent for s in listed),
            ),
            timestamp=codec.now_timestamp(),
        )
