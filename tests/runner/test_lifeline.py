"""Pool workers and the forkserver die with the run that started them, even after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from factories.subprocess_env import subprocess_env
from processes import kill_session, session_processes, wait_until_gone

RUN = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from stages.runner import lifeline

def work(_):
    time.sleep(120)  # a long shard

if __name__ == "__main__":
    ctx = lifeline.forkserver_context([])
    pool = ProcessPoolExecutor(2, mp_context=ctx, initializer=lifeline.worker_init)
    for _ in range(2):
        pool.submit(work, 0)
    while len(pool._processes) < 2:
        time.sleep(0.05)
    time.sleep(1.0)
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(120)
"""


def test_workers_and_forkserver_die_with_a_killed_parent(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env["PYTHONPATH"]])  # this checkout
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        assert len(session_processes(proc.pid)) >= 4  # the run, the forkserver, two workers (+ resource tracker)
        os.kill(proc.pid, signal.SIGKILL)  # the run only, not its group
        proc.wait()
        assert wait_until_gone(proc.pid, 2.0) == [], "processes of the killed run still alive 2 s after the kill"
    finally:
        kill_session(proc.pid)
