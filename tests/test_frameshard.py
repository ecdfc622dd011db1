"""Shard tars: the fast header index agrees with tarfile, and refuses what it cannot read."""

from __future__ import annotations

import tarfile

import pytest

from stages.frameshard import read_shard_tar, tar_index, write_shard_tar


def test_tar_index_agrees_with_tarfile(tmp_path):
    members = [(f"parsing/{k:05d}_neckhead.png", bytes([k % 256]) * (k * 37 % 1500)) for k in range(1, 300)]
    members += [("alpha/" + "x" * 150 + ".jpg", b"long name: a PAX path record"), ("caf\u00e9.jpg", b""),
                ("00001.jpg", b"x" * 512)]
    path = tmp_path / "s.tar"
    write_shard_tar(path, members)
    with tarfile.open(path) as tar:
        ref = [(m.name, m.offset_data, m.size) for m in tar if m.isfile()]
    index = tar_index(path)
    assert index == ref and len(index) == len(members)
    data = path.read_bytes()
    assert [(n, data[o:o + s]) for n, o, s in index] == list(read_shard_tar(path)) == members


def test_tar_index_refuses_a_damaged_header(tmp_path):
    path = tmp_path / "s.tar"
    write_shard_tar(path, [("00001.jpg", b"abc"), ("00002.jpg", b"def")])
    raw = bytearray(path.read_bytes())
    raw[1024 + 3] ^= 0xFF  # second member's name
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        tar_index(path)
