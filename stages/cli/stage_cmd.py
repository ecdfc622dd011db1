"""``avatar stage NAME``: run one stage for one actor; what each pod runs."""

from __future__ import annotations

import typer

from stages.cli import app
from stages.graph import BY_NAME
from stages.runner.run import run_stage
from stages.store.uri import open_store

_STAGE_HELP = "\n".join(f"  {s.name:10s} {s.summary}" for s in BY_NAME.values())


@app.command("stage", help="Run one stage for one actor, reading and writing the store layout "
                           "(what each Argo pod runs).\n\nStages:\n\n" + _STAGE_HELP.replace("\n", "\n\n"))
def stage_command(
    name: str = typer.Argument(..., help="Stage name: " + ", ".join(BY_NAME)),
    actor: str = typer.Option(..., "--actor", help="Actor name (folder under actors/), or drivers/NAME for a "
                                                   "driver of avatar drive."),
    store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix]."),
    shard: int = typer.Option(None, "--shard", help="Run only this shard of a fan-out stage."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes for the CPU shards of a fan-out stage."),
) -> None:
    from stages.errors import BadInput
    from stages.names import check_entry

    check_entry(actor)
    if name not in BY_NAME:
        raise BadInput(f"stage {name!r}: unknown; stages are {', '.join(BY_NAME)}")
    result = run_stage(name, actor, open_store(store), shard=shard, device=device, jobs=jobs)
    typer.echo(f"{result.stage}: {result.status}"
               + (f", {result.frames} frames in {result.seconds:.1f} s ({result.fps:.1f} frames/s)" if result.frames else ""))
