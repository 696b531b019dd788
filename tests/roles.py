"""Which key roles may make each call, on their own organization's data: an
ingest key writes events and runs simulations, a read key reads and
subscribes, an admin key does all and alone creates campaigns. The isolation
tests hold the server (gRPC) and the gateway (REST) to it."""

from server.domain import Role

INGEST, READ, ADMIN = Role.INGEST, Role.READ, Role.ADMIN

# By "Service/Method", or by service for all its methods.
ALLOWED: dict[str, frozenset[Role]] = {
    "IngestService": frozenset({INGEST, ADMIN}),
    "MetricsService": frozenset({READ, ADMIN}),
    "CampaignService/CreateCampaign": frozenset({ADMIN}),
    "CampaignService/ListCampaigns": frozenset({READ, ADMIN}),
    "SubscriptionService": frozenset({READ, ADMIN}),
    "SimulationService/Simulate": frozenset({INGEST, ADMIN}),
    # The simulator's own status, not metrics: the ingest key that runs a
    # simulation may watch it.
    "SimulationService/GetSimulationStatus": frozenset({READ, INGEST, ADMIN}),
}


def allowed(rpc: str) -> frozenset[Role]:
    """The roles that may call ``rpc`` ("Service/Method")."""
    return ALLOWED.get(rpc) or ALLOWED[rpc.partition("/")[0]]
