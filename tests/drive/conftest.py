"""A drivable actor without training (fast; the slow tests train a real one)."""

from __future__ import annotations

import pytest


@pytest.fixture
def toy_actor(tmp_path):
    """(store root, actor name, info) of a drivable untrained actor in a local store."""
    from stages.drive.synthetic import publish_untrained_actor
    from stages.store.local import LocalStore

    root = tmp_path / "store"
    info = publish_untrained_actor(LocalStore(root), "toy", tmp_path / "toy")
    return root, "toy", info
