"""``avatar assets add|list``: user-supplied model files, stored by sha256."""

from __future__ import annotations

from pathlib import Path

import typer

from stages.assets import KINDS, add_asset, list_assets
from stages.cli import app
from stages.store.uri import open_store

assets_app = typer.Typer(help="Add and list user-supplied model files (FLAME, ONNX models).", no_args_is_help=True)
app.add_typer(assets_app, name="assets")

_KINDS_HELP = "; ".join(f"{k.name} ({k.usual_name})" for k in KINDS.values())


@assets_app.command("add", help="Check a file is what it claims and store it by sha256 under assets/. Kinds: " + _KINDS_HELP)
def add(kind: str = typer.Argument(..., help="Asset kind: " + ", ".join(KINDS)),
        file: Path = typer.Argument(..., help="The file to add."),
        store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix].")) -> None:
    record = add_asset(open_store(store), kind, file)
    typer.echo(f"{record['kind']} {record['sha256'][:12]} {record['file']} ({record['size']} bytes)")


@assets_app.command("list", help="Show the assets in the store.")
def list_(store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix].")) -> None:
    records = list_assets(open_store(store))
    if not records:
        typer.echo("no assets; add one with: avatar assets add KIND FILE")
        return
    for r in records:
        typer.echo(f"{r['kind']:20s} {r['sha256'][:12]}  {r['file']}  {r['size']} bytes  added {r['added']}")
