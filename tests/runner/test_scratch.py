"""Scratch folders of ended runs are removed; a live run's are not."""

from __future__ import annotations

import subprocess
import sys

from factories.subprocess_env import subprocess_env
from stages.runner import scratch


def test_sweep_removes_only_folders_whose_owner_has_ended(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_SCRATCH", str(tmp_path))
    code = ("import os; from stages.runner.scratch import make_scratch; p = make_scratch('ingest');"
            "(p / 'frame.png').write_bytes(b'x' * 1000); print(p, flush=True); os._exit(0)")  # dies without cleanup
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=subprocess_env({"AVATAR_SCRATCH": str(tmp_path)})).stdout.strip()
    live = scratch.make_scratch("track")
    foreign = tmp_path / "avatar-demo-synthetic"  # not ours (no .owner): left alone
    foreign.mkdir()
    assert {p.name for p in tmp_path.iterdir()} >= {tmp_path.joinpath(dead).name, live.name}

    removed = scratch.sweep()
    assert [str(p) for p in removed] == [dead]
    assert live.is_dir() and foreign.is_dir() and not (tmp_path / dead).exists()
    scratch.remove_scratch(live)
    assert not live.exists()
