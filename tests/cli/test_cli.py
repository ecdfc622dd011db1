"""The `avatar` command: help, one-line errors and exit codes (2 bad input, 75 transient)."""

from __future__ import annotations

import subprocess
import sys

from conftest import subprocess_env
from stages.cli import main


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
