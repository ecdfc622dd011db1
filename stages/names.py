"""The one rule for names the user picks (``--actor``), checked first by every command.

An actor name becomes a store folder (``actors/<actor>/``), a Kubernetes label value and part of a
workflow name, so it must be all three: 1 to 63 lower-case letters, digits, ``.``, ``_`` or ``-``,
starting and ending with a letter or digit. ``roman``, ``roman-smith``, ``take.2`` pass;
``Roman Smith``, ``../evil``, ``-x`` do not.
"""

from __future__ import annotations

import re

from stages.errors import BadInput

ACTOR_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
ACTOR_RULE = "use 1 to 63 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit"


def actor_problem(actor: str) -> str | None:
    """Why ``actor`` is not a valid actor name, or ``None`` when it is."""
    if not isinstance(actor, str) or not actor:
        return "is empty"
    if ".." in actor or "/" in actor or "\\" in actor:
        return "is a path, not a name"
    if len(actor) > 63:
        return f"is {len(actor)} characters long"
    if not ACTOR_NAME.match(actor):
        return "is not a valid actor name"
    return None


def check_actor(actor: str, option: str = "--actor") -> str:
    """``actor`` itself when it follows the rule, else :class:`BadInput` (one line naming what was
    typed and the rule). ``option`` is how the user gave it (``--actor``, ``--driver``)."""
    problem = actor_problem(actor)
    if problem is not None:
        raise BadInput(f"{option} {actor!r}: {problem}; {ACTOR_RULE} (for example "
                       f"{_suggest(actor)!r})")
    return actor


DRIVER_ENTRY = "drivers/"  # a driver of ``avatar drive`` runs the stages as the entry ``drivers/<name>``


def check_entry(entry: str) -> str:
    """A store entry the stage runner works on: an actor name, or ``drivers/<name>`` (a driver of
    ``avatar drive``, whose ``<name>`` follows the actor-name rule); BadInput otherwise."""
    if isinstance(entry, str) and entry.startswith(DRIVER_ENTRY):
        check_actor(entry[len(DRIVER_ENTRY):], "--name")
        return entry
    return check_actor(entry)


def _suggest(actor: str) -> str:
    """A valid name close to ``actor`` (lower-cased, other characters as ``-``)."""
    s = re.sub(r"[^a-z0-9._-]+", "-", str(actor).lower()).replace("..", ".")
    s = s.strip("._-")[:63].strip("._-")
    return s or "actor1"
