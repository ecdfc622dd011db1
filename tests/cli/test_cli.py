"""The `avatar` command: help, one-line errors and exit codes (2 bad input, 75 transient)."""

from __future__ import annotations

import subprocess
import sys

from factories.subprocess_env import subprocess_env
from stages.cli import main
from stages.store.local import LocalStore


def test_help_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "stages", "--help"], capture_output=True, text=True,
                          env=subprocess_env({"COLUMNS": "120"}), timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "stage", "assets", "verify"):
        assert f" {command} " in proc.stdout, f"{command} missing from --help"


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("avatar: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_missing_video_is_exit_2_naming_the_file(tmp_path, capsys):
    code = main(["stage", "ingest", "--actor", "roman", "--store", str(tmp_path)])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{tmp_path}/actors/roman/input/video.mp4" in line and "upload one" in line


def test_unknown_stage_is_exit_2(tmp_path, capsys):
    assert main(["stage", "trian", "--actor", "a", "--store", str(tmp_path)]) == 2
    assert "stages are" in _one_error_line(capsys.readouterr().err)


def test_s3_unreachable_is_exit_75(monkeypatch):
    from s3server import free_port

    env = subprocess_env({"AVATAR_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "x",
                          "AWS_SECRET_ACCESS_KEY": "y", "AVATAR_S3_MAX_ATTEMPTS": "1",
                          "AVATAR_S3_CONFIG": "/nonexistent"})
    proc = subprocess.run([sys.executable, "-m", "stages", "stage", "ingest", "--actor", "a", "--store", "s3://bucket"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 75, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "unreachable" in line and "check the endpoint" in line


def test_missing_bucket_is_exit_2(s3_env, capsys):
    code = main(["stage", "ingest", "--actor", "a", "--store", "s3://no-such-bucket-here"])
    assert code == 2
    assert "no-such-bucket-here" in _one_error_line(capsys.readouterr().err)


def test_assets_add_missing_file_is_exit_2(tmp_path, capsys):
    code = main(["assets", "add", "flame", str(tmp_path / "generic_model.pkl"), "--store", str(tmp_path / "s")])
    assert code == 2
    assert "generic_model.pkl: no such file" in _one_error_line(capsys.readouterr().err)


def test_assets_add_unknown_kind_is_exit_2(tmp_path, capsys):
    f = tmp_path / "x.bin"
    f.write_bytes(b"x")
    assert main(["assets", "add", "flam", str(f), "--store", str(tmp_path / "s")]) == 2
    assert "kinds are" in _one_error_line(capsys.readouterr().err)


def test_flame_without_mediapipe_embedding_is_refused_before_any_stage(tmp_path, capsys):
    """`avatar run --flame` alone would stop at calibrate after three stages: refused at once, exit 2."""
    from stages.face.flame_file import write_fake_flame_pkl

    pkl = write_fake_flame_pkl(tmp_path / "generic_model.pkl", seed=3, n_vertices=400, n_faces=700)
    store = tmp_path / "store"
    code = main(["run", "--actor", "a", "--flame", str(pkl), "--store", str(store), "--device", "cpu"])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(pkl) in line and "--mediapipe-embedding" in line
    assert not list(store.glob("actors/a/*/manifest.json"))


def test_run_options_choose_the_face_assets(tmp_path):
    """--flame-texture (like --matting/--parsing) adds the file as an asset and chooses it for the actor."""
    from stages.cli.run_cmd import prepare_actor
    from stages.face.texture import standin_texture_space, write_flame_texture

    mean, basis = standin_texture_space(size=16, n_components=8)
    tex = write_flame_texture(tmp_path / "FLAME_texture.npz", mean, basis)
    pipeline = prepare_actor(LocalStore(tmp_path / "s"), "a", None, None, None, assets={"flame-texture": tex})
    assert set(pipeline.assets) == {"flame-texture"} and len(pipeline.assets["flame-texture"]) == 64
