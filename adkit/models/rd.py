"""Reverse Distillation (Deng & Li, "Anomaly Detection via Reverse Distillation from One-Class Embedding",
CVPR 2022; official code hq-deng/RD4AD).

The frozen teacher encodes the image; a trainable one-class bottleneck embedding (OCBE) fuses its three
stages into one compact code; a decoder that mirrors the teacher reconstructs the teacher's stages from
that code. On normal images the reconstruction matches; on anomalies it does not, because the code
cannot carry what training never showed. Map: per-stage `1 − cos`, upsampled, summed, blurred; score: max.
OCBE and decoder are sized from the teacher's `feature_info`. With ResNet teachers they follow the official
layout: `wide_resnet50_2`/`resnet50` bottleneck blocks (3 in the OCBE, decoder stages of 3, 4, 6), `resnet18`
basic blocks (2; 2, 2, 2), `resnet34` basic blocks (3; 3, 4, 6), convolutions initialised kaiming-normal
(fan-out) and batch norms to (1, 0). Other teachers (the embedded EfficientNet) get bottleneck blocks and
PyTorch's default initialisation: that layout is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import Teacher
from ..losses import cosine_map, rd_loss
from ..scoring import BLUR_SIGMA, fuse_maps, gaussian_blur
from .base import ADModel


@dataclass(frozen=True)
class RDConfig:
    ocbe_blocks: int | None = None  # None: official per backbone (resnet18: 2, else 3)
    decoder_blocks: tuple[int, int, int] | None = None  # None: official, deepest stage first (resnet18: 2, 2, 2;
    #                                                     else 3, 4, 6 as de_resnet34 / de_wide_resnet50_2)
    block: str = "auto"  # "basic" | "bottleneck" | "auto": basic for resnet18/34 teachers, as the official code
    init: str = "auto"  # "official" (kaiming-normal fan-out convs, BN 1/0) | "torch" | "auto": official for ResNets
    width_mult: float | None = None  # bottleneck width = out/4 · width_mult; None: 2 for wide_*, 1 resnets, 2 else
    map_fusion: str = "sum"  # METHODS §2: sum over stages
    blur_sigma: float = BLUR_SIGMA  # Gaussian σ = 4
    score: str = "max"  # image score = max of the map
    lr: float = 0.005  # Adam lr 0.005, betas (0.5, 0.999) (official train script)
    betas: tuple[float, float] = (0.5, 0.999)


BASIC_BLOCK_TEACHERS = ("resnet18", "resnet34")


def official_layout(config: RDConfig, backbone: str) -> tuple[str, int, tuple[int, ...], str]:
    """(block, OCBE blocks, decoder blocks, init) for a teacher, the config's explicit choices first."""
    block = config.block
    if block == "auto":
        block = "basic" if backbone in BASIC_BLOCK_TEACHERS else "bottleneck"
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"RD block must be basic, bottleneck or auto, got {block!r}")
    init = config.init
    if init == "auto":
        init = "official" if backbone.startswith(("resnet", "wide_resnet")) else "torch"
    if init not in ("official", "torch"):
        raise ValueError(f"RD init must be official, torch or auto, got {init!r}")
    ocbe = config.ocbe_blocks or (2 if backbone == "resnet18" else 3)
    decoder = tuple(config.decoder_blocks or ((2, 2, 2) if backbone == "resnet18" else (3, 4, 6)))
    return block, ocbe, decoder, init


def official_init(module: nn.Module) -> None:
    """The official RD4AD initialisation: every `Conv2d` kaiming-normal (fan-out, ReLU), every batch norm
    weight 1 and bias 0; transposed convolutions keep PyTorch's default (they are not `Conv2d`s there either)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def conv_bn(c_in: int, c_out: int, k: int = 1, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def deconv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """2×2 transposed convolution, stride 2: the decoder's upsampling step."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 2, 2, bias=False), nn.BatchNorm2d(c_out))


class Bottleneck(nn.Module):
    """ResNet bottleneck (1×1, 3×3, 1×1 + shortcut). `resample`: "down" (stride 2), "up" (2×2 deconv) or None."""

    def __init__(self, c_in: int, c_out: int, width: int, resample: str | None = None):
        super().__init__()
        self.reduce = conv_bn(c_in, width, 1)
        if resample == "up":
            self.mid = nn.Sequential(deconv_bn(width, width), nn.ReLU(inplace=True))
        else:
            self.mid = conv_bn(width, width, 3, stride=2 if resample == "down" else 1)
        self.expand = conv_bn(width, c_out, 1, relu=False)
        if resample == "up":
            self.shortcut = deconv_bn(c_in, c_out)
        elif resample == "down" or c_in != c_out:
            self.shortcut = conv_bn(c_in, c_out, 1, stride=2 if resample == "down" else 1, relu=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.expand(self.mid(self.reduce(x))) + self.shortcut(x))


