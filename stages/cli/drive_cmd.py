"""``avatar drive``: drive a trained avatar with another video or with a FLAME motion file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import typer

from stages.cli import app


@app.command("drive", help="Drive a trained avatar: with another person's video (--video; the driver is tracked as "
                           "its own entry drivers/NAME/, cached and resumable) or with a FLAME motion file "
                           "(--motion: .npz or a folder of .frame files; see docs/motion-format.md). Writes "
                           "actors/ACTOR/drive/NAME/drive.mp4 (with the driver's or --audio's sound), motion.npz "
                           "and side_by_side.mp4.")
def drive_command(
    actor: str = typer.Option(..., "--actor", help="The actor whose trained avatar is driven."),
    video: Path = typer.Option(None, "--video", help="Driver video (a talking head)."),
    motion: Path = typer.Option(None, "--motion", help="Motion: an .npz of FLAME parameters, our motion.npz, "
                                                       "or a folder of metrical-tracker .frame files."),
    audio: Path = typer.Option(None, "--audio", help="Sound for drive.mp4 (default: the driver video's own)."),
    name: str = typer.Option(None, "--name", help="Name of the drive (and of the driver entry); default: the "
                                                  "video's or motion file's name."),
    transfer: str = typer.Option("relative", "--transfer", help="relative (driver minus its neutral plus the "
                                                                "actor's neutral) or absolute."),
    pose: str = typer.Option("relative", "--pose", help="relative (driver's head motion around the actor's median "
                                                        "camera), actor (the actor's own cameras) or fixed."),
    driver_neutral: str = typer.Option(None, "--driver-neutral", help="median (default for videos), zero (default "
                                                                      "for motion files) or a frame number."),
    store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    resolution: int = typer.Option(512, "--resolution", help="Output size (px, square)."),
    render_resolution: int = typer.Option(0, "--render-resolution",
                                          help="Render at this size, then scale to --resolution (0: --resolution on "
                                               "a GPU, at most 3x the avatar's training size on a CPU)."),
    batch: int = typer.Option(32, "--batch", help="Frames per render call."),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", help="Worker processes for the driver's CPU shards."),
    full_frame: bool = typer.Option(False, "--full-frame", help="Also write drive_full.mp4: the avatar put back "
                                    "into the actor's own footage at source resolution."),
) -> None:
    from stages.names import check_actor

    check_actor(actor)
    from stages.drive.sources import (check_name, drive_name, driver_frames, driver_motion, driver_track_digest,
                                      prepare_driver, track_driver)
    from stages.drive.stage import DriveConfig, DriveSource, run_drive
    from stages.errors import BadInput
    from stages.motion.format import load_motion
    from stages.runner.context import actor_key
    from stages.runner.run import resolve_device
    from stages.graph import DRIVE_STEP
    from stages.store.base import sha256_file
    from stages.store.uri import open_store

    if (video is None) == (motion is None):
        raise BadInput("avatar drive: give exactly one of --video driver.mp4 or --motion motion.npz")
    if audio is not None and not audio.is_file():
        raise BadInput(f"{audio}: no such file; give the sound file for --audio (WAV, MP3, AAC)")
    if video is not None and not video.is_file():
        raise BadInput(f"{video}: no such file; give the driver's talking-head video")
    name = check_name(name if name is not None else drive_name((video or motion).stem))
    cfg = DriveConfig(transfer=transfer, pose=pose,
                      driver_neutral=driver_neutral or ("median" if video is not None else "zero"),
                      resolution=resolution, render_resolution=render_resolution, batch=batch, full_frame=full_frame)
    cfg.check()
    st = open_store(store)
    if not st.exists(actor_key(actor, "train", "manifest.json")):
        raise BadInput(f"{st.uri}/{actor_key(actor, 'avatar', 'avatar.pt')}: actor {actor!r} has no trained avatar; "
                       f"train it first (avatar run --actor {actor} --video VIDEO --store {store})")
    dev = resolve_device(device, DRIVE_STEP)
    scratch = Path(tempfile.mkdtemp(prefix="avatar-drive-", dir=os.environ.get("AVATAR_SCRATCH")))
    try:
        if motion is not None:
            m = load_motion(motion)
            digest = sha256_file(motion) if motion.is_file() else _folder_digest(motion)
            source = DriveSource(m, digest, audio=audio, label=str(motion))
        else:
            from stages.video.audio import has_audio

            prepare_driver(st, actor, name, video)
            for r in track_driver(st, name, device=device, jobs=jobs):
                typer.echo(f"driver {name}: {r.stage:10s} {r.status:8s} {r.frames:6d} frames {r.fps:8.1f} frames/s")
            sound = audio if audio is not None else (video if has_audio(video) else None)
            source = DriveSource(driver_motion(st, name, scratch), driver_track_digest(st, name), audio=sound,
                                 frames=lambda: driver_frames(st, name, scratch), label=f"driver {name}")
        result = run_drive(st, actor, name, source, cfg, scratch=scratch, device=dev)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = f"{st.uri}/{result.folder}"
    if result.status == "skipped":
        typer.echo(f"drive {name}: already done (same avatar, driver and settings): {base}/drive.mp4")
    else:
        typer.echo(f"drive {name}: {result.frames} frames in {result.seconds:.1f} s "
                   f"(render {result.render_fps:.1f} frames/s)\n{base}/drive.mp4")


def _folder_digest(folder: Path) -> str:
    import hashlib

    from stages.store.base import sha256_file

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.frame")):
        h.update(f"{p.relative_to(folder)}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


INPUT = "input"  # actors/<actor>/drive/<name>/input/: what submit-drive uploads for the cluster's drive step


@app.command("drive-step", help="(Run by the drive workflow's last pod.) Render a drive from what is in the store: "
                                "the tracked driver drivers/DRIVER/ (--driver), or the motion that submit-drive "
                                "uploaded to actors/ACTOR/drive/NAME/input/, with the settings stored there.")
def drive_step_command(
    actor: str = typer.Option(..., "--actor"),
    name: str = typer.Option(..., "--name"),
    driver: str = typer.Option("", "--driver", help="The driver entry's name; empty: a motion drive."),
    store: str = typer.Option(..., "--store"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    from stages.drive.sources import check_name, driver_entry, driver_frames, driver_motion, driver_track_digest
    from stages.drive.stage import DriveConfig, DriveSource, drive_folder, run_drive
    from stages.errors import BadInput
    from stages.graph import DRIVE_STEP
    from stages.motion.format import load_motion
    from stages.runner.context import actor_key
    from stages.runner.run import resolve_device
    from stages.store.uri import open_store
    from stages.video.audio import has_audio

    check_name(name)
    st = open_store(store)
    base = f"{drive_folder(actor, name)}/{INPUT}"
    try:
        cfg = DriveConfig(**st.get_json(f"{base}/settings.json"))
    except KeyError:
        cfg = DriveConfig(driver_neutral="median" if driver else "zero")
    scratch = Path(tempfile.mkdtemp(prefix="avatar-drive-", dir=os.environ.get("AVATAR_SCRATCH")))
    try:
        audio_key = next((k for k in st.list(f"{base}/") if k.rsplit("/", 1)[-1].startswith("audio.")), None)
        audio = st.fetch(audio_key, scratch / "input") if audio_key else None
        if driver:
            check_name(driver, "--driver")
            if audio is None:
                video = st.fetch(actor_key(driver_entry(driver), "input", "video.mp4"), scratch / "input")
                audio = video if has_audio(video) else None
            source = DriveSource(driver_motion(st, driver, scratch), driver_track_digest(st, driver), audio=audio,
                                 frames=lambda: driver_frames(st, driver, scratch), label=f"driver {driver}")
        else:
            key = f"{base}/motion.npz"
            if not st.exists(key):
                raise BadInput(f"{st.uri}/{key}: no motion uploaded for drive {name!r}; "
                               "submit it with avatar submit-drive --motion FILE")
            source = DriveSource(load_motion(st.fetch(key, scratch / "input")), st.sha256(key), audio=audio,
                                 label=f"{st.uri}/{key}")
        result = run_drive(st, actor, name, source, cfg, scratch=scratch, device=resolve_device(device, DRIVE_STEP))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    typer.echo(f"drive {name}: {result.status}, {result.frames} frames; {st.uri}/{result.folder}/drive.mp4")


@app.command("submit-drive", help="Drive on the cluster: upload the driver video (as drivers/NAME/) or the motion "
                                  "(and --audio) to the settings' S3 store, submit a Workflow from the drive template, "
                                  "print its name and Argo UI link. What make drive runs.")
def submit_drive_command(
    actor: str = typer.Option(..., "--actor", help="The actor whose trained avatar is driven."),
    video: Path = typer.Option(None, "--video", help="Driver video."),
    motion: Path = typer.Option(None, "--motion", help="Motion file or .frame folder (docs/motion-format.md)."),
    audio: Path = typer.Option(None, "--audio", help="Sound for drive.mp4."),
    name: str = typer.Option(None, "--name", help="Name of the drive (default: the file's name)."),
    transfer: str = typer.Option("relative", "--transfer"),
    pose: str = typer.Option("relative", "--pose"),
    driver_neutral: str = typer.Option(None, "--driver-neutral"),
    resolution: int = typer.Option(512, "--resolution", help="Output size (px, square)."),
    settings: Path = typer.Option(None, "--settings", help="Cluster settings file (as for avatar submit)."),
) -> None:
    import dataclasses

    from stages.drive.sources import check_name, drive_name, prepare_driver
    from stages.drive.stage import DriveConfig, drive_folder
    from stages.errors import BadInput
    from stages.motion.format import load_motion, motion_bytes
    from stages.store.uri import open_store
    from workflows.build import CLUSTER_DEFAULTS, check_actor, drive_template_name, drive_workflow_for
    from workflows.client import check_template, create_workflow, load_connection
    from workflows.settings import load_settings

    check_actor(actor)
    if (video is None) == (motion is None):
        raise BadInput("avatar submit-drive: give exactly one of --video driver.mp4 or --motion motion.npz")
    if audio is not None and not audio.is_file():
        raise BadInput(f"{audio}: no such file; give the sound file for --audio (WAV, MP3, AAC)")
    name = check_name(name if name is not None else drive_name((video or motion).stem))
    cfg = DriveConfig(transfer=transfer, pose=pose, resolution=resolution,
                      driver_neutral=driver_neutral or ("median" if video is not None else "zero"))
    cfg.check()
    m = load_motion(motion) if motion is not None else None  # a bad file stops here, before any upload
    ws = load_settings(settings)
    conn = load_connection(namespace=ws.namespace)
    ws = dataclasses.replace(ws, namespace=conn.namespace)
    check_template(conn, drive_template_name(ws))
    st = open_store(ws.s3.store_uri)
    base = f"{drive_folder(actor, name)}/{INPUT}"
    uploads = {f"{base}/settings.json": (json_bytes(dataclasses.asdict(cfg)))}
    if m is not None:
        uploads[f"{base}/motion.npz"] = motion_bytes(m)
    if audio is not None:
        uploads[f"{base}/audio{audio.suffix.lower()}"] = audio.read_bytes()
    for key, data in uploads.items():
        if st.exists(key) and st.get_bytes(key) != data:
            raise BadInput(f"{st.uri}/{key}: drive {name!r} of actor {actor!r} already has other inputs, and uploads "
                           "are never overwritten; pass another --name")
    if video is not None:
        prepare_driver(st, actor, name, video, settings=CLUSTER_DEFAULTS)
    for key, data in uploads.items():
        if not st.exists(key):
            st.put_bytes(key, data)
    created = create_workflow(conn, drive_workflow_for(ws, actor, name, name if video is not None else None))
    wf = created.get("metadata", {}).get("name", "")
    typer.echo(wf)
    typer.echo(f"Argo UI: {conn.ui_url(wf)}")
    typer.echo(f"watch: avatar status {wf}    retry failed pods: avatar retry {wf}")


def json_bytes(obj) -> bytes:  # noqa: ANN001
    import json

    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
