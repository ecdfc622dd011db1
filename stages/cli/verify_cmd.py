"""``avatar verify DATASET``: check a FlashAvatar dataset folder."""

from __future__ import annotations

from pathlib import Path

import typer

from stages.cli import app
from stages.errors import BadInput


@app.command("verify", help="Check a FlashAvatar dataset folder (imgs/, alpha/, parsing/, checkpoint/*.frame): "
                            "counts, numbering, frame_delta pairing, 512x512 sizes, 0/255 masks, .frame contents.")
def verify_command(
    dataset: Path = typer.Argument(..., help="Folder holding imgs/, alpha/ and parsing/."),
    checkpoints: Path = typer.Option(None, "--checkpoints", help="Folder of .frame files (default DATASET/checkpoint; "
                                                                 "for upstream, metrical-tracker/output/ID/checkpoint)."),
    quick: bool = typer.Option(False, "--quick", help="Skip decoding images and masks."),
) -> None:
    from stages.dataset.layout import DatasetLayout
    from stages.dataset.verify import UPSTREAM_TEST_FRAMES, verify_dataset

    problems = verify_dataset(dataset, checkpoints, check_pixels=not quick)
    if problems:
        for p in problems[:50]:
            typer.echo(p, err=True)
        if len(problems) > 50:
            typer.echo(f"... and {len(problems) - 50} more", err=True)
        raise BadInput(f"{dataset}: {len(problems)} problem(s) found (listed above); fix them or re-run assemble")
    n = DatasetLayout(dataset, checkpoints).frame_count()
    typer.echo(f"{dataset}: OK, {n} frames")
    if n <= UPSTREAM_TEST_FRAMES:
        typer.echo(f"note: upstream FlashAvatar holds out the last {UPSTREAM_TEST_FRAMES} frames and needs more than "
                   f"{UPSTREAM_TEST_FRAMES}; our trainer's fractional split works with {n}")
