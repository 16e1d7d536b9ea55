"""Notebook 4's "by hand" cells, kept true: RD's map written out equals `model.maps`, and the training loop
written out (fp16 teacher features, (seed, step) batches, Adam from `configure_optimizer`) equals `fit`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from adkit import models
from adkit.loop import fit


def rd_map_by_hand(
    t_feats: list[torch.Tensor], s_feats: list[torch.Tensor], size: tuple[int, int], sigma: float = 4.0
) -> torch.Tensor:
    """Per stage 1 − cos along channels, bilinear to `size`, summed, Gaussian blur σ (separable, reflect)."""
    per_stage = []
    for t, s in zip(t_feats, s_feats, strict=True):
        cos = (t * s).sum(1, keepdim=True) / (t.norm(dim=1, keepdim=True) * s.norm(dim=1, keepdim=True))
        per_stage.append(1 - cos)  # (B,1,h,w)
    local = sum(F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in per_stage)
    r = math.ceil(4 * sigma)
    k = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    rows = F.conv2d(F.pad(local, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(rows, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


def test_rd_map_by_hand_equals_model_maps(teacher):
    torch.manual_seed(0)
    model = models.create("rd", teacher=teacher).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        ref = model.maps(out)["amap"]
        amap = rd_map_by_hand(out["t_feats"], out["s_feats"], (64, 64))
    assert ref.abs().max() > 0.01
    assert (amap - ref).abs().max() < 1e-5


def test_training_loop_by_hand_equals_fit(teacher):
    seed, steps, batch = 3, 4, 4
    x = torch.rand(10, 3, 64, 64)
    with torch.no_grad():
        t_all = [t.half() for t in teacher(x)]  # fit's feature cache stores the teacher's features as fp16

    torch.manual_seed(seed)
    hand = models.create("rd", teacher=teacher)
    opt = hand.configure_optimizer()
    hand.train()
    losses = []
    for step in range(steps):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, len(x), (batch,), generator=g)
        t_feats = [t[idx].float() for t in t_all]
        s_feats = hand.decoder(hand.ocbe(t_feats))
        loss = sum(
            (1 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1)).mean()
            for t, s in zip(t_feats, s_feats, strict=True)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    torch.manual_seed(seed)
    lib = models.create("rd", teacher=teacher)
    history = fit(lib, x, steps, batch, seed, progress=False)
    assert losses == [h["loss"] for h in history]
    ref = lib.student_state_dict()
    for k, v in hand.student_state_dict().items():
        assert torch.equal(v, ref[k]), k
