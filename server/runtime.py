"""Garbage collection tuned for a long-running service process.

The ingest path makes many short-lived containers per event (the decoded
event, its metadata, its row), all freed by reference counting; CPython's
cyclic collector, meanwhile, runs a young collection every 700 net new
containers and now and then walks every object of the process (modules,
protobuf descriptors, SQLAlchemy metadata: hundreds of thousands), finding
nothing. That was an eighth of the server's CPU under ingest load
(measured with ``py-spy --native``). Once a process has started, ``settle``
moves what start-up made out of the collector's sight (``gc.freeze``) and
collects the young generation every ``YOUNG_THRESHOLD`` containers instead:
cycles are still collected, less often.
"""

import gc

YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Call once the process has started (imports done, servers built)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
