"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

from server.store.database import libpq_url

POSTGRES_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
)


def describe(database_url: str) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_memory_bytes() / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in ("grpcio", "protobuf", "psycopg", "uvloop")},
        "postgres": _postgres(database_url),
        "commit": _commit(),
    }


def _commit() -> str:
    """The measured code: HEAD, marked dirty when server/, gateway/ or clients/
    differ from it."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True,
            text=True, check=True,
        ).stdout.strip()  # fmt: skip
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "server", "gateway", "clients", "migrations"],
            cwd=repo, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' (dirty)' if changed else ''}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _postgres(database_url: str) -> dict[str, str]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        info = {"version": str(conn.execute("SHOW server_version").fetchone()[0])}  # type: ignore[index]
        for name in POSTGRES_SETTINGS:
            info[name] = str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
    return info


def summary(machine: dict[str, Any]) -> str:
    pg = machine["postgres"]
    settings = ", ".join(f"{k}={pg[k]}" for k in POSTGRES_SETTINGS)
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    return (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['os']}; Python {machine['python']} ({packages}); "
        f"PostgreSQL {pg['version']} ({settings}); commit {machine['commit']}; {machine['date']}"
    )
