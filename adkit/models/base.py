"""The small API every model shares, so the training loop knows nothing model-specific.

    out = model(x, t_feats=None)     # dict: at least "t_feats", "s_feats"; same keys in train and eval
    losses = model.loss(out)         # dict of scalars, "loss" is the one to minimise
    maps = model.maps(out)           # dict of (B,1,H,W) maps; "amap" is the final one
    amap, score = model.predict(x)   # final map and image score, no gradients
    model.calibrate(xs)              # optional: statistics of training normals (no-op by default)

A model that calibrates may ask the loop to keep a fraction of the training normals out of training
(`calibration_holdout`) and calibrate on those instead: scores of images a student was fitted on are
optimistic.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from ..backbones import Teacher
from ..losses import image_score


class ADModel(nn.Module):
    """Base class: a frozen `teacher` plus trainable student parts; subclasses fill in the four methods."""

    name = "base"
    calibration_holdout: float = 0.0  # fraction of training normals kept out of training, for `calibrate`

    def __init__(self, teacher: Teacher, config):
        super().__init__()
        self.teacher = teacher
        self.config = config

    # -- to implement -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t_feats: list[torch.Tensor] | None = None) -> dict:
        raise NotImplementedError

    def loss(self, out: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def maps(self, out: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def configure_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------------
    def teacher_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [f.detach() for f in self.teacher(x)]

    def student_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("teacher.")]

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the teacher (whose weights come from the backbone): parameters and buffers."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def calibrate(self, xs: torch.Tensor, t_feats: list[torch.Tensor] | None = None) -> None:
        """Fit statistics on training normals; the base models need none."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t_feats: list[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final anomaly map `(B,1,H,W)` and image score `(B,)`."""
        was = self.training
        self.eval()
        amap = self.maps(self(x, t_feats))["amap"]
        self.train(was)
        return amap, image_score(amap, self.config.score, getattr(self.config, "top_frac", 0.01))

    def settings(self) -> dict:
        return {"model": self.name, "backbone": self.teacher.name, "config": asdict(self.config)}
