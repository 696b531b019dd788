"""Garbage collection run on a clock instead of by allocation counts.

The ingest path keeps tens of thousands of short-lived containers alive at
any moment (events decoded and validated, waiting for their commit), all
freed by reference counting. CPython's cyclic collector, left to itself,
collects the young generation every few thousand new containers and so scans
every one of those live events again and again, finding nothing: that was a
tenth of the server's CPU under ingest load, and the server's Python is what
limits its throughput (measured with ``py-spy --native`` and ``gc.callbacks``;
raising the thresholds did not help, since the cost is per live object
scanned). Once a process has started, ``settle`` moves what start-up made out
of the collector's sight (``gc.freeze``), turns the automatic collector off,
and collects every ``COLLECT_EVERY`` seconds in a thread of its own: cycles
(an exception and the frames it holds, say) are still freed, within seconds.
Under full ingest load one collection takes 50-200 ms (it walks every event
in flight) and finds a few dozen cycles; every 10 s that is about 1% of the
CPU, where the automatic collector took ten times as much.
"""

import gc
import threading
import time

COLLECT_EVERY = 10.0  # seconds


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
