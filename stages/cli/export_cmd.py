"""``avatar export``: the trained avatar as a standard 3DGS PLY (a frame, the neutral face, a
sequence) or as the rigged bundle (docs/export-format.md)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer

from stages.cli import app

FORMATS = ("ply", "ply-sequence", "bundle")


@app.command("export", help="Export an actor's trained avatar: --format ply (one frame or the neutral face, "
                            "Gaussians in world coordinates, opens in common 3DGS viewers), ply-sequence (one PLY "
                            "per frame of the tracked sequence or --motion), bundle (the rigged avatar).")
def export_command(
    actor: str = typer.Option(..., "--actor", help="Actor name (folder under actors/)."),
    fmt: str = typer.Option("ply", "--format", help="ply, ply-sequence or bundle."),
    frame: int = typer.Option(None, "--frame", help="ply: the tracked frame to export (0-based)."),
    neutral: bool = typer.Option(False, "--neutral", help="ply: the neutral face (the default without --frame)."),
    motion: Path = typer.Option(None, "--motion", help="ply-sequence: a motion.npz or a folder of .frame files "
                                                       "(default: the actor's tracked sequence)."),
    head_pose: bool = typer.Option(False, "--head-pose", help="ply --frame, ply-sequence: bake the tracked head "
                                   "pose into the Gaussians (as seen by frame 0's camera), so a viewer with a fixed "
                                   "camera shows the head moving."),
    drive: str = typer.Option(None, "--drive", help="ply-sequence: the motion of the actor's drive NAME "
                                                    "(actors/ACTOR/drive/NAME/motion.npz in the store)."),
    out: Path = typer.Option(None, "--out", help="Output file (ply) or folder (ply-sequence, bundle); "
                                                 "never overwritten. Default: ACTOR-....ply / ACTOR-ply/ / ACTOR.avatar-bundle/."),
    store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    from stages.names import check_actor

    check_actor(actor)
    import torch

    from stages.errors import BadInput, bad_input
    from stages.export.actor import drive_motion, load_actor
    from stages.export.bundle import write_bundle
    from stages.export.motion import tracked_motion
    from stages.motion.format import load_motion
    from stages.export.ply import splat_cloud, write_ply
    from stages.export.pose import pose_gaussians
    from stages.export.rigid import head_pose_transform, transform_cloud
    from stages.export.sequence import write_ply_sequence
    from stages.gauss.surface import neutral_condition
    from stages.runner.progress import Progress
    from stages.store.uri import open_store

    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt}: unknown; use one of {', '.join(FORMATS)}")
    if frame is not None and neutral:
        raise BadInput("--frame and --neutral: give one of them")
    if fmt != "ply" and (frame is not None or neutral):
        raise BadInput(f"--frame/--neutral: only for --format ply, not {fmt}")
    if head_pose and not (fmt == "ply-sequence" or frame is not None):
        raise BadInput("--head-pose: only with --format ply --frame K or --format ply-sequence")
    if (motion is not None or drive is not None) and fmt != "ply-sequence":
        raise BadInput("--motion/--drive: only for --format ply-sequence")
    if motion is not None and drive is not None:
        raise BadInput("--motion and --drive: give one of them")
    if out is None:
        out = Path({"ply": f"{actor}-neutral.ply" if frame is None else f"{actor}-frame{frame:05d}.ply",
                    "ply-sequence": f"{actor}-ply", "bundle": f"{actor}.avatar-bundle"}[fmt])
    if out.exists():
        raise bad_input(out, "already exists", "give another --out or move it away (exports never overwrite)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    motion_data = load_motion(motion) if motion is not None else None  # bad files fail before any work
    if head_pose and motion_data is not None and (motion_data.R is None or motion_data.t is None):
        raise bad_input(motion, "has no cameras (R, t) to take the head pose from", "drop --head-pose or add R and t")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="avatar-export-") as cache:
        st = open_store(store)
        if drive is not None:
            motion_data = load_motion(drive_motion(st, actor, drive, cache))
            if head_pose and (motion_data.R is None or motion_data.t is None):
                raise BadInput(f"--drive {drive}: its motion has no cameras; drop --head-pose")
        a = load_actor(st, actor, cache, tracking=(fmt == "bundle" or frame is not None
                                                   or (fmt == "ply-sequence" and motion_data is None)))
        if fmt == "ply":
            if frame is None:
                cond = neutral_condition(1)
            else:
                if not 0 <= frame < len(a.seq):
                    raise BadInput(f"--frame {frame}: actor {actor!r} has {len(a.seq)} tracked frames "
                                   f"(0..{len(a.seq) - 1})")
                cond = torch.from_numpy(a.seq.cond[frame:frame + 1])
            g = pose_gaussians(a.model.to(device), a.surface.to(device), cond.to(device))
            cloud = splat_cloud(g)
            if head_pose:
                cloud = transform_cloud(cloud, *head_pose_transform(a.seq.R[frame], a.seq.t[frame], a.seq.R[0], a.seq.t[0]))
            write_ply(out, cloud)
            what = "the neutral face" if frame is None else f"tracked frame {frame}"
            typer.echo(f"{out}: {a.model.num_gaussians} Gaussians, {what} of {actor} "
                       f"({time.perf_counter() - t0:.1f} s)")
        elif fmt == "ply-sequence":
            m = motion_data if motion_data is not None else tracked_motion(a.seq)
            with Progress("export", len(m)) as progress:
                write_ply_sequence(out, a.model, a.surface, m, device=device, head_pose=head_pose,
                                   on_frames=progress.advance)
            seconds = time.perf_counter() - t0
            typer.echo(f"{out}/: {len(m)} PLY files of {a.model.num_gaussians} Gaussians in {seconds:.1f} s "
                       f"({len(m) / max(seconds, 1e-9):.1f} frames/s)")
        else:
            write_bundle(out, a)
            typer.echo(f"{out}/: bundle {a.model.num_gaussians} Gaussians, face model {a.face_model['kind']} "
                       f"{a.face_model['sha256'][:12]} ({time.perf_counter() - t0:.1f} s)")
