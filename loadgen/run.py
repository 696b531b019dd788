"""``campaign-analytics load``: one load run as a person starts it.

From the command's arguments it checks that the server (and for REST the
gateway) answers, creates fresh campaigns for the run (or takes the ones
named), reads their metrics, drives the load from worker processes while
showing its progress, reads the metrics again, and reports: throughput,
acknowledgement latency, rejections by code, and the exact-count check
(``loadgen.check``). The exit code is 0 when the check passes, 1 when it
fails, and 2 when the run could not be made (arguments, connection, key).
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import orjson
from rich.console import Console

from clients import AnalyticsClient, PermissionDeniedError, ServiceError, UnauthenticatedError
from loadgen import check, report
from loadgen.engine import LoadSpec
from loadgen.progress import ProgressView
from loadgen.workers import Load, Workers, share

MODES = ("stream", "unary", "unary-single", "rest")
KEY_VARIABLE = "CAMPAIGN_ANALYTICS_API_KEY"
DEFAULT_SECONDS = 10.0
EVENTS_BOUND_SECONDS = 3600.0  # the time bound when only --events is given
NO_EVENT_BOUND = 1 << 62
MAX_BATCH = 5_000  # the service's most events per request or message
CONNECT_TIMEOUT = 5.0
CALL_TIMEOUT = 10.0  # each call of the load and of the setup, seconds
START_DELAY = 0.3  # seconds from handing the specs out to the common start
DRAIN_TIMEOUT = 60.0  # beyond the time bound and a call's deadline, for the workers' answers
SERVE_HINT = "start it with `campaign-analytics serve`"


class UsageError(Exception):
    """The run cannot be made as asked; the message says what to do (exit 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Sends events to the server from worker processes, shows the progress, then reports "
        "throughput, acknowledgement latency, rejections, and whether the metrics read back "
        "count every acknowledged event."
    )
    parser.epilog = (
        "Exit code: 0 when the metrics count every acknowledged event, 1 when they do not "
        "(MISMATCH), 2 when the run could not be made (arguments, connection, key)."
    )
    parser.add_argument(
        "--target", default="127.0.0.1:50051", help="gRPC server (default 127.0.0.1:50051)"
    )
    parser.add_argument(
        "--gateway",
        default="127.0.0.1:8080",
        help="REST gateway host:port for --mode rest (default 127.0.0.1:8080)",
    )
    parser.add_argument("--key", default=None, help=f"an admin API key (default: ${KEY_VARIABLE})")
    parser.add_argument("--organization", default=None, help="organization id (default: the key's)")
    parser.add_argument(
        "--mode", choices=MODES, default="stream", help="how events are sent (default stream)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="streams, calls or connections at once (8)"
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="events per message, call or request (100)"
    )
    parser.add_argument(
        "--events", type=int, default=None, help="stop after this many events (default: no bound)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"stop after this many seconds (default {DEFAULT_SECONDS:g}; "
        f"{EVENTS_BOUND_SECONDS:g} when --events is given)",
    )
    parser.add_argument(
        "--campaigns",
        default=None,
        help="existing campaigns c1,c2,... (default: create fresh ones for the run)",
    )
    parser.add_argument(
        "--fresh-campaigns",
        type=int,
        default=10,
        help="campaigns to create for the run, named load-<run id>-<n> (10)",
    )
    parser.add_argument(
        "--stream-events",
        type=int,
        default=10_000,
        help="events per stream before a new stream starts (10000)",
    )
    parser.add_argument("--processes", type=int, default=1, help="worker processes (1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the event mix (0)")
    parser.add_argument(
        "--json", metavar="PATH", default=None, help="also write the report as JSON"
    )


def main(args: argparse.Namespace) -> int:
    """Runs the load; returns the exit code."""
    try:
        return _run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    _validate(args)
    api_key = args.key or os.environ.get(KEY_VARIABLE)
    if not api_key:
        raise UsageError(
            f"no API key: pass --key or set {KEY_VARIABLE} "
            "(create one with `campaign-analytics create-key ORGANIZATION --role admin`)"
        )
    _reachable(args)
    run_id = f"{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    processes = min(args.processes, args.concurrency)
    workers = Workers(processes)  # they start while the campaigns are prepared
    try:
        with AnalyticsClient(args.target, api_key, timeout=CALL_TIMEOUT) as client:
            try:
                organization_id, campaign_ids = _campaigns(client, args, run_id)
                reader = check.WindowReader(client)
                before = reader.read(campaign_ids)
                specs, settings = _specs(args, api_key, organization_id, campaign_ids, processes)
                settings.update(run_id=run_id, started_at=datetime.now(UTC).isoformat())
                load = _drive(workers, specs, args)
                after = reader.read(campaign_ids)
            except ServiceError as exc:
                raise UsageError(_explain(exc, args)) from None
            except RuntimeError as exc:  # a worker failed, or the metrics could not be read
                raise UsageError(f"the load could not run: {exc}") from None
    finally:
        workers.close()
    settings["stopped_by"] = _stopped_by(load, args, workers.interrupted)
    verdict = check.compare(load, before, after, fresh=not args.campaigns)
    document = report.document(settings, load, verdict)
    report.render(document, Console(highlight=False))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"Report written to {args.json}")
    return 0 if verdict.passed else 1


