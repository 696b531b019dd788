"""The live-updates benchmark: ingest acknowledgement to SSE delivery, and SSE fan-out.

    python -m bench.live [--quick] [--json PATH] [--keep-logs]

One run starts PostgreSQL (embedded, or a fresh database on
``$BENCH_DATABASE_URL``), the gRPC server and the REST gateway as the ingest
benchmark does, then:

1. **ack-to-SSE latency**: a paced ingest (``--rate`` events/s in unary
   batches of ``--batch`` every 100 ms) over 100 campaigns of one
   organization, with one SSE subscriber following all of them;
2. **SSE fan-out**: 1,000 / 5,000 / 10,000 raw-socket EventSource subscribers
   (``bench/sse.py``, split across processes) on one subscription id of one
   gateway process while about 10 updates/s are published; and the same
   against nginx + Nchan when Debian's nginx-light and libnginx-mod-nchan are
   installed.

It prints a table with the targets and the machine. bench/README.md tells how
to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from array import array
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

from bench import machine, processes, sse
from bench.ingest import Tenant, create_tenant
from clients import make_event, pb
from loadgen.engine import CHANNEL_OPTIONS, INGEST_METHOD
from loadgen.events import EventEncoder
from server.store import database

LATENCY_P99_TARGET_MS = 250.0
FANOUT_TARGETS_MS = {1_000: 30.0, 5_000: 100.0, 10_000: 400.0}
NCHAN_REFERENCE_MS = {1_000: 14.0, 5_000: 48.0, 10_000: 200.0}  # DESIGN.md
KB_PER_SUBSCRIBER_TARGET = 20.0
FANOUT_CAMPAIGNS = 10  # one event every 100 ms, in turn: ~1 update/s each, ~10/s in all
PUBLISH_INTERVAL = 0.1
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")


@dataclass(slots=True)
class Row:
    scenario: str
    subscribers: int
    frames: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    lost: int | None = None
    kb_per_subscriber: float | None = None
    target: str = ""
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- paced ingest (a process of its own) ----------------------------------------


def pace_main(conn: Connection) -> None:
    """Load process: unary batches started every ``interval`` s, not waiting for replies."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        reply: Any = asyncio.run(_pace(conn.recv()))
    except Exception:
        reply = traceback.format_exc()
    conn.send(reply)


async def _pace(spec: dict[str, Any]) -> dict[str, Any]:
    encoder = EventEncoder(spec["organization_id"], spec["campaign_ids"], seed=7)
    impression = [m.campaign_id if m.event_type == "impression" else None for m in encoder.mix]
    channel = grpc.aio.insecure_channel(spec["target"], options=CHANNEL_OPTIONS)
    method = channel.unary_unary(
        INGEST_METHOD, request_serializer=None,
        response_deserializer=pb.IngestEventsResponse.FromString,
    )  # fmt: skip
    metadata = (("authorization", f"Bearer {spec['api_key']}"),)
    acks: list[tuple[float, dict[str, int]]] = []
    errors: dict[str, int] = defaultdict(int)
    batch, interval, calls = spec["batch"], spec["interval"], spec["calls"]
    sent = 0

    async def one(body: bytes, counts: dict[str, int]) -> None:
        try:
            reply = await method(body, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] += 1
            return
        if reply.accepted + reply.duplicates != batch:
            errors["partial"] += 1
        acks.append((time.monotonic(), counts))

    try:
        await asyncio.wait_for(channel.channel_ready(), 10)
        start = spec["start_at"]
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        tasks = []
        for k in range(calls):
            await asyncio.sleep(max(0.0, start + k * interval - time.monotonic()))
            counts: dict[str, int] = defaultdict(int)
            position = encoder.position
            for i in range(position, position + batch):
                campaign = impression[i % len(impression)]
                if campaign is not None:
                    counts[campaign] += 1
            tasks.append(asyncio.create_task(one(encoder.unary_batch(batch), dict(counts))))
            sent += batch
            tasks = [t for t in tasks if not t.done()]
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        ended = time.monotonic()
    finally:
        await channel.close()
    return {"acks": acks, "errors": dict(errors), "sent": sent, "started": start, "ended": ended}


