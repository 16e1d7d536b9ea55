"""From anomaly maps to decisions: fuse per-stage maps, blur, read an image score off a map, turn a score
into a probability (a link), join probabilities (Noisy-OR). Pure functions of tensors; the models' `scores`
and `adkit.evaluation` go through these, so there is one scoring path.

    maps (per stage) -> fuse_maps -> gaussian_blur -> image_score -> link_probability -> noisy_or
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LINKS = ("exp", "logistic")
# Gaussian σ of every model's anomaly map: RD's official σ = 4 (METHODS §2); FD, SNL and the dual student keep
# it, so the methods compare under one post-processing
BLUR_SIGMA = 4.0


def fuse_maps(maps: list[torch.Tensor], size: int | tuple[int, int], mode: str = "sum") -> torch.Tensor:
    """Upsample per-stage maps `(B,1,h,w)` to `size` (bilinear) and fuse them: sum, product or mean."""
    ups = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
    if mode == "sum":
        return torch.stack(ups).sum(0)
    if mode == "mean":
        return torch.stack(ups).mean(0)
    if mode == "product":
        return torch.stack(ups).prod(0)
    raise ValueError(f"map fusion must be sum, mean or product, got {mode!r}")


def _blur_kernel(sigma: float, h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, int]:
    radius = max(1, int(math.ceil(4 * sigma)))
    radius = min(radius, w - 1, h - 1)
    xs = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    k = torch.exp(-0.5 * (xs / sigma) ** 2)
    return k / k.sum(), radius


def _blur_rows(x: torch.Tensor, k: torch.Tensor, radius: int) -> torch.Tensor:
    """The 1-D blur along the last axis: reflect padding, then the kernel."""
    return F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))


def _blur_conv(amap: torch.Tensor, k: torch.Tensor, radius: int) -> torch.Tensor:
    x = _blur_rows(amap, k, radius)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1))


def _blur_matrix(n: int, k: torch.Tensor, radius: int) -> torch.Tensor:
    """The 1-D blur along an axis of length `n` as an `(n, n)` matrix A, out = A @ in: column j is the blur of
    the unit vector e_j."""
    eye = torch.eye(n, dtype=k.dtype, device=k.device).view(n, 1, 1, n)
    return _blur_rows(eye, k, radius).view(n, n).t()


class _Blur(torch.autograd.Function):
    """The blur with its gradient computed as the adjoint: forward Y = A_h X A_wᵀ (the convolutions above, so
    the same numbers as without gradient), backward dX = A_hᵀ dY A_w with two matrix products. Autograd's own
    backward through the two padded 1-D convolutions was ~3× slower than their forward on CPU (the dual
    student's map statistic trains through this)."""

    @staticmethod
    def forward(ctx, amap: torch.Tensor, k: torch.Tensor, radius: int) -> torch.Tensor:
        ctx.save_for_backward(k)
        ctx.radius, ctx.hw, ctx.dtype = radius, tuple(amap.shape[-2:]), amap.dtype
        return _blur_conv(amap, k, radius)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (k,) = ctx.saved_tensors
        # under autocast the gradient may be bf16/fp16: the products run in fp32 at least
        wide = torch.promote_types(ctx.dtype, torch.float32)
        k = k.to(wide)
        h, w = ctx.hw
        a_w = _blur_matrix(w, k, ctx.radius)
        a_h = a_w if h == w else _blur_matrix(h, k, ctx.radius)
        return (a_h.t() @ grad.to(wide) @ a_w).to(ctx.dtype), None, None


def gaussian_blur(amap: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of `(B,1,H,W)` maps, kernel radius 4σ, reflect padding."""
    if sigma <= 0:
        return amap
    k, radius = _blur_kernel(sigma, amap.shape[-2], amap.shape[-1], amap)
    return _Blur.apply(amap, k, radius)  # without gradient: just the forward convolutions


def image_score(amap: torch.Tensor, mode: str = "max", top_frac: float = 0.01) -> torch.Tensor:
    """Image score from a map `(B,1,H,W)`: its max, or the mean of its top `top_frac` pixels."""
    flat = amap.flatten(1)
    if mode == "max":
        return flat.max(1).values
    if mode == "topk":
        k = max(1, int(round(top_frac * flat.shape[1])))
        return flat.topk(k, dim=1).values.mean(1)
    raise ValueError(f"image score must be max or topk, got {mode!r}")


def link_probability(
    s: torch.Tensor, tau: torch.Tensor | float, link: str = "exp", scale: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """Score `s ≥ 0` to a probability, monotone: exp `1 − exp(−s/τ)`; logistic `σ((s − τ ln 2)/scale)`.

    Both put `s = τ ln 2` at p = 0.5; only the exp link has p(0) = 0.
    """
    if link == "exp":
        return -torch.expm1(-s / tau)
    if link == "logistic":
        return torch.sigmoid((s - tau * math.log(2)) / scale)
    raise ValueError(f"link must be one of {LINKS}, got {link!r}")


def noisy_or(*ps: torch.Tensor) -> torch.Tensor:
    """`P = 1 − Π_b (1 − p_b)`: the probability that at least one branch fires, branches independent."""
    q = torch.ones_like(ps[0])
    for p in ps:
        q = q * (1 - p)
    return 1 - q
