"""User-supplied licensed or downloaded files (FLAME, ONNX models), stored by sha256.

Layout in the store: ``assets/<kind>/<sha256>/<original file name>`` plus
``assets/<kind>/<sha256>/asset.json`` (kind, file name, size, what the format check found).
Nothing here is ever shipped with the project or baked into an image: users add them with
``avatar assets add <kind> <file>`` (or ``avatar run --flame PATH``), and stages fetch them,
verified by sha256, when they run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from stages.errors import BadInput
from stages.store.base import Store, sha256_file

ASSET_ROOT = "assets"


@dataclass(frozen=True)
class AssetKind:
    """Attributes:
        name: the kind, as typed on the command line.
        what: what the file is, for ``--help`` and messages.
        usual_name: the file name upstream distributes it under.
        validator: ``module:function`` that checks the format; it returns a dict of facts and
            raises :class:`BadInput` naming the file and what was expected.
    """

    name: str
    what: str
    usual_name: str
    validator: str

    def validate(self, path: Path) -> dict[str, Any]:
        module, _, func = self.validator.partition(":")
        fn: Callable[[Path], dict[str, Any]] = getattr(importlib.import_module(module), func)
        return fn(path)


KINDS: dict[str, AssetKind] = {k.name: k for k in (
    AssetKind("flame", "FLAME 2020 head model (latin-1 pickle with chumpy objects)", "generic_model.pkl",
              "stages.face.flame_file:validate_flame_model"),
    AssetKind("flame-masks", "FLAME vertex masks per region", "FLAME_masks.pkl",
              "stages.face.flame_file:validate_flame_masks"),
    AssetKind("mediapipe-embedding", "MediaPipe landmark embedding on FLAME", "mediapipe_landmark_embedding.npz",
              "stages.face.flame_file:validate_mediapipe_embedding"),
    AssetKind("landmark-embedding", "68-point landmark embedding on FLAME", "landmark_embedding.npy",
              "stages.face.flame_file:validate_landmark_embedding"),
    AssetKind("flame-texture", "FLAME texture PCA space", "FLAME_texture.npz",
              "stages.face.flame_file:validate_flame_texture"),
    AssetKind("matting", "RobustVideoMatting ONNX export (src, r1i..r4i, downsample_ratio)", "rvm_mobilenetv3_fp32.onnx",
              "stages.masks.onnx_models:validate_rvm"),
    AssetKind("parsing", "19-class BiSeNet face-parsing ONNX model", "bisenet.onnx",
              "stages.masks.onnx_models:validate_bisenet"),
)}


def kind(name: str) -> AssetKind:
    try:
        return KINDS[name]
    except KeyError:
        raise BadInput(f"asset kind {name!r}: unknown; kinds are {', '.join(KINDS)}") from None


def _prefix(kind_name: str, sha: str) -> str:
    return f"{ASSET_ROOT}/{kind_name}/{sha}/"


def add_asset(store: Store, kind_name: str, path: str | Path) -> dict[str, Any]:
    """Check ``path`` is a valid ``kind_name`` file and store it by sha256 (idempotent).

    Returns the asset record (``kind``, ``sha256``, ``file``, ``size``, ``facts``, ``added``)."""
    k = kind(kind_name)
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such file; give the path to your {k.usual_name}")
    facts = k.validate(path)
    sha = sha256_file(path)
    prefix = _prefix(k.name, sha)
    meta_key = prefix + "asset.json"
    if store.exists(meta_key):
        return store.get_json(meta_key)
    store.put_file(prefix + path.name, path)
    record = {"kind": k.name, "sha256": sha, "file": path.name, "size": path.stat().st_size, "facts": facts,
              "added": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.put_json(meta_key, record)  # last: an asset without its record is not listed
    return record


def check_asset_files(files: dict[str, str | Path | None]) -> dict[str, dict[str, Any]]:
    """Check every given file (``{kind: path}``; ``None`` entries are skipped) is a valid file of its
    kind, reading nothing into any store: run before a command uploads or submits anything, so
    that one bad file refuses the whole command. Returns ``{kind: facts}``.

    Raises:
        BadInput: the first missing or malformed file, named with the fix.
    """
    facts = {}
    for kind_name, path in files.items():
        if path is None:
            continue
        k = kind(kind_name)
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"{path}: no such file; give the path to your {k.usual_name}")
        facts[kind_name] = k.validate(path)
    return facts


def list_assets(store: Store) -> list[dict[str, Any]]:
    """Every stored asset's record, by kind then date."""
    records = [store.get_json(k) for k in store.list(ASSET_ROOT + "/") if k.endswith("/asset.json")]
    return sorted(records, key=lambda r: (r["kind"], r["added"]))


def asset_path(store: Store, kind_name: str, sha: str, cache_dir: Path) -> Path:
    """Local path of a stored asset, its bytes verified against ``sha``."""
    meta_key = _prefix(kind_name, sha) + "asset.json"
    try:
        record = store.get_json(meta_key)
    except KeyError:
        raise BadInput(f"{store.uri}/{meta_key}: asset {kind_name} {sha[:12]} is not in the store; "
                       f"add it with: avatar assets add {kind_name} FILE --store {store.uri}") from None
    return store.fetch(_prefix(kind_name, sha) + record["file"], cache_dir, expect_sha256=sha)
