"""The small API every model shares, so the training loop knows nothing model-specific.

    out = model(x, t_feats=None)     # dict: at least "t_feats", "s_feats"; same keys in train and eval
    losses = model.loss(out)         # dict of scalars, "loss" is the one to minimise
    maps = model.maps(out)           # dict of (B,1,H,W) maps; "amap" is the final one
    scores = model.scores(out, maps) # dict of (B,) image scores; "score" read off "amap" (adkit.scoring)
    res = model.score(x)             # one forward pass: every map and every score, "score" the main one
    amap, score = model.predict(x)   # final map and main image score, no gradients
    model.calibrate(xs)              # statistics of training normals, for a model that declares `calibration`
    model.calibrate_batches(batches) # the same, the normals given as (images, features) batches

A model that calibrates says how in `calibration` (a `Calibration`): the fraction of its training normals to
keep out of training and calibrate on (scores of images a student was fitted on are optimistic), and whether to
choose between those and as many fitted normals on validation data. `adkit.calibration` carries it out at the
end of training through the one hook, `calibrate_batches` (whose default joins the batches and calls
`calibrate`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..backbones import Teacher
from ..batches import in_batches
from ..scoring import image_score

CALIBRATION_SETS = ("fitted", "held-out")  # the candidate calibration sets of a choice, in a fixed order


@dataclass(frozen=True)
class Calibration:
    """How a model calibrates (`ADModel.calibration`); `adkit.calibration` carries it out after training."""

    holdout: float = 0.0  # fraction of the training normals kept out of training, to calibrate on (0: none)
    # choose between the held-out normals and as many fitted ones on validation data made from held-out normals
    choose: bool = False


@dataclass(frozen=True)
class CalibrationChoice:
    """What a choice of calibration set saw: the validation AUROC of the main score per candidate set
    (`CALIBRATION_SETS`) and the winner."""

    auroc: dict[str, float]
    chosen: str


def is_teacher_key(name: str) -> bool:
    """A state-dict key of the frozen teacher: `teacher.…`, or `<part>.teacher.…` in a wrapper (SNL's base)."""
    return name.startswith("teacher.") or ".teacher." in name


class ADModel(nn.Module):
    """Base class: a frozen `teacher` plus trainable student parts; subclasses fill in the four methods."""

    name = "base"
    calibration: Calibration | None = None  # None: the model needs no calibration (`calibrate` is never called)
    # `fit` trains in channels-last memory layout on the CPU: only where it was measured to pay (whole-CNN
    # students, not RD's small decoder: benchmarks/README.md). It changes the floating-point order, so turning it
    # on is a new training revision (`config.MODEL_REVISIONS`).
    train_channels_last: bool = False
    report_maps: tuple[str, ...] = ()  # maps besides "amap" that evaluation measures alone too (SNL's parts)
    report_scores: tuple[str, ...] = ()  # image scores besides "score" that evaluation reports (dual's branches)
    main_score: str | None = None  # the key of `scores` that is the model's image score; None: "score"

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

    def configure_optimizer(self, params=None) -> torch.optim.Optimizer:
        """The paper's optimiser over `params` (default: `student_parameters()`; a wrapper passes its own)."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------------
    def teacher_features(self, x: torch.Tensor, t_feats: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The frozen teacher's features of `x`, or `t_feats` where given (a training cache's); detached."""
        return [f.detach() for f in (self.teacher(x) if t_feats is None else t_feats)]

    def student_parameters(self):
        return [p for n, p in self.named_parameters() if not is_teacher_key(n)]

    @property
    def student_device(self) -> torch.device:
        """Where the student's weights are (the device its inputs go to; the teacher lives with it)."""
        return next(iter(self.student_parameters())).device

    def parameters_to_train(self, params=None) -> list:
        """What `configure_optimizer` optimises: `params` where given (a wrapper's, e.g. SNL's with its CRAMs),
        else `student_parameters()`."""
        return self.student_parameters() if params is None else params

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the teacher (whose weights come from the backbone): parameters and buffers."""
        return {k: v for k, v in self.state_dict().items() if not is_teacher_key(k)}

    def calibrate(
        self, xs: torch.Tensor, t_feats: list[torch.Tensor] | None = None, choice: CalibrationChoice | None = None
    ) -> None:
        """Fit statistics on normals `xs` (with their teacher features, where known). `choice`: what the choice of
        this calibration set saw, for a model that keeps it with its weights; None where no choice was made.
        Called by `adkit.calibration` for a model that declares `calibration`; the base models need none."""

    def scores(self, out: dict, maps: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Image scores `(B,)` of one forward pass: "score" read off "amap", "score_<k>" off each report map."""
        maps = self.maps(out) if maps is None else maps
        top = getattr(self.config, "top_frac", 0.01)
        return {
            ("score" if k == "amap" else f"score_{k}"): image_score(maps[k], self.config.score, top)
            for k in ("amap", *self.report_maps)
        }

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass in eval mode: every map (`(B,1,H,W)`: "amap" and the report maps) and every image
        score (`(B,)`); "score" is the model's main one."""
        was = self.training
        if was:  # a walk over every submodule, twice: only when there is a mode to change
            self.eval()
        out = self(x)
        maps = self.maps(out)
        res = {k: maps[k] for k in ("amap", *self.report_maps)}
        res.update(self.scores(out, maps))
        if self.main_score:
            res["score"] = res[self.main_score]
        if was:
            self.train()
        return res

    @torch.no_grad()
    def image_scores(self, images: torch.Tensor, batch_size: int = 32) -> dict[str, torch.Tensor]:
        """Every image score of `score` (not the maps) for a stack of images `(N,3,H,W)`, in batches, on the
        CPU: one forward pass per batch."""
        device = self.student_device
        maps = {"amap", *self.report_maps}

        def scores_only(x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {k: v for k, v in self.score(x).items() if k not in maps}

        return {k: v.float().cpu() for k, v in in_batches(scores_only, images, batch_size, device, self).items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t_feats: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Final anomaly map `(B,1,H,W)` and the main image score `(B,)`."""
        was = self.training
        self.eval()
        out = self(x, t_feats)
        maps = self.maps(out)
        scores = self.scores(out, maps)
        self.train(was)
        return maps["amap"], scores[self.main_score or "score"]

    def calibrate_batches(self, batches, choice: CalibrationChoice | None = None) -> None:
        """`calibrate` on normals given as an iterable of `(images, teacher features or None)` batches, so that a
        calibration set need not be in memory at once (`adkit.calibration` reads it from the feature cache). This
        default joins the batches and calls `calibrate`; SNL and the dual student read them one at a time."""
        parts = list(batches)
        feats = None if parts[0][1] is None else [torch.cat(stage) for stage in zip(*(f for _, f in parts))]
        self.calibrate(torch.cat([x for x, _ in parts]), feats, choice=choice)

    def settings(self) -> dict:
        return {"model": self.name, "backbone": self.teacher.name, "config": asdict(self.config)}
