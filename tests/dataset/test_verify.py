"""`avatar verify` finds each way a dataset goes wrong, and passes a good one."""

from __future__ import annotations

import shutil

import cv2
import numpy as np

from stages.cli import main
from stages.dataset.verify import verify_dataset


def test_valid_dataset_passes(dataset, capsys):
    assert verify_dataset(dataset) == []
    assert main(["verify", str(dataset)]) == 0
    assert "OK, 6 frames" in capsys.readouterr().out


def test_off_by_one_pairing_is_caught(dataset):
    """Images numbered from 00000 like the checkpoints: the classic frame_delta mistake."""
    for sub in ("imgs", "alpha"):
        for k in range(6, 0, -1):
            (dataset / sub / f"{k:05d}.jpg").rename(dataset / sub / f"{k - 1:05d}.jpg")
    problems = "\n".join(verify_dataset(dataset))
    assert "numbered from 00000" in problems and "missing" in problems


def test_masks_saved_as_0_1_are_caught(dataset):
    m = np.zeros((512, 512), np.uint8)
    m[10:20, 10:20] = 1
    cv2.imwrite(str(dataset / "parsing" / "00002_mouth.png"), m)
    problems = verify_dataset(dataset)
    assert any("00002_mouth.png" in p and "0/1 instead of 0/255" in p for p in problems)


def test_wrong_size_and_missing_files_and_strays(dataset):
    cv2.imwrite(str(dataset / "imgs" / "00003.jpg"), np.zeros((256, 256, 3), np.uint8))
    (dataset / "alpha" / "00005.jpg").unlink()
    (dataset / "checkpoint" / "notes.txt").write_text("x")
    problems = "\n".join(verify_dataset(dataset))
    assert "00003.jpg: size 256x256, expected 512x512" in problems
    assert "1 alpha missing" in problems and "00005" in problems
    assert "not NNNNN.frame" in problems


def test_gap_in_checkpoints_and_frame_id_mismatch(dataset):
    shutil.copy(dataset / "checkpoint" / "00001.frame", dataset / "checkpoint" / "00002.frame")
    (dataset / "checkpoint" / "00005.frame").unlink()
    (dataset / "checkpoint" / "00004.frame").rename(dataset / "checkpoint" / "00006.frame")
    problems = "\n".join(verify_dataset(dataset))
    assert "not numbered 00000..00004 contiguously" in problems
    assert "00002.frame: frame_id is '00001', expected '00002'" in problems


def test_cli_exit_2_lists_problems(dataset, capsys):
    (dataset / "imgs" / "00001.jpg").unlink()
    assert main(["verify", str(dataset)]) == 2
    err = capsys.readouterr().err
    assert "imgs missing" in err and "problem(s) found" in err
