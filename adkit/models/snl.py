"""Structural Teacher–Student Normality Learning, SNL (Deng & Li, arXiv 2402.17091), on RD and FD.

**Our reconstruction, not the paper's recipe.** SNL is published without code and its method section was
not available to us; this file is built around what the abstract and figure captions state (METHODS.md
§4), and every choice we had to make is a named option of `SNLConfig`.

Idea: in multi-class training a student learns to reproduce the teacher even on things that are normal
only for *another* class. SNL asks the student to match the teacher's *structure* as well as its
features: per stage, channel-wise features (per position), spatial-wise features (per channel),
intra-affinity (the position × position similarities within an image) and inter-affinity (the image ×
image similarities across the batch), added to the base model's own loss. A central residual
aggregation module (CRAM, NetVLAD-style) after each student block ties the student's features to K
learned centres of normal features. At test time the local map (channel-wise distance) and the
structural map (intra-affinity row distance) are each normalised with training-normal statistics and
added: `amap = blur(norm(M_local) + α·norm(M_struct))`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ..backbones import Teacher
from ..batches import windows
from ..losses import (
    channel_distance,
    channel_loss,
    inter_affinity_loss,
    intra_affinity_distance,
    intra_affinity_loss,
    spatial_loss,
)
from ..scoring import fuse_maps, gaussian_blur
from .base import ADModel, Calibration, CalibrationChoice
from .fd import FDConfig, ForwardDistillation
from .rd import RDConfig, ReverseDistillation

STD_FLOOR = 1e-6


@dataclass(frozen=True)
class SNLConfig:
    """SNL's own options (the flat configs below add the base model's). Defaults: the full method, all our
    choices."""

    use_ch: bool = True  # channel-wise term, mean_i 1 − cos(T[:, i], S[:, i])
    use_sp: bool = True  # spatial-wise term, mean_c 1 − cos(T[c, :], S[c, :])
    use_intra: bool = True  # intra-affinity term on `intra_stages`
    use_inter: bool = True  # inter-affinity term (pooled descriptors, B×B)
    use_cram: bool = True  # a CRAM after each student block
    lambda_ch: float = 1.0
    lambda_sp: float = 1.0
    lambda_intra: float = 1.0
    lambda_inter: float = 1.0
    intra_stages: tuple[int, ...] = (1, 2)  # 0-based teacher stages; stage 0 (stride 4) costs N² memory
    intra_max_positions: int | None = 1024  # affinity keys: a strided sub-grid of at most this many positions
    intra_pool: int = 1  # average-pool features by this factor before the affinities (1: off)
    cram_k: int = 16  # centres per stage
    cram_residual: bool = True  # out = s + g(r), g a zero-init 1×1 conv; False: out = Σ a c + γ·r, γ init 1
    cram_compact: float = 0.0  # weight of the compactness term mean ‖r_i‖² (0: off)
    cram_kmeans_iters: int = 10  # Lloyd iterations of the centres' k-means init on the first training batch
    alpha: float = 1.0  # weight of the normalised structural map in the score
    # fraction of the training normals kept out of training and used by `calibrate` (0: calibrate on the images
    # the student was fitted on; docs/results/cram_ablation.json compares the two)
    calib_holdout: float = 0.0
    top_frac: float = 0.01  # used when score = "topk"


@dataclass(frozen=True)
class RDSNLConfig(SNLConfig, RDConfig):
    """The options of `rd+snl` as one flat set, as a run stores them: RD's (METHODS §2) plus SNL's. The model
    itself is composed (`rd_snl`: an `SNL` around a `ReverseDistillation` built from RD's share)."""


@dataclass(frozen=True)
class FDSNLConfig(SNLConfig, FDConfig):
    """The options of `fd+snl` as one flat set: FD's (METHODS §3) plus SNL's (`fd_snl` composes the model)."""


# -- CRAM -----------------------------------------------------------------------------------------------
@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 10, seed: int = 0, max_points: int = 16384) -> torch.Tensor:
    """Centres `(k,C)` of the rows of `x` `(N,C)`: k-means++ seeding, then Lloyd; deterministic in `seed`."""
    g = torch.Generator().manual_seed(seed)
    x = x.detach().float().cpu()
    if len(x) > max_points:
        x = x[torch.randperm(len(x), generator=g)[:max_points]]
    centres = [x[torch.randint(len(x), (1,), generator=g)]]
    d2 = (x - centres[0]).pow(2).sum(1)  # (N,) squared distance to the nearest centre so far
    for _ in range(k - 1):
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1 / len(d2))
        c = x[torch.multinomial(p, 1, generator=g)]
        centres.append(c)
        d2 = torch.minimum(d2, (x - c).pow(2).sum(1))
    c = torch.cat(centres)  # (k,C)
    for _ in range(iters):
        nearest = torch.cdist(x, c).argmin(1)  # (N,)
        sums = torch.zeros_like(c).index_add_(0, nearest, x)
        counts = torch.bincount(nearest, minlength=k)
        filled = counts > 0  # an empty cluster keeps its centre
        c[filled] = sums[filled] / counts[filled, None]
    return c


