"""A trained tiny avatar in a local store, shared by the export and viewer tests (trained once)."""

from __future__ import annotations

import pytest

SMALL = {"steps": 12, "batch_size": 2, "resolution": 32, "uv_resolution": 40, "checkpoint_every": 12,
         "mlp_width": 32, "log_every": 12, "sh_degree": 1, "triangle_scale": True}
# triangle_scale: the exports and the viewer are checked on Gaussians that follow their triangles (off by
# default in training), the path with the most to keep consistent


def make_trained_store(root):
    """Publish a 12-frame synthetic dataset as the assemble output of actor ``toy`` in a local store at
    ``root`` and train a tiny avatar on it (stand-in face model, reference renderer). Returns the store."""
    import torch

    from stages.config import PipelineConfig
    from stages.gauss.synthetic import publish_as_assemble, write_synthetic_dataset
    from stages.runner.run import run_stage
    from stages.store.uri import open_store

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = write_synthetic_dataset(root / "dataset", 12, image_size=48, n_gaussians=2000)
        store = open_store(str(root / "store"))
        publish_as_assemble(store, "toy", ds)
        run_stage("train", "toy", store, pipeline=PipelineConfig(preset="tiny", stages={"train": SMALL}), device="cpu")
    finally:
        torch.set_num_threads(n)
    return store


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory):
    return make_trained_store(tmp_path_factory.mktemp("trained"))
