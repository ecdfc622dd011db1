"""The standard 3D Gaussian Splatting PLY (the layout of the 3DGS reference code, which every common
viewer reads): one ``vertex`` element, binary little-endian float32 properties

``x y z nx ny nz f_dc_0..2 f_rest_0..44 opacity scale_0..2 rot_0..3``

Conventions (what viewers assume):

- ``x, y, z``: world position; ``nx, ny, nz``: zeros (unused by 3DGS renderers).
- ``f_dc_c``: the degree-0 SH coefficient of channel ``c``: ``rgb = 0.5 + C0 * f_dc`` (C0 = 0.28209...).
- ``f_rest_j``: degrees 1..3, **channel-major**: ``f_rest_{c * 15 + (k - 1)}`` is basis ``k``
  (1..15) of channel ``c``; a model of lower degree is zero-padded to degree 3 (45 values), which
  renders identically.
- ``opacity``: the logit (viewers apply the sigmoid); ``scale_i``: the natural log of the standard
  deviation along axis ``i``; ``rot_0..3``: the rotation quaternion ``w, x, y, z`` (unit norm here).

Written by our own few lines of numpy (no dependency); tests read it back with ``plyfile``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.export.pose import PosedGaussians

SH_REST = 15  # degree 3: 16 bases, minus the DC one
PLY_FIELDS: tuple[str, ...] = (
    ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
    + tuple(f"f_rest_{i}" for i in range(3 * SH_REST))
    + ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"))


@dataclass
class SplatCloud:
    """One frame's Gaussians in 3DGS PLY terms (numpy float32, N Gaussians).

    Attributes:
        means: [N, 3] metres.  quats: [N, 4] wxyz.  log_scales: [N, 3] log standard deviations.
        opacity_logits: [N].  sh: [N, 16, 3] SH coefficients (degree 3; unused degrees are zero).
    """

    means: np.ndarray
    quats: np.ndarray
    log_scales: np.ndarray
    opacity_logits: np.ndarray
    sh: np.ndarray

    def __len__(self) -> int:
        return self.means.shape[0]


def splat_cloud(g: PosedGaussians, frame: int = 0) -> SplatCloud:
    """Frame ``frame`` of posed Gaussians as a :class:`SplatCloud` (SH padded to degree 3)."""
    n, k = g.sh.shape[0], g.sh.shape[1]
    sh = np.zeros((n, SH_REST + 1, 3), np.float32)
    sh[:, :k] = g.sh.detach().float().cpu().numpy()
    return SplatCloud(
        means=g.means[frame].detach().float().cpu().numpy(),
        quats=g.quats[frame].detach().float().cpu().numpy(),
        log_scales=np.log(g.scales[frame].detach().float().cpu().numpy()),
        opacity_logits=g.opacity_logits.detach().float().cpu().numpy(),
        sh=sh)


def ply_array(cloud: SplatCloud) -> np.ndarray:
    """The vertex records: a structured array [N] with :data:`PLY_FIELDS` as little-endian float32."""
    n = len(cloud)
    rest = cloud.sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * SH_REST)  # channel-major
    cols = np.concatenate([cloud.means, np.zeros((n, 3), np.float32), cloud.sh[:, 0, :], rest,
                           cloud.opacity_logits.reshape(n, 1), cloud.log_scales, cloud.quats], axis=1)
    assert cols.shape[1] == len(PLY_FIELDS)
    rec = np.empty(n, dtype=[(f, "<f4") for f in PLY_FIELDS])
    rec.view("<f4").reshape(n, len(PLY_FIELDS))[:] = cols
    return rec


def ply_bytes(cloud: SplatCloud) -> bytes:
    """The whole PLY file."""
    header = ["ply", "format binary_little_endian 1.0", "comment 3D Gaussian splats, written by avatar-pipeline",
              f"element vertex {len(cloud)}", *(f"property float {f}" for f in PLY_FIELDS), "end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + ply_array(cloud).tobytes()


def write_ply(path: str | Path, cloud: SplatCloud) -> Path:
    """Write ``cloud`` to ``path`` atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(ply_bytes(cloud))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def cloud_from_vertex_fields(fields: dict[str, np.ndarray]) -> SplatCloud:
    """A :class:`SplatCloud` from named per-vertex arrays (as any PLY reader returns them).

    ``f_rest_*`` may hold fewer than 45 values (lower SH degree, ``3 * ((d+1)^2 - 1)``); missing
    bases are zero."""
    f = {k: np.asarray(v, np.float32) for k, v in fields.items()}
    n = f["x"].shape[0]
    rest_n = len([k for k in f if k.startswith("f_rest_")]) // 3
    sh = np.zeros((n, SH_REST + 1, 3), np.float32)
    sh[:, 0] = np.stack([f[f"f_dc_{c}"] for c in range(3)], -1)
    for c in range(3):
        for j in range(rest_n):
            sh[:, 1 + j, c] = f[f"f_rest_{c * rest_n + j}"]
    return SplatCloud(means=np.stack([f["x"], f["y"], f["z"]], -1),
                      quats=np.stack([f[f"rot_{i}"] for i in range(4)], -1),
                      log_scales=np.stack([f[f"scale_{i}"] for i in range(3)], -1),
                      opacity_logits=f["opacity"], sh=sh)


def read_ply(path: str | Path) -> SplatCloud:
    """Read a binary little-endian 3DGS PLY whose vertex properties are all float32 (what
    :func:`write_ply` and the 3DGS reference code write)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    if lines[0] != "ply" or "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: not a binary little-endian PLY")
    n = next(int(l.split()[2]) for l in lines if l.startswith("element vertex"))
    names = [l.split()[2] for l in lines if l.startswith("property float")]
    if len([l for l in lines if l.startswith("property")]) != len(names):
        raise ValueError(f"{path}: only float32 vertex properties are supported")
    rec = np.frombuffer(data, dtype=[(k, "<f4") for k in names], count=n, offset=end)
    return cloud_from_vertex_fields({k: rec[k] for k in names})


def activated(cloud: SplatCloud) -> dict[str, "torch.Tensor"]:
    """What a rasteriser takes, from a cloud: means [N,3], quats [N,4], scales [N,3] (std devs),
    opacities [N] (sigmoid of the logits), sh [N,16,3] (torch float32 tensors)."""
    import torch

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    return {"means": t(cloud.means), "quats": t(cloud.quats), "scales": torch.exp(t(cloud.log_scales)),
            "opacities": torch.sigmoid(t(cloud.opacity_logits)), "sh": t(cloud.sh)}
