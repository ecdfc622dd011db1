"""The failure model as exception types, each with its process exit code.

- :class:`BadInput` (exit 2): the user's input is wrong; the message names the file and the fix.
  Argo does not retry it.
- :class:`Transient` (exit 75, ``EX_TEMPFAIL``): S3 hiccup, preempted node, lost connection;
  retrying later can succeed. Argo retries it with backoff.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TRANSIENT = 75


class AvatarError(Exception):
    """Base of the errors the CLI turns into a one-line message and an exit code. ``str(err)`` is
    always one line (a library's multi-line message inside it is joined with spaces)."""

    exit_code = 1

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class BadInput(AvatarError):
    """Input the user must fix. ``str(err)`` is one line naming the file and the fix."""

    exit_code = EXIT_BAD_INPUT


class Transient(AvatarError):
    """A fault that may pass: retry later. ``str(err)`` says what was unreachable."""

    exit_code = EXIT_TRANSIENT


def bad_input(path: object, problem: str, fix: str) -> BadInput:
    """Build the one-line bad-input message ``<path>: <problem>; <fix>``."""
    return BadInput(f"{path}: {problem}; {fix}")
