"""``avatar render``: render a trained avatar for tracked parameters into a video."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from stages.cli import app


@app.command("render", help="Render a trained avatar (avatar/avatar.pt) for tracked FLAME parameters "
                            "(a folder of metrical-tracker .frame files, or one .frame) into an H.264 video.")
def render_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="The avatar file (avatar/avatar.pt)."),
    params: Path = typer.Option(..., "--params", help="Folder of .frame files (checkpoint/), or one .frame file."),
    out: Path = typer.Option(..., "--out", help="Output video (.mp4)."),
    flame: Path = typer.Option(None, "--flame", help="FLAME generic_model.pkl the avatar was trained with "
                                                     "(default: the built-in stand-in)."),
    resolution: int = typer.Option(512, "--resolution", help="Output size (px, square)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch: int = typer.Option(16, "--batch", help="Frames per render call."),
    fps: int = typer.Option(25, "--fps", help="Frame rate of the video."),
    full_frame: bool = typer.Option(False, "--full-frame", help="Composite the avatar into the actor's source "
                                    "video at source resolution, at the crop ingest recorded (--resolution is ignored)."),
    source: Path = typer.Option(None, "--source", help="With --full-frame: the actor's source video "
                                "(default: input/video.mp4 beside the dataset, as in the store)."),
    crop: Path = typer.Option(None, "--crop", help="With --full-frame: crop.json (default: the dataset's)."),
    audio: Path = typer.Option(None, "--audio", help="Sound to mux in as AAC (default: the dataset's audio.wav, "
                               "cut to the rendered frames, when the frames are the dataset's own)."),
) -> None:
    import torch

    from stages.dataset.frame_file import stack_frames, read_frame
    from stages.errors import bad_input
    from stages.face.model import load_face_model
    from stages.gauss.data import background_rgb
    from stages.gauss.preview import PreviewWriter
    from stages.gauss.surface import condition_vector, flame_surface
    from stages.gauss.trainer import check_face_model, choose_renderer, config_from_dict, load_avatar, render_frames

    if not checkpoint.is_file():
        raise bad_input(checkpoint, "no such file", "give the avatar file the train stage wrote (avatar/avatar.pt)")
    try:
        model, meta = load_avatar(checkpoint)
    except (ValueError, RuntimeError, OSError) as e:
        raise bad_input(checkpoint, f"not an avatar file ({e})", "give avatar/avatar.pt") from None
    if params.is_dir():
        files = sorted(params.glob("*.frame")) or sorted((params / "checkpoint").glob("*.frame"))
    else:
        files = [params] if params.suffix == ".frame" and params.is_file() else []
    if not files:
        raise bad_input(params, "no .frame files", "give a folder of metrical-tracker .frame files or one .frame file")
    try:
        frames = [read_frame(p) for p in files]
    except Exception as e:  # torch.load of something else
        raise bad_input(params, f"unreadable .frame file ({e})", "re-run tracking or assemble") from None
    seq = stack_frames(frames)
    need = ("flame.exp", "flame.jaw", "flame.eyes", "flame.eyelids", "opencv.R", "opencv.t", "opencv.K")
    missing = [k for k in need if k not in seq]
    if missing:
        raise bad_input(params, f"frames lack {', '.join(missing)}", "re-run tracking or assemble")
    h, w = (int(v) for v in frames[0].get("img_size", (512, 512)))
    dataset = params if params.is_dir() and not any(params.glob("*.frame")) else files[0].parent.parent
    ids = [int(f.get("frame_id", j)) for j, f in enumerate(frames)]
    own = ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive frames of the dataset's own timeline
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tcfg = config_from_dict(meta["train_config"])
    renderer = choose_renderer("auto", device)
    surface = flame_surface(load_face_model(flame), meta["shape"].numpy())
    check_face_model(meta, surface, checkpoint)
    surface = surface.to(device)
    model = model.to(device).eval()
    t = lambda k: torch.as_tensor(seq[k], dtype=torch.float32)  # noqa: E731
    cond = condition_vector(t("flame.exp"), t("flame.jaw"), t("flame.eyes"), t("flame.eyelids"))
    K = t("opencv.K") * torch.tensor([[resolution / w], [resolution / h], [1.0]])
    bg = torch.tensor(background_rgb(tcfg.background), device=device)
    n = cond.shape[0]
    wav = audio if audio is not None else (dataset / "audio.wav" if own else None)
    if audio is not None and not audio.is_file():
        raise bad_input(audio, "no such file", "give a WAV, m4a or mp3 file, or leave --audio out")
    if full_frame:
        from stages.gauss.fullframe_render import render_full_frame, with_audio
        from stages.video.crop_record import CropRecord

        crop = crop or dataset / "crop.json"
        source = source or dataset.parent / "input" / "video.mp4"
        if not crop.is_file():
            raise bad_input(crop, "no crop record", "give --crop with the crop.json ingest wrote for this actor")
        if not source.is_file():
            raise bad_input(source, "no such file", "give --source with the actor's source video (input/video.mp4)")
        try:
            record = CropRecord.load(crop)
        except (ValueError, KeyError) as e:
            raise bad_input(crop, f"not a crop record ({e})", "give the crop.json ingest wrote") from None
        stats = render_full_frame(model, surface, cond, t("opencv.R"), t("opencv.t"), t("opencv.K"),
                                  ids if own else list(range(n)), out, source, record, renderer=renderer,
                                  device=device, batch=batch)
        sound = with_audio(out, wav, None if audio is not None else ids[0], n, fps)
        typer.echo(f"{out}: {n} frames at {stats['width']}x{stats['height']} (avatar at {record.side}px) in "
                   f"{stats['seconds']:.1f} s ({stats['fps']:.1f} frames/s incl. decoding, compositing, encoding, "
                   f"{renderer} on {device}){', with sound' if sound else ''}")
        return
    t0 = time.perf_counter()
    with PreviewWriter(out, resolution, resolution, fps) as writer, torch.no_grad():
        for s in range(0, n, batch):
            sl = slice(s, s + batch)
            img, _ = render_frames(model, surface, cond[sl].to(device), t("opencv.R")[sl].to(device),
                                   t("opencv.t")[sl].to(device), K[sl].to(device), resolution, bg, renderer)
            for frame in (img.clamp(0, 1) * 255).round().byte().cpu().numpy():
                writer.write(frame)
    seconds = time.perf_counter() - t0
    from stages.gauss.fullframe_render import with_audio

    sound = with_audio(out, wav, None if audio is not None else ids[0], n, fps)
    typer.echo(f"{out}: {n} frames at {resolution}x{resolution} in {seconds:.1f} s "
               f"({n / max(seconds, 1e-9):.1f} frames/s incl. encoding, {renderer} on {device})"
               f"{', with sound' if sound else ''}")
