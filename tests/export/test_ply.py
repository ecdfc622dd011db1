"""The 3DGS PLY export: layout and conventions, and that a viewer-independent reader (plyfile) and
our reference renderer reproduce the avatar's own render of a tracked frame."""

from __future__ import annotations

import numpy as np
import plyfile  # the dev extra: make setup installs it
import pytest
import torch

from stages.export.actor import load_actor
from stages.export.ply import PLY_FIELDS, SplatCloud, activated, cloud_from_vertex_fields, read_ply, splat_cloud, write_ply
from stages.export.pose import camera_center, pose_gaussians
from stages.gauss.metrics import psnr
from stages.gauss.render_ref import render_gaussians_reference, viewmat_from_rt
from stages.gauss.sh import C0, eval_sh
from stages.gauss.trainer import render_frames



def _random_cloud(n=50, seed=0) -> SplatCloud:
    r = np.random.default_rng(seed)
    q = r.normal(size=(n, 4)).astype(np.float32)
    return SplatCloud(means=r.normal(size=(n, 3)).astype(np.float32), quats=q / np.linalg.norm(q, axis=1, keepdims=True),
                      log_scales=r.normal(-5, 1, (n, 3)).astype(np.float32),
                      opacity_logits=r.normal(size=n).astype(np.float32), sh=r.normal(size=(n, 16, 3)).astype(np.float32))


def test_ply_layout_follows_the_3dgs_conventions(tmp_path):
    cloud = _random_cloud()
    path = write_ply(tmp_path / "c.ply", cloud)
    ply = plyfile.PlyData.read(str(path))
    v = ply["vertex"]
    assert [p.name for p in v.properties] == list(PLY_FIELDS) and len(PLY_FIELDS) == 62
    assert all(p.val_dtype in ("f4", "<f4", "float32") or np.dtype(p.val_dtype) == np.float32 for p in v.properties)
    assert ply.text is False and ply.byte_order == "<"
    np.testing.assert_array_equal(v["x"], cloud.means[:, 0])
    np.testing.assert_array_equal(v["nx"], 0)
    np.testing.assert_array_equal(v["f_dc_1"], cloud.sh[:, 0, 1])  # green DC
    # channel-major rest: f_rest_{c*15 + k-1} is basis k of channel c
    np.testing.assert_array_equal(v["f_rest_0"], cloud.sh[:, 1, 0])
    np.testing.assert_array_equal(v["f_rest_14"], cloud.sh[:, 15, 0])
    np.testing.assert_array_equal(v["f_rest_15"], cloud.sh[:, 1, 1])
    np.testing.assert_array_equal(v["f_rest_44"], cloud.sh[:, 15, 2])
    np.testing.assert_array_equal(v["opacity"], cloud.opacity_logits)
    np.testing.assert_array_equal(v["scale_2"], cloud.log_scales[:, 2])
    np.testing.assert_array_equal(v["rot_0"], cloud.quats[:, 0])  # w first
    back = read_ply(path)
    for f in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(getattr(back, f), getattr(cloud, f))


def test_a_lower_degree_ply_reads_with_zero_padding():
    cloud = _random_cloud(5)
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)] + \
        ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    fields = {n: np.zeros(5, np.float32) for n in names}
    fields["f_rest_3"] = cloud.sh[:, 1, 1]  # degree 1: 3 per channel, channel 1 starts at 3
    back = cloud_from_vertex_fields(fields)
    np.testing.assert_array_equal(back.sh[:, 1, 1], cloud.sh[:, 1, 1])
    assert not back.sh[:, 4:].any()


def test_exported_frame_renders_like_the_avatar(trained_store, tmp_path, one_thread):
    a = load_actor(trained_store, "toy", tmp_path / "cache")
    k, res = 5, 64
    seq = a.seq
    cond = torch.from_numpy(seq.cond[k:k + 1])
    R, t = torch.from_numpy(seq.R[k:k + 1]), torch.from_numpy(seq.t[k:k + 1])
    h, w = seq.image_size
    K = torch.from_numpy(seq.K[k:k + 1]) * torch.tensor([[res / w], [res / h], [1.0]])
    bg = torch.tensor([0.0, 1.0, 0.0])
    with torch.no_grad():
        own, _ = render_frames(a.model, a.surface, cond, R, t, K, res, bg, "reference")
    assert a.model.sh_rest.abs().sum() > 0  # trained: view-dependent colour present
    path = write_ply(tmp_path / "f.ply", splat_cloud(pose_gaussians(a.model, a.surface, cond)))

    v = plyfile.PlyData.read(str(path))["vertex"]
    g = activated(cloud_from_vertex_fields({p.name: v[p.name] for p in v.properties}))
    colors = eval_sh(3, g["sh"], g["means"] - camera_center(R[0], t[0]))
    img, alpha = render_gaussians_reference(g["means"], g["quats"], g["scales"], g["opacities"], colors,
                                            viewmat_from_rt(R[0], t[0]), K[0], res, res, bg)
    assert (alpha > 0.5).float().mean() > 0.05  # the head covers part of the image
    p = float(psnr(img.clamp(0, 1)[None], own.clamp(0, 1)))
    assert p >= 40.0, p
    # the colours follow rgb = 0.5 + C0 * f_dc seen head-on with degree 0 only
    rgb0 = 0.5 + C0 * np.stack([v["f_dc_0"], v["f_dc_1"], v["f_dc_2"]], -1)
    np.testing.assert_allclose(eval_sh(0, g["sh"], g["means"]).numpy(), np.maximum(rgb0, 0), atol=1e-5)
