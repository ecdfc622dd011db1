"""Fixtures for the masks stage: real frames from wojtek.mp4, MediaPipe landmarks, stand-in ONNX
models exported here, and an actor on a LocalStore with finished ingest/landmarks outputs."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest

from stages.frameshard import frame_name, write_shard_tar
from stages.runner.context import actor_key
from stages.runner.manifest import MANIFEST, Manifest
from stages.runner.shards import SHARDS_FILE, plan_shards, shards_document
from stages.store.local import LocalStore

WOJTEK = Path(__file__).resolve().parents[3] / "shared" / "data" / "wojtek.mp4"
N_FRAMES = 24


def _decode(n: int) -> np.ndarray:
    import av

    out = []
    with av.open(str(WOJTEK)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return np.stack(out)


def _landmarks(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from mediapipe.python.solutions.face_mesh import FaceMesh

    n, h, w = frames.shape[:3]
    pts = np.full((n, 478, 3), np.nan, np.float32)
    ok = np.zeros(n, bool)
    with FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as fm:
        for i, f in enumerate(frames):
            res = fm.process(f)
            if res.multi_face_landmarks:
                lm = res.multi_face_landmarks[0].landmark
                pts[i] = [(p.x * w, p.y * h, p.z * w) for p in lm]
                ok[i] = True
    return pts, ok


@pytest.fixture(scope="session")
def wojtek() -> dict[str, np.ndarray]:
    """``{"frames": uint8 [24,512,512,3], "points": float32 [24,478,3], "ok": bool [24]}``."""
    if not WOJTEK.is_file():
        pytest.skip(f"{WOJTEK} is absent (the shared test video); the default backend test needs real frames")
    frames = _decode(N_FRAMES)
    pts, ok = _landmarks(frames)
    return {"frames": frames, "points": pts, "ok": ok}


@pytest.fixture(scope="session")
def wojtek_clip(wojtek) -> dict[str, np.ndarray]:
    """Like ``wojtek`` with the first 60 frames."""
    frames = _decode(60)
    pts, ok = _landmarks(frames)
    return {"frames": frames, "points": pts, "ok": ok}


@pytest.fixture(scope="session")
def wojtek_all(wojtek) -> dict[str, np.ndarray]:
    """Like ``wojtek`` with every frame of the clip (400)."""
    frames = _decode(10 ** 6)
    pts, ok = _landmarks(frames)
    return {"frames": frames, "points": pts, "ok": ok}


def _jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_actor(store: LocalStore, actor: str, frames: np.ndarray, points: np.ndarray, ok: np.ndarray,
               shard_size: int) -> list:
    """Write finished ``ingest`` (frames tars, shards.json) and ``landmarks`` (npz) outputs with their
    manifests, as those stages would; returns the shards."""
    n = len(frames)
    shards = plan_shards(n, shard_size)
    outs_ingest: dict[str, str] = {}
    outs_lmk: dict[str, str] = {}
    for s in shards:
        data = io.BytesIO()
        members = [(frame_name(k), _jpeg(frames[k - 1])) for k in s.frames]
        tmp = Path(store.root).parent / f"frames-{actor}-{s.name}.tar"
        write_shard_tar(tmp, members)
        key = actor_key(actor, "ingest", "frames", f"{s.name}.tar")
        outs_ingest[key] = store.put_file(key, tmp)
        tmp.unlink()
        idx = np.arange(s.start, s.stop)
        np.savez(data, frames=idx.astype(np.int32), points=points[idx - 1].astype(np.float32),
                 confidence=ok[idx - 1].astype(np.float32), ok=ok[idx - 1])
        key = actor_key(actor, "landmarks", f"{s.name}.npz")
        outs_lmk[key] = store.put_bytes(key, data.getvalue())
    key = actor_key(actor, "ingest", SHARDS_FILE)
    outs_ingest[key] = store.put_json(key, shards_document(n, 25, shards))
    for stage, outs in (("ingest", outs_ingest), ("landmarks", outs_lmk)):
        m = Manifest(stage=stage, actor=actor, inputs={"test": "0"}, config_digest="test", config={}, outputs=outs)
        store.put_json(actor_key(actor, stage, MANIFEST), m.to_dict())
    return shards


@pytest.fixture
def actor_factory(tmp_path):
    """``make(frames, points, ok, shard_size, actor="a") -> (store, shards)`` on a fresh LocalStore."""
    (tmp_path / "store").mkdir()
    store = LocalStore(tmp_path / "store")

    def make(frames, points, ok, shard_size, actor="a"):
        return store, make_actor(store, actor, frames, points, ok, shard_size)

    return make


@pytest.fixture(scope="session")
def standin_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny stand-in ONNX models exported from torch: ``rvm``, ``rvm16`` (fp16), ``bisenet``."""
    import torch

    from stages.masks.standin_models import StandInBiSeNet, StandInRVM, export_bisenet, export_rvm

    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    rvm = StandInRVM(width=8)
    bis = StandInBiSeNet(width=8)
    with torch.no_grad():
        bis.cls.weight.mul_(30.0)  # confident, varied classes so the class mapping is exercised
        bis.cls.bias.copy_(torch.linspace(-1, 1, 19))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = {"rvm": export_rvm(rvm, d / "rvm.onnx"), "bisenet": export_bisenet(bis, d / "bisenet.onnx"),
                 "rvm16": export_rvm(StandInRVM(width=8), d / "rvm16.onnx", fp16=True)}
    return paths
