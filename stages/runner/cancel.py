"""Stopping a stage that runs in a thread of the local scheduler.

A thread cannot be killed from outside, so the scheduler (:mod:`stages.runner.schedule`) gives each
stage thread a :class:`threading.Event` (:func:`bind`) and sets it when the run must stop (another
stage failed, Ctrl-C). The stage notices at its next unit of work: :class:`~stages.runner.progress.Progress`
calls :func:`check` on every ``advance`` and the runner's shard-pool loop polls it, killing its
worker processes. :class:`Cancelled` then unwinds the stage (scratch removed, no manifest written
for the half-done work). A thread with no event bound (``avatar stage``, a pod) never stops here.
"""

from __future__ import annotations

import threading

_local = threading.local()


class Cancelled(BaseException):
    """The scheduler stopped this stage (a ``BaseException``, so ``except Exception`` in a stage
    does not swallow it)."""


def bind(event: threading.Event | None) -> None:
    """Make ``event`` the stop signal of the calling thread (``None``: unbind)."""
    _local.event = event


def requested() -> bool:
    """Whether the calling thread's stage has been asked to stop."""
    event = getattr(_local, "event", None)
    return event is not None and event.is_set()


def check() -> None:
    """Raise :class:`Cancelled` if the calling thread's stage has been asked to stop."""
    if requested():
        raise Cancelled("stopped by the scheduler")
