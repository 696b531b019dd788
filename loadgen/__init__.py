"""The load generator: ``campaign-analytics load``, and the engine of ``bench``.

- ``events``: realistic events, pre-encoded so that the client is not the bottleneck;
- ``engine``: a worker process's side: drivers for streams, unary calls and REST;
- ``workers``: the coordinator's side: worker processes, live counters, merged results;
- ``check``: the exact-count check against the metrics read back;
- ``progress`` and ``report``: what a person sees during and after a run;
- ``run``: the command itself (``add_arguments``, ``main``).
"""
