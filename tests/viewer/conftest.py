"""A tiny avatar trained on the toy head (whose face and jaw look at the synthetic cameras)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def toy_avatar(tmp_path_factory):
    """(model, surface, tracked MotionFrames) of an avatar trained 8 steps on 8 toy frames."""
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
    """A local store with the trained tiny actor ``toy`` (tests/export/conftest.py's recipe)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_export_conftest", Path(__file__).parents[1] / "export" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_trained_store(tmp_path_factory.mktemp("trained-view"))
