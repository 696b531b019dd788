"""The processes under test, and what /proc says about them.

The gRPC server runs as the product's own command (``python -m server.cli
serve --no-gateway``), the REST gateway as ``python -m gateway`` and the
discard server as ``python -m bench.discard``, each a process of its own with
its output in a log file. Peak memory is the kernel's high-water mark of the
resident set (``VmHWM``), reset between scenarios through ``clear_refs``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from server.store import database, migrate

REPO = Path(__file__).resolve().parents[1]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_database(folder: Path) -> tuple[str, Callable[[], None] | None]:
    """A fresh, migrated database for one run: a new one on
    ``$BENCH_DATABASE_URL``, or an embedded PostgreSQL in ``folder``. Returns
    its URL and, for the former, what drops it afterwards."""
    base = os.environ.get("BENCH_DATABASE_URL")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    drop: Callable[[], None] | None = None
    if base:
        database.create_database(base, name)
        url = make_url(base).set(database=name).render_as_string(hide_password=False)

        def drop() -> None:
            with psycopg.connect(database.libpq_url(base), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    else:
        print(f"Starting an embedded PostgreSQL in {folder} ...", flush=True)
        url = database.start_embedded(folder, name)
    migrate.upgrade(url)
    return url, drop


class Process:
    """A child process with its output in ``log``."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self.argv = argv
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.pid = self.popen.pid

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The first match of ``pattern`` in the output, waiting for it."""
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        while time.monotonic() < deadline:
            match = compiled.search(self.log.read_text(errors="replace"))
            if match:
                return match
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not print {pattern!r} in {timeout} s:\n{self.tail()}")

    def wait_for_port(self, host: str, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {host}:{port}:\n{self.tail()}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def start_service(database_url: str, log: Path, settings: dict[str, str]) -> tuple[Process, str]:
    """The product's gRPC server on a free port; returns it and its target."""
    env = child_env(CAMPAIGN_ANALYTICS_MIGRATE="false", **settings)
    argv = [
        sys.executable, "-m", "server.cli", "--log-level", "warning", "serve", "--no-gateway",
        "--grpc-port", "0", "--metrics-port", "0", "--database-url", database_url,
    ]  # fmt: skip
    process = Process("gRPC server", argv, log, env)
    match = process.wait_for_line(r"gRPC server listening on (\S+):(\d+)")
    return process, f"{match[1]}:{match[2]}"


def start_gateway(grpc_target: str, log: Path) -> tuple[Process, str]:
    port = free_port()
    argv = [
        sys.executable, "-m", "gateway", "--grpc-target", grpc_target,
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    process = Process("REST gateway", argv, log, child_env())
    process.wait_for_port("127.0.0.1", port)
    return process, f"127.0.0.1:{port}"


def start_discard(log: Path) -> tuple[Process, str]:
    argv = [sys.executable, "-m", "bench.discard", "--port", "0"]
    process = Process("discard server", argv, log, child_env())
    match = process.wait_for_line(r"listening on (\S+):(\d+)")
    return process, f"{match[1]}:{match[2]}"


# -- /proc ---------------------------------------------------------------------


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmHWM") * 1024


def reset_peak_rss(pid: int) -> bool:
    """Sets VmHWM back to the current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User and system time of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def main_thread_seconds(pid: int) -> tuple[float, float] | None:
    """(seconds on a core, seconds runnable but waiting for one) of a
    process's main thread, the one that runs its event loop; None where the
    kernel does not keep these (``/proc/<pid>/task/<pid>/schedstat``)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            running, waiting, _ = f.read().split()
    except (OSError, ValueError):
        return None
    return int(running) / 1e9, int(waiting) / 1e9


def postgres_cpu() -> dict[int, float]:
    """User and system seconds of each running PostgreSQL process."""
    times = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        if name.startswith("postgres"):
            fields = text.rpartition(")")[2].split()
            times[int(entry)] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return times


def postgres_cpu_since(before: dict[int, float]) -> float:
    """PostgreSQL's CPU seconds since ``before``, over the processes running
    now (a backend that exited in between took its time with it)."""
    return sum(t - before.get(pid, 0.0) for pid, t in postgres_cpu().items())


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), rss_bytes(self.pid)))

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(5)
        return self.samples
