"""One writer per actor: a file lock on a local store, a lease on S3; a second holder gets Busy
(exit 75) naming the first; a killed holder's lock or lease is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from factories.subprocess_env import subprocess_env
from stages.errors import EXIT_TRANSIENT
from stages.runner.lock import Busy, hold, lock_scope

HOLDER = """
import sys, time
from stages.store.uri import open_store
from stages.runner.lock import hold
with hold(open_store(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(store_uri: str, scope: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, store_uri, scope], stdout=subprocess.PIPE, text=True,
                            env=subprocess_env(env), start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_with_exit_75_naming_the_first(store, monkeypatch):
    if store.uri.startswith("s3://"):
        monkeypatch.setenv("AVATAR_LEASE_SECONDS", "30")
    proc = _holder(store.uri, "roman", {k: v for k, v in os.environ.items() if k.startswith(("AVATAR_", "AWS_"))})
    try:
        with pytest.raises(Busy) as e:
            with hold(store, "roman"):
                pass
        msg = str(e.value)
        assert e.value.exit_code == EXIT_TRANSIENT and "\n" not in msg
        assert f"pid {proc.pid}" in msg and "'roman' is busy" in msg
        with hold(store, "other-actor"):  # other actors are free
            pass
        with hold(store, lock_scope("roman", "track", 3)):  # a shard's scope is its own
            pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # The holder was killed: its file lock went with it; its lease (same host, process gone) is taken over.
    t0 = time.monotonic()
    with hold(store, "roman"):
        assert time.monotonic() - t0 < 5
    if store.uri.startswith("s3://"):
        assert not store.exists(".locks/roman.json")
    else:
        assert not (store.root / ".locks").exists()


def test_waiting_for_a_lock_gets_it_when_the_holder_ends(tmp_path, monkeypatch):
    from stages.store.local import LocalStore

    store = LocalStore(tmp_path / "s")
    proc = _holder(store.uri, "roman")
    killer = subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {proc.pid}"])
    t0 = time.monotonic()
    with hold(store, "roman", wait=20):
        waited = time.monotonic() - t0
    killer.wait()
    proc.wait()
    assert 0.5 < waited < 10


def test_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    from stages.store.local import LocalStore

    store = LocalStore(tmp_path / "s")
    with hold(store, "a"):
        with hold(store, "a"):
            assert (tmp_path / "s" / ".locks" / "a.lock").is_file()
        assert (tmp_path / "s" / ".locks" / "a.lock").is_file()
    assert not (tmp_path / "s" / ".locks").exists()  # nothing left in the store


def test_expired_lease_of_another_host_is_taken_over(s3_env, monkeypatch):
    import json

    from stages.store.uri import open_store

    store = open_store(f"s3://{s3_env['bucket']}")
    alive = {"pid": 1, "host": "some-other-pod", "since": "x", "command": "avatar stage track",
             "token": "t", "expires": time.time() + 60}
    store.put_bytes(".locks/roman.json", json.dumps(alive).encode())
    with pytest.raises(Busy, match="some-other-pod"):
        with hold(store, "roman"):
            pass
    store.put_bytes(".locks/roman.json", json.dumps({**alive, "expires": time.time() - 1}).encode())
    with hold(store, "roman"):
        lease = store.get_json(".locks/roman.json")
        assert lease["pid"] == os.getpid() and lease["token"] != "t"
    assert not store.exists(".locks/roman.json")


def test_lease_is_renewed_while_held(s3_env, monkeypatch):
    from stages.store.uri import open_store

    monkeypatch.setenv("AVATAR_LEASE_SECONDS", "3")
    store = open_store(f"s3://{s3_env['bucket']}")
    with hold(store, "roman"):
        first = store.get_json(".locks/roman.json")["expires"]
        time.sleep(2.5)
        assert store.get_json(".locks/roman.json")["expires"] > first
