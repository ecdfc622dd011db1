"""Stage assemble: joins the shards, writes and verifies the FlashAvatar dataset and .frame files,
an overlay video and a report; refuses a dataset that fails verification."""

import json

import numpy as np
import pytest

from stages.config import PipelineConfig
from stages.dataset.frame_file import read_frame
from stages.dataset.layout import DatasetLayout
from stages.dataset.verify import verify_dataset
from stages.errors import BadInput
from stages.face.flame import FLAME
from stages.runner.run import run_stage
from stages.store.local import LocalStore
from tracking.synthetic import landmarks478, make_clip, publish_upstream, standin

TINY = PipelineConfig(preset="tiny")


def _add_ingest_extras(store, actor, n):
    """What ingest also writes: crop.json, bbox.pt and audio.wav (n frames of 640 samples)."""
    import io

    from stages.runner.context import actor_key
    from stages.runner.manifest import MANIFEST
    from stages.video.audio import write_wav
    from stages.video.crop_record import CropRecord, bbox_pt_bytes

    key = actor_key(actor, "ingest", MANIFEST)
    manifest = store.get_json(key)
    rec = CropRecord(10, -20, 600, 640, 480)
    buf = io.BytesIO()
    write_wav(buf, np.arange(n * 640, dtype=np.int16))
    for rel, data in (("crop.json", json.dumps(rec.to_dict()).encode()), ("bbox.pt", bbox_pt_bytes(rec)),
                      ("audio.wav", buf.getvalue())):
        k = actor_key(actor, "ingest", rel)
        manifest["outputs"][k] = store.put_bytes(k, data)
    store.put_json(key, manifest)


@pytest.fixture(scope="module")
def assembled(tmp_path_factory):
    model = FLAME(standin())
    clip = make_clip(model, 20, seed=6)
    store = LocalStore(tmp_path_factory.mktemp("store"))
    publish_upstream(store, "syn", landmarks478(clip, model.mp_index.numpy()), shard_size=10, fail=(3,))
    _add_ingest_extras(store, "syn", 20)
    for stage in ("calibrate", "track", "assemble"):
        run_stage(stage, "syn", store, pipeline=TINY, device="cpu")
    return store, clip


def test_dataset_layout_frames_and_pairing(assembled):
    store, clip = assembled
    root = store.root / "actors/syn/dataset"
    assert verify_dataset(root) == []
    layout = DatasetLayout(root)
    assert layout.frame_count() == 20
    assert layout.image_path(1).is_file() and layout.image_path(20).is_file() and not layout.image_path(0).exists()
    f0, f19 = read_frame(layout.frame_path(0)), read_frame(layout.frame_path(19))
    assert f0["frame_id"] == "00000" and f19["frame_id"] == "00019"
    assert f0["flame"]["shape"].shape == (1, 300) and f0["flame"]["exp"].shape == (1, 100)
    assert f0["opencv"]["K"].shape == (1, 3, 3) and f0["camera"]["R"].shape == (1, 6)
    assert f0["img_size"].tolist() == [512, 512]
    # the camera block is the PyTorch3D form of the OpenCV one
    import torch

    from stages.face.camera import Pytorch3dCamera, pytorch3d_to_opencv

    cam = Pytorch3dCamera(*(torch.as_tensor(f19["camera"][k]) for k in ("R", "t", "fl", "pp")))
    K, R, t = pytorch3d_to_opencv(cam, (512, 512))
    np.testing.assert_allclose(R.numpy(), f19["opencv"]["R"], atol=1e-5)
    np.testing.assert_allclose(t.numpy(), f19["opencv"]["t"], atol=1e-5)
    np.testing.assert_allclose(K.numpy(), f19["opencv"]["K"], atol=1e-3)
    # checkpoint i holds the parameters of frame i+1 (frame_delta 1)
    with np.load(root / "tracking.npz") as z:
        assert z["frames"].tolist() == list(range(1, 21)) and z["checkpoint"].tolist() == list(range(20))
        np.testing.assert_allclose(z["exp"][19], f19["flame"]["exp"][0], atol=1e-6)
        assert z["filled"].tolist() == [i == 3 for i in range(20)]
        from stages.dataset.frame_file import load_tracked_sequence

        seq = load_tracked_sequence(layout.checkpoint_dir)
        np.testing.assert_allclose(seq["opencv.t"], z["t"], atol=1e-6)
        np.testing.assert_allclose(seq["flame.jaw"], z["jaw"], atol=1e-6)


def test_dataset_gets_the_crop_record_and_the_sound(assembled):
    import torch

    from stages.video.audio import read_wav
    from stages.video.crop_record import CropRecord

    store, _ = assembled
    root = store.root / "actors/syn/dataset"
    rec = CropRecord.load(root / "crop.json")
    assert rec.box == (10, -20, 610, 580) and rec.bbox == [10, 610, -20, 580]
    assert torch.load(root / "bbox.pt").tolist() == [10, 610, -20, 580]
    samples, rate = read_wav(root / "audio.wav")
    assert rate == 16000 and samples.shape == (20 * 640, 1)