class CentralResidualAggregation(nn.Module):
    """CRAM, NetVLAD-style: soft-assign each position to K centres; identity at init, learns a correction.

    `forward(s)` returns the output `(B,C,h,w)` and the central residual `r` `(B,C,h,w)`.
    """

    def __init__(self, channels: int, k: int = 16, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.centres = nn.Parameter(0.1 * torch.randn(k, channels))  # (K,C); k-means on warm-up features
        self.assign = nn.Conv2d(channels, k, 1)  # soft-assignment logits
        if residual:
            self.g = nn.Conv2d(channels, channels, 1)
            nn.init.zeros_(self.g.weight)
            nn.init.zeros_(self.g.bias)
        else:
            self.gamma = nn.Parameter(torch.ones(()))
        self.register_buffer("initialised", torch.tensor(False))  # persisted: a resumed run keeps its centres

    @torch.no_grad()
    def init_centres(self, features: torch.Tensor, iters: int = 10, seed: int = 0) -> None:
        """k-means centres of `features` `(N,C)`; the assignment conv starts as a soft nearest-centre rule.

        NetVLAD's init: softmax_k(−α‖s − c_k‖²) = softmax_k(2α c_kᵀs − α‖c_k‖²), with α = 1 / (mean squared
        distance of a feature to its nearest centre).
        """
        c = kmeans(features, len(self.centres), iters, seed).to(self.centres)
        x = features.detach().float().to(c.device)
        alpha = 1.0 / float(torch.cdist(x, c).pow(2).min(1).values.mean().clamp_min(1e-6))
        self.centres.copy_(c)
        self.assign.weight.copy_((2 * alpha * c)[:, :, None, None])
        self.assign.bias.copy_(-alpha * c.pow(2).sum(1))
        self.initialised.fill_(True)

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.assign(s).softmax(1)  # (B,K,h,w), Σ_k a_ik = 1
        agg = torch.einsum("bkhw,kc->bchw", a, self.centres.to(s.dtype))  # Σ_k a_ik c_k
        # r_i = Σ_k a_ik (s_i − c_k) = s_i − Σ_k a_ik c_k   (because Σ_k a_ik = 1)
        r = s - agg
        if self.residual:
            # out_i = Σ_k a_ik c_k + r_i + g(r_i) = s_i + g(r_i): exactly the identity while g = 0 (its init)
            return s + self.g(r), r
        # out_i = Σ_k a_ik c_k + γ r_i = s_i + (γ − 1) r_i: identity at γ = 1, soft quantisation at γ = 0
        return s + (self.gamma - 1) * r, r


# -- the model: a structural wrapper around a base student ----------------------------------------------
class SNL(ADModel):
    """SNL around any base student that accepts a stage hook (`forward(x, t_feats, hook)`, `hook(stage,
    feature) -> feature` applied to each student stage's output): RD and FD.

    The base model keeps its own parts, loss and optimiser; SNL adds a CRAM per stage (through the hook), the
    structural loss terms and the local + structural maps with their calibration. Its options are the base
    model's plus `SNLConfig`'s, in one flat config (`RDSNLConfig`, `FDSNLConfig`), as runs store them.

    Terms the base loss already is are not added twice: FD's loss, per position ‖T̂ − Ŝ‖² of channel-normalised
    features, *is* the channel-wise term 1 − cos(T[:, i], S[:, i]) with weight 2 (`base_terms`), so FD+SNL leaves
    `use_ch` out.
    """

    report_maps = ("local", "struct")  # evaluate() measures each alone too
    # structural terms that a base model's loss already is, by base name
    base_terms: dict[str, frozenset[str]] = {"fd": frozenset({"ch"})}

    def __init__(self, base: ADModel, config: SNLConfig):
        nn.Module.__init__(self)
        self.config = config
        self.base = base  # owns the teacher (see `teacher`) and the student parts
        self.name = f"{base.name}+snl"
        channels = base.teacher.channels
        c = config
        if not 0 <= c.calib_holdout < 1:
            raise ValueError(f"calib_holdout must be in [0, 1), got {c.calib_holdout}")
        bad = [s for s in c.intra_stages if not 0 <= s < len(channels)]
        if bad:
            raise ValueError(f"intra_stages {bad} out of range for {len(channels)} teacher stages")
        self.cram = None  # off: no modules and no random draws, so the model is exactly the base
        if c.use_cram:
            self.cram = nn.ModuleList(CentralResidualAggregation(ch, c.cram_k, c.cram_residual) for ch in channels)
        # norm(M) = (M − μ) / σ over the pixels of training-normal maps (set by `calibrate`)
        for key in ("local", "struct"):
            self.register_buffer(f"{key}_mean", torch.tensor(0.0))
            self.register_buffer(f"{key}_std", torch.tensor(1.0))
        self._register_load_state_dict_pre_hook(self._unprefixed_base_keys)

    @property
    def teacher(self) -> Teacher:
        return self.base.teacher

    @property
    def train_channels_last(self) -> bool:
        return self.base.train_channels_last

    @property
    def calibration(self) -> Calibration:
        """The maps' statistics come from training normals: held-out ones with `calib_holdout`."""
        return Calibration(self.config.calib_holdout)

    def _unprefixed_base_keys(self, state, prefix, *args) -> None:
        """Checkpoints written before SNL was a wrapper (adkit ≤ 0.1.0 runs) name the base's parts without
        `base.`; they load unchanged (the parameters were created in the same order, so they are the same)."""
        own = {k.split(".")[0] for k in self.base.state_dict() if k.split(".")[0] != "teacher"}
        for k in list(state):
            head = k[len(prefix) :].split(".")[0] if k.startswith(prefix) else None
            if head in own:
                state[prefix + "base." + k[len(prefix) :]] = state.pop(k)

    def student_parameters(self):
        return list(self.base.student_parameters()) + ([] if self.cram is None else list(self.cram.parameters()))

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return self.base.configure_optimizer(self.student_parameters())

    def _apply_cram(self, stage: int, s: torch.Tensor, residuals: list) -> torch.Tensor:
        cram = self.cram[stage]
        if self.training and not bool(cram.initialised):  # first training batch: centres by k-means
            cram.init_centres(s.detach().permute(0, 2, 3, 1).flatten(0, 2), self.config.cram_kmeans_iters)
        s, r = cram(s)
        residuals.append(r)
        return s

    def forward(self, x: torch.Tensor, t_feats: list[torch.Tensor] | None = None) -> dict:
        residuals = []
        hook = None if self.cram is None else (lambda stage, s: self._apply_cram(stage, s, residuals))
        out = self.base(x, t_feats, hook)
        return {**out, "residuals": residuals}

    def loss(self, out: dict) -> dict[str, torch.Tensor]:
        c = self.config
        t_feats, s_feats = out["t_feats"], out["s_feats"]
        base = self.base.loss(out)["loss"]
        pairs = list(zip(t_feats, s_feats, strict=True))
        skip = self.base_terms.get(self.base.name, frozenset())
        terms = {}  # name -> (weight, value)
        if c.use_ch and "ch" not in skip:
            terms["ch"] = (c.lambda_ch, sum(channel_loss(t, s) for t, s in pairs))
        if c.use_sp and "sp" not in skip:
            terms["sp"] = (c.lambda_sp, sum(spatial_loss(t, s) for t, s in pairs))
        if c.use_intra and c.intra_stages:
            intra = [intra_affinity_loss(*pairs[i], c.intra_max_positions, c.intra_pool) for i in c.intra_stages]
            terms["intra"] = (c.lambda_intra, sum(intra))
        if c.use_inter:
            terms["inter"] = (c.lambda_inter, sum(inter_affinity_loss(t, s) for t, s in pairs))
        if c.use_cram and c.cram_compact > 0:
            # compactness: mean_i ‖r_i‖², summed over stages
            terms["compact"] = (c.cram_compact, sum(r.pow(2).sum(1).mean() for r in out["residuals"]))
        # L = L_base + Σ_l (λ_ch L_ch + λ_sp L_sp + λ_intra L_intra + λ_inter L_inter) + λ_c L_compact
        loss = base
        for w, v in terms.values():
            loss = loss + w * v
        return {"loss": loss, self.base.name: base.detach(), **{k: v.detach() for k, (_, v) in terms.items()}}

    def raw_maps(self, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised local and structural maps `(B,1,H,W)`, before the blur."""
        c = self.config
        t_feats, s_feats = out["t_feats"], out["s_feats"]
        pairs = zip(t_feats, s_feats, strict=True)
        local = fuse_maps([channel_distance(t, s) for t, s in pairs], out["size"], c.map_fusion)
        if not c.intra_stages:
            return local, torch.zeros_like(local)
        struct = [
            intra_affinity_distance(t_feats[i], s_feats[i], c.intra_max_positions, c.intra_pool) for i in c.intra_stages
        ]
        struct = fuse_maps(struct, out["size"], "sum")
        return local, struct

    def maps(self, out: dict) -> dict[str, torch.Tensor]:
        c = self.config
        local, struct = self.raw_maps(out)
        local = (local - self.local_mean) / self.local_std
        struct = (struct - self.struct_mean) / self.struct_std
        # M = norm(M_local) + α·norm(M_struct), then the blur (σ = 4)
        return {
            "amap": gaussian_blur(local + c.alpha * struct, c.blur_sigma),
            "local": gaussian_blur(local, c.blur_sigma),
            "struct": gaussian_blur(struct, c.blur_sigma),
        }

    def calibrate(
        self,
        xs: torch.Tensor,
        t_feats: list[torch.Tensor] | None = None,
        choice: CalibrationChoice | None = None,
        batch_size: int = 32,
    ) -> None:
        """Mean and std of the raw local and structural maps over all pixels of training normals (those the
        student was fitted on, or the held-out ones with `calib_holdout`); SNL makes no choice to keep."""
        self.calibrate_batches(windows(xs, t_feats, batch_size), choice)

    @torch.no_grad()
    def calibrate_batches(self, batches, choice: CalibrationChoice | None = None) -> None:
        """`calibrate` on normals given batch by batch (`(images, teacher features or None)`): running sums."""
        was = self.training
        self.eval()
        stats = torch.zeros(2, 3, dtype=torch.float64)  # per map: pixel count, Σ m, Σ m²
        for x, tf in batches:
            for j, m in enumerate(self.raw_maps(self(x, tf))):
                m = m.double()
                stats[j] += torch.stack([m.new_tensor(m.numel()), m.sum(), m.pow(2).sum()]).cpu()
        for key, (n, s1, s2) in zip(("local", "struct"), stats, strict=True):
            mu = s1 / n
            getattr(self, f"{key}_mean").fill_(float(mu))
            getattr(self, f"{key}_std").fill_(max(float((s2 / n - mu * mu).clamp_min(0).sqrt()), STD_FLOOR))
        self.train(was)


def _base_options(config, base_config_cls) -> dict:
    names = {f.name for f in fields(base_config_cls)}
    return {k: v for k, v in asdict(config).items() if k in names}


def rd_snl(teacher: Teacher, config: RDSNLConfig = RDSNLConfig()) -> SNL:
    """SNL on Reverse Distillation: a CRAM after each decoder stage, its output feeding the next stage."""
    return SNL(ReverseDistillation(teacher, RDConfig(**_base_options(config, RDConfig))), config)


def fd_snl(teacher: Teacher, config: FDSNLConfig = FDSNLConfig()) -> SNL:
    """SNL on forward distillation. The CRAMs act on the student's stage outputs just before the comparison
    (timm's `features_only` student runs as one piece), so they do not feed the student's next stage."""
    return SNL(ForwardDistillation(teacher, FDConfig(**_base_options(config, FDConfig))), config)


__all__ = ["SNL", "CentralResidualAggregation", "FDSNLConfig", "RDSNLConfig", "SNLConfig", "fd_snl", "kmeans", "rd_snl"]
