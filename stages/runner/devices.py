"""Which GPUs a local run may use, and pinning one to each shard worker process.

A fan-out stage on ``cuda`` runs ``processes_per_gpu x GPUs`` worker processes; each worker is
pinned to one GPU, round robin, by setting ``CUDA_VISIBLE_DEVICES`` to that GPU's id before it
touches CUDA (so inside the worker the device is plain ``cuda``, and nothing downstream needs to
know). With one GPU nothing is pinned: the run is what it was.

Simulation (tests on machines without a GPU): ``AVATAR_SIMULATED_GPUS=N`` makes this process see N
GPUs without calling CUDA; a worker pinned to one of them sees one. Stages that really run CUDA
kernels must not be run that way.
"""

from __future__ import annotations

import os

SIMULATED_GPUS_ENV = "AVATAR_SIMULATED_GPUS"


def _simulated() -> int:
    try:
        return max(0, int(os.environ.get(SIMULATED_GPUS_ENV, "0") or 0))
    except ValueError:
        return 0


def _visible_env() -> list[str] | None:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def gpu_count() -> int:
    """GPUs this process may use (simulated ones included)."""
    n = _simulated()
    if n:
        return n
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def visible_gpus() -> list[str]:
    """Ids of the GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (its entries
    where it is set, else ``0 .. n-1``); empty without a GPU."""
    n = gpu_count()
    env = _visible_env()
    if env is not None:
        return env[:n]
    return [str(i) for i in range(n)]


def gpu_slots(workers: int, gpus: list[str]) -> list[str]:
    """The GPU of each of ``workers`` worker processes: round robin over ``gpus``."""
    if not gpus:
        return []
    return [gpus[i % len(gpus)] for i in range(max(0, workers))]


def current_gpu() -> str | None:
    """The id of the GPU this process uses for ``cuda`` (the first visible one), or None."""
    gpus = visible_gpus()
    return gpus[0] if gpus else None


def pin_worker(slots, simulated: bool) -> None:  # noqa: ANN001 - a multiprocessing queue
    """Process-pool initializer: take the next GPU id from ``slots`` and make it this worker's only
    visible GPU (before anything here initialises CUDA)."""
    gpu = slots.get()
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if simulated:
        os.environ[SIMULATED_GPUS_ENV] = "1"


def is_simulated() -> bool:
    """Whether the GPUs are simulated (``AVATAR_SIMULATED_GPUS``)."""
    return _simulated() > 0
