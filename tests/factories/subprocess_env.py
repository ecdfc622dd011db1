"""The environment for tests that start ``python -m stages`` (or other helpers) in a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra``, with the tests folder importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


def sigint_as_at_a_terminal() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT: Ctrl-C's default action.

    A shell starts background jobs (``cmd &``, ``nohup``) with SIGINT ignored, children inherit
    that, and a Python started with SIGINT ignored never raises ``KeyboardInterrupt``: the test
    would measure how it was launched, not what the run does with Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
