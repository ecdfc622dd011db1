"""Shared fixtures: a real S3 server (SeaweedFS) for the session, stores on both backends."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers such as s3server.py
# the repository root ahead of tests/: tests/stages/ (no __init__.py) must never shadow the
# stages package, also when pytest is started as a plain `pytest` rather than `python -m pytest`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s3server import SeaweedServer  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WOJTEK = SHARED_DATA / "wojtek.mp4"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A running SeaweedFS S3 endpoint on 127.0.0.1 for the whole session."""
    with SeaweedServer(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The S3 server's connection env applied to this process, plus a fresh ``bucket`` (created).

    Yields a dict: the env vars (also for subprocesses) and ``bucket``."""
    from stages.store.s3 import S3Store

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AVATAR_S3_CONFIG", "/nonexistent/avatar-s3.json")
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    S3Store(bucket).ensure_bucket()
    yield {**s3_server.env(), "bucket": bucket}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """The same tests against a local folder and against the real S3 server."""
    from stages.store.uri import open_store

    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    env = request.getfixturevalue("s3_env")
    return open_store(f"s3://{env['bucket']}/prefix")


@pytest.fixture(scope="session")
def wojtek() -> Path:
    """The real talking-head clip from the shared data folder (skips where it is absent)."""
    if not WOJTEK.is_file():
        pytest.skip(f"the shared test clip {WOJTEK} is absent (a fresh clone has no ../shared/data)")
    return WOJTEK


def pytest_collection_modifyitems(config, items):
    """GPU tests skip, with that reason, where torch sees no CUDA device."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One torch intra-op thread: on a shared 2-core machine extra threads mostly wait on each other."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
