"""Generalist dual-student anomaly detection (Park, Seo & Kim, arXiv 2509.24448).

**Our reconstruction, not the paper's recipe.** The paper publishes no code and its method section was not
available to us; this file is built around what the abstract and figure captions state (METHODS.md §5),
and every choice we had to make is a named option of `DualConfig`.

Idea: one frozen teacher, two students. An encoder–decoder (E–D) student, Dinomaly-like, reconstructs
the teacher's feature maps from a noisy bottleneck and catches small local defects (the local map and its
top-1% score). An encoder–encoder (E–E) student, the teacher's architecture trained from scratch on the
image, reproduces the teacher's global descriptor and catches semantic anomalies (`s_E = 1 − cos`). Each
score becomes a probability by a monotone link calibrated on training normals, and the two are fused by
Noisy-OR, `P = 1 − (1 − p_D)(1 − p_E)`. Which normals calibrate is chosen by each run on its own validation
data (`calib_choice`): 40 % of the training normals are kept out of training (`calib_holdout`), half of them
become synthetic-defect validation data, and the run calibrates on the other half or on as many fitted normals,
whichever scores that validation data better.

An honest note on the fusion: with the exp link `p = 1 − exp(−s/τ)`, `P = 1 − exp(−(s_D/τ_D + s_E/τ_E))`,
so the Noisy-OR *ranks* images exactly as the sum of the two scores, each divided by its scale τ; and the
training objective on normals (`link`, exp by default), `−log(1 − p_D) − log(1 − p_E) = s_D/τ + s_E/τ`, is a
weighted sum of the two branch distances. At test time the fused score uses `score_link`, logistic by default
(`p = σ((s − τ ln 2)/σ_s)`, which centres each branch on its normal scores and divides by their spread): chosen
on validation data made from training normals, never on a test set. At test time `s_D` is the top-1% mean of the
local map, and in training by default the same statistic (`local_train="map"`; or the flattened cosine per
group, Dinomaly's loss, `"flat"`). The E–E target `g_T` is a ViT's class token, or the mean of the teacher's last map
(`global_token`).
Calibration puts each branch's q-quantile of training scores at p = 0.5, so a normal image at both
quantiles gets P = 0.75: read P as a fused *score*, not as a calibrated probability of an anomaly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Teacher
from ..batches import windows
from ..losses import cosine_map, flat_cosine_distance, neg_log_normal
from ..scoring import BLUR_SIGMA, LINKS, fuse_maps, gaussian_blur, image_score, link_probability, noisy_or
from .base import CALIBRATION_SETS, ADModel, Calibration, CalibrationChoice

FUSIONS = ("noisy_or", "sum", "local", "semantic")
GLOBAL_TOKENS = (None, "cls", "mean")
LOCAL_TRAIN = ("flat", "map")
BRANCHES = ("local", "semantic")
CALIB_CHOICES = (None, "validation")
SCALE_FLOOR = 1e-6


@dataclass(frozen=True)
class DualConfig:
    """All defaults are our choices (no published recipe); Dinomaly's where one is named."""

    # E–D student (Dinomaly-like)
    split: int | None = None  # groups = teacher maps [0, split) and [split, n); None: CNN 2, ViT n // 2
    group_merge: str | None = None  # within a group: "concat" channels or "mean"; None: CNN concat, ViT mean
    group_stage: int = 1  # CNN: every group resized to this stage's grid (stride 8)
    bottleneck_ratio: float = 2.0  # hidden width of the bottleneck MLP, × its input channels
    dropout: float = 0.2  # noisy bottleneck: dropout on the MLP's input and hidden layer (Dinomaly: 0.2)
    decoder_depth: int = 4  # residual conv blocks, shared out evenly among the groups
    # E–E student
    ee_arch: str | None = None  # None: the teacher's architecture (random init); or a timm name, e.g. resnet18
    # the teacher's global descriptor g_T, the E–E student's target: "cls", a ViT's class token (its last
    # block's); "mean", the mean of the last map (patch tokens, or a CNN's last stage); None: "cls" where the
    # teacher has one, else "mean"
    global_token: str | None = None
    # probabilities, objective and fusion
    link: str = "exp"  # p = 1 − exp(−s/τ) (METHODS §5); "logistic": p = σ((s − τ ln 2)/σ_s)
    # the link of the fused score at test time (None: `link`, the training objective's). A scoring choice only:
    # the students do not depend on it. "logistic": chosen on validation data built from training normals
    # (docs/results/dual_validation.json, METHODS §8)
    score_link: str | None = "logistic"
    tau_quantile: float = 0.95  # τ = s_q / ln 2: the q-quantile of the calibration normals' scores maps to p = 0.5
    # this fraction of the training normals is kept out of training, for the calibration of τ, mean and std
    # (METHODS §8); 0: train on all of them and calibrate on the images the students were fitted on
    calib_holdout: float = 0.4
    # which normals calibrate, when some are held out (with calib_holdout = 0 there is nothing to choose: the
    # fitted ones). "validation" (our construction, `adkit.calibration`): every other held-out normal becomes
    # synthetic-defect validation data, and the run keeps whichever set gives the higher validation AUROC of its
    # main score: the other held-out normals, or as many fitted ones (ties: the fitted ones). The choice and both
    # AUROCs are stored with the run. None: the held-out normals. With fewer than 4 held-out normals (8 or fewer
    # training images at 0.4) the run holds none out. Chosen per run because neither set wins on every dataset's
    # validation data (docs/results/dual_validation.json, dual_semantic_validation.json, dual_calib_choice.json)
    calib_choice: str | None = "validation"
    tau_train: float = 1.0  # τ (and logistic scale) of the joint objective in training; calibration comes after
    # s_D in the training objective: "map", the test-time s_D itself (`score` of the blurred local map: the mean
    # of its top 1%), so that s_D is the same statistic in training and at test time; "flat", the flattened
    # cosine distance per group (Dinomaly's global cosine loss). "map": chosen on validation data built from
    # training normals (docs/results/dual_local_stat.json, METHODS §5)
    local_train: str = "map"
    w_local: float = 1.0  # weight of −log(1 − p_D) in the joint objective
    w_semantic: float = 1.0  # weight of −log(1 − p_E)
    fusion: str = "noisy_or"  # the main image score: noisy_or, sum (z-scored), local or semantic
    blur_sigma: float = BLUR_SIGMA  # Gaussian σ of the local map (RD's)
    score: str = "topk"  # local score = mean of the map's top `top_frac` pixels (Dinomaly: top 1%)
    top_frac: float = 0.01
    lr: float = 1e-3  # AdamW for both students
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


