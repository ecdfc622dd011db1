"""Native log noise (MediaPipe, TFLite, absl on descriptor 2) stays out of the terminal; our own
lines and errors still reach it; AVATAR_NATIVE_LOG keeps the noise in a file."""

import os
import subprocess
import sys

from pathlib import Path

import pytest

from factories.subprocess_env import subprocess_env
from stages.cli.native_log import native_log_target

CHILD = r"""
import logging, os, sys
from stages.cli.native_log import native_log_target, redirect_native_stderr
redirect_native_stderr(native_log_target(sys.argv[1:]))
logging.basicConfig(level=logging.INFO, format="%(message)s")
os.write(2, b"W0000 native warning\n")          # what C++ code does
logging.getLogger("avatar").info("our log line")
if "--mediapipe" in sys.argv:
    import numpy as np
    import mediapipe as mp
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True)
    mesh.process(np.zeros((64, 64, 3), np.uint8))
    logging.getLogger("avatar").info("mediapipe ran")
print("avatar: error: one line", file=sys.stderr)
"""


def _run(tmp_path, *args, env_extra=None):
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env["PYTHONPATH"]])
    env.pop("AVATAR_NATIVE_LOG", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_target_follows_env_and_verbose():
    assert native_log_target([], {}) == os.devnull
    assert native_log_target(["run", "--verbose"], {}) is None and native_log_target(["-v"], {}) is None
    assert native_log_target([], {"AVATAR_NATIVE_LOG": "/tmp/x.log"}) == "/tmp/x.log"
    assert native_log_target(["-v"], {"AVATAR_NATIVE_LOG": "/tmp/x.log"}) == "/tmp/x.log"
    assert native_log_target([], {"AVATAR_NATIVE_LOG": "-"}) is None


def test_native_lines_go_to_the_log_and_ours_to_the_terminal(tmp_path):
    log = tmp_path / "native.log"
    r = _run(tmp_path, env_extra={"AVATAR_NATIVE_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    assert "W0000" not in r.stderr
    assert "our log line" in r.stderr and "avatar: error: one line" in r.stderr
    assert "W0000 native warning" in log.read_text()
    quiet = _run(tmp_path)  # default: discarded
    assert "W0000" not in quiet.stderr and "our log line" in quiet.stderr
    loud = _run(tmp_path, "--verbose")
    assert "W0000 native warning" in loud.stderr and "our log line" in loud.stderr


def test_mediapipe_graph_noise_is_kept_out(tmp_path):
    log = tmp_path / "native.log"
    r = _run(tmp_path, "--mediapipe", env_extra={"AVATAR_NATIVE_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    assert "mediapipe ran" in r.stderr
    for noise in ("W0000", "XNNPACK", "absl::InitializeLog", "I0000"):
        assert noise not in r.stderr, r.stderr
    assert log.stat().st_size > 0  # MediaPipe did write something, into the file
