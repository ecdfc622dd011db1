"""The one actor-name rule, and every command checking it first."""

from __future__ import annotations

import pytest

from stages.errors import BadInput
from stages.names import actor_problem, check_actor


@pytest.mark.parametrize("name", ["roman", "roman-smith", "take.2", "a", "a_b", "x" * 63, "0"])
def test_valid_names_pass(name):
    assert check_actor(name) == name and actor_problem(name) is None


@pytest.mark.parametrize("name", ["Roman Smith", "../evil", "a/b", "", "-x", "x-", ".x", "x" * 64, "ROMAN", "é",
                                  "a..b", "a b"])
def test_invalid_names_are_one_line_bad_input_naming_what_was_typed(name):
    with pytest.raises(BadInput) as e:
        check_actor(name)
    msg = str(e.value)
    assert "\n" not in msg and f"--actor {name!r}" in msg and "lower-case" in msg
    suggestion = msg.rsplit("(for example ", 1)[1].rstrip(")").strip("'")
    assert actor_problem(suggestion) is None  # the suggested name itself passes


def test_workflow_submit_uses_the_same_rule():
    from workflows.build import check_actor as workflow_check

    assert workflow_check("roman") == "roman"
    with pytest.raises(BadInput, match="Roman Smith"):
        workflow_check("Roman Smith")


def test_driver_entries_follow_the_same_rule():
    """The runner's entries: an actor, or ``drivers/<name>`` whose name follows the actor rule."""
    from stages.errors import BadInput
    from stages.names import check_entry

    assert check_entry("roman") == "roman" and check_entry("drivers/self") == "drivers/self"
    for bad in ("drivers/../x", "drivers/", "drivers/Bad Name", "actors/roman", "../evil"):
        with pytest.raises(BadInput):
            check_entry(bad)
