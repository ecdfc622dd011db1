"""A small synthetic FlashAvatar dataset shared by the tests of this folder (rendered once)."""

import pytest


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory):
    """24 frames of the textured toy head at 48x48 (checkpoints 0..23, images 1..24)."""
    from stages.gauss.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("toy") / "dataset", 24, image_size=48, seed=0,
                                   n_gaussians=3000)
