"""The rule that decides whether a recorded stage config still holds for the current code
(stages/config_match.py): fields added later at their defaults hold, changed values do not."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from stages.config import digest_of
from stages.config_match import ABSENT, Change, config_changes, config_holds, describe_changes, trusted_record


@dataclass
class Old:
    steps: int = 200
    lr: float = 0.01
    size: tuple[int, int] = (96, 96)


@dataclass
class New(Old):  # the same stage config after an upgrade: two fields added with defaults
    mode: str = "plain"
    extra: list[int] = field(default_factory=lambda: [1, 2])


def record(cfg) -> tuple[dict, str]:
    """(config, config_digest) as a manifest stores them: JSON written and read back."""
    return json.loads(json.dumps(asdict(cfg))), digest_of(cfg)


def test_a_record_of_the_same_config_holds():
    rec, dig = record(New(steps=5))
    assert config_changes(rec, dig, New(steps=5)) == []
    assert config_holds(rec, dig, New(steps=5))


def test_fields_added_at_their_defaults_hold():
    rec, dig = record(Old(steps=5))
    assert dig != digest_of(New(steps=5)), "the digest alone would refuse the upgraded config"
    assert config_changes(rec, dig, New(steps=5)) == []
    assert config_holds(rec, dig, New(steps=5))


def test_a_field_added_but_set_to_another_value_is_a_change():
    rec, dig = record(Old())
    assert config_changes(rec, dig, New(mode="fancy")) == [Change("mode", "plain", "fancy")]
    assert not config_holds(rec, dig, New(extra=[3]))


def test_changed_values_are_changes_as_before():
    rec, dig = record(Old(steps=200))
    assert config_changes(rec, dig, Old(steps=300)) == [Change("steps", 200, 300)]
    # a changed default of a field that existed: the record holds the old default
    @dataclass
    class Changed(Old):
        steps: int = 250

    assert config_changes(rec, dig, Changed()) == [Change("steps", 200, 250)]
    assert not config_holds(rec, dig, New(lr=0.02))


def test_json_types_are_compared_as_the_digest_sees_them():
    rec, dig = record(Old())
    assert isinstance(rec["size"], list)  # tuples read back as lists: still the same value
    assert config_holds(rec, dig, Old())
    assert not config_holds(rec, dig, Old(steps=200.0)), "1 and 1.0 differ, as in the digest"


def test_a_removed_field_is_a_change():
    rec, dig = record(New())

    @dataclass
    class Fewer:
        steps: int = 200
        lr: float = 0.01
        size: tuple[int, int] = (96, 96)
        mode: str = "plain"

    changes = config_changes(rec, dig, Fewer())
    assert changes == [Change("extra", [1, 2], ABSENT)]
    assert str(changes[0]) == "extra [1, 2] -> <absent>"


def test_a_record_without_a_default_for_a_new_field_is_a_change():
    @dataclass
    class Required:
        must: int
        steps: int = 200
        lr: float = 0.01
        size: tuple[int, int] = (96, 96)

    rec, dig = record(Old())
    assert config_changes(rec, dig, Required(must=1)) == [Change("must", ABSENT, 1)]


def test_an_untrusted_record_falls_back_to_the_digest():
    rec, dig = record(Old())
    assert not trusted_record({}, dig)
    assert not trusted_record({**rec, "steps": 1}, dig), "a record that does not hash to its digest"
    assert config_changes({}, dig, New()) is None
    assert config_changes({}, dig, Old()) == [], "equal digests hold whatever the record"
    assert config_changes({**rec, "steps": 1}, dig, New()) is None
    assert describe_changes(None) == "another config"


def test_ignored_fields_are_left_out_on_both_sides():
    ignore = ("steps",)
    rec = asdict(Old(steps=10))
    dig = digest_of({k: v for k, v in rec.items() if k not in ignore})
    assert trusted_record(rec, dig, ignore)
    assert config_holds(rec, dig, New(steps=99), ignore=ignore)
    assert not config_holds(rec, dig, New(steps=99, lr=1.0), ignore=ignore)


def test_describe_changes_is_short():
    changes = [Change(f"f{i}", i, i + 1) for i in range(6)]
    assert describe_changes(changes, limit=2) == "f0 0 -> 1, f1 1 -> 2 and 4 more"
    assert describe_changes([Change("mode", "plain", "fancy")]) == 'mode "plain" -> "fancy"'


@dataclass
class Flipped(Old):  # Old after its default of steps changed from 200 to 50
    FORMER_DEFAULTS = {"steps": (200,)}
    steps: int = 50


def test_work_finished_under_a_former_default_holds():
    """A changed default listed in FORMER_DEFAULTS: a record made with the old default holds while the
    field is at its new default; a user's value is compared as always."""
    rec, dig = record(Old())  # steps 200: the default when it ran
    assert config_holds(rec, dig, Flipped())  # now at the new default 50: not refused, not redone
    assert config_changes(rec, dig, Flipped(steps=80)) == [Change("steps", 200, 80)]  # a user's value
    rec_user, dig_user = record(Old(steps=120))  # the user had set 120 (not a former default)
    assert config_changes(rec_user, dig_user, Flipped()) == [Change("steps", 120, 50)]
    rec_new, dig_new = record(Flipped())
    assert config_holds(rec_new, dig_new, Flipped())
    assert config_changes(rec, dig, Old(lr=0.5)) == [Change("lr", 0.01, 0.5)]  # other fields as before
    assert not config_holds(rec, dig, Old(steps=50))  # without FORMER_DEFAULTS: a change, as before
