"""The report of a load run: one JSON document, printed as tables.

The document (``document``) is what ``--json`` writes, so that runs can be
compared; ``render`` prints the same figures for a person.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from loadgen.check import COUNTED_BY, Check
from loadgen.engine import REFUSED
from loadgen.workers import Load

LATENCY_MEASURED = {
    "stream": "per stream message, from its write to the reply of its stream",
    "unary": "per IngestEvents call",
    "unary-single": "per IngestEvents call",
    "rest": "per REST request",
}


def document(settings: dict[str, Any], load: Load, check: Check) -> dict[str, Any]:
    """The run's settings (as given) and results."""
    refused = {k: v for k, v in sorted(load.errors.items()) if k in REFUSED}
    failed = {k: v for k, v in sorted(load.errors.items()) if k not in REFUSED}
    return {
        **settings,
        "seconds": round(load.seconds, 3),
        "events": {
            "sent": load.sent,
            "acknowledged": load.acked,
            "duplicates": load.duplicates,
            "rejected": load.rejected,
            "refused": load.refused,
            "unknown": load.unknown,
        },
        "calls": {"answered": load.calls, "refused": refused, "failed": failed},
        "first_error": load.first_error or None,
        "acknowledged_per_second": round(load.acked / load.seconds, 1) if load.seconds else 0.0,
        "latency_ms": {
            "p50": _round(load.percentile_ms(0.50)),
            "p95": _round(load.percentile_ms(0.95)),
            "p99": _round(load.percentile_ms(0.99)),
            "samples": len(load.latencies),
            "measured": LATENCY_MEASURED[settings["mode"]],
        },
        "rejections": dict(sorted(load.rejections.items(), key=lambda kv: -kv[1])),
        "check": check.as_json(),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def render(report: dict[str, Any], console: Console) -> None:
    events = report["events"]
    calls = report["calls"]
    latency = report["latency_ms"]
    check = report["check"]

    run = Table(title="Load run", show_header=False, title_justify="left")
    run.add_column(style="bold")
    run.add_column()
    campaigns = report["campaign_ids"]
    where = "created for the run" if report["fresh_campaigns"] else "existing"
    rows = [
        ("mode", f"{report['mode']} to {report['target']}"),
        ("concurrency / batch", f"{report['concurrency']} / {report['batch']}"),
        ("processes", str(report["processes"])),
        ("organization", report["organization_id"]),
        ("campaigns", f"{len(campaigns)} {where}: {_span(campaigns)}"),
        ("stopped by", report["stopped_by"]),
        ("seconds", f"{report['seconds']:.1f}"),
        ("events sent", f"{events['sent']:,}"),
        ("acknowledged", f"{events['acknowledged']:,}"),
        ("duplicates", f"{events['duplicates']:,}"),
        ("rejected", f"{events['rejected']:,}"),
        ("refused (not stored)", f"{events['refused']:,}"),
        ("unknown (no answer)", f"{events['unknown']:,}"),
        ("calls answered", f"{calls['answered']:,}"),
        ("calls refused", _by_code(calls["refused"])),
        ("calls failed", _by_code(calls["failed"])),
        ("throughput", f"{report['acknowledged_per_second']:,.0f} acknowledged events/s"),
        ("ack latency p50/p95/p99", _latency(latency)),
        ("latency measured", latency["measured"]),
        ("rejections", _by_code(report["rejections"])),
    ]
    if report["first_error"]:
        rows.append(("first error", report["first_error"]))
    for name, value in rows:
        run.add_row(name, value)
    console.print(run)

    counts = Table(title="Exact-count check", title_justify="left")
    counts.add_column("event type")
    counts.add_column("acknowledged", justify="right")
    counts.add_column("counted", justify="right")
    for event_type in COUNTED_BY:
        acked, counted = check["acknowledged"][event_type], check["counted"][event_type]
        mark = "" if acked == counted or not check["per_type"] else "  <-"
        counts.add_row(event_type, f"{acked:,}", f"{counted:,}{mark}")
    counts.add_row("total", f"{check['acknowledged_total']:,}", f"{check['counted_total']:,}")
    console.print(counts)
    for note in check["notes"]:
        console.print(f"  {note}", highlight=False)
    console.print(check["message"], style="bold green" if check["passed"] else "bold red")


def _span(items: list[str]) -> str:
    return ", ".join(items) if len(items) <= 2 else f"{items[0]} ... {items[-1]}"


def _by_code(counts: dict[str, int]) -> str:
    return ", ".join(f"{code} {n:,}" for code, n in counts.items()) or "none"


def _latency(latency: dict[str, Any]) -> str:
    if not latency["samples"]:
        return "no answered calls"
    figures = " / ".join(f"{latency[p]:.1f}" for p in ("p50", "p95", "p99"))
    return f"{figures} ms ({latency['samples']:,} samples)"
