"""``avatar view``: the trained avatar in a local browser viewer (viser, Gaussian splats)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from stages.cli import app


@app.command("view", help="Open a local web viewer of an actor's avatar: orbit the head, play the tracked "
                          "sequence or a motion file, move the jaw and expression sliders. Prints the URL.")
def view_command(
    actor: str = typer.Option(..., "--actor", help="Actor name (folder under actors/)."),
    store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix]."),
    motion: Path = typer.Option(None, "--motion", help="A motion.npz or folder of .frame files to play "
                                                       "(besides the tracked sequence)."),
    drive: str = typer.Option(None, "--drive", help="Play the motion of the actor's drive NAME "
                                                    "(actors/ACTOR/drive/NAME/motion.npz in the store)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8080, "--port", help="TCP port (the next free one when busy)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    expressions: int = typer.Option(5, "--expressions", help="Expression sliders shown (first components)."),
) -> None:
    from stages.names import check_actor

    check_actor(actor)
    import torch

    from stages.export.actor import drive_motion, load_actor
    from stages.export.motion import tracked_motion
    from stages.motion.format import load_motion
    from stages.store.uri import open_store
    from stages.viewer.server import AvatarViewer, ViewerConfig

    try:
        import viser  # noqa: F401
    except ImportError:
        from stages.errors import BadInput

        raise BadInput("avatar view: viser is not installed; pip install -e '.[viewer]' (or make setup)") from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if motion is not None and drive is not None:
        from stages.errors import BadInput

        raise BadInput("--motion and --drive: give one of them")
    m = load_motion(motion) if motion is not None else None
    with tempfile.TemporaryDirectory(prefix="avatar-view-") as cache:
        st = open_store(store)
        a = load_actor(st, actor, cache)
        if drive is not None:
            m = load_motion(drive_motion(st, actor, drive, cache))
    viewer = AvatarViewer(a.model, a.surface, tracked_motion(a.seq), m,
                          ViewerConfig(host=host, port=port, device=device, expressions=expressions))
    typer.echo(f"avatar view: {actor} ({a.model.num_gaussians} Gaussians, {len(a.seq)} tracked frames) at {viewer.url}")
    typer.echo("open it in a browser; Ctrl-C stops the server")
    try:
        viewer.run()
    finally:
        viewer.close()
