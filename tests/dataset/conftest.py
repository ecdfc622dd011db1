"""Fixtures of the dataset tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories.dataset_factory import write_dataset


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A valid six-frame dataset."""
    return write_dataset(tmp_path / "ds", 6)
