"""Intra-op threads of a worker process: its share of the cores, not all of them.

A fan-out stage runs ``jobs`` worker processes on the local machine. Each one's torch would
otherwise start one intra-op thread per core, so ``jobs`` workers run ``jobs x cores`` threads on
``cores`` cores. Small tensor ops (the tracker's per-step fits over a few hundred frames) then spend
their time in OpenMP barriers waiting for descheduled threads. On the 2-core dev machine (2026-12-06,
other users' load about 8): a demo-preset track shard of 100 frames took 174 s with 2 workers of 2
threads, 19 s with 2 workers of 1 thread; 70 tracking steps of one shard alone cost 5.7 CPU-s with
one thread and were still running after 300 s (36 CPU-s) with two.
"""

from __future__ import annotations

import os


def share_of_cores(pool_size: int, cores: int | None = None) -> int:
    """Threads for one of ``pool_size`` worker processes on ``cores`` cores (default: this machine's):
    ``max(1, cores // pool_size)``; ``$OMP_NUM_THREADS``, where set, is an upper bound."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    n = max(1, cores // max(1, pool_size))
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = min(n, int(env))
    return n


def limit_worker_threads(pool_size: int) -> int:
    """Set torch's intra-op threads of this worker process to :func:`share_of_cores` where the stage
    has imported torch (a stage that does not is not made to import it); return the number."""
    import sys

    n = share_of_cores(pool_size)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
