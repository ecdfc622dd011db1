"""A shard worker's torch threads are its share of the cores (workers x threads <= cores)."""

import subprocess
import sys
from pathlib import Path

import pytest

from stages.runner.threads import share_of_cores


@pytest.mark.parametrize("pool, cores, want", [(1, 2, 2), (2, 2, 1), (3, 2, 1), (4, 16, 4), (16, 16, 1), (5, 16, 3)])
def test_share_of_cores(pool, cores, want, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert share_of_cores(pool, cores) == want


def test_omp_num_threads_is_an_upper_bound(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert share_of_cores(1, 16) == 2
    assert share_of_cores(16, 16) == 1


def test_limit_sets_torch_threads_only_where_torch_is_imported():
    code = ("import sys; from stages.runner.threads import limit_worker_threads as f; f(1); "
            "assert 'torch' not in sys.modules; import torch; torch.set_num_threads(4); "
            "n = f(64); assert torch.get_num_threads() == n == 1, (n, torch.get_num_threads()); print('ok')")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