def test_report_and_overlay(assembled):
    store, _ = assembled
    report = json.loads((store.root / "actors/syn/assemble/report.json").read_text())
    assert report["frames"] == 20 and report["filled"] == [3] and report["verified"]
    per_frame = report["landmark_error_px"]["per_frame"]
    assert len(per_frame) == 20 and per_frame[3] is None and report["landmark_error_px"]["median"] < 1.5
    assert len(report["seam_jump_mm"]) == 1
    import av

    with av.open(str(store.root / "actors/syn/assemble/overlay.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in c.decode(stream)) == report["overlay_frames"] == 10  # tiny: every 2nd frame


def test_worker_processes_write_the_same_dataset(assembled, tmp_path):
    """Assemble in 3 forked worker processes writes byte for byte what the in-process run wrote."""
    import shutil

    store, _ = assembled
    copy = LocalStore(tmp_path / "copy")
    shutil.copytree(store.root / "actors", copy.root / "actors",
                    ignore=lambda d, names: [n for n in names if n in ("dataset", "assemble")])
    result = run_stage("assemble", "syn", copy, pipeline=TINY, device="cpu", jobs=3)
    assert result.status == "ran"
    ours = copy.get_json("actors/syn/assemble/manifest.json")["outputs"]
    theirs = store.get_json("actors/syn/assemble/manifest.json")["outputs"]
    dataset = {k: v for k, v in theirs.items() if "/dataset/" in k}
    copied = {k for k in dataset if k.rsplit("/", 1)[-1] in ("crop.json", "bbox.pt", "audio.wav", "motion.npz")}
    assert len(dataset) - len(copied) == 5 * 20 + 1 and {k: ours[k] for k in dataset} == dataset
    assert verify_dataset(copy.root / "actors/syn/dataset") == []


def _decoded(path) -> list:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def test_overlay_drawn_in_threads_is_the_same_video(assembled, tmp_path, monkeypatch):
    """The overlay's frames decoded and drawn by 3 threads come out in order, the same video as
    drawn by one (the frames differ from each other: an out-of-order frame would show)."""
    import shutil

    import stages.assemble as assemble

    store, _ = assembled
    copy = LocalStore(tmp_path / "copy")
    shutil.copytree(store.root / "actors", copy.root / "actors",
                    ignore=lambda d, names: [n for n in names if n in ("dataset", "assemble")])
    monkeypatch.setattr(assemble, "overlay_threads", lambda: 3)
    assert run_stage("assemble", "syn", copy, pipeline=TINY, device="cpu").status == "ran"
    ours = _decoded(copy.root / "actors/syn/assemble/overlay.mp4")
    theirs = _decoded(store.root / "actors/syn/assemble/overlay.mp4")
    assert len(ours) == len(theirs) == 10
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    assert not np.array_equal(theirs[0], theirs[1])


def test_assemble_refuses_bad_masks(tmp_path):
    """Masks saved 0/1 instead of 0/255 would silently break FlashAvatar: assemble must refuse."""
    import io
    import tarfile

    import cv2

    model = FLAME(standin())
    clip = make_clip(model, 6, seed=7)
    store = LocalStore(tmp_path / "store")
    publish_upstream(store, "bad", landmarks478(clip, model.mp_index.numpy()), shard_size=6)
    # rewrite the masks tar with 0/1 neckhead masks, and its manifest
    members = []
    for k in range(1, 7):
        ones = np.ones((512, 512), np.uint8)
        members += [(f"alpha/{k:05d}.jpg", cv2.imencode(".jpg", ones * 255)[1].tobytes()),
                    (f"parsing/{k:05d}_neckhead.png", cv2.imencode(".png", ones)[1].tobytes()),
                    (f"parsing/{k:05d}_mouth.png", cv2.imencode(".png", ones * 0)[1].tobytes())]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    key = "actors/bad/masks/0000.tar"
    sha = store.put_bytes(key, buf.getvalue())
    m = store.get_json("actors/bad/masks/manifest.json")
    m["outputs"][key] = sha
    store.put_json("actors/bad/masks/manifest.json", m)
    run_stage("calibrate", "bad", store, pipeline=TINY, device="cpu")
    run_stage("track", "bad", store, pipeline=TINY, device="cpu")
    with pytest.raises(BadInput, match="0/255"):
        run_stage("assemble", "bad", store, pipeline=TINY, device="cpu")
    assert not (store.root / "actors/bad/assemble/manifest.json").exists()
    # what it had written is gone again: no half-assembled dataset stays in the store
    assert [p for p in (store.root / "actors/bad/dataset").rglob("*") if p.is_file()] == []


def test_report_has_the_steadiness_figures(assembled):
    """The tiny preset compares the head's jitter over 30 middle frames with a frame-by-frame fit."""
    store, clip = assembled
    report = json.loads((store.root / "actors/syn/assemble/report.json").read_text())
    steady = report["steadiness"]
    assert steady["ours"]["frames"] == 20 and steady["window"] == [1, 20]
    for k in ("ours", "ours_window", "per_frame_fit"):
        assert steady[k]["position_mm"] >= 0 and steady[k]["rotation_deg"] >= 0
    assert steady["per_frame_fit_method"] == "lm" and steady["per_frame_fit_device"] == "cpu"
    assert steady["ratio_position"] == pytest.approx(
        steady["ours_window"]["position_mm"] / steady["per_frame_fit"]["position_mm"], rel=1e-3)
    m = json.loads((store.root / "actors/syn/assemble/manifest.json").read_text())
    assert m["stats"]["steadiness"]["ours"] == steady["ours"]
