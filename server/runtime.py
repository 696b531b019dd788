"""Garbage collection run on a clock instead of by allocation counts, in
the server process (``campaign-analytics serve``).

The ingest path keeps tens of thousands of short-lived containers alive at
any moment (events decoded and validated, waiting for their commit), all
freed by reference counting. CPython's cyclic collector, left to itself,
collects the young generation ten times a second and the middle one every
second under ingest load, each walking the events in flight and finding
nothing: a tenth of the server's CPU, and the server's Python is what limits
its throughput (measured with ``py-spy --native`` and ``gc.callbacks``;
raising the thresholds did not help). Once the process has started,
``settle`` moves what start-up made out of the collector's sight
(``gc.freeze``), turns the automatic collector off, and collects every
``COLLECT_EVERY`` seconds in a thread of its own: cycles (gRPC leaves a
few small ones behind every call, and more for a call ended with an error)
are still freed within a second, so memory under overload stays within its
bound (``tests/faults/test_overload.py``), while streams of 100-event
messages went from about 57,000 to about 80,000 events/s (``python -m
bench.ingest``). The
gateway keeps CPython's collector: with thousands of SSE connections open, a
full collection every second held up their frames (``python -m bench.live``).
"""

import gc
import threading
import time

COLLECT_EVERY = 1.0  # seconds


def settle() -> None:
    """Call once the process has started (imports done, servers built)."""
    gc.collect()
    gc.freeze()
    gc.disable()
    threading.Thread(target=_collect, name="gc", daemon=True).start()


def _collect() -> None:
    while True:
        time.sleep(COLLECT_EVERY)
        gc.collect()
