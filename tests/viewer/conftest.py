"""A tiny avatar trained on the toy head (whose face and jaw look at the synthetic cameras)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def toy_avatar(tmp_path_factory):
    """(model, surface, tracked Motion) of an avatar trained 8 steps on 8 toy frames."""
    import torch

    from stages.dataset.layout import DatasetLayout
    from stages.export.motion import tracked_motion
    from stages.gauss.data import TrackedSequence
    from stages.gauss.synthetic import toy_surface, write_synthetic_dataset
    from stages.gauss.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("toy-viewer")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = write_synthetic_dataset(root / "dataset", 8, image_size=40, n_gaussians=1500)
        cfg = TrainConfig(steps=8, batch_size=2, resolution=32, uv_resolution=32, sh_degree=1, mlp_width=32,
                          mlp_depth=2, pe_freqs=4, test_frames=0, test_fraction=0.1, checkpoint_every=0, workers=0,
                          frame_cache="off", log_every=12, mlp_lr=1e-3)
        surface = toy_surface()
        result = train(cfg, surface, DatasetLayout(ds), root / "work", "cpu")
    finally:
        torch.set_num_threads(n)
    return result.model.eval(), surface, tracked_motion(TrackedSequence.load(DatasetLayout(ds)))


@pytest.fixture(scope="session")
def viewer_store(tmp_path_factory):
    """A local store whose actor ``toy`` has a finished assemble (4 synthetic frames) and train stage
    (an untrained stand-in avatar, written with its manifest as the train stage does): enough to serve."""
    import torch

    from stages.face.model import load_face_model
    from stages.gauss import checkpoint as ckpt
    from stages.gauss.surface import flame_surface
    from stages.gauss.synthetic import publish_as_assemble, write_synthetic_dataset
    from stages.gauss.trainer import TrainConfig, avatar_dict, build_avatar
    from stages.runner.context import actor_key
    from stages.runner.manifest import MANIFEST, Manifest
    from stages.store.uri import open_store

    root = tmp_path_factory.mktemp("view-store")
    store = open_store(str(root / "store"))
    publish_as_assemble(store, "toy", write_synthetic_dataset(root / "ds", 4, image_size=16, n_gaussians=200))
    surface = flame_surface(load_face_model(None), torch.zeros(300))
    cfg = TrainConfig(uv_resolution=24, mlp_width=16, mlp_depth=1, pe_freqs=2, sh_degree=1)
    path = ckpt.save_atomic(avatar_dict(build_avatar(surface, cfg), surface, cfg, 0, 0), root / "avatar.pt")
    key = actor_key("toy", "avatar", "avatar.pt")
    m = Manifest(stage="train", actor="toy", inputs={}, config_digest="test", config={},
                 outputs={key: store.put_file(key, path)})
    store.put_json(actor_key("toy", "train", MANIFEST), m.to_dict())
    return store