# -- subscriber processes -----------------------------------------------------------


class Subscribers:
    """``workers`` subscriber processes (bench/sse.py) sharing ``count`` connections."""

    def __init__(self, count: int, workers: int, host: str, port: int, path: str,
                 max_seconds: float, updates: bool = False) -> None:  # fmt: skip
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs = []
        for i in range(workers):
            parent, child = context.Pipe()
            proc = context.Process(target=sse.main, args=(child,), daemon=True)
            proc.start()
            share = count // workers + (1 if i < count % workers else 0)
            parent.send({"count": share, "host": host, "port": port, "path": path,
                         "max_seconds": max_seconds, "updates": updates,
                         "connect_concurrency": 100, "connect_timeout": 90.0})  # fmt: skip
            self.conns.append(parent)
            self.procs.append(proc)

    def wait_connected(self, timeout: float) -> tuple[int, int]:
        connected = failures = 0
        deadline = time.monotonic() + timeout
        for conn in self.conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("a subscriber process did not connect in time")
            message = conn.recv()
            if message[0] != "connected":
                raise RuntimeError(f"a subscriber process failed:\n{message[1]}")
            connected += message[1]
            failures += message[2]
        return connected, failures

    def stop(self, timeout: float = 60) -> list[dict[str, Any]]:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send("stop")
        results = []
        deadline = time.monotonic() + timeout
        for conn in self.conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("a subscriber process did not answer in time")
            _, result = conn.recv()
            if isinstance(result, str):
                raise RuntimeError(f"a subscriber process failed:\n{result}")
            results.append(result)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
        return results


# -- nginx + Nchan ----------------------------------------------------------------


NGINX_CONF = """\
{user}
worker_processes 1;
worker_rlimit_nofile 40000;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{load}
events {{ worker_connections 30000; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  client_body_buffer_size 64k;
  tcp_nodelay on;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /pub {{ nchan_publisher; nchan_channel_id bench;
      nchan_message_buffer_length 50; nchan_message_timeout 60s; }}
    location = /sub {{ nchan_subscriber eventsource; nchan_channel_id bench;
      nchan_subscriber_first_message newest; }}
  }}
}}
"""


class Nginx:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = processes.free_port()
        loaded = "" if _nchan_builtin() else f"load_module {NCHAN_MODULE};"
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            dir=folder, port=self.port, load=loaded,
            user="user root;" if os.geteuid() == 0 else "",
        ))  # fmt: skip
        argv = ["nginx", "-p", str(folder), "-c", str(conf), "-g", "daemon off;"]
        self.process = processes.Process("nginx", argv, folder / "nginx.log", dict(os.environ))
        self.process.wait_for_port("127.0.0.1", self.port, 20)

    def worker_pid(self) -> int:
        pid = self.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        return int(children[0])

    def publish(self, body: bytes) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("POST", "/pub", body, {"Content-Type": "text/plain"})
            connection.getresponse().read()
        finally:
            connection.close()

    def stop(self) -> None:
        self.process.stop(10)


def _nchan_builtin() -> bool:
    return False


def nchan_available() -> str:
    """Empty when nginx with the nchan module can run, else why not."""
    if shutil.which("nginx") is None:
        return "nginx is not installed (apt-get install -y nginx-light libnginx-mod-nchan)"
    if not NCHAN_MODULE.exists():
        return f"{NCHAN_MODULE} is missing (apt-get install -y libnginx-mod-nchan)"
    return ""


# -- the benchmark ----------------------------------------------------------------