# -- helpers --------------------------------------------------------------------------------------------
def resize(f: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool down or upsample bilinearly to `size`."""
    if tuple(f.shape[-2:]) == tuple(size):
        return f
    if f.shape[-2] >= size[0] and f.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(f, size)
    return F.interpolate(f, size=size, mode="bilinear", align_corners=False)


def group_maps(feats: list[torch.Tensor], split: int, merge: str, size: tuple[int, int]) -> list[torch.Tensor]:
    """Teacher maps into two groups, `feats[:split]` and `feats[split:]`, each merged on the grid `size`."""
    groups = []
    for part in (feats[:split], feats[split:]):
        part = [resize(f, size) for f in part]
        groups.append(torch.cat(part, 1) if merge == "concat" else torch.stack(part).mean(0))
    return groups  # [(B,C_A,h,w), (B,C_B,h,w)]


# -- E–D student ----------------------------------------------------------------------------------------
class NoisyBottleneck(nn.Module):
    """1×1-conv MLP with dropout on its input and hidden layer; the noise acts in training only."""

    def __init__(self, c_in: int, c_hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Conv2d(c_in, c_hidden, 1),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Conv2d(c_hidden, c_in, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvBlock(nn.Module):
    """Pre-norm residual block: `x + W₂ GELU(W₁ ∗ GN(x))`, W₁ a 3×3 conv, W₂ a 1×1 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(1, c), nn.Conv2d(c, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class GroupDecoder(nn.Module):
    """Residual conv blocks; group g's output is a 1×1 projection of the mean of its share of the blocks
    (Dinomaly averages its decoder layers per group the same way)."""

    def __init__(self, c: int, out_channels: list[int], depth: int):
        super().__init__()
        if depth < len(out_channels):
            raise ValueError(f"decoder_depth {depth} < {len(out_channels)} groups")
        self.blocks = nn.ModuleList(ConvBlock(c) for _ in range(depth))
        bounds = [round(i * depth / len(out_channels)) for i in range(len(out_channels) + 1)]
        self.chunks = list(zip(bounds[:-1], bounds[1:]))
        self.heads = nn.ModuleList(nn.Conv2d(c, c_g, 1) for c_g in out_channels)

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for block in self.blocks:
            z = block(z)
            outs.append(z)
        return [head(torch.stack(outs[a:b]).mean(0)) for head, (a, b) in zip(self.heads, self.chunks)]


# -- the teacher's global token -------------------------------------------------------------------------
def global_token(teacher: Teacher, config: DualConfig) -> str:
    """`config.global_token` resolved for this teacher: "cls" or "mean"."""
    if config.global_token not in GLOBAL_TOKENS:
        raise ValueError(f"global_token must be one of {GLOBAL_TOKENS}, got {config.global_token!r}")
    if config.global_token == "cls" and not teacher.has_class_token:
        raise ValueError(f"global_token='cls': {teacher.name} has no class token; use 'mean'")
    return config.global_token or ("cls" if teacher.has_class_token else "mean")


def input_teacher(teacher: Teacher, config: DualConfig) -> Teacher:
    """The teacher as the dual student reads it: with the class token after the maps where it is the global
    token (the same weights), so that the training feature cache holds it too."""
    if global_token(teacher, config) == "cls" and not teacher.class_token:
        return teacher.with_class_token()
    return teacher


# -- the model ------------------------------------------------------------------------------------------
class DualStudent(ADModel):
    """E–D student for local defects, E–E student for semantic anomalies, fused by Noisy-OR."""

    name = "dual"
    report_scores = ("score_local", "score_semantic", "score_sum", "score_noisy_or")
    # the E–E student is a whole CNN trained from pixels: channels-last pays on the CPU (benchmarks/README.md)
    train_channels_last = True

    def __init__(self, teacher: Teacher, config: DualConfig = DualConfig()):
        super().__init__(teacher, config)
        c = config
        if c.link not in LINKS or c.score_link not in (*LINKS, None) or c.fusion not in FUSIONS:
            raise ValueError(f"link and score_link must be one of {LINKS} and fusion one of {FUSIONS}")
        if c.local_train not in LOCAL_TRAIN:
            raise ValueError(f"local_train must be one of {LOCAL_TRAIN}, got {c.local_train!r}")
        if not 0 <= c.calib_holdout < 1:
            raise ValueError(f"calib_holdout must be in [0, 1), got {c.calib_holdout}")
        if c.calib_choice not in CALIB_CHOICES:
            raise ValueError(f"calib_choice must be one of {CALIB_CHOICES}, got {c.calib_choice!r}")
        self.global_token = global_token(teacher, c)
        teacher = self.teacher = input_teacher(teacher, c)
        n = len(teacher.channels)
        self.split = c.split if c.split is not None else (2 if teacher.kind == "cnn" else n // 2)
        self.merge = c.group_merge or ("concat" if teacher.kind == "cnn" else "mean")
        if not 0 < self.split < n:
            raise ValueError(f"split {self.split} must leave both groups non-empty ({n} teacher maps)")
        parts = (teacher.channels[: self.split], teacher.channels[self.split :])
        if self.merge == "mean" and any(len(set(p)) > 1 for p in parts):
            raise ValueError("group_merge='mean' needs equal channels within a group; use 'concat'")
        group_channels = [sum(p) if self.merge == "concat" else p[0] for p in parts]
        width = sum(group_channels)
        self.bottleneck = NoisyBottleneck(width, int(width * c.bottleneck_ratio), c.dropout)
        self.decoder = GroupDecoder(width, group_channels, c.decoder_depth)
        # E–E student: a random-init encoder on the image, a linear head to the teacher's descriptor
        arch = c.ee_arch or teacher.name
        kwargs = {"dynamic_img_size": True} if arch.startswith("vit") else {}
        self.encoder = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
        self.head = nn.Linear(self.encoder.num_features, teacher.channels[-1])
        # link parameters and z-score statistics per branch, set by `calibrate` on held-out training normals
        for b in BRANCHES:
            self.register_buffer(f"tau_{b}", torch.tensor(1.0))
            self.register_buffer(f"mean_{b}", torch.tensor(0.0))
            self.register_buffer(f"std_{b}", torch.tensor(1.0))
        # what the choice saw: validation AUROC per candidate set, and the winner (an index of CALIBRATION_SETS; −1 and
        # NaN: no choice was made — calib_choice None, or no held-out normals)
        self.register_buffer("calib_val_auroc", torch.full((len(CALIBRATION_SETS),), float("nan")))
        self.register_buffer("calib_chosen", torch.tensor(-1))

    @property
    def calibration(self) -> Calibration:
        """Held-out normals calibrate (`calib_holdout`), or, with `calib_choice="validation"`, whichever of them
        and as many fitted ones scores validation data made from held-out normals better (`adkit.calibration`)."""
        return Calibration(self.config.calib_holdout, choose=self.config.calib_choice == "validation")

    @property
    def calibration_chosen(self) -> str | None:
        """The calibration set this run chose (`calib_choice="validation"`): "fitted" or "held-out"; None where
        no choice was made."""
        i = int(self.calib_chosen)
        return CALIBRATION_SETS[i] if i >= 0 else None

    @property
    def main_score(self) -> str:
        return f"score_{self.config.fusion}"

    def forward(self, x: torch.Tensor, t_feats: list[torch.Tensor] | None = None) -> dict:
        """`t_feats`/`s_feats` are the two group maps; `g_t`/`g_s` the global descriptors `(B,C)`."""
        raw = self.teacher_features(x, t_feats)
        token = None
        if self.teacher.class_token:  # the class token rides after the maps, (B,C,1,1)
            raw, token = raw[:-1], raw[-1]
        grid = tuple(raw[self.config.group_stage if self.teacher.kind == "cnn" else 0].shape[-2:])
        t_groups = group_maps(raw, self.split, self.merge, grid)
        s_groups = self.decoder(self.bottleneck(torch.cat(t_groups, 1)))
        # g_T: the class token (ViT), or the teacher's last map global-average-pooled (CNN: its last stage)
        g_t = token.flatten(1) if self.global_token == "cls" else raw[-1].mean((2, 3))  # (B,C)
        g_s = self.head(self.encoder((x - self.teacher.mean) / self.teacher.std))  # (B,C)
        return {"t_feats": t_groups, "s_feats": s_groups, "g_t": g_t, "g_s": g_s, "size": tuple(x.shape[-2:])}

    def loss(self, out: dict) -> dict[str, torch.Tensor]:
        c = self.config
        if c.local_train == "map":  # s_D as at test time (`raw_scores`): the image score of the blurred local map
            s_d = image_score(self.maps(out)["amap"], c.score, c.top_frac)
        else:  # s_D = ½ Σ_g [1 − cos(vec T_g, vec S_g)], per image
            s_d = torch.stack([flat_cosine_distance(t, s) for t, s in zip(out["t_feats"], out["s_feats"])]).mean(0)
        # s_E = 1 − cos(g_T, g_S)
        s_e = flat_cosine_distance(out["g_t"], out["g_s"])
        # L = −w_D log(1 − p_D) − w_E log(1 − p_E) on normals, τ = τ_train (= w_D s_D/τ + w_E s_E/τ, exp link)
        tau = c.tau_train
        joint = (
            c.w_local * neg_log_normal(s_d, tau, c.link, tau) + c.w_semantic * neg_log_normal(s_e, tau, c.link, tau)
        ).mean()
        return {"loss": joint, "local": s_d.mean().detach(), "semantic": s_e.mean().detach()}

    def maps(self, out: dict) -> dict[str, torch.Tensor]:
        # M = Up(mean_g [1 − cos(T_g, S_g)]) per position, then the blur
        local = fuse_maps([cosine_map(t, s) for t, s in zip(out["t_feats"], out["s_feats"])], out["size"], "mean")
        return {"amap": gaussian_blur(local, self.config.blur_sigma), "local": local}

    def raw_scores(self, out: dict, maps: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Uncalibrated branch scores `(B,)`: top-1% mean of the local map, and `s_E`."""
        c = self.config
        amap = (self.maps(out) if maps is None else maps)["amap"]
        s_e = flat_cosine_distance(out["g_t"], out["g_s"])  # s_E = 1 − cos(g_T, g_S)
        return {"local": image_score(amap, c.score, c.top_frac), "semantic": s_e}

    def scores(self, out: dict, maps: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Every image score `(B,)`: "score" off the map, each branch, the z-scored sum, the Noisy-OR, and each
        branch's p."""
        maps = self.maps(out) if maps is None else maps
        return {**super().scores(out, maps), **self.fused_scores(self.raw_scores(out, maps))}

    @property
    def scoring_link(self) -> str:
        return self.config.score_link or self.config.link

    def fused_scores(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """From the raw branch scores (`raw_scores`) and the calibration: each branch's score and p, the
        z-scored sum and the Noisy-OR. Arithmetic only, so an ablation of the link or the calibration
        (`adkit.ablation.dual_ablation`) needs one forward pass, not one per variant."""
        p = {
            b: link_probability(raw[b], getattr(self, f"tau_{b}"), self.scoring_link, getattr(self, f"std_{b}"))
            for b in BRANCHES
        }
        z = {b: (raw[b] - getattr(self, f"mean_{b}")) / getattr(self, f"std_{b}") for b in BRANCHES}
        # −log(1 − P) = Σ_b −log(1 − p_b), computed without forming p_b: the Noisy-OR's ranking, with no ties
        # where P rounds to 1 (a branch calibrated on a tight set of normals puts most test images at p = 1.0
        # in floating point: 869 of 899 on one-class digits)
        evidence = sum(
            neg_log_normal(raw[b], getattr(self, f"tau_{b}"), self.scoring_link, getattr(self, f"std_{b}"))
            for b in BRANCHES
        )
        return {
            "score_local": raw["local"],
            "score_semantic": raw["semantic"],
            "score_sum": z["local"] + z["semantic"],
            "score_noisy_or": evidence,  # ranks exactly as P, below
            "p_noisy_or": noisy_or(p["local"], p["semantic"]),  # P = 1 − (1 − p_D)(1 − p_E)
            "p_local": p["local"],
            "p_semantic": p["semantic"],
        }

    def raw_scores_of(
        self, xs: torch.Tensor, t_feats: list[torch.Tensor] | None = None, batch_size: int = 32
    ) -> dict[str, torch.Tensor]:
        """`raw_scores` of images `(N,3,H,W)` in eval mode, in batches: `{branch: (N,)}`."""
        return self.raw_scores_in(windows(xs, t_feats, batch_size))

    @torch.no_grad()
    def raw_scores_in(self, batches) -> dict[str, torch.Tensor]:
        """`raw_scores` of images given batch by batch (`(images, teacher features or None)`), in eval mode."""
        was = self.training
        self.eval()
        rows = [self.raw_scores(self(x, tf)) for x, tf in batches]
        self.train(was)
        return {b: torch.cat([r[b] for r in rows]) for b in BRANCHES}

    def calibrate(
        self,
        xs: torch.Tensor,
        t_feats: list[torch.Tensor] | None = None,
        choice: CalibrationChoice | None = None,
        batch_size: int = 32,
    ) -> None:
        """Per branch, on normals `xs`: τ = s_q / ln 2 (q = `tau_quantile`), mean and std of the score. `choice` is
        kept with the weights (`calib_val_auroc`, `calib_chosen`; NaN and −1 without one)."""
        self.calibrate_batches(windows(xs, t_feats, batch_size), choice)

    def calibrate_batches(self, batches, choice: CalibrationChoice | None = None) -> None:
        """`calibrate` on normals given batch by batch: only their raw scores are kept."""
        self.calibrate_from(self.raw_scores_in(batches))
        if choice is None:
            self.calib_val_auroc.fill_(float("nan"))
            self.calib_chosen.fill_(-1)
        else:
            self.calib_val_auroc.copy_(torch.tensor([choice.auroc[n] for n in CALIBRATION_SETS]))
            self.calib_chosen.fill_(CALIBRATION_SETS.index(choice.chosen))

    @torch.no_grad()
    def calibrate_from(self, raw: dict[str, torch.Tensor]) -> None:
        """`calibrate` from the normals' raw branch scores `{branch: (N,)}`."""
        for b in BRANCHES:
            s = raw[b].double()
            s_q = float(torch.quantile(s, self.config.tau_quantile))
            getattr(self, f"tau_{b}").fill_(max(s_q / math.log(2), SCALE_FLOOR))
            getattr(self, f"mean_{b}").fill_(float(s.mean()))
            getattr(self, f"std_{b}").fill_(max(float(s.std(unbiased=False)), SCALE_FLOOR))

    def configure_optimizer(self, params=None) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.AdamW(self.parameters_to_train(params), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
