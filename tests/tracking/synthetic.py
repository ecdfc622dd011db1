"""Synthetic ground truth for the tracker tests: the stand-in model, parameters from
:mod:`stages.face.synth`, and exact projected landmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stages.face.camera import project
from stages.face.flame import FLAME
from stages.face.model import FaceModelData, load_face_model
from stages.face.synth import SynthSpec, generate_params

_FRAME_KEYS = ("shape", "expression", "jaw", "eyes", "eyelids")


@dataclass
class Clip:
    """Ground truth of a synthetic clip: params (generate_params' dict), landmarks [N,L,2] px,
    vertices_cam [N,V,3] metres (camera space)."""

    params: dict[str, np.ndarray]
    landmarks: np.ndarray
    vertices_cam: np.ndarray


_DATA: FaceModelData | None = None


def standin() -> FaceModelData:
    global _DATA
    if _DATA is None:
        _DATA = load_face_model(None)
    return _DATA


def make_clip(model: FLAME, n_frames: int, seed: int = 0, **spec) -> Clip:
    params = generate_params(model, SynthSpec(n_frames=n_frames, seed=seed, **spec))
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(params[k]) for k in _FRAME_KEYS})
        K, R, t = (torch.as_tensor(params[k]) for k in ("K", "R", "t"))
        # generate_params can place the face off the image; shift the camera once (the same for
        # every frame, so the motion is untouched) to centre the face on average
        cam = out.vertices @ R.transpose(-1, -2) + t[:, None]
        t[:, :2] -= cam[..., :2].mean(dim=(0, 1))
        params["t"] = t.numpy().astype(np.float32)
        pix, _ = project(out.landmarks_mp, K, R, t)
        cam = out.vertices @ R.transpose(-1, -2) + t[:, None]
    return Clip(params, pix.numpy(), cam.numpy())


def similarity_aligned_error(est: np.ndarray, gt: np.ndarray) -> float:
    """Mean distance between est [N,V,3] and gt after one similarity transform (Umeyama) over the
    whole sequence, in the units of the input."""
    X, Y = est.reshape(-1, 3).astype(np.float64), gt.reshape(-1, 3).astype(np.float64)
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    U, S, Vt = np.linalg.svd(Yc.T @ Xc / len(X))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = (S * np.diag(D)).sum() / (Xc ** 2).sum(1).mean()
    aligned = s * X @ R.T + (my - s * R @ mx)
    return float(np.linalg.norm(aligned - Y, axis=1).mean())


def jitter(vertices_cam: np.ndarray) -> float:
    """Mean frame-to-frame vertex displacement of [N,V,3]."""
    return float(np.linalg.norm(np.diff(vertices_cam, axis=0), axis=-1).mean())


def publish_upstream(store, actor: str, landmarks: np.ndarray, shard_size: int, *, fail: tuple[int, ...] = (),
                     size: int = 512) -> None:
    """Write what ingest, landmarks and masks would have written for a clip whose 478-point
    landmarks are ``landmarks [N,478,2]`` (frames 1..N), with their manifests, so calibrate,
    track and assemble can run. Frames are plain grey JPEGs; masks are 0/255 discs.
    ``fail`` lists 0-based frames whose landmarks failed (NaN, ok False)."""
    import io
    import tarfile

    import cv2

    from stages.runner.manifest import Manifest
    from stages.runner.shards import plan_shards, shards_document

    n = landmarks.shape[0]
    shards = plan_shards(n, shard_size)

    def tar_bytes(members):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def jpg(img):
        return cv2.imencode(".jpg", img)[1].tobytes()

    def png(img):
        return cv2.imencode(".png", img)[1].tobytes()

    yy, xx = np.mgrid[:size, :size]
    disc = (((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (size / 3) ** 2).astype(np.uint8) * 255
    outputs: dict[str, dict[str, str]] = {"ingest": {}, "landmarks": {}, "masks": {}}

    def put(stage, rel, data):
        key = f"actors/{actor}/{stage}/{rel}"
        outputs[stage][key] = store.put_bytes(key, data)

    put("ingest", "shards.json", (__import__("json").dumps(shards_document(n, 25.0, shards))).encode())
    for s in shards:
        frames, masks = [], []
        for k in s.frames:
            img = np.full((size, size, 3), 90 + (k % 7) * 10, np.uint8)
            frames.append((f"{k:05d}.jpg", jpg(img)))
            masks += [(f"alpha/{k:05d}.jpg", jpg(disc)), (f"parsing/{k:05d}_neckhead.png", png(disc)),
                      (f"parsing/{k:05d}_mouth.png", png(np.zeros((size, size), np.uint8)))]
        put("ingest", f"frames/{s.name}.tar", tar_bytes(frames))
        put("masks", f"{s.name}.tar", tar_bytes(masks))
        idx = np.arange(s.start, s.stop) - 1
        pts = np.zeros((len(idx), 478, 3), np.float32)
        pts[:, :, :2] = landmarks[idx]
        ok = np.ones(len(idx), bool)
        for j, i in enumerate(idx):
            if i in fail:
                ok[j] = False
                pts[j] = np.nan
        buf = io.BytesIO()
        np.savez(buf, frames=np.arange(s.start, s.stop, dtype=np.int32), points=pts,
                 confidence=np.where(ok, 0.95, 0.0).astype(np.float32), ok=ok)
        put("landmarks", f"{s.name}.npz", buf.getvalue())
    for stage, outs in outputs.items():
        m = Manifest(stage=stage, actor=actor, inputs={}, config_digest="test", config={}, outputs=outs)
        store.put_json(f"actors/{actor}/{stage}/manifest.json", m.to_dict())


def landmarks478(clip: Clip, mp_index: np.ndarray) -> np.ndarray:
    """[N,478,2] MediaPipe-ordered landmarks of a clip (points the model does not embed: the mean
    of the embedded ones, so nothing is NaN)."""
    n = clip.landmarks.shape[0]
    out = np.repeat(clip.landmarks.mean(1, keepdims=True), 478, axis=1)
    out[:, mp_index] = clip.landmarks
    return out.astype(np.float32)
