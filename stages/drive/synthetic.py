"""A drivable actor without training, for tests and benchmarks: an untrained avatar on the stand-in
face model and a tracking of ``n_frames`` near-neutral frames, published in a store where the train
and assemble stages publish them (``actors/<a>/avatar/avatar.pt``, ``actors/<a>/dataset/tracking.npz``,
their manifests). Rendering speed does not depend on training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def publish_untrained_actor(store, actor: str, work: Path, n_frames: int = 10, train_config=None,  # noqa: ANN001
                            seed: int = 0) -> dict:
    """Returns ``{"params", "K", "R", "model", "surface", "train_frames"}`` of what was published."""
    from stages.face.model import load_face_model
    from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d
    from stages.gauss.data import split_frames
    from stages.gauss.surface import flame_surface
    from stages.gauss.trainer import TrainConfig, avatar_dict, build_avatar
    from stages.runner.context import actor_key
    from stages.runner.manifest import Manifest
    from stages.tracking.params import FrameParams

    data = load_face_model(None)
    shape = np.zeros(data.n_shape, np.float32)
    surface = flame_surface(data, shape)
    cfg = train_config or TrainConfig(uv_resolution=24, area_samples=800, sh_degree=0, mlp_width=16, mlp_depth=1,
                                      pe_freqs=2, test_frames=0, test_fraction=0.2)
    torch.manual_seed(seed)
    model = build_avatar(surface, cfg)
    work.mkdir(parents=True, exist_ok=True)
    torch.save(avatar_dict(model, surface, cfg, steps=0, images=0), work / "avatar.pt")
    rng = np.random.default_rng(seed)
    p = FrameParams.neutral(n_frames, distance=1.2).to_numpy()
    p["exp"][:, :5] = 0.3 + 0.05 * rng.normal(size=(n_frames, 5))
    jaw = np.stack([0.05 + 0.01 * rng.normal(size=n_frames), np.zeros(n_frames), np.zeros(n_frames)], 1)
    p["jaw"] = matrix_to_rotation_6d(axis_angle_to_matrix(torch.as_tensor(jaw))).float().numpy()
    K = np.array([[2300, 0, 256], [0, 2300, 256], [0, 0, 1]], np.float32)
    R = FrameParams.from_numpy(p).R.numpy()
    np.savez(work / "tracking.npz", R=R, K=K, shape=shape, **p)
    for stage, folder, name in (("train", "avatar", "avatar.pt"), ("assemble", "dataset", "tracking.npz")):
        key = actor_key(actor, folder, name)
        out = {key: store.put_file(key, work / name)}
        store.put_json(actor_key(actor, stage, "manifest.json"),
                       Manifest(stage=stage, actor=actor, inputs={}, config_digest="untrained", config={},
                                outputs=out).to_dict())
    train_idx, _ = split_frames(n_frames, cfg.test_frames, cfg.test_fraction, cfg.max_train_frames)
    return {"params": p, "K": K, "R": R, "model": model, "surface": surface, "train_frames": len(train_idx)}
