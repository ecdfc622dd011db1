"""GPU warm-up beside the CPU stages of a local run.

The first GPU stage of a process pays for what the GPU libraries load on first use: cuBLAS and
cuSOLVER handles, the float64 kernels and the Jacobians of calibrate's Levenberg-Marquardt solve.
On the H100 that made the first calibrate of a process take 6.1-7.7 s where the same stage took
1.2 s later in the same process (250-frame clip, then 750-frame clip; docs/performance.md).
Ingest and landmarks run on the CPU first, in worker processes, for several seconds, so the run's
own process has the time to pay it then.

A stage module may define ``warm_up(config, device: str) -> None`` (:mod:`stages.graph`): a small
job on the device that loads what the stage will use, with no output and no store access.
:func:`start_warm_up` calls it, in a background thread of the run's process, for each stage of
the run that will run on a CUDA device and has not finished yet. A warm-up that fails is logged
and forgotten: the stage itself will meet the problem and report it. ``AVATAR_GPU_WARMUP=0`` turns
it off (to measure it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("avatar.runner")

ENV = "AVATAR_GPU_WARMUP"


@dataclass
class WarmUp:
    """A background warm-up: ``jobs`` are ``(stage name, callable)``; ``seconds`` per stage once done."""

    jobs: Sequence[tuple[str, Callable[[], None]]]
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    thread: threading.Thread | None = None

    def start(self) -> "WarmUp":
        self.thread = threading.Thread(target=self._run, name="gpu-warm-up", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        for name, job in self.jobs:
            t0 = time.monotonic()
            try:
                job()
            except Exception as e:  # noqa: BLE001 - an optional speed-up; the stage reports real faults
                self.errors[name] = f"{type(e).__name__}: {e}"
                log.debug("GPU warm-up for %s failed: %s", name, self.errors[name])
            else:
                self.seconds[name] = round(time.monotonic() - t0, 2)
                log.debug("GPU warm-up for %s: %.2f s beside the CPU stages", name, self.seconds[name])

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


def enabled() -> bool:
    """False when ``$AVATAR_GPU_WARMUP`` is ``0``, ``false`` or ``off``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def start_warm_up(stages: Sequence[tuple[str, object, object]], device: str = "cuda") -> WarmUp | None:
    """Start warming up ``stages`` (``(name, stage module, stage config)``, each to run on ``device``
    and not finished yet) in a background thread; None when there is nothing to do."""
    if not enabled():
        return None
    jobs = []
    for name, module, config in stages:
        hook = getattr(module, "warm_up", None)
        if hook is not None:
            jobs.append((name, lambda hook=hook, config=config: hook(config, device)))
    return WarmUp(jobs).start() if jobs else None
