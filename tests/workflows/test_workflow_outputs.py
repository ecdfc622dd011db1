"""What pods hand to Argo: the shard list (output parameter) and the final files (output artifacts),
read through the stages' manifests, on a local folder and on the real S3 server."""

from __future__ import annotations

import json

import pytest

from stages.cli import main
from stages.errors import BadInput
from stages.runner.context import actor_key
from stages.runner.manifest import MANIFEST, Manifest
from stages.runner.shards import SHARDS_FILE, plan_shards, shards_document
from stages.store.base import IntegrityError
from workflows.outputs import collect_outputs, write_shard_list

A = "ana"


def _finish(store, stage: str, files: dict[str, bytes], folder: str | None = None) -> None:
    """Write a stage's outputs (into its folder or ``folder``) and then its manifest, as the runner does."""
    outputs = {}
    for rel, data in files.items():
        key = actor_key(A, folder or stage, rel)
        outputs[key] = store.put_bytes(key, data)
    m = Manifest(stage=stage, actor=A, inputs={}, config_digest="c", config={}, outputs=outputs)
    store.put_json(actor_key(A, stage, MANIFEST), m.to_dict())


def test_shard_list(store, tmp_path):
    doc = shards_document(230, 25, plan_shards(230, 100))  # the 30-frame tail joins shard 1
    _finish(store, "ingest", {SHARDS_FILE: json.dumps(doc).encode()})
    out = tmp_path / "o" / "shards.json"
    assert write_shard_list(store, A, out) == [0, 1]
    assert json.loads(out.read_text()) == [0, 1]
    assert main(["workflow", "shard-list", "--actor", A, "--store", store.uri, "--out", str(out)]) == 0
    # a tampered shards.json is caught by its manifest digest
    store.put_bytes(actor_key(A, "ingest", SHARDS_FILE), b'{"shards": []}')
    with pytest.raises(IntegrityError):
        write_shard_list(store, A, out)


def test_shard_list_needs_finished_ingest(store, tmp_path, capsys):
    assert main(["workflow", "shard-list", "--actor", A, "--store", store.uri, "--out", str(tmp_path / "s")]) == 2
    assert "has not finished" in capsys.readouterr().err


def test_collect_lays_out_the_artifacts(store, tmp_path):
    _finish(store, "train", {"avatar.pt": b"weights", "checkpoint.pt": b"adam", "train_report.json": b"{}"})
    _finish(store, "render", {"preview.mp4": b"\x00\x00\x00\x18ftypisom", "report.json": b'{"psnr": 30}',
                              "report.md": b"# report", "frames/0001.png": b"png"}, folder="avatar")
    out = tmp_path / "argo-outputs"
    got = collect_outputs(store, A, out)
    assert sorted(p.name for p in (out / "avatar").iterdir()) == ["avatar.pt", "checkpoint.pt", "train_report.json"]
    assert (out / "avatar" / "avatar.pt").read_bytes() == b"weights"
    assert (out / "preview.mp4").read_bytes()[4:8] == b"ftyp"
    assert sorted(p.name for p in (out / "report").iterdir()) == ["frames", "report.json", "report.md"]
    assert (out / "report" / "frames" / "0001.png").read_bytes() == b"png"
    assert got["preview"] == [actor_key(A, "avatar", "preview.mp4")] and len(got["avatar"]) == 3


def test_collect_errors(store, tmp_path):
    with pytest.raises(BadInput, match="'train' has not finished"):
        collect_outputs(store, A, tmp_path / "o")
    _finish(store, "train", {"avatar.pt": b"w"})
    _finish(store, "render", {"report.json": b"{}"})
    with pytest.raises(BadInput, match="no video"):
        collect_outputs(store, A, tmp_path / "o")
