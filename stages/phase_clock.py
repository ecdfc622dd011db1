"""Wall and CPU seconds of the named phases of a piece of work (a stage's set-up, say).

A shared machine inflates wall clocks by however much else runs; the CPU seconds of this process
(all its threads) are the steadier figure. Worker processes' CPU is not counted (they are not
waited for when a phase ends).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class PhaseClock:
    """Attributes:
        wall_s: phase name -> wall seconds (summed when a name repeats).
        cpu_s: phase name -> CPU seconds of this process (all threads) during the phase.
    """

    wall_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as phase ``name`` (recorded also when it raises)."""
        w0, c0 = time.monotonic(), time.process_time()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - w0, time.process_time() - c0)

    def add(self, name: str, wall: float, cpu: float) -> None:
        """Add ``wall`` and ``cpu`` seconds to phase ``name``."""
        self.wall_s[name] = round(self.wall_s.get(name, 0.0) + wall, 3)
        self.cpu_s[name] = round(self.cpu_s.get(name, 0.0) + cpu, 3)

    def report(self) -> dict[str, dict[str, float]]:
        """``{"wall_s": {...}, "cpu_s": {...}}`` in the order the phases first ran."""
        return {"wall_s": dict(self.wall_s), "cpu_s": dict(self.cpu_s)}

    def line(self) -> str:
        """One log line: ``name wall/cpu s, ...``."""
        return ", ".join(f"{k} {w:.2f}/{self.cpu_s[k]:.2f}" for k, w in self.wall_s.items()) + " s (wall/CPU)"
