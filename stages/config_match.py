"""Whether the config a finished stage recorded still holds for the code that runs now.

A manifest records the stage's config (its JSON form) and ``config_digest``, the sha256 of that JSON
(:func:`stages.config.digest_of`). The code gains settings over time; a finished stage must stay
finished when the only difference is a setting its code did not have yet. The rule:

- equal digests: the config holds (the fast path, and every manifest written by this code);
- otherwise the recorded config is compared with the current one **field by field**, a field the
  record lacks counting as that field's dataclass default: a field added later, at its default,
  changes nothing; a field added later and set to something else (a preset's value, a user
  override) is a change;
- a field whose recorded value differs from the current value is a change (a user override, or a
  changed default of a field that existed: detected exactly as the digest did);
- a recorded field that the current config no longer has is a change (what the code does instead is
  unknown), and so is a record that lacks a field with no default;
- a record whose config does not hash to its ``config_digest`` (or that has none) cannot be compared
  field by field: only the digest counts;
- a **changed default**: a recorded value that the field's default used to be, listed in the
  ``Config`` class's ``FORMER_DEFAULTS`` (``{field: (old default, ...)}``), holds while the field is at
  its current default: work finished under the old default stays finished (not refused, not redone);
  new work uses the new default. A value the user sets is compared as always.

Values are compared by their canonical JSON text (``1`` and ``1.0`` differ, as in the digest).
The contract for developers (docs/developing.md): a new ``Config`` field's default must reproduce
what the code did before the field existed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from stages.config import digest_of

class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()
"""A field that one side of a :class:`Change` does not have (shown as ``<absent>``)."""


@dataclass(frozen=True)
class Change:
    """One setting whose recorded value differs from the current one.

    Attributes:
        field: the ``Config`` field name.
        recorded: its value in the record (the field's default when the record lacks it), or
            :data:`ABSENT` when the record lacks a field that has no default.
        now: its current value, or :data:`ABSENT` for a recorded field the code no longer has.
    """

    field: str
    recorded: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.field} {_text(self.recorded)} -> {_text(self.now)}"


def _text(value: Any) -> str:
    return repr(value) if value is ABSENT else json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    """``value`` as it reads back from a JSON manifest (dataclasses as dicts, tuples as lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def field_defaults(config: Any) -> dict[str, Any]:
    """``{field: default}`` (JSON form) of a ``Config`` dataclass (instance or class); fields with no
    default are left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _plain(f.default_factory())
    return out


def former_defaults(config: Any) -> dict[str, list[Any]]:
    """``{field: [former default (JSON form), ...]}`` from the ``Config`` class's ``FORMER_DEFAULTS``
    (absent: none)."""
    raw = getattr(type(config) if not isinstance(config, type) else config, "FORMER_DEFAULTS", None) or {}
    return {k: [_plain(v) for v in values] for k, values in raw.items()}


def _current(config: Any, ignore: Iterable[str]) -> dict[str, Any]:
    skip = set(ignore)
    return {k: v for k, v in _plain(config).items() if k not in skip}


def trusted_record(recorded: Mapping[str, Any] | None, recorded_digest: str, ignore: Iterable[str] = (),
                   digest: Callable[[Any], str] = digest_of) -> bool:
    """Whether ``recorded`` is the config ``recorded_digest`` was computed from (so it may be compared
    field by field). ``ignore``: fields left out of the digest (e.g. a checkpoint's resume digest)."""
    if not isinstance(recorded, Mapping) or not recorded:
        return False
    skip = set(ignore)
    return digest({k: v for k, v in recorded.items() if k not in skip}) == recorded_digest


def config_changes(recorded: Mapping[str, Any] | None, recorded_digest: str, config: Any,
                   ignore: Iterable[str] = ()) -> list[Change] | None:
    """The settings in which ``config`` (a ``Config`` dataclass instance) differs from a record.

    Args:
        recorded: the config as the manifest (or checkpoint) recorded it, ``{field: JSON value}``.
        recorded_digest: the digest recorded beside it.
        config: the current config.
        ignore: fields neither side's digest covers, left out of the comparison.

    Returns:
        ``[]`` when the config holds (see the module's rule), the changes otherwise, or ``None`` when
        the record cannot be compared field by field and its digest differs from ``config``'s.
    """
    skip = set(ignore)
    now = _current(config, skip)
    if digest_of(now) == recorded_digest:
        return []
    if not trusted_record(recorded, recorded_digest, skip):
        return None
    assert recorded is not None
    defaults = field_defaults(config)
    former = former_defaults(config)
    changes: list[Change] = []
    for name, value in now.items():
        if name in recorded:
            before = recorded[name]
        elif name in defaults:
            before = defaults[name]
        else:
            before = ABSENT
        if before is not ABSENT and not _same(before, value) and name in defaults and _same(value, defaults[name]) \
                and any(_same(before, f) for f in former.get(name, ())):
            continue  # finished under a former default, which the field still has now: holds
        if before is ABSENT or not _same(before, value):
            changes.append(Change(name, before, value))
    changes.extend(Change(name, recorded[name], ABSENT) for name in sorted(recorded)
                   if name not in now and name not in skip)
    return changes


def config_holds(recorded: Mapping[str, Any] | None, recorded_digest: str, config: Any,
                 ignore: Iterable[str] = ()) -> bool:
    """Whether the recorded config still holds for ``config`` (the module's rule): ``True`` exactly
    when :func:`config_changes` finds no change."""
    return config_changes(recorded, recorded_digest, config, ignore) == []


def describe_changes(changes: list[Change] | None, limit: int = 4) -> str:
    """One short phrase for a message: ``"batch_size 256 -> 512, steps 500 -> 900"``, or
    ``"another config"`` when the record could not be compared."""
    if changes is None:
        return "another config"
    if not changes:
        return "the same config"
    shown = ", ".join(str(c) for c in changes[:limit])
    return shown + (f" and {len(changes) - limit} more" if len(changes) > limit else "")
