"""``avatar export`` end to end in a real process: PLY of a frame and of the neutral face, a PLY
sequence from a motion file, the bundle; bad input exits 2 and writes nothing; S3 stores work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
import torch

from stages.export.actor import load_actor
from stages.export.bundle import read_bundle
from stages.export.ply import read_ply, splat_cloud
from stages.export.pose import pose_gaussians
from stages.gauss.surface import neutral_condition


REPO = str(Path(__file__).resolve().parents[2])


def _cli(*args, env=None, cwd=None):
    """``avatar ARGS`` in a fresh process running this checkout's code (also from another ``cwd``)."""
    pp = os.pathsep.join([REPO] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-c", "from stages.cli import entry; entry()", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pp, **(env or {})))


class _Result:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``avatar ARGS`` in this process (the CLI's own error handling and exit codes, no start-up cost)."""
    from stages.cli import main

    def run(*args, cwd=None, env=None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main([str(a) for a in args])
        return _Result(code, capsys.readouterr().err)
    return run


def test_export_ply_frame_and_neutral(trained_store, tmp_path, run_cli):
    root = trained_store.uri
    out = tmp_path / "f3.ply"
    r = _cli("export", "--actor", "toy", "--store", root, "--frame", "3", "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    a = load_actor(trained_store, "toy", tmp_path / "cache")
    want = splat_cloud(pose_gaussians(a.model, a.surface, torch.from_numpy(a.seq.cond[3:4])))
    got = read_ply(out)
    np.testing.assert_allclose(got.means, want.means, atol=1e-6)
    np.testing.assert_allclose(got.sh, want.sh, atol=1e-6)
    r = run_cli("export", "--actor", "toy", "--store", root, "--neutral", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    neutral = read_ply(tmp_path / "toy-neutral.ply")
    np.testing.assert_allclose(neutral.means, splat_cloud(pose_gaussians(a.model, a.surface, neutral_condition(1))).means,
                               atol=1e-6)
    assert np.abs(neutral.means - got.means).max() > 1e-4  # frame 3 is not the neutral face
    # never overwritten: a second export to the same file is refused and leaves it as it was
    before = out.read_bytes()
    r = run_cli("export", "--actor", "toy", "--store", root, "--frame", "4", "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and str(out) in r.stderr
    assert out.read_bytes() == before


def test_export_ply_sequence_from_a_motion_file(trained_store, tmp_path, run_cli):
    root = trained_store.uri
    T = 4
    jaw = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (T, 1))
    exp = np.zeros((T, 100), np.float32)
    exp[:, 0] = np.linspace(-2, 2, T)
    motion = tmp_path / "motion.npz"
    np.savez(motion, exp=exp, jaw=jaw, eyes=np.tile(np.concatenate([jaw[0], jaw[0]]), (T, 1)),
             eyelids=np.zeros((T, 2), np.float32))
    out = tmp_path / "seq"
    r = run_cli("export", "--actor", "toy", "--store", root, "--format", "ply-sequence", "--motion", str(motion),
             "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:05d}.ply" for i in range(T)] + ["sequence.json"]
    doc = json.loads((out / "sequence.json").read_text())
    assert doc["frames"] == T and "cameras" not in doc  # the motion file has no cameras
    a = load_actor(trained_store, "toy", tmp_path / "cache", tracking=False)
    cond = neutral_condition(1)
    cond[0, 0] = 2.0
    want = splat_cloud(pose_gaussians(a.model, a.surface, cond))
    np.testing.assert_allclose(read_ply(out / "frame_00003.ply").means, want.means, atol=1e-6)
    # the tracked sequence by default, with its cameras
    r = run_cli("export", "--actor", "toy", "--store", root, "--format", "ply-sequence", "--out", str(tmp_path / "trk"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "trk" / "sequence.json").read_text())
    assert doc["frames"] == 12 and len(doc["cameras"]["R"]) == 12


def test_export_bundle_round_trips(trained_store, tmp_path, run_cli):
    out = tmp_path / "toy.avatar-bundle"
    r = run_cli("export", "--actor", "toy", "--store", trained_store.uri, "--format", "bundle", "--out", str(out))
    assert r.returncode == 0, r.stderr
    model, doc = read_bundle(out)
    a = load_actor(trained_store, "toy", tmp_path / "cache", tracking=False)
    assert doc["format"] == "avatar-bundle/2" and doc["face_model"]["kind"] == "standin"
    assert doc["avatar_sha256"] == a.avatar_sha256 and len(doc["face_model"]["sha256"]) == 64
    ref = a.model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert {"gaussians.npz", "mlp.npz", "identity.npy", "neutral.ply", "tracked.npz"} <= set(doc["files"])
    # the Gaussians scale with their triangles (format 2): posed from the bundle as the avatar poses them, and
    # neutral.ply holds the neutral pose's scales (triangle factor 1)
    assert doc["avatar_config"]["triangle_scale"] and "canonical_size" in model.state_dict()
    cond = neutral_condition(2)
    cond[1, 0], cond[1, -2] = 1.0, 1.0  # an expression and a shut left eye
    mine, theirs = pose_gaussians(model, a.surface, cond), pose_gaussians(a.model, a.surface, cond)
    assert torch.equal(mine.scales, theirs.scales) and torch.equal(mine.means, theirs.means)
    assert not torch.allclose(theirs.scales[1], theirs.scales[0])  # the shut lid changed some triangles' size
    neutral = read_ply(out / "neutral.ply")
    np.testing.assert_allclose(np.exp(neutral.log_scales), theirs.scales[0].numpy(), rtol=1e-5)
    # a corrupted file is detected
    (out / "mlp.npz").write_bytes(b"x" + (out / "mlp.npz").read_bytes()[1:])
    with pytest.raises(ValueError, match="sha256"):
        read_bundle(out)


def test_export_bad_input_exits_2(trained_store, tmp_path, run_cli):
    root = trained_store.uri
    r = run_cli("export", "--actor", "nobody", "--store", root, "--out", str(tmp_path / "x.ply"))
    assert r.returncode == 2 and "no trained avatar" in r.stderr and "nobody" in r.stderr
    r = run_cli("export", "--actor", "toy", "--store", root, "--frame", "99", "--out", str(tmp_path / "x.ply"))
    assert r.returncode == 2 and "12 tracked frames" in r.stderr
    bad = tmp_path / "bad.npz"
    np.savez(bad, exp=np.zeros((3, 100), np.float32), jaw=np.zeros((2, 6), np.float32))
    r = run_cli("export", "--actor", "toy", "--store", root, "--format", "ply-sequence", "--motion", str(bad),
             "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and str(bad) in r.stderr and "jaw" in r.stderr
    r = run_cli("export", "--actor", "toy", "--store", root, "--format", "gltf")
    assert r.returncode == 2 and "gltf" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]  # nothing written


def test_export_from_an_s3_store(trained_store, s3_env, tmp_path, run_cli):
    from stages.store.uri import open_store

    s3 = open_store(f"s3://{s3_env['bucket']}/p")
    for key in trained_store.list("actors/toy/"):
        if "/dataset/" in key and "/checkpoint/" not in key:
            continue  # the images are not needed for export
        s3.put_file(key, trained_store.local_path(key))
    out = tmp_path / "s3.ply"
    r = run_cli("export", "--actor", "toy", "--store", s3.uri, "--frame", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    a = load_actor(trained_store, "toy", tmp_path / "cache")
    want = splat_cloud(pose_gaussians(a.model, a.surface, torch.from_numpy(a.seq.cond[2:3])))
    np.testing.assert_allclose(read_ply(out).means, want.means, atol=1e-6)



def test_export_sequence_with_the_head_pose_baked_in(trained_store, tmp_path, run_cli):
    root = trained_store.uri
    r = run_cli("export", "--actor", "toy", "--store", root, "--format", "ply-sequence", "--out", str(tmp_path / "plain"))
    assert r.returncode == 0, r.stderr
    r = run_cli("export", "--actor", "toy", "--store", root, "--format", "ply-sequence", "--head-pose",
                "--out", str(tmp_path / "baked"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "baked" / "sequence.json").read_text())
    assert "head_pose" in doc and all(R == doc["cameras"]["R"][0] for R in doc["cameras"]["R"])
    p0, b0 = read_ply(tmp_path / "plain" / "frame_00000.ply"), read_ply(tmp_path / "baked" / "frame_00000.ply")
    np.testing.assert_allclose(b0.means, p0.means, atol=1e-6)  # frame 0 is the reference: unchanged
    p5, b5 = read_ply(tmp_path / "plain" / "frame_00005.ply"), read_ply(tmp_path / "baked" / "frame_00005.ply")
    assert np.abs(b5.means - p5.means).max() > 1e-3  # the synthetic head turns: frame 5 moved
    motion = tmp_path / "m.npz"
    np.savez(motion, exp=np.zeros((2, 100), np.float32))
    r = run_cli("export", "--actor", "toy", "--store", root, "--format", "ply-sequence", "--head-pose",
                "--motion", str(motion), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "no cameras" in r.stderr and not (tmp_path / "x").exists()


def test_export_sequence_of_a_drive(trained_store, tmp_path, run_cli):
    from stages.runner.context import actor_key

    T = 3
    motion = tmp_path / "motion.npz"
    np.savez(motion, exp=np.full((T, 100), 0.5, np.float32))
    trained_store.put_file(actor_key("toy", "drive", "speech", "motion.npz"), motion)
    r = run_cli("export", "--actor", "toy", "--store", trained_store.uri, "--format", "ply-sequence", "--drive", "speech",
                "--out", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "d").glob("*.ply"))) == T
    r = run_cli("export", "--actor", "toy", "--store", trained_store.uri, "--format", "ply-sequence", "--drive", "nope",
                "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and "no drive named 'nope'" in r.stderr and not (tmp_path / "e").exists()