class Live:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[Row] = []
        self.failures: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
        self.database_url = ""
        self._drop: Callable[[], None] | None = None
        self.server: processes.Process | None = None
        self.server_target = ""
        self.gateway: processes.Process | None = None
        self.gateway_target = ""
        self.machine: dict[str, Any] = {}
        self.sample_payload = b""
        self.nchan_note = ""

    # -- setup --

    def start_database(self) -> None:
        self.database_url, self._drop = processes.start_database(self.tmp / "pg")

    def start_gateway(self, label: str) -> None:
        self.gateway, self.gateway_target = processes.start_gateway(
            self.server_target, self.tmp / f"gateway-{label}.log"
        )

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            code = self.gateway.stop(30)
            if code not in (0, -15):
                self.failures.append(f"the gateway exited with {code}:\n{self.gateway.tail()}")
            self.gateway = None

    def close(self) -> None:
        self.stop_gateway()
        if self.server is not None and self.server.popen.poll() is None:
            self.server.stop(60)
        if self._drop is not None:
            self._drop()
        for server in database._embedded_servers:
            server.cleanup()
        database._embedded_servers.clear()
        if self.args.keep_logs:
            print(f"Logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def subscribe(self, tenant: Tenant, campaign_ids: list[str] | None) -> str:
        host, port = self.gateway_target.rsplit(":", 1)
        body: dict[str, Any] = {"organizationId": tenant.organization_id}
        if campaign_ids:
            body["campaignIds"] = campaign_ids
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request(
                "POST", "/api/analytics/real-time/subscribe", json.dumps(body),
                {"Content-Type": "application/json", "Authorization": f"Bearer {tenant.api_key}"},
            )  # fmt: skip
            response = connection.getresponse()
            data = json.loads(response.read())
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"subscribe: HTTP {response.status}: {data}")
        return str(data["subscription"]["id"])

    def warm_up(self, tenant: Tenant, channel: grpc.Channel) -> None:
        stub = pb.IngestServiceStub(channel)
        events = [make_event("impression", c, tenant.organization_id) for c in tenant.campaign_ids]
        reply = stub.IngestEvents(
            pb.IngestEventsRequest(events=events), metadata=tenant.auth, timeout=30
        )
        if reply.accepted != len(events):
            raise RuntimeError(f"warm-up: {reply.accepted} of {len(events)} accepted")

    def run(self) -> int:
        try:
            self.start_database()
            self.machine = machine.describe(self.database_url)
            self.server, self.server_target = processes.start_service(
                self.database_url, self.tmp / "server.log", {}
            )
            self.latency()
            self.fanout()
        finally:
            self.close()
        return self.report()

    # -- 1. ack to SSE --

    def latency(self) -> None:
        args = self.args
        name = f"ack-to-SSE @{args.rate:,}/s x{args.campaigns} campaigns"
        print(f"{name} ...", flush=True)
        tenant = create_tenant(self.database_url, "live", args.campaigns)
        channel = grpc.insecure_channel(self.server_target)
        self.warm_up(tenant, channel)
        channel.close()
        self.start_gateway("latency")
        assert self.gateway is not None
        subscription = self.subscribe(tenant, None)
        host, port = self.gateway_target.rsplit(":", 1)
        path = f"/api/analytics/real-time/updates?subscriptionId={subscription}&format=sse"
        subscriber = Subscribers(1, 1, host, int(port), path, args.latency_seconds + 60, True)
        subscriber.wait_connected(30)
        time.sleep(1.0)  # the warm-up's updates go by
        interval = PUBLISH_INTERVAL
        batch = max(1, round(args.rate * interval))
        calls = round(args.latency_seconds / interval)
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        loader = context.Process(target=pace_main, args=(child,), daemon=True)
        loader.start()
        start_at = time.monotonic() + 2.0
        parent.send({
            "organization_id": tenant.organization_id, "campaign_ids": tenant.campaign_ids,
            "target": self.server_target, "api_key": tenant.api_key, "batch": batch,
            "interval": interval, "calls": calls, "start_at": start_at,
        })  # fmt: skip
        gateway_cpu0 = processes.cpu_seconds(self.gateway.pid)
        server_cpu0 = processes.cpu_seconds(self.server.pid)  # type: ignore[union-attr]
        if not parent.poll(args.latency_seconds + 90):
            raise RuntimeError("the load process did not answer in time")
        load = parent.recv()
        loader.join(10)
        if isinstance(load, str):
            raise RuntimeError(f"the load process failed:\n{load}")
        time.sleep(2.0)  # the last commits' updates
        wall = time.monotonic() - start_at
        gateway_cpu = (processes.cpu_seconds(self.gateway.pid) - gateway_cpu0) / wall * 100
        server_cpu = (processes.cpu_seconds(self.server.pid) - server_cpu0) / wall * 100  # type: ignore[union-attr]
        result = subscriber.stop()[0]
        self.stop_gateway()
        self.rows.extend(self.latency_rows(name, tenant, load, result, batch))
        for row in self.rows[-2:]:
            row.notes.append(f"CPU: server {server_cpu:.0f}%, gateway {gateway_cpu:.0f}%")

    def latency_rows(self, name: str, tenant: Tenant, load: dict[str, Any],
                     result: dict[str, Any], batch: int) -> list[Row]:  # fmt: skip
        acks = sorted(load["acks"], key=lambda a: a[0])
        # Per campaign: ack times and the impressions acknowledged by then.
        times: dict[str, list[float]] = defaultdict(list)
        totals: dict[str, list[int]] = defaultdict(list)
        cumulative = dict.fromkeys(tenant.campaign_ids, 1)  # the warm-up's impression
        for at, counts in acks:
            for campaign, n in counts.items():
                cumulative[campaign] += n
                times[campaign].append(at)
                totals[campaign].append(cumulative[campaign])
        updates = [u for u in result["updates"] if u[0] >= load["started"]]
        # Per update: arrival minus the earliest ack after which the campaign's
        # acknowledged impressions reached the update's figure.
        frame_latencies, unmatched, early = [], 0, 0
        arrivals: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for arrived, campaign, impressions in updates:
            arrivals[campaign].append((arrived, impressions))
            if impressions <= 1:
                continue
            i = bisect.bisect_left(totals[campaign], impressions)
            if i >= len(totals[campaign]):
                unmatched += 1
                continue
            latency = arrived - times[campaign][i]
            early += latency < 0
            frame_latencies.append(latency * 1000)
        # Per (batch, campaign): from the ack to the first update showing it.
        batch_latencies, never = [], 0
        for campaign, ack_times in times.items():
            seen = arrivals.get(campaign, [])
            for at, total in zip(ack_times, totals[campaign], strict=True):
                first = next((a for a, n in seen if n >= total), None)
                if first is None:
                    never += 1
                else:
                    batch_latencies.append((first - at) * 1000)
        seconds = load["ended"] - load["started"]
        acked_events = len(acks) * batch
        p99 = percentile(frame_latencies, 0.99)
        frames = Row(
            f"{name}: per update", 1, len(frame_latencies), percentile(frame_latencies, 0.5), p99,
            target=f"p99 <= {LATENCY_P99_TARGET_MS:g} ms",
            passed=None if p99 is None else p99 <= LATENCY_P99_TARGET_MS,
        )  # fmt: skip
        frames.notes.append(
            f"{acked_events:,} events acknowledged in {seconds:.1f} s "
            f"({acked_events / seconds:,.0f}/s, {len(acks)} calls of {batch}, errors "
            f"{load['errors'] or 'none'}); {len(updates)} updates "
            f"({len(updates) / seconds:.1f}/s); "
            f"{early} arrived before the matching ack (negative latency), {unmatched} unmatched"
        )
        batch_p99 = percentile(batch_latencies, 0.99)
        batches = Row(
            f"{name}: per acked batch", 1, len(batch_latencies),
            percentile(batch_latencies, 0.5), batch_p99, target="(informative)",
        )  # fmt: skip
        batches.notes.append(
            "from each call's ack to the first update of each of its campaigns whose "
            "impressions cover it (includes the 250 ms per-campaign rate limit); "
            f"{never} never shown"
        )
        frames.details.update(updates_per_second=len(updates) / seconds, acked=acked_events,
                              errors=load["errors"], early=early, unmatched=unmatched)  # fmt: skip
        batches.details.update(never=never)
        return [frames, batches]

    # -- 2. fan-out --

    def fanout(self) -> None:
        levels = [1_000] if self.args.quick else [1_000, 5_000, 10_000]
        if self.args.subscribers:
            levels = self.args.subscribers
        tenant = create_tenant(self.database_url, "fanout", FANOUT_CAMPAIGNS)
        channel = grpc.insecure_channel(self.server_target)
        try:
            self.warm_up(tenant, channel)
            for n in levels:
                self.fanout_gateway(n, tenant, channel)
        finally:
            channel.close()
        self.nchan_note = nchan_available()
        if self.nchan_note:
            print(f"nchan: {self.nchan_note}; reference figures from DESIGN.md instead")
            return
        for n in levels:
            self.fanout_nchan(n)

    def fanout_gateway(self, n: int, tenant: Tenant, channel: grpc.Channel) -> None:
        name = "fan-out: gateway"
        print(f"{name} x{n:,} ...", flush=True)
        self.start_gateway(f"fanout{n}")
        assert self.gateway is not None
        subscription = self.subscribe(tenant, tenant.campaign_ids)
        stub = pb.IngestServiceStub(channel)
        stop = threading.Event()

        def publish() -> None:
            # Absolute schedule, replies not awaited: a slow reply (CPU
            # contention) does not thin out the publishing; at most 600 s.
            # (A call whose future is dropped is cancelled: they are kept.)
            start = time.monotonic()
            pending: list[grpc.Future] = []
            for k in range(6_000):
                if stop.wait(max(0.0, start + k * PUBLISH_INTERVAL - time.monotonic())):
                    break
                campaign = tenant.campaign_ids[k % len(tenant.campaign_ids)]
                event = make_event("impression", campaign, tenant.organization_id)
                pending = [f for f in pending if not f.done()]
                pending.append(
                    stub.IngestEvents.future(
                        pb.IngestEventsRequest(event=event), metadata=tenant.auth, timeout=5
                    )
                )
            for future in pending:
                with contextlib.suppress(grpc.RpcError, grpc.FutureTimeoutError):
                    future.result(timeout=5)

        host, port = self.gateway_target.rsplit(":", 1)
        path = f"/api/analytics/real-time/updates?subscriptionId={subscription}&format=sse"
        pid = self.gateway.pid
        self.measure_fanout(name, n, host, int(port), path, pid, publish, stop,
                            FANOUT_TARGETS_MS.get(n),
                            sequential_ids=True)  # fmt: skip
        self.stop_gateway()

    def fanout_nchan(self, n: int) -> None:
        name = "fan-out: nginx+nchan"
        print(f"{name} x{n:,} ...", flush=True)
        nginx = Nginx(self.tmp / f"nginx{n}")
        stop = threading.Event()
        template = self.sample_payload or b'{"type":"update","data":{},"timestamp":"T"}'
        try:
            document = json.loads(template)
        except ValueError:
            document = {"type": "update", "data": {}}

        def publish() -> None:
            # Absolute schedule on one keep-alive connection; at most 600 s.
            start = time.monotonic()
            connection = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=5)
            headers = {"Content-Type": "text/plain"}
            for k in range(6_000):
                if stop.wait(max(0.0, start + k * PUBLISH_INTERVAL - time.monotonic())):
                    break
                document["timestamp"] = iso_now()
                body = json.dumps(document, separators=(",", ":")).encode()
                try:
                    connection.request("POST", "/pub", body, headers)
                    connection.getresponse().read()
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=5)
            connection.close()

        try:
            self.measure_fanout(name, n, "127.0.0.1", nginx.port, "/sub", nginx.worker_pid(),
                                publish, stop, None, sequential_ids=False)  # fmt: skip
        finally:
            nginx.stop()

    def measure_fanout(self, name: str, n: int, host: str, port: int, path: str, pid: int,
                       publish: Any, stop: threading.Event, target_ms: float | None,
                       sequential_ids: bool) -> None:  # fmt: skip
        seconds = self.args.fanout_seconds
        workers = 2 if n <= 5_000 else 3
        rss0 = processes.rss_bytes(pid)
        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        subscribers = Subscribers(n, workers, host, port, path, seconds + 200)
        try:
            t0 = time.monotonic()
            connected, failures = subscribers.wait_connected(150)
            connect_seconds = time.monotonic() - t0
            time.sleep(1.0)
            cpu0 = processes.cpu_seconds(pid)
            window_start = time.time()
            time.sleep(seconds)
            window_end = time.time() - 0.5  # frames stamped later may still be on the way
            rss1 = processes.rss_bytes(pid)
            cpu = (processes.cpu_seconds(pid) - cpu0) / seconds * 100
            time.sleep(0.5)
        finally:
            stop.set()
            results = subscribers.stop()
            publisher.join(10)
        arrivals: dict[bytes, list[float]] = defaultdict(list)
        stamps: dict[bytes, float] = {}
        sizes: dict[bytes, int] = {}
        origins: dict[bytes, float] = {}
        for r in results:
            for fid, raw in r["arrivals"].items():
                times = array("d")
                times.frombytes(raw)
                arrivals[fid].extend(times)
            stamps.update(r["stamps"])
            sizes.update(r["sizes"])
            origins.update(r["origins"])
            if r["sample"] and not self.sample_payload and sequential_ids:
                self.sample_payload = r["sample"]
        offset = time.time() - time.monotonic()
        window = [f for f, s in stamps.items() if window_start <= s <= window_end]
        delays, first_delays, origin_delays, lost = [], [], [], 0
        for fid in window:
            got = arrivals[fid]
            lost += max(0, connected - len(got))
            first = min(got)
            origin = origins.get(fid) if sequential_ids else None
            for a in got:
                delays.append((a + offset - stamps[fid]) * 1000)
                first_delays.append((a - first) * 1000)
                if origin is not None:
                    origin_delays.append((a + offset - origin) * 1000)
        missing_ids = 0
        if sequential_ids and window:
            numbers = sorted(int(f) for f in window)
            missing_ids = numbers[-1] - numbers[0] + 1 - len(numbers)
            lost += missing_ids * connected
        kb = (rss1 - rss0) / max(1, connected) / 1024
        # The gateway's frames: from the server's update time (end to end,
        # including any wait upstream of the gateway); nchan's: from the
        # publisher's time just before its POST.
        primary = origin_delays or delays
        p50, p99 = percentile(primary, 0.5), percentile(primary, 0.99)
        client_cpu = sum(r["cpu_seconds"] for r in results)
        row = Row(name, n, len(window), p50, p99, lost, kb)
        if target_ms is not None:
            row.target = f"p99 <= {target_ms:g} ms, 0 lost, <= {KB_PER_SUBSCRIBER_TARGET:g} KB"
            row.passed = (p99 is not None and p99 <= target_ms and lost == 0
                          and connected == n and kb <= KB_PER_SUBSCRIBER_TARGET)  # fmt: skip
        else:
            ref = NCHAN_REFERENCE_MS.get(n)
            row.target = f"(peer; DESIGN.md: {ref:g} ms)" if ref else "(peer)"
        mean_size = sum(sizes[f] for f in window) / len(window) if window else 0
        row.notes.append(
            f"{connected:,}/{n:,} connected in {connect_seconds:.1f} s ({failures} failed), "
            f"{workers} client processes; {len(window)} frames in {seconds:g} s "
            f"({len(window) / seconds:.1f}/s, mean {mean_size:.0f} bytes); "
            + (
                "delay = arrival - the update's timestamp; from the gateway's frame timestamp: "
                f"p50 {_ms(percentile(delays, 0.5))}, p99 {_ms(percentile(delays, 0.99))}; "
                if origin_delays
                else "delay = arrival - the frame's timestamp; "
            )
            + "from the first subscriber's arrival: "
            f"p50 {_ms(percentile(first_delays, 0.5))}, p99 {_ms(percentile(first_delays, 0.99))}; "
            f"server-side CPU {cpu:.0f}%, client CPU "
            f"{client_cpu / (seconds + connect_seconds) * 100:.0f}%"
            f"; RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB"
            + (f"; {missing_ids} ids nobody received" if missing_ids else "")
            + (
                f"; PUBLISHING FELL SHORT of {1 / PUBLISH_INTERVAL:g}/s"
                if len(window) < 0.8 * seconds / PUBLISH_INTERVAL
                else ""
            )
        )  # fmt: skip
        row.details.update(connected=connected, failures=failures, still_open=sum(
            r["still_open"] for r in results), rss_before=rss0, rss_after=rss1,
            p99_from_first_ms=percentile(first_delays, 0.99), cpu_percent=cpu,
            mean_frame_bytes=mean_size, missing_ids=missing_ids,
            p99_from_server_ms=percentile(origin_delays, 0.99))  # fmt: skip
        self.rows.append(row)

    # -- the report --

    def report(self) -> int:
        header = ("scenario", "subs", "frames", "p50 ms", "p99 ms", "lost", "KB/sub", "target", "")
        lines = [header]
        for r in self.rows:
            verdict = {True: "PASS", False: "MISS", None: ""}[r.passed]
            lines.append((
                r.scenario, f"{r.subscribers:,}", f"{r.frames:,}", _ms(r.p50_ms), _ms(r.p99_ms),
                "-" if r.lost is None else f"{r.lost:,}",
                "-" if r.kb_per_subscriber is None else f"{r.kb_per_subscriber:.1f}",
                r.target, verdict,
            ))  # fmt: skip
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        print()
        for line in lines:
            cells = zip(line, widths, strict=True)
            print("  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w)
                            for i, (c, w) in enumerate(cells)))  # fmt: skip
        gateway = {r.subscribers: r for r in self.rows if r.scenario == "fan-out: gateway"}
        nchan = {r.subscribers: r for r in self.rows if r.scenario == "fan-out: nginx+nchan"}
        print()
        if self.nchan_note:
            print(f"nchan not measured: {self.nchan_note}. DESIGN.md's figures on this "
                  "kind of machine: p99 14 / 48 / 200 ms at 1k / 5k / 10k, 0 lost, "
                  "~10 KB per connection.")  # fmt: skip
        for n, g in gateway.items():
            peer = nchan.get(n)
            if peer and peer.p99_ms and g.p99_ms:
                print(f"gateway / nchan at {n:,}: p99 {g.p99_ms / peer.p99_ms:.1f}x, "
                      f"KB/sub {_ratio(g.kb_per_subscriber, peer.kb_per_subscriber)}")  # fmt: skip
        print("\nNotes:")
        for r in self.rows:
            for note in r.notes:
                print(f"- {r.scenario} x{r.subscribers:,}: {note}")
        print()
        print(machine.summary(self.machine))
        if self.failures:
            print("\nFAILURES:")
            for failure in self.failures:
                print(f"- {failure}")
        if self.args.json:
            Path(self.args.json).write_text(json.dumps({
                "rows": [asdict(r) for r in self.rows], "machine": self.machine,
                "nchan": self.nchan_note or "measured", "failures": self.failures,
                "args": vars(self.args),
            }, indent=2, default=str))  # fmt: skip
        return 1 if self.failures else 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a is not None and b else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.live", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short: 1,000 subscribers only")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--rate", type=int, default=10_000, help="ingest events/s (10,000)")
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--latency-seconds", type=float, default=None, help="20 (quick: 10)")
    parser.add_argument("--fanout-seconds", type=float, default=None, help="15 (quick: 8)")
    parser.add_argument("--subscribers", type=int, nargs="*", help="fan-out levels")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.latency_seconds is None:
        args.latency_seconds = 10.0 if args.quick else 20.0
    if args.fanout_seconds is None:
        args.fanout_seconds = 8.0 if args.quick else 15.0
    limit = sse.raise_nofile(40_000)  # the gateway and nginx inherit it
    if limit < max(args.subscribers or [10_000]) + 1_000:
        print(f"warning: RLIMIT_NOFILE is {limit}", file=sys.stderr)
    return Live(args).run()


if __name__ == "__main__":
    sys.exit(main())