class BasicBlock(nn.Module):
    """ResNet basic block (3×3, 3×3 + shortcut). `resample`: "down" (the first conv with stride 2), "up" (the
    first conv a 2×2 transposed convolution with stride 2, as the official decoder) or None."""

    def __init__(self, c_in: int, c_out: int, resample: str | None = None):
        super().__init__()
        if resample == "up":
            self.first = nn.Sequential(deconv_bn(c_in, c_out), nn.ReLU(inplace=True))
            self.shortcut = deconv_bn(c_in, c_out)
        else:
            self.first = conv_bn(c_in, c_out, 3, stride=2 if resample == "down" else 1)
            if resample == "down" or c_in != c_out:
                self.shortcut = conv_bn(c_in, c_out, 1, stride=2 if resample == "down" else 1, relu=False)
            else:
                self.shortcut = nn.Identity()
        self.second = conv_bn(c_out, c_out, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.second(self.first(x)) + self.shortcut(x))


def make_block(kind: str, c_in: int, c_out: int, width: int, resample: str | None = None) -> nn.Module:
    return BasicBlock(c_in, c_out, resample) if kind == "basic" else Bottleneck(c_in, c_out, width, resample)


def default_width_mult(backbone: str) -> float:
    if backbone.startswith("wide_"):
        return 2.0
    return 1.0 if backbone.startswith("resnet") else 2.0  # thin CNNs (EfficientNet): our choice (speed on CPU)


class OCBE(nn.Module):
    """One-class bottleneck embedding: fuse stages 1–3 at stride 16, then a strided stage of residual blocks."""

    def __init__(self, channels: list[int], n_blocks: int, width_mult: float, block: str = "bottleneck"):
        super().__init__()
        c1, c2, c3 = channels
        # multi-scale fusion: stage 1 by two stride-2 3×3 convs (c1→c2→c3), stage 2 by one (c2→c3)
        self.down1 = nn.Sequential(conv_bn(c1, c2, 3, 2), conv_bn(c2, c3, 3, 2))
        self.down2 = conv_bn(c2, c3, 3, 2)
        c_out = 2 * c3
        width = int(c_out // 4 * width_mult)
        blocks = [make_block(block, 3 * c3, c_out, width, "down")]
        blocks += [make_block(block, c_out, c_out, width) for _ in range(n_blocks - 1)]
        self.embed = nn.Sequential(*blocks)
        self.out_channels = c_out

    def forward(self, t_feats: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = t_feats
        fused = torch.cat([self.down1(f1), self.down2(f2), f3], dim=1)  # (B, 3·c3, H/16, W/16)
        return self.embed(fused)  # (B, 2·c3, H/32, W/32)


class Decoder(nn.Module):
    """The teacher mirrored: per stage an upsampling block then plain ones; emits stages 3, 2, 1."""

    def __init__(
        self, c_in: int, channels: list[int], blocks: tuple[int, ...], width_mult: float, block: str = "bottleneck"
    ):
        super().__init__()
        self.stages = nn.ModuleList()
        for c_out, n in zip(reversed(channels), blocks):
            width = max(1, int(c_out // 4 * width_mult))
            layers = [make_block(block, c_in, c_out, width, "up")]
            layers += [make_block(block, c_out, c_out, width) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*layers))
            c_in = c_out

    def forward(self, z: torch.Tensor, hook=None) -> list[torch.Tensor]:
        """`hook(stage, feature) -> feature` (optional) acts on each stage's output before it feeds the next;
        `stage` is the teacher stage it mirrors (the deepest first: decoder stage j mirrors stage n−1−j)."""
        outs, n = [], len(self.stages)
        for j, stage in enumerate(self.stages):
            z = stage(z)
            if hook is not None:
                z = hook(n - 1 - j, z)
            outs.append(z)
        return outs[::-1]  # shallowest first, like the teacher


class ReverseDistillation(ADModel):
    name = "rd"

    def __init__(self, teacher: Teacher, config: RDConfig = RDConfig()):
        super().__init__(teacher, config)
        if len(teacher.channels) != 3 or teacher.kind != "cnn":
            raise ValueError("RD needs a CNN teacher with three stages at strides 4, 8, 16")
        wm = config.width_mult or default_width_mult(teacher.name)
        block, n_ocbe, n_decoder, init = official_layout(config, teacher.name)
        self.ocbe = OCBE(teacher.channels, n_ocbe, wm, block)
        self.decoder = Decoder(self.ocbe.out_channels, teacher.channels, n_decoder, wm, block)
        if init == "official":
            official_init(self.ocbe)
            official_init(self.decoder)

    def forward(self, x: torch.Tensor, t_feats: list[torch.Tensor] | None = None, hook=None) -> dict:
        t_feats = self.teacher_features(x, t_feats)
        s_feats = self.decoder(self.ocbe(t_feats), hook)
        return {"t_feats": t_feats, "s_feats": s_feats, "size": tuple(x.shape[-2:])}

    def loss(self, out: dict) -> dict[str, torch.Tensor]:
        loss = rd_loss(out["t_feats"], out["s_feats"])
        return {"loss": loss, "rd": loss.detach()}

    def maps(self, out: dict) -> dict[str, torch.Tensor]:
        per_stage = [cosine_map(t, s) for t, s in zip(out["t_feats"], out["s_feats"])]
        local = fuse_maps(per_stage, out["size"], self.config.map_fusion)
        return {"amap": gaussian_blur(local, self.config.blur_sigma), "local": local}

    def configure_optimizer(self, params=None) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters_to_train(params), lr=self.config.lr, betas=self.config.betas)
