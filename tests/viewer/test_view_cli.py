"""``avatar view`` as a user starts it: against an S3 store, it prints the URL, binds 127.0.0.1 and serves the page."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("viser", reason="viser is in the viewer extra (pip install -e '.[viewer]')")

REPO = str(Path(__file__).resolve().parents[2])


def _non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if addr.startswith("127.") else addr


def test_view_command_serves_an_s3_actor(viewer_store, s3_env, tmp_path):
    from stages.store.uri import open_store

    s3 = open_store(f"s3://{s3_env['bucket']}/v")
    for key in viewer_store.list("actors/toy/"):
        if "/dataset/" in key and "/checkpoint/" not in key:
            continue
        s3.put_file(key, viewer_store.local_path(key))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items()}
    env.update({k: v for k, v in s3_env.items() if k != "bucket"}, OMP_NUM_THREADS="1", PYTHONPATH=REPO,
               AVATAR_S3_CONFIG="/nonexistent/avatar-s3.json")
    proc = subprocess.Popen([sys.executable, "-c", "from stages.cli import entry; entry()", "view", "--actor", "toy",
                             "--store", s3.uri, "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        url, t_end, seen = None, time.monotonic() + 120, []
        while url is None and time.monotonic() < t_end:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("avatar view:") and " at http" in line:
                url = line.rsplit(" at ", 1)[1].strip()
        assert url == f"http://127.0.0.1:{port}/", "".join(seen)
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
        # bound to loopback only: the machine's other address (where it has one) does not answer
        other = _non_loopback_address()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=2).close()
    finally:
        proc.terminate()
        proc.wait(20)