def _validate(args: argparse.Namespace) -> None:
    for name, least in (("concurrency", 1), ("processes", 1), ("fresh_campaigns", 1),
                        ("stream_events", 1), ("batch", 1)):  # fmt: skip
        if getattr(args, name) < least:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {least}")
    if args.batch > MAX_BATCH:
        raise UsageError(f"--batch must be at most {MAX_BATCH:,} (the service's limit)")
    if args.events is not None and args.events < 1:
        raise UsageError("--events must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be more than 0 seconds")
    if args.json and not Path(args.json).parent.is_dir():
        raise UsageError(f"--json {args.json}: its folder does not exist")


def _reachable(args: argparse.Namespace) -> None:
    """Raises UsageError unless the server (and for REST the gateway) answers."""
    states: queue.Queue[grpc.ChannelConnectivity] = queue.Queue()
    deadline = time.monotonic() + CONNECT_TIMEOUT
    with grpc.insecure_channel(args.target) as channel:
        channel.subscribe(states.put, try_to_connect=True)
        try:
            # A refused connection fails at once rather than at the timeout.
            while (state := states.get(timeout=max(0.0, deadline - time.monotonic()))) not in (
                grpc.ChannelConnectivity.READY,
                grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            ):
                pass
        except queue.Empty:
            state = grpc.ChannelConnectivity.TRANSIENT_FAILURE
        channel.unsubscribe(states.put)
    if state is not grpc.ChannelConnectivity.READY:
        raise UsageError(f"cannot reach the server at {args.target}: {SERVE_HINT}")
    if args.mode == "rest":
        host, _, port = args.gateway.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
                pass
        except (OSError, ValueError):
            raise UsageError(
                f"cannot reach the REST gateway at {args.gateway}: {SERVE_HINT} "
                "(it runs the gateway too) or `campaign-analytics gateway`"
            ) from None


def _campaigns(
    client: AnalyticsClient, args: argparse.Namespace, run_id: str
) -> tuple[str, list[str]]:
    """The organization and the campaigns of the run."""
    if args.campaigns:
        wanted = [c.strip() for c in args.campaigns.split(",") if c.strip()]
        known = {c.campaign_id: c for c in client.list_campaigns(args.organization or "").campaigns}
        missing = [c for c in wanted if c not in known]
        if missing:
            raise UsageError(
                f"no campaign {', '.join(missing)} in the key's organization; create it with "
                "`campaign-analytics create-campaign`, or leave out --campaigns to create "
                "fresh ones"
            )
        return known[wanted[0]].organization_id, wanted
    campaign_ids = [f"load-{run_id}-{n}" for n in range(1, args.fresh_campaigns + 1)]
    organization_id = args.organization or ""
    for campaign_id in campaign_ids:
        reply = client.create_campaign(
            campaign_id, name=f"load run {run_id}", organization_id=organization_id
        )
        organization_id = reply.campaign.organization_id
    return organization_id, campaign_ids


def _explain(exc: ServiceError, args: argparse.Namespace) -> str:
    if isinstance(exc, UnauthenticatedError):
        return f"the server at {args.target} does not know this API key ({exc.details})"
    if isinstance(exc, PermissionDeniedError):
        return (
            f"{exc.details}: the load needs an admin key, since it creates campaigns, sends "
            "events and reads metrics (`campaign-analytics create-key ORGANIZATION --role admin`)"
        )
    return f"a call to the server at {args.target} failed: {exc}"


def _specs(
    args: argparse.Namespace,
    api_key: str,
    organization_id: str,
    campaign_ids: list[str],
    processes: int,
) -> tuple[list[LoadSpec], dict[str, Any]]:
    """One spec per worker process (start time still to set), and the run's
    settings for the report."""
    seconds = args.duration
    if seconds is None:
        seconds = DEFAULT_SECONDS if args.events is None else EVENTS_BOUND_SECONDS
    events = NO_EVENT_BOUND if args.events is None else args.events
    batch = 1 if args.mode == "unary-single" else args.batch
    target = args.gateway if args.mode == "rest" else args.target
    specs = [
        LoadSpec(
            args.mode, target, api_key, organization_id, campaign_ids, batch=batch,
            concurrency=share(args.concurrency, processes, i), seconds=seconds,
            max_events=share(events, processes, i), start_at=0.0, call_timeout=CALL_TIMEOUT,
            stream_events=args.stream_events, seed=args.seed + i,
        )
        for i in range(processes)
    ]  # fmt: skip
    settings = {
        "mode": args.mode,
        "target": target,
        "organization_id": organization_id,
        "campaign_ids": campaign_ids,
        "fresh_campaigns": not args.campaigns,
        "concurrency": args.concurrency,
        "batch": batch,
        "processes": processes,
        "seed": args.seed,
        "bounds": {"events": args.events, "seconds": seconds},
    }
    if args.mode == "stream":
        settings["stream_events"] = args.stream_events
    return specs, settings


def _drive(workers: Workers, specs: list[LoadSpec], args: argparse.Namespace) -> Load:
    workers.wait_started()
    start_at = time.monotonic() + START_DELAY
    for spec in specs:
        spec.start_at = start_at
    seconds = specs[0].seconds
    console = Console(stderr=True, highlight=False)
    with ProgressView(console, start_at, seconds, args.events) as view:
        results = workers.run(
            specs,
            timeout=START_DELAY + seconds + CALL_TIMEOUT + DRAIN_TIMEOUT,
            on_progress=view.update,
            stop_on_interrupt=True,
        )
    if workers.interrupted:
        console.print("Stopped by Ctrl+C: calls in flight finished; reading the metrics back.")
    return Load.merge(results)


def _stopped_by(load: Load, args: argparse.Namespace, interrupted: bool) -> str:
    if interrupted:
        return "Ctrl+C"
    if args.events is not None and load.sent >= args.events:
        return "events"
    return "duration"
