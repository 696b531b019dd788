"""The command line's administration commands, run as a person would."""

import subprocess
import sys

import grpc
from support import ServerThread

from clients import pb


def campaign_analytics(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "--log-level",
            "warning",
            *args,
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_admin_commands_create_what_the_service_uses(
    analytics_server: ServerThread, database_url: str
) -> None:
    created = campaign_analytics(database_url, "create-organization", "org_cli", "--name", "CLI")
    assert created.returncode == 0, created.stderr
    assert "Created organization org_cli" in created.stdout

    again = campaign_analytics(database_url, "create-organization", "org_cli")
    assert again.returncode != 0 and "already exists" in again.stderr

    campaign = campaign_analytics(database_url, "create-campaign", "org_cli", "camp_cli")
    assert campaign.returncode == 0, campaign.stderr
    missing = campaign_analytics(database_url, "create-key", "org_nowhere", "--role", "read")
    assert missing.returncode != 0 and "does not exist" in missing.stderr

    key_run = campaign_analytics(database_url, "create-key", "org_cli", "--role", "read")
    assert key_run.returncode == 0, key_run.stderr
    key = key_run.stdout.split()[0]
    assert key.startswith("ca_")

    with grpc.insecure_channel(analytics_server.target) as channel:
        reply = pb.CampaignServiceStub(channel).ListCampaigns(
            pb.ListCampaignsRequest(), metadata=(("authorization", f"Bearer {key}"),)
        )
    assert [c.campaign_id for c in reply.campaigns] == ["camp_cli"]


def test_reflection_lists_the_services(analytics_server: ServerThread) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(analytics_server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for s in next(replies).list_services_response.service}
    assert set(pb.SERVICE_NAMES) <= names
    assert "grpc.health.v1.Health" in names
