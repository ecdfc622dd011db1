"""A drivable actor without training: an untrained avatar on the stand-in face model, published in
a store as the train and assemble stages would publish it (fast; the slow tests train a real one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


def publish_toy_actor(store, actor: str, work: Path, n_frames: int = 10) -> dict:
    """Write ``actors/<actor>/avatar/avatar.pt`` and ``dataset/tracking.npz`` with their manifests."""
    from stages.face.model import load_face_model
    from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d
    from stages.gauss.surface import flame_surface
    from stages.gauss.trainer import TrainConfig, avatar_dict, build_avatar
    from stages.runner.context import actor_key
    from stages.runner.manifest import Manifest
    from stages.tracking.params import FrameParams

    data = load_face_model(None)
    shape = np.zeros(data.n_shape, np.float32)
    surface = flame_surface(data, shape)
    cfg = TrainConfig(uv_resolution=24, area_samples=800, sh_degree=0, mlp_width=16, mlp_depth=1, pe_freqs=2,
                      test_frames=0, test_fraction=0.2)
    torch.manual_seed(0)
    model = build_avatar(surface, cfg)
    work.mkdir(parents=True, exist_ok=True)
    torch.save(avatar_dict(model, surface, cfg, steps=0, images=0), work / "avatar.pt")
    rng = np.random.default_rng(0)
    p = FrameParams.neutral(n_frames, distance=1.2).to_numpy()
    p["exp"][:, :5] = 0.3 + 0.05 * rng.normal(size=(n_frames, 5))
    p["jaw"] = matrix_to_rotation_6d(axis_angle_to_matrix(torch.as_tensor(
        np.stack([0.05 + 0.01 * rng.normal(size=n_frames), np.zeros(n_frames), np.zeros(n_frames)], 1)))).float().numpy()
    K = np.array([[2300, 0, 256], [0, 2300, 256], [0, 0, 1]], np.float32)
    R = FrameParams.from_numpy(p).R.numpy()
    np.savez(work / "tracking.npz", R=R, K=K, shape=shape, **p)
    for stage, folder, name in (("train", "avatar", "avatar.pt"), ("assemble", "dataset", "tracking.npz")):
        key = actor_key(actor, folder, name)
        out = {key: store.put_file(key, work / name)}
        store.put_json(actor_key(actor, stage, "manifest.json"),
                       Manifest(stage=stage, actor=actor, inputs={}, config_digest="toy", config={},
                                outputs=out).to_dict())
    return {"params": p, "K": K, "R": R, "model": model, "surface": surface, "train_frames": 8}


@pytest.fixture
def toy_actor(tmp_path):
    """(store root, actor name, info) of a drivable untrained actor in a local store."""
    from stages.store.local import LocalStore

    root = tmp_path / "store"
    info = publish_toy_actor(LocalStore(root), "toy", tmp_path / "toy")
    return root, "toy", info
