"""stages.phase_clock: wall and CPU seconds per named phase."""

import time

import pytest

from stages.phase_clock import PhaseClock


def test_phases_record_wall_and_cpu_and_add_up():
    clock = PhaseClock()
    with clock.phase("sleep"):
        time.sleep(0.05)  # wall, next to no CPU
    with clock.phase("spin"):
        t = time.process_time()
        while time.process_time() - t < 0.05:
            pass
    with pytest.raises(ValueError), clock.phase("sleep"):  # recorded also when it raises; a name repeats: summed
        time.sleep(0.02)
        raise ValueError
    rep = clock.report()
    assert list(rep["wall_s"]) == ["sleep", "spin"] == list(rep["cpu_s"])
    assert rep["wall_s"]["sleep"] >= 0.07  # both sleeps (CPU: whatever other threads of the process did meanwhile)
    assert rep["cpu_s"]["spin"] >= 0.05
    clock.add("first_step", 1.5, 0.25)
    assert clock.report()["wall_s"]["first_step"] == 1.5 and "first_step 1.50/0.25" in clock.line()
