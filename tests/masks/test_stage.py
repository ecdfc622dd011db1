"""The masks stage end to end through the runner, on real frames of wojtek.mp4."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.assets import add_asset
from stages.config import PipelineConfig
from stages.frameshard import read_shard_tar
from stages.masks.backends.bisenet import BiSeNetParsing
from stages.masks.encode import alpha_name, decode_gray, decode_rgb, mouth_name, neckhead_name, read_frame_jpegs
from stages.runner.context import actor_key
from stages.runner.run import run_stage


def _read_masks(store, actor, shards) -> dict[str, bytes]:
    out = {}
    for s in shards:
        path = store.local_path(actor_key(actor, "masks", f"{s.name}.tar"))
        assert path is not None, f"masks/{s.name}.tar missing"
        out.update(dict(read_shard_tar(path)))
    return out


def _ingested(store, actor, shards) -> dict[int, np.ndarray]:
    out = {}
    for s in shards:
        jpegs = read_frame_jpegs(store.local_path(actor_key(actor, "ingest", "frames", f"{s.name}.tar")))
        out.update({k: decode_rgb(jpegs[k]) for k in s.frames})
    return out


def _check_format(members: dict[str, bytes], numbers) -> dict[str, np.ndarray]:
    """FlashAvatar's formats: names numbered like the frames, 512x512, one 8-bit channel, 0/255 masks."""
    from PIL import Image
    import io

    want = {f(k) for k in numbers for f in (alpha_name, neckhead_name, mouth_name)}
    assert set(members) == want
    arrays = {}
    for name, data in members.items():
        img = Image.open(io.BytesIO(data))
        assert img.size == (512, 512)
        assert img.mode == "L", (name, img.mode)
        assert img.format == ("JPEG" if name.startswith("alpha/") else "PNG")
        a = np.asarray(img)
        assert a.dtype == np.uint8
        if name.startswith("parsing/"):
            assert set(np.unique(a).tolist()) <= {0, 255}, name
        arrays[name] = a
    return arrays


def test_default_backend_on_wojtek(wojtek, actor_factory):
    n = 12
    frames, pts, ok = wojtek["frames"][:n], wojtek["points"][:n], wojtek["ok"][:n].copy()
    assert ok.all(), "MediaPipe should find the face in wojtek.mp4's first frames"
    ok[3] = False  # one failed frame: filled from its neighbours
    pts = pts.copy()
    pts[3] = np.nan
    store, shards = actor_factory(frames, pts, ok, shard_size=6)
    pipe = PipelineConfig(stages={"masks": {"batch_size": 4, "workers": 2}})
    res = run_stage("masks", "a", store, pipeline=pipe, device="cpu")
    assert res.status == "ran" and res.frames == n
    arrays = _check_format(_read_masks(store, "a", shards), range(1, n + 1))
    decoded = _ingested(store, "a", shards)
    for k in range(1, n + 1):
        alpha = arrays[alpha_name(k)].astype(np.float32) / 255
        neck = arrays[neckhead_name(k)] > 0
        mouth = arrays[mouth_name(k)] > 0
        p = pts[k - 1] if ok[k - 1] else pts[k - 2]
        nose = np.rint(p[1, :2]).astype(int)  # landmark 1: nose tip
        assert alpha[nose[1], nose[0]] > 0.95 and neck[nose[1], nose[0]]
        assert 0.05 < alpha.mean() < 0.95  # a person, not everything or nothing
        soft = ((alpha > 0.05) & (alpha < 0.95)).mean()
        assert 0 < soft < 0.1  # a soft edge band, not a binary mask
        # nothing far below the chin in neckhead (torso cut), but the alpha keeps the shoulders
        chin = p[152, :2]
        face_h = np.linalg.norm(p[152, :2] - p[10, :2])
        below = int(min(511, chin[1] + 0.8 * face_h))
        assert not neck[below:].any()
        # the neck just under the chin stays; the black T-shirt below the chin does not, while the
        # matte keeps it
        cx = int(chin[0])
        assert neck[int(chin[1] + 0.05 * face_h), cx]
        gray = cv2.cvtColor(decoded[k], cv2.COLOR_RGB2GRAY)
        shirt = (gray < 60) & (np.arange(512)[:, None] > chin[1] + 5) & (alpha > 0.9)
        assert shirt.sum() > 5000 and (neck & shirt).sum() < 0.01 * shirt.sum(), (neck & shirt).sum()
        # mouth inside the head, small
        assert mouth.sum() < 0.02 * mouth.size and not (mouth & ~neck).any()
    m = store.get_json(actor_key("a", "masks", "shards", "0000.manifest.json"))
    assert m["stats"]["matting"] == "default" and m["stats"]["frames_without_landmarks"] == 1
    # rerun: skipped, nothing rewritten
    assert run_stage("masks", "a", store, pipeline=pipe, device="cpu").status == "skipped"


def _onnx_pipeline(store, models, **overrides) -> PipelineConfig:
    rvm = add_asset(store, "matting", models["rvm"])
    bis = add_asset(store, "parsing", models["bisenet"])
    assert rvm["facts"]["model"] == "rvm" and bis["facts"]["classes"] == 19
    cfg = {"batch_size": 4, "workers": 2, "onnx_device": "cpu", "rvm_warmup": 3, **overrides}
    return PipelineConfig(stages={"masks": cfg}, assets={"matting": rvm["sha256"], "parsing": bis["sha256"]})


