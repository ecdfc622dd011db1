"""Assets: stored by sha256 after a format check, listed, fetched verified — on both backends."""

from __future__ import annotations

import json

import pytest

import stages.assets as assets
from stages.errors import BadInput, bad_input
from stages.store.base import sha256_file


def validate_json_model(path):
    """A format check of the same shape as the real ones: facts back, or a one-line BadInput."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_input(path, "not a JSON model file", "give the model's .json file") from None
    if "vertices" not in data:
        raise bad_input(path, "has no 'vertices'", "export the full model")
    return {"vertices": len(data["vertices"])}


@pytest.fixture
def toy_kind(monkeypatch):
    kind = assets.AssetKind("toy", "a toy model", "toy.json", f"{__name__}:validate_json_model")
    monkeypatch.setitem(assets.KINDS, "toy", kind)
    return kind


def test_add_list_fetch(store, tmp_path, toy_kind):
    f = tmp_path / "toy.json"
    f.write_text(json.dumps({"vertices": [[0, 0, 0], [1, 0, 0]]}))
    record = assets.add_asset(store, "toy", f)
    assert record["sha256"] == sha256_file(f) and record["facts"] == {"vertices": 2}
    assert store.exists(f"assets/toy/{record['sha256']}/toy.json")
    again = assets.add_asset(store, "toy", f)  # idempotent
    assert again == record
    assert [r["sha256"] for r in assets.list_assets(store)] == [record["sha256"]]
    local = assets.asset_path(store, "toy", record["sha256"], tmp_path / "cache")
    assert local.read_bytes() == f.read_bytes()


def test_bad_file_is_refused_and_not_stored(store, tmp_path, toy_kind):
    f = tmp_path / "toy.json"
    f.write_text("{not json")
    with pytest.raises(BadInput, match="toy.json: not a JSON model file; give"):
        assets.add_asset(store, "toy", f)
    assert assets.list_assets(store) == []


def test_unknown_asset_sha_is_bad_input(store, tmp_path, toy_kind):
    with pytest.raises(BadInput, match="avatar assets add toy"):
        assets.asset_path(store, "toy", "0" * 64, tmp_path)


def test_every_kind_names_an_importable_validator():
    import importlib

    for kind in assets.KINDS.values():
        module, _, func = kind.validator.partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            pytest.fail(f"{kind.name}: validator module {module} missing ({e})")
        assert callable(getattr(mod, func, None)), f"{kind.name}: {kind.validator} is not a function"
