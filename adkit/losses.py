"""Losses and per-position distance maps: pure functions of teacher and student features.

`t_feats` and `s_feats` are lists of `(B,C,h,w)` tensors, one per stage. Callers detach the teacher.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .scoring import LINKS

EPS = 1e-6


def _check(t_feats: list[torch.Tensor], s_feats: list[torch.Tensor]) -> None:
    if len(t_feats) != len(s_feats):
        raise ValueError(f"{len(t_feats)} teacher stages but {len(s_feats)} student stages")
    for i, (t, s) in enumerate(zip(t_feats, s_feats, strict=True)):
        if t.shape != s.shape:
            raise ValueError(f"stage {i}: teacher {tuple(t.shape)} vs student {tuple(s.shape)}")


def rd_loss(t_feats: list[torch.Tensor], s_feats: list[torch.Tensor]) -> torch.Tensor:
    """RD's official loss: each image's whole map flattened into one vector, `Σ_l mean_b [1 − cos]`."""
    _check(t_feats, s_feats)
    loss = t_feats[0].new_zeros(())
    for t, s in zip(t_feats, s_feats, strict=True):
        # L = Σ_l mean_b [1 − cos(vec T_l, vec S_l)]
        loss = loss + (1 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1, eps=EPS)).mean()
    return loss


def fd_loss(t_feats: list[torch.Tensor], s_feats: list[torch.Tensor]) -> torch.Tensor:
    """STFPM's loss as its official code computes it (gdwang08/STFPM, `train_val`): per position ‖T̂ − Ŝ‖² of
    channel-normalised features (= 2 − 2·cos; no ½), mean over the batch and the positions, Σ over stages."""
    _check(t_feats, s_feats)
    loss = t_feats[0].new_zeros(())
    for t, s in zip(t_feats, s_feats, strict=True):
        loss = loss + l2_map(t, s).mean()
    return loss


def cosine_map(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per-position `1 − cos` along channels: `(B,C,h,w)` x2 -> `(B,1,h,w)`."""
    return (1 - F.cosine_similarity(t, s, dim=1, eps=EPS)).unsqueeze(1)


def l2_map(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per-position ‖T̂ − Ŝ‖² of channel-normalised features (= 2 − 2·cos, STFPM's official map and loss, no ½):
    `(B,1,h,w)`."""
    d = F.normalize(t, dim=1, eps=EPS) - F.normalize(s, dim=1, eps=EPS)
    return (d * d).sum(1, keepdim=True)


# -- structural distillation (SNL, METHODS §4; our reconstruction) -------------------------------------
# Each function takes one stage, teacher `t` and student `s` of shape (B,C,h,w); the teacher is detached
# by the caller.


def channel_distance(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Channel-wise distance per position, `d_ch(i) = 1 − cos(T[:, i], S[:, i])`: `(B,1,h,w)`."""
    return cosine_map(t, s)


def channel_loss(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return channel_distance(t, s).mean()


def spatial_distance(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per channel, its map flattened over positions: `d_sp(c) = 1 − cos(T[c, :], S[c, :])`, `(B,C)`."""
    return 1 - F.cosine_similarity(t.flatten(2), s.flatten(2), dim=2, eps=EPS)  # (B,C)


def spatial_loss(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return spatial_distance(t, s).mean()


def key_stride(h: int, w: int, max_positions: int | None) -> int:
    """Smallest grid stride whose strided sub-grid of an h×w map has at most `max_positions` positions."""
    if max_positions is None or h * w <= max_positions:
        return 1
    step = 1
    while math.ceil(h / step) * math.ceil(w / step) > max_positions:
        step += 1
    return step


def _pool(f: torch.Tensor, pool: int | None) -> torch.Tensor:
    return F.avg_pool2d(f, pool, ceil_mode=True) if pool is not None and pool > 1 else f


def intra_affinity(f: torch.Tensor, max_positions: int | None = None, pool: int | None = None) -> torch.Tensor:
    """Affinity of every position with every key position, `A = F̂ᵀF̂`, in fp32: `(B,N,M)`.

    F̂ is normalised along channels. `pool` average-pools the features first (N is then the pooled grid);
    `max_positions` keeps the keys to a fixed strided sub-grid (M ≤ max_positions), rows stay all N.
    """
    f = F.normalize(_pool(f, pool).float(), dim=1, eps=EPS)  # (B,C,h,w)
    step = key_stride(f.shape[-2], f.shape[-1], max_positions)
    keys = f[:, :, ::step, ::step].flatten(2)  # (B,C,M)
    # A = F̂ᵀ F̂
    return f.flatten(2).transpose(1, 2) @ keys  # (B,N,M)


def intra_affinity_distance(
    t: torch.Tensor, s: torch.Tensor, max_positions: int | None = None, pool: int | None = None
) -> torch.Tensor:
    """Row distance of the intra-affinity matrices, `e(i) = 1 − cos(A_T[i, :], A_S[i, :])`: `(B,1,h',w')`.

    `(h',w')` is the feature grid, or the pooled grid when `pool` > 1 (`fuse_maps` upsamples it).
    """
    t, s = _pool(t, pool), _pool(s, pool)
    a_t = intra_affinity(t, max_positions)  # (B,N,M)
    a_s = intra_affinity(s, max_positions)
    e = 1 - F.cosine_similarity(a_t, a_s, dim=2, eps=EPS)  # (B,N)
    return e.view(-1, 1, *t.shape[-2:])


def intra_affinity_loss(
    t: torch.Tensor, s: torch.Tensor, max_positions: int | None = None, pool: int | None = None
) -> torch.Tensor:
    return intra_affinity_distance(t, s, max_positions, pool).mean()


def inter_affinity_loss(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Across the batch: B×B cosine similarities of pooled per-image descriptors, mean squared difference.

    Off-diagonal pairs only (the diagonal is 1 for both); zero for a batch of one.
    """
    b = t.shape[0]
    if b < 2:
        return s.new_zeros(()).float()
    g_t = F.normalize(t.float().mean((2, 3)), dim=1, eps=EPS)  # (B,C)
    g_s = F.normalize(s.float().mean((2, 3)), dim=1, eps=EPS)
    # G = ĝ ĝᵀ for teacher and student; L = mean_{i≠j} (G_T − G_S)²
    diff = g_t @ g_t.T - g_s @ g_s.T  # (B,B)
    off = ~torch.eye(b, dtype=torch.bool, device=t.device)
    return diff[off].pow(2).mean()


# -- dual student (METHODS §5; our reconstruction) -----------------------------------------------------


def flat_cosine_distance(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per image, `1 − cos(vec T, vec S)` of the whole map (or descriptor) flattened: `(B,)`."""
    return 1 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1, eps=EPS)


def neg_log_normal(
    s: torch.Tensor, tau: torch.Tensor | float, link: str = "exp", scale: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """`−log(1 − p)` of `link_probability`, computed stably: exp `s/τ`; logistic `softplus((s − τ ln 2)/scale)`."""
    if link == "exp":
        return s / tau
    if link == "logistic":
        return F.softplus((s - tau * math.log(2)) / scale)
    raise ValueError(f"link must be one of {LINKS}, got {link!r}")