def test_rvm_and_bisenet_backends(wojtek, actor_factory, standin_models):
    n = 8
    frames, pts, ok = wojtek["frames"][:n], wojtek["points"][:n], wojtek["ok"][:n]
    store, shards = actor_factory(frames, pts, ok, shard_size=4)
    pipe = _onnx_pipeline(store, standin_models, mouth_classes=[11, 12, 13])
    res = run_stage("masks", "a", store, pipeline=pipe, device="cpu")
    assert res.status == "ran" and res.frames == n
    arrays = _check_format(_read_masks(store, "a", shards), range(1, n + 1))
    m = store.get_json(actor_key("a", "masks", "shards", "0001.manifest.json"))
    assert m["stats"]["matting"] == "rvm" and m["stats"]["parsing"] == "bisenet"
    # the parsing masks are exactly the class mapping of the model's labels
    parser = BiSeNetParsing(standin_models["bisenet"], "cpu", fused=False)
    decoded = _ingested(store, "a", shards)  # the stage sees the ingested JPEGs, not the raw frames
    labels = parser.labels_reference(np.stack([decoded[k] for k in range(1, n + 1)]))
    assert len(np.unique(labels)) >= 3
    head_classes = [*range(1, 16), 17]
    for k in range(1, n + 1):
        lab = labels[k - 1]
        assert np.array_equal(arrays[neckhead_name(k)] > 0, np.isin(lab, head_classes))
        assert np.array_equal(arrays[mouth_name(k)] > 0, np.isin(lab, [11, 12, 13]))


def _rvm_alphas(wojtek, actor_factory, standin_models, shard_size, warmup, actor):
    n = 16
    store, shards = actor_factory(wojtek["frames"][:n], wojtek["points"][:n], wojtek["ok"][:n], shard_size,
                                  actor=actor)
    pipe = _onnx_pipeline(store, standin_models, rvm_warmup=warmup, parsing="default", batch_size=1)
    assert run_stage("masks", actor, store, pipeline=pipe, device="cpu").status == "ran"
    members = _read_masks(store, actor, shards)
    return np.stack([decode_gray(members[alpha_name(k)]).astype(np.float32) for k in range(1, n + 1)])


def test_rvm_warmup_hides_the_shard_seam(wojtek, actor_factory, standin_models):
    whole = _rvm_alphas(wojtek, actor_factory, standin_models, 16, 8, "whole")
    sharded = _rvm_alphas(wojtek, actor_factory, standin_models, 8, 8, "sharded")
    cold = _rvm_alphas(wojtek, actor_factory, standin_models, 8, 0, "cold")
    seam = 8  # index of frame 9, the first frame of shard 1
    assert np.abs(sharded[seam] - whole[seam]).max() <= 3  # JPEG rounding only
    assert np.abs(sharded - whole).max() <= 3
    assert np.abs(cold[seam] - whole[seam]).max() > 10  # without warm-up the seam jumps
    assert np.abs(cold[:seam] - whole[:seam]).max() <= 3


def test_rvm_without_asset_is_refused(wojtek, actor_factory):
    from stages.errors import BadInput

    store, _ = actor_factory(wojtek["frames"][:6], wojtek["points"][:6], wojtek["ok"][:6], 6)
    with pytest.raises(BadInput, match="avatar run --matting"):
        run_stage("masks", "a", store, pipeline=PipelineConfig(stages={"masks": {"matting": "rvm"}}), device="cpu")


def _blank(n: int):
    frames = np.full((n, 512, 512, 3), 180, np.uint8)
    frames[:, 150:512, 160:352] = (200, 150, 130)  # a person-ish block
    return frames, np.full((n, 478, 3), np.nan, np.float32), np.zeros(n, bool)


def test_shard_without_any_face_gets_person_neckhead_and_no_mouth(actor_factory):
    frames, pts, ok = _blank(4)
    store, shards = actor_factory(frames, pts, ok, shard_size=4)
    pipe = PipelineConfig(stages={"masks": {"workers": 1, "batch_size": 2}})
    assert run_stage("masks", "a", store, pipeline=pipe, device="cpu").status == "ran"
    arrays = _check_format(_read_masks(store, "a", shards), range(1, 5))
    for k in range(1, 5):
        assert not arrays[mouth_name(k)].any()
    m = store.get_json(actor_key("a", "masks", "shards", "0000.manifest.json"))
    assert m["stats"]["shard_without_face"] is True and m["stats"]["frames_without_landmarks"] == 4


def test_bad_config_and_bad_landmarks_are_refused(actor_factory):
    from stages.errors import BadInput

    frames, pts, ok = _blank(4)
    store, shards = actor_factory(frames, pts, ok, shard_size=4)
    with pytest.raises(BadInput, match="matting 'fancy' is unknown"):
        run_stage("masks", "a", store, pipeline=PipelineConfig(stages={"masks": {"matting": "fancy"}}), device="cpu")
    with pytest.raises(BadInput, match="neckhead_classes has \\[19\\]"):
        run_stage("masks", "a", store, pipeline=PipelineConfig(stages={"masks": {"neckhead_classes": [1, 19]}}),
                  device="cpu")
    # landmarks that do not cover the shard's frames
    store2, _ = actor_factory(frames, pts, ok, shard_size=4, actor="b")
    import io

    from stages.runner.manifest import Manifest

    buf = io.BytesIO()
    np.savez(buf, frames=np.arange(1, 4, dtype=np.int32), points=pts[:3], confidence=np.zeros(3, np.float32),
             ok=ok[:3])
    key = actor_key("b", "landmarks", "0000.npz")
    digest = store2.put_bytes(key, buf.getvalue())
    mkey = actor_key("b", "landmarks", "manifest.json")
    man = Manifest.from_dict(store2.get_json(mkey))
    man.outputs[key] = digest
    store2.put_json(mkey, man.to_dict())
    with pytest.raises(BadInput, match="0000.npz: covers frames 1..3 \\(3\\), the shard is 1..4"):
        run_stage("masks", "b", store2, pipeline=PipelineConfig(), device="cpu")
