"""Both store backends: the same behaviour against a local folder and a real S3 server."""

from __future__ import annotations

import os

import pytest

from stages.errors import Transient
from stages.store.base import IntegrityError, sha256_bytes, sha256_file


def test_put_get_list_roundtrip(store, tmp_path):
    d1 = store.put_bytes("actors/a/ingest/x.json", b'{"a": 1}')
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(4096))
    d2 = store.put_file("actors/a/ingest/frames/0000.tar", src)
    assert d1 == sha256_bytes(b'{"a": 1}')
    assert d2 == sha256_file(src)
    assert store.get_bytes("actors/a/ingest/x.json") == b'{"a": 1}'
    out = store.get_file("actors/a/ingest/frames/0000.tar", tmp_path / "dl" / "f.bin", expect_sha256=d2)
    assert out.read_bytes() == src.read_bytes()
    assert store.list("actors/a/ingest/") == ["actors/a/ingest/frames/0000.tar", "actors/a/ingest/x.json"]
    assert store.list("actors/a/ingest/frames/") == ["actors/a/ingest/frames/0000.tar"]
    assert store.list("actors/b/") == []
    assert store.exists("actors/a/ingest/x.json") and not store.exists("actors/a/ingest/y.json")
    assert store.sha256("actors/a/ingest/frames/0000.tar") == d2
    assert store.get_json("actors/a/ingest/x.json") == {"a": 1}


def test_missing_key_is_keyerror(store, tmp_path):
    with pytest.raises(KeyError):
        store.get_bytes("actors/a/nothing")
    with pytest.raises(KeyError):
        store.get_file("actors/a/nothing", tmp_path / "x")


def test_bad_keys_are_refused(store):
    for key in ("/abs", "a/../b", "a//b", ""):
        with pytest.raises(ValueError):
            store.put_bytes(key, b"x")


def test_expected_digest_mismatch_is_detected(store, tmp_path):
    store.put_bytes("k/obj", b"payload")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.get_bytes("k/obj", expect_sha256=sha256_bytes(b"other"))
    with pytest.raises(IntegrityError):
        store.get_file("k/obj", tmp_path / "o", expect_sha256=sha256_bytes(b"other"))
    assert not (tmp_path / "o").exists(), "a failed verified download must leave nothing behind"


def test_a_recorded_output_lost_by_the_store_is_one_line_bad_input(store, tmp_path):
    """fetch() of a key a manifest lists (an expected digest) that the store no longer has: an IntegrityError
    (BadInput: exit 2, one line) naming the key and the fix, not a KeyError; without a digest, KeyError as before."""
    digest = store.put_bytes("a/stage/out.bin", b"payload")
    store.delete("a/stage/out.bin")  # lost behind the pipeline's back
    with pytest.raises(IntegrityError, match="a/stage/out.bin: listed among a finished stage's outputs but missing"):
        store.fetch("a/stage/out.bin", tmp_path / "cache", digest)
    with pytest.raises(KeyError):
        store.fetch("a/stage/out.bin", tmp_path / "cache")


def test_corrupted_object_detected_by_recorded_digest(s3_env, tmp_path):
    """S3 objects carry their sha256; bytes changed behind our back are caught on read."""
    from stages.store.s3 import S3Store

    st = S3Store(s3_env["bucket"])
    digest = st.put_bytes("k/obj", b"original bytes")
    # Corrupt it: same key and the old digest in its metadata, other bytes.
    st.client.put_object(Bucket=st.bucket, Key="k/obj", Body=b"tampered bytes", Metadata={"sha256": digest})
    with pytest.raises(IntegrityError, match="k/obj"):
        st.get_bytes("k/obj")
    with pytest.raises(IntegrityError):
        st.get_file("k/obj", tmp_path / "x")


def test_local_writes_are_atomic(tmp_path):
    """No temporary file is ever listed, and a replaced object is whole."""
    from stages.store.local import LocalStore

    st = LocalStore(tmp_path)
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / ".obj.abc.part").write_bytes(b"half")  # a crashed writer's leftover
    st.put_bytes("k/obj", b"1" * 1000)
    st.put_bytes("k/obj", b"2" * 1000)
    assert st.list("k/") == ["k/obj"]
    assert st.get_bytes("k/obj") == b"2" * 1000


def test_multipart_upload_of_large_file(s3_env, tmp_path):
    from stages.store.s3 import S3Store, _MULTIPART_THRESHOLD

    st = S3Store(s3_env["bucket"])
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(_MULTIPART_THRESHOLD + (3 << 20)))
    digest = st.put_file("big/video.mp4", big)
    head = st.client.head_object(Bucket=st.bucket, Key="big/video.mp4")
    assert "-" in head["ETag"], "expected a multipart ETag (md5-of-parts with a part count)"
    assert st.sha256("big/video.mp4") == digest
    assert sha256_file(st.get_file("big/video.mp4", tmp_path / "back.bin")) == digest


def test_unreachable_s3_is_transient(monkeypatch):
    from s3server import free_port
    from stages.store.s3 import S3Store

    monkeypatch.setenv("AVATAR_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    st = S3Store("bucket", max_attempts=2, connect_timeout=0.5)
    with pytest.raises(Transient, match="unreachable"):
        st.get_bytes("any/key")


def test_open_store_parses_uris(tmp_path):
    from stages.store.local import LocalStore
    from stages.store.uri import open_store

    assert isinstance(open_store(str(tmp_path)), LocalStore)
    with pytest.raises(ValueError, match="scheme"):
        open_store("gs://bucket")
    with pytest.raises(ValueError, match="bucket"):
        open_store("s3://")
