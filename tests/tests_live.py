"""Helpers shared by the live-update tests."""

import grpc
from support import Tenant

from clients import pb
from server.domain import Role


def ingest(target: str, tenant: Tenant, *events: pb.Event) -> None:
    """Ingests ``events`` over gRPC and checks that all were accepted."""
    with grpc.insecure_channel(target) as channel:
        reply = pb.IngestServiceStub(channel).IngestEvents(
            pb.IngestEventsRequest(events=events), metadata=tenant.auth(Role.INGEST)
        )
    assert reply.accepted == len(events)
