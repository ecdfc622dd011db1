"""Worker processes die with the process that started them.

A ``kill -9`` of ``avatar run`` must not leave its shard workers running the dead run's shards
(they would compete with a rerun, two writers on one shard). Linux delivers a chosen signal to a
process when its parent ends (``prctl(PR_SET_PDEATHSIG)``); we ask for ``SIGKILL`` in:

- every pool worker (the pools' ``initializer``: :func:`worker_init`);
- the multiprocessing forkserver, whose parent is the run: the forkserver imports this module
  first among its preloads (:func:`forkserver_context`), and the import sets the signal when
  ``$AVATAR_LIFELINE_PARENT`` names its parent. Workers forked from the forkserver have it as
  their parent, so the chain run -> forkserver -> workers goes down together.

The multiprocessing resource tracker exits by itself once every process holding its pipe is gone.
In a pod the container's end kills everything in it anyway. Elsewhere (macOS) this is a no-op.

Workers also ignore SIGINT: Ctrl-C reaches the whole terminal process group, and the parent, not
each worker, decides what happens (it stops them and prints one line).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
PARENT_ENV = "AVATAR_LIFELINE_PARENT"


def die_with_parent(sig: int = signal.SIGKILL, expected_parent: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent ends. Returns whether that
    is in place (False off Linux). If the parent already ended (``expected_parent`` given and no
    longer our parent), exits at once."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if expected_parent is not None and os.getppid() != expected_parent:  # it died before prctl
        os._exit(1)
    return True


def worker_init(*chained: Any) -> None:
    """Pool initializer: die with the parent, leave SIGINT to it; then run ``chained`` as
    ``(fn, *args)`` when given."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if chained:
        chained[0](*chained[1:])


def dataloader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of a torch ``DataLoader``: die with the parent."""
    die_with_parent()


def forkserver_context(preload: list[str] | tuple[str, ...] = ()):  # noqa: ANN201 - a multiprocessing context
    """The ``forkserver`` context with this module preloaded first (so the forkserver dies with
    this process) plus ``preload``; ``spawn`` where there is no forkserver. The preload list takes
    effect when the forkserver first starts in this process."""
    try:
        ctx = mp.get_context("forkserver")
    except ValueError:
        return mp.get_context("spawn")
    os.environ[PARENT_ENV] = str(os.getpid())
    ctx.set_forkserver_preload([__name__, *[m for m in preload if m != __name__]])
    return ctx


def start_forkserver(preload: list[str] | tuple[str, ...] = ()) -> bool:
    """Start the forkserver now, from the calling thread, with ``preload`` (plus this module);
    False where there is none. The kernel's parent-death signal follows the *thread* that started
    a process, so a run whose stages live in threads (:mod:`stages.runner.schedule`) starts it from
    its main thread: a forkserver started by a stage's thread would be killed when that stage ends,
    and the next stage's pool would find it gone. Once running, later preload lists are ignored."""
    ctx = forkserver_context(preload)
    if ctx.get_start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True


def kill_pool(pool: Any) -> None:
    """Stop a ``ProcessPoolExecutor`` now: cancel what has not started, SIGKILL its workers (a
    shard half-done leaves no manifest, so nothing half-written is trusted)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # the executor keeps no public handle
    for p in procs:
        try:
            p.kill()
        except (OSError, AttributeError, ValueError):
            pass
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:  # noqa: BLE001 - a broken pool is what we are cleaning up
        pass
    for p in procs:
        try:
            p.join(5)
        except (OSError, AttributeError, ValueError, AssertionError):
            pass


def _on_import() -> None:
    """In the forkserver (whose parent set ``$AVATAR_LIFELINE_PARENT``): die with that parent."""
    parent = os.environ.get(PARENT_ENV)
    in_forkserver = sys.argv == ["-c"] and "multiprocessing.forkserver" in sys.modules
    if in_forkserver and parent and parent == str(os.getppid()):
        die_with_parent(expected_parent=int(parent))


_on_import()
