"""The ingest stage end to end (in-process through the runner) and its bad-input errors through
the CLI (exit 2, one line naming the file and the fix)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from stages.config import PipelineConfig
from stages.frameshard import read_shard_tar
from stages.runner.context import actor_key
from stages.runner.run import run_stage
from stages.store.uri import open_store
from stages.video.testclip import write_numbered_clip


def put_video(root, actor, path, overrides=None):
    store = open_store(str(root))
    store.put_file(actor_key(actor, "input", "video.mp4"), path)
    if overrides:
        store.put_json(actor_key(actor, "config.json"), PipelineConfig(stages={"ingest": overrides}).to_dict())
    return store


def frames_of(store, actor):
    """(shards.json, [(name, jpeg bytes)] of all shards in order)."""
    import tempfile
    from pathlib import Path

    doc = store.get_json(actor_key(actor, "ingest", "shards.json"))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in doc["shards"]:
            tar = store.get_file(actor_key(actor, "ingest", "frames", f"{s['index']:04d}.tar"), Path(tmp) / "s.tar")
            out.extend(read_shard_tar(tar))
    return doc, out


def compose_clip(src, dst, n, size=(640, 360), faces=((150, 20, 300),), fps=25, rotation=0):
    """First ``n`` frames of ``src`` pasted (resized to side s at x, y) into a grey canvas of
    ``size`` (as displayed), at ``fps``; stored rotated with display-rotation metadata that
    turns it upright again."""
    import av
    import cv2

    w, h = size
    k = rotation // 90
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height = (h, w) if k % 2 else (w, h)
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast"}
        if rotation:
            s.set_display_rotation(rotation)
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= n:
                break
            img = frame.to_ndarray(format="rgb24")
            canvas = np.full((h, w, 3), 200, dtype=np.uint8)
            for x, y, side in faces:
                canvas[y:y + side, x:x + side] = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
            coded = np.ascontiguousarray(np.rot90(canvas, -k)) if k else canvas
            for p in s.encode(av.VideoFrame.from_ndarray(coded, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return dst


def test_wojtek_ingest(tmp_path, wojtek):
    store = put_video(tmp_path / "store", "w", wojtek)
    result = run_stage("ingest", "w", store, jobs=1)
    assert result.status == "ran" and result.frames == 400
    doc, frames = frames_of(store, "w")
    # 400 frames: the default cuts a short clip into 8 shards (ingest.min_shards), one per landmarks/masks process
    assert doc["frames"] == 400 and doc["fps"] == 25 and [s["stop"] - s["start"] for s in doc["shards"]] == [50] * 8
    assert [n for n, _ in frames] == [f"{k:05d}.jpg" for k in range(1, 401)]

    crop = store.get_json(actor_key("w", "ingest", "crop.json"))
    report = store.get_json(actor_key("w", "ingest", "report.json"))
    assert report["frames_in"] == 400 and report["frames_out"] == 400 and report["duplicated"] == 0
    assert report["source"]["fps"] == 25 and report["source"]["width"] == 512
    assert report["face_fraction"] >= 0.95 and report["face_out_of_crop_fraction"] <= 0.05
    assert crop["face_out_of_crop_fraction"] == report["face_out_of_crop_fraction"]
    assert 350 <= crop["side"] <= 560  # 2.5 x a ~190 px face
    x0, y0, side = crop["x0"], crop["y0"], crop["side"]
    assert crop["bbox"] == [x0, x0 + side, y0, y0 + side] and crop["scale"] == 512 / side
    assert report["audio"] is None and "no audio track" in report["audio_note"]  # wojtek.mp4 has no sound
    assert not store.exists(actor_key("w", "ingest", "audio.wav")) and store.exists(actor_key("w", "ingest", "bbox.pt"))

    # frames are 512x512 JPEGs of the right source frame: frame k is source frame k-1, cut by crop.json
    import av
    import cv2

    from stages.video.crop import CropBox, cut

    box = CropBox(crop["x0"], crop["y0"], crop["side"])
    with av.open(str(wojtek)) as c:
        src = [f.to_ndarray(format="rgb24") for i, f in zip(range(300), c.decode(video=0))]
    for k in (1, 150, 300):
        ours = cv2.imdecode(np.frombuffer(frames[k - 1][1], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        assert ours.shape == (512, 512, 3)
        expect = cut(src[k - 1], box, 512, "edge").astype(float)
        assert np.abs(ours - expect).mean() < 3.0
        if k > 1:
            assert np.abs(ours - cut(src[k - 2], box, 512, "edge")).mean() > np.abs(ours - expect).mean()

    # the face is centred in the crop (FlashAvatar ignores the principal point)
    from stages.video.detect import FaceDetector

    with FaceDetector() as det:
        for k in (1, 200, 400):
            o = det.observe(cv2.imdecode(np.frombuffer(frames[k - 1][1], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1])
            cx, cy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
            assert abs(cx - 256) < 60 and abs(cy - 256) < 60

    # rerun: skipped (manifest matches)
    assert run_stage("ingest", "w", store, jobs=1).status == "skipped"


def test_short_clips_are_cut_into_min_shards_shards():
    from stages.ingest import Config, shard_frames
    from stages.runner.shards import plan_shards

    cfg = Config()
    sizes = {n: [len(s) for s in plan_shards(n, shard_frames(n, cfg))] for n in (30, 100, 250, 750, 4000, 10_000)}
    assert sizes[250] == [32] * 7 + [26] and sizes[750] == [94] * 7 + [92]
    assert sizes[30] == [30] and sizes[100] == [25] * 4  # never under min_shard_frames
    assert sizes[4000] == [500] * 8 and sizes[10_000] == [500] * 20  # long clips: shard_size as before
    assert all(sum(v) == n for n, v in sizes.items())
    one = Config(min_shards=1)  # the tiny preset's (CPU tests): shard_size alone, as before
    assert shard_frames(250, one) == 250 and shard_frames(250, Config(shard_size=100, min_shards=1)) == 100


def test_parallel_workers_write_the_same_frames(tmp_path, wojtek):
    """jobs=2 with 2 shards of 100 gives byte-identical frames to 1 shard of 200 split in 2 pieces."""
    short = compose_clip(wojtek, tmp_path / "short.mp4", 200, size=(512, 512), faces=((0, 0, 512),))
    over = {"detect_samples": 16, "min_face_frames": 50}
    a = put_video(tmp_path / "a", "w", short, {**over, "shard_size": 100, "min_shards": 1})
    b = put_video(tmp_path / "b", "w", short, {**over, "min_shards": 1})
    run_stage("ingest", "w", a, jobs=2)
    run_stage("ingest", "w", b, jobs=2)
    doc_a, frames_a = frames_of(a, "w")
    doc_b, frames_b = frames_of(b, "w")
    assert len(doc_a["shards"]) == 2 and len(doc_b["shards"]) == 1
    assert frames_a == frames_b and len(frames_a) == 200


def cli(root, actor, capsys):
    from stages.cli import main

    code = main(["stage", "ingest", "--actor", actor, "--store", str(root)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_not_a_video_exits_2_through_the_real_cli(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is a text file\n" * 50)
    put_video(tmp_path / "s", "a", bad)
    proc = subprocess.run([sys.executable, "-m", "stages", "stage", "ingest", "--actor", "a", "--store",
                           str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "actors/a/input/video.mp4: not a video file" in line and "upload a video file" in line


def test_bad_inputs_exit_2_with_their_message(tmp_path, capsys):
    import av

    ok = write_numbered_clip(tmp_path / "ok.mp4", 5, 25)
    cases = {}
    unknown = tmp_path / "unknown.mp4"
    unknown.write_bytes(ok.read_bytes().replace(b"avc1", b"zzzz"))
    cases["codec"] = (unknown, None, "unsupported video codec")
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    cases["zero"] = (empty, None, "zero frames")
    noface = write_numbered_clip(tmp_path / "noface.mp4", 120, 25, width=160, height=120)
    cases["noface"] = (noface, {"detect_samples": 8}, "no face found in any of 8 sampled frames")
    for name, (video, over, expect) in cases.items():
        put_video(tmp_path / name, "a", video, over)
        code, line = cli(tmp_path / name, "a", capsys)
        assert code == 2, (name, line)
        assert f"{tmp_path / name}/actors/a/input/video.mp4: " in line and expect in line, (name, line)
        assert not (tmp_path / name / "actors" / "a" / "ingest" / "manifest.json").exists()


def test_face_checks_exit_2(tmp_path, capsys, wojtek):
    short = compose_clip(wojtek, tmp_path / "short.mp4", 60, size=(256, 256), faces=((0, 0, 256),))
    put_video(tmp_path / "few", "a", short, {"detect_samples": 8})
    code, line = cli(tmp_path / "few", "a", capsys)
    assert code == 2 and "too few frames with a face: the video has only 60 frames at 25 fps, the minimum is 100" in line
    one = compose_clip(wojtek, tmp_path / "one.mp4", 1, size=(256, 256), faces=((0, 0, 256),))
    put_video(tmp_path / "one", "a", one, {"detect_samples": 8})
    code, line = cli(tmp_path / "one", "a", capsys)
    assert code == 2 and "the video has only 1 frame at 25 fps" in line, line
    put_video(tmp_path / "small", "a", short, {"detect_samples": 8, "min_face_frames": 10, "min_face_px": 200})
    code, line = cli(tmp_path / "small", "a", capsys)
    assert code == 2 and "face too small:" in line and "the minimum is 200 px" in line and "record closer" in line
    # a face in only some of the frames: half the clip is blank
    import av

    half = tmp_path / "half.mp4"
    with av.open(str(short)) as inp, av.open(str(half), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width = s.height = 256
        s.pix_fmt = "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            img = frame.to_ndarray(format="rgb24") if i < 20 else np.full((256, 256, 3), 90, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    put_video(tmp_path / "half", "a", half, {"detect_samples": 12, "min_face_frames": 40})
    code, line = cli(tmp_path / "half", "a", capsys)
    assert code == 2 and "too few frames with a face: about" in line and "the minimum is 40" in line


def test_several_faces_warn_and_take_the_dominant(tmp_path, wojtek):
    two = compose_clip(wojtek, tmp_path / "two.mp4", 110, size=(640, 360), faces=((340, 20, 300), (20, 90, 220)))
    store = put_video(tmp_path / "s", "a", two, {"detect_samples": 12})
    run_stage("ingest", "a", store, jobs=1)
    report = store.get_json(actor_key("a", "ingest", "report.json"))
    crop = store.get_json(actor_key("a", "ingest", "crop.json"))
    assert report["several_faces_samples"] >= 6
    assert any("several faces" in w and "dominant" in w for w in report["warnings"])
    assert 340 < crop["x0"] + crop["side"] / 2 < 640  # centred on the larger face on the right


def test_rotated_2997fps_source_gives_ffmpegs_frames_upright(tmp_path, wojtek):
    """A 29.97 fps clip stored rotated (display matrix 90 degrees): our frames are ffmpeg's
    ``-vf fps=25`` frames (autorotated), cut by our crop."""
    from fractions import Fraction

    import cv2
    import imageio_ffmpeg

    from stages.video.crop import CropBox, cut

    clip = compose_clip(wojtek, tmp_path / "rot.mp4", 150, size=(360, 480), faces=((20, 100, 320),),
                        fps=Fraction(30000, 1001), rotation=90)
    store = put_video(tmp_path / "s", "a", clip, {"detect_samples": 12, "min_face_frames": 50})
    run_stage("ingest", "a", store, jobs=1)
    report = store.get_json(actor_key("a", "ingest", "report.json"))
    crop = store.get_json(actor_key("a", "ingest", "crop.json"))
    assert report["source"]["rotation"] == 90 and (report["source"]["width"], report["source"]["height"]) == (360, 480)
    assert report["frames_in"] == 150 and report["frames_out"] == 125 and report["dropped"] == 25
    assert 20 < crop["x0"] + crop["side"] / 2 < 340 and 100 < crop["y0"] + crop["side"] / 2 < 420

    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(clip), "-vf", "fps=25", "-f",
                          "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(-1, 480, 360, 3)
    _, frames = frames_of(store, "a")
    assert len(ref) == len(frames) == 125
    box = CropBox(crop["x0"], crop["y0"], crop["side"])
    for k in range(1, 124, 7):
        ours = cv2.imdecode(np.frombuffer(frames[k][1], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].astype(float)
        errs = [np.abs(ours - cut(ref[j], box, 512)).mean() for j in (k - 1, k, k + 1)]
        assert errs[1] < 3.0 and errs[1] < min(errs[0], errs[2]), (k, errs)


def test_fixed_crop_skips_detection_and_workers_keep_frame_order(tmp_path):
    """A clip with no face still ingests with ``fixed_crop``; 2 workers, 3 shards, ffmpeg's frames."""
    from fractions import Fraction

    import cv2

    from stages.video.testclip import read_frame_number

    clip = write_numbered_clip(tmp_path / "n.mp4", 90, Fraction(30000, 1001), width=96, height=64)
    store = put_video(tmp_path / "s", "a", clip, {"fixed_crop": [0, 0, 64], "shard_size": 25, "size": 64})
    run_stage("ingest", "a", store, jobs=2)
    doc, frames = frames_of(store, "a")
    assert doc["frames"] == 75 and len(doc["shards"]) == 3
    from stages.video.decode import index_frames, probe
    from stages.video.resample import fps_selection

    info = probe(clip)
    index = index_frames(info)
    expect = fps_selection(index.pts, index.end_pts, info.time_base, 25, info.start_pts).tolist()
    got = [read_frame_number(cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR)) for _, d in frames]
    assert got == expect
    report = store.get_json(actor_key("a", "ingest", "report.json"))
    assert any("fixed by the config" in w for w in report["warnings"]) and report["samples"] == 0
