"""Forward distillation, STFPM-style (Wang et al., "Student-Teacher Feature Pyramid Matching for Anomaly
Detection", BMVC 2021).

The student has the teacher's architecture, starts from random weights and sees the image; it learns to
reproduce the teacher's stages on normal images only. Loss and map as the official code (gdwang08/STFPM): per
position ‖T̂ − Ŝ‖² of channel-normalised features (no ½); the map upsamples it per stage and multiplies over
stages (official; sum as an option); score: max. Optimiser: the official SGD, lr 0.4, momentum 0.9, wd 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch

from ..backbones import Teacher
from ..losses import fd_loss, l2_map
from ..scoring import BLUR_SIGMA, fuse_maps, gaussian_blur
from .base import ADModel


@dataclass(frozen=True)
class FDConfig:
    map_fusion: str = "product"  # STFPM official: product over stages
    blur_sigma: float = BLUR_SIGMA  # RD's, so the two compare under one post-processing
    score: str = "max"
    lr: float = 0.4  # STFPM official: SGD lr 0.4, momentum 0.9, weight decay 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4


class ForwardDistillation(ADModel):
    name = "fd"
    train_channels_last = True  # the student is a whole CNN: faster steps on the CPU (benchmarks/README.md)

    def __init__(self, teacher: Teacher, config: FDConfig = FDConfig()):
        super().__init__(teacher, config)
        if teacher.kind != "cnn":
            raise ValueError("FD needs a CNN teacher (the student copies its architecture)")
        self.student = timm.create_model(
            teacher.name,
            pretrained=False,
            features_only=True,
            out_indices=tuple(teacher.model.feature_info.out_indices),
        )

    def forward(self, x: torch.Tensor, t_feats: list[torch.Tensor] | None = None, hook=None) -> dict:
        """`hook(stage, feature) -> feature` (optional) acts on each student stage's output before the comparison
        (the timm student runs as one piece, so it does not feed the next stage)."""
        t_feats = self.teacher_features(x, t_feats)
        s_feats = list(self.student((x - self.teacher.mean) / self.teacher.std))
        if hook is not None:
            s_feats = [hook(i, s) for i, s in enumerate(s_feats)]
        return {"t_feats": t_feats, "s_feats": s_feats, "size": tuple(x.shape[-2:])}

    def loss(self, out: dict) -> dict[str, torch.Tensor]:
        loss = fd_loss(out["t_feats"], out["s_feats"])
        return {"loss": loss, "fd": loss.detach()}

    def maps(self, out: dict) -> dict[str, torch.Tensor]:
        per_stage = [l2_map(t, s) for t, s in zip(out["t_feats"], out["s_feats"])]
        local = fuse_maps(per_stage, out["size"], self.config.map_fusion)
        return {"amap": gaussian_blur(local, self.config.blur_sigma), "local": local}

    def configure_optimizer(self, params=None) -> torch.optim.Optimizer:
        c = self.config
        params = self.parameters_to_train(params)
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
