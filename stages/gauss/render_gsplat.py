"""The fast path: the same contract as :func:`stages.gauss.render_ref.render_gaussians_reference`,
rendered by ``gsplat.rasterization`` on CUDA (classic mode, ``eps2d=0.3``, OpenCV cameras).

Batching: with per-image Gaussians (``means`` [B, N, 3], one camera per image, ``viewmats``
[B, 4, 4]) the B images go to gsplat as one call with a leading batch dimension (gsplat's
``[..., C, ...]`` layout with C = 1), so a training step renders all its frames in one launch.
With shared Gaussians (``means`` [N, 3]) and C cameras it is gsplat's plain multi-camera call.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gsplat_available() -> bool:
    """Whether gsplat imports and a CUDA device is visible (it has no CPU rasteriser)."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def start_warmup(device: str | torch.device) -> "threading.Thread | None":
    """Load, in a background thread (a daemon), what the first training step would otherwise wait
    for: ``torch._dynamo``, which ``torch.optim.Adam()`` imports on first use (1.3 s of one core on
    the dev CPU), and, where ``device`` is CUDA and gsplat imports, gsplat's compiled extension
    (loading a JIT-built extension checks its build: sources, ninja; then opens the library).
    Returns the thread, or None when there is nothing to load. Errors are left to the first use,
    which raises them."""
    import sys
    import threading

    cuda = str(device).startswith("cuda") and gsplat_available()
    if "torch._dynamo" in sys.modules and not cuda:
        return None

    def load() -> None:
        try:
            import torch._dynamo  # noqa: F401
            if cuda:
                from gsplat.cuda import _backend  # noqa: F401 - the import loads (or builds) the extension
        except Exception:  # noqa: BLE001 - the first use raises it where it matters
            pass

    thread = threading.Thread(target=load, name="train-warmup", daemon=True)
    thread.start()
    return thread


def render_gaussians_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                            viewmats: Tensor, Ks: Tensor, width: int, height: int,
                            background: Tensor | None = None, *, eps2d: float = 0.3, near_plane: float = 0.01,
                            far_plane: float = 1e10, packed: bool = False,
                            covars: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Render on CUDA with gsplat. Arguments, shapes and returns as
    :func:`stages.gauss.render_ref.render_gaussians_reference` (all tensors on one CUDA device);
    ``covars`` ([N, 3, 3] or [B, N, 3, 3]) go to gsplat's ``covars`` instead of quats and scales.

    Returns:
        image [H, W, D] and alpha [H, W] unbatched, else [C, H, W, D] and [C, H, W].
    """
    from gsplat import rasterization

    means, opacities, colors = (x.contiguous() for x in (means, opacities, colors))
    if covars is not None:
        covars = covars.contiguous()
        quats = scales = None
    else:
        quats, scales = quats.contiguous(), scales.contiguous()
    per_image = means.dim() == 3
    batched = per_image or viewmats.dim() == 3 or Ks.dim() == 3 or colors.dim() == 3 or opacities.dim() == 2
    if per_image:
        B = means.shape[0]
        vm = viewmats.expand(B, 4, 4) if viewmats.dim() == 2 else viewmats
        ks = Ks.expand(B, 3, 3) if Ks.dim() == 2 else Ks
        col = colors if colors.dim() == 3 else colors.expand(B, *colors.shape).contiguous()
        op = opacities if opacities.dim() == 2 else opacities.expand(B, -1).contiguous()
        qu = sc = cv = None
        if covars is not None:
            cv = covars if covars.dim() == 4 else covars.expand(B, -1, -1, -1).contiguous()
        else:
            qu = quats if quats.dim() == 3 else quats.expand(B, -1, -1).contiguous()
            sc = scales if scales.dim() == 3 else scales.expand(B, -1, -1).contiguous()
        bg = None
        if background is not None:
            bg = (background if background.dim() == 2 else background.expand(B, -1)).unsqueeze(1).contiguous()  # [B,1,D]
        img, alpha, _ = rasterization(means, qu, sc, op, col, vm[:, None].contiguous(), ks[:, None].contiguous(),
                                      width, height,
                                      near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, packed=packed,
                                      backgrounds=bg, rasterize_mode="classic", covars=cv)
        img, alpha = img[:, 0], alpha[:, 0, ..., 0]
    else:
        vm = viewmats if viewmats.dim() == 3 else viewmats[None]
        ks = Ks if Ks.dim() == 3 else Ks[None]
        C = max(vm.shape[0], ks.shape[0])
        vm, ks = vm.expand(C, 4, 4).contiguous(), ks.expand(C, 3, 3).contiguous()
        bg = None
        if background is not None:
            bg = (background if background.dim() == 2 else background.expand(C, -1)).contiguous()
        if opacities.dim() == 2:
            raise ValueError("per-camera opacities need per-camera means [C, N, 3]")
        img, alpha, _ = rasterization(means, quats, scales, opacities, colors, vm, ks, width, height,
                                      near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, packed=packed,
                                      backgrounds=bg, rasterize_mode="classic", covars=covars)
        alpha = alpha[..., 0]
    if batched:
        return img, alpha
    return img[0], alpha[0]
