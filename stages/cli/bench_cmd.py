"""``avatar bench``: every stage's throughput and the end-to-end wall clock on a synthetic clip."""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

import typer

from stages.cli import app


@app.command("bench", help="Run the whole pipeline on a synthetic clip of N frames and print every stage's "
                           "throughput and the end-to-end wall clock; with --record, write them to "
                           "docs/benchmarks.json and docs/benchmarks.md.")
def bench_command(
    frames: int = typer.Option(10_000, "--frames", help="Frames in the synthetic clip."),
    preset: str = typer.Option("full", "--preset", help="full or tiny."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    jobs: int = typer.Option(0, "--jobs", help="Worker processes for CPU shards (0: all cores)."),
    workdir: Path = typer.Option(None, "--workdir", help="Where the clip and the store go (default: a temp dir)."),
    video: Path = typer.Option(None, "--video", help="Use this video instead of a synthetic clip."),
    record: bool = typer.Option(False, "--record", help="Write the figures to docs/benchmarks.{json,md}."),
) -> None:
    import os

    from stages.bench.e2e import figures_of, run_benchmark
    from stages.bench.record import Figure, machine_description, record as write_record, today

    work = workdir or Path(tempfile.mkdtemp(prefix="avatar-bench-"))
    result = run_benchmark(frames, work, preset=preset, device=device, jobs=jobs or (os.cpu_count() or 1),
                           video=video)
    typer.echo(result.table())
    if record:
        command = "avatar " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("avatar") \
            else " ".join(shlex.quote(a) for a in sys.argv)
        machine = machine_description()
        figs = {k: Figure(round(v, 3), unit, machine, command, today(), f"preset {preset}, {result.frames} frames")
                for k, (v, unit) in figures_of(result).items()}
        write_record(figs)
        typer.echo(f"recorded {', '.join(figs)} in docs/benchmarks.json and docs/benchmarks.md")
