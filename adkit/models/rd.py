"""Reverse Distillation (Deng & Li, "Anomaly Detection via Reverse Distillation from One-Class Embedding",
CVPR 2022; official code hq-deng/RD4AD).

The frozen teacher encodes the image; a trainable one-class bottleneck embedding (OCBE) fuses its three
stages into one compact code; a decoder that mirrors the teacher reconstructs the teacher's stages from
that code. On normal images the reconstruction matches; on anomalies it does not, because the code
cannot carry what training never showed. Map: per-stage `1 − cos`, upsampled, summed, blurred; score: max.
OCBE and decoder are sized from the teacher's `feature_info`; with `wide_resnet50_2` they follow the
official layout (bottleneck blocks, 3 in the OCBE, decoder stages of 3, 4, 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import Teacher
from ..losses import cosine_map, fuse_maps, gaussian_blur, rd_loss
from .base import ADModel


@dataclass(frozen=True)
class RDConfig:
    ocbe_blocks: int = 3  # official: 3 bottleneck blocks in the OCBE
    decoder_blocks: tuple[int, int, int] = (3, 4, 6)  # official de_wide_resnet50_2, deepest stage first
    width_mult: float | None = None  # bottleneck width = out/4 · width_mult; None: 2 for wide_*, 1 resnets, 2 else
    map_fusion: str = "sum"  # METHODS §2: sum over stages
    blur_sigma: float = 4.0  # Gaussian σ = 4
    score: str = "max"  # image score = max of the map
    lr: float = 0.005  # Adam lr 0.005, betas (0.5, 0.999) (official train script)
    betas: tuple[float, float] = (0.5, 0.999)


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


def default_width_mult(backbone: str) -> float:
    if backbone.startswith("wide_"):
        return 2.0
    return 1.0 if backbone.startswith("resnet") else 2.0  # thin CNNs (EfficientNet): our choice (speed on CPU)


class OCBE(nn.Module):
    """One-class bottleneck embedding: fuse stages 1–3 at stride 16, then a strided bottleneck stage."""

    def __init__(self, channels: list[int], n_blocks: int, width_mult: float):
        super().__init__()
        c1, c2, c3 = channels
        # multi-scale fusion: stage 1 by two stride-2 3×3 convs (c1→c2→c3), stage 2 by one (c2→c3)
        self.down1 = nn.Sequential(conv_bn(c1, c2, 3, 2), conv_bn(c2, c3, 3, 2))
        self.down2 = conv_bn(c2, c3, 3, 2)
        c_out = 2 * c3
        width = int(c_out // 4 * width_mult)
        blocks = [Bottleneck(3 * c3, c_out, width, "down")]
        blocks += [Bottleneck(c_out, c_out, width) for _ in range(n_blocks - 1)]
        self.embed = nn.Sequential(*blocks)
        self.out_channels = c_out

    def forward(self, t_feats: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = t_feats
        fused = torch.cat([self.down1(f1), self.down2(f2), f3], dim=1)  # (B, 3·c3, H/16, W/16)
        return self.embed(fused)  # (B, 2·c3, H/32, W/32)


class Decoder(nn.Module):
    """The teacher mirrored: per stage an upsampling bottleneck then plain ones; emits stages 3, 2, 1."""

    def __init__(self, c_in: int, channels: list[int], blocks: tuple[int, ...], width_mult: float):
        super().__init__()
        self.stages = nn.ModuleList()
        for c_out, n in zip(reversed(channels), blocks):
            width = max(1, int(c_out // 4 * width_mult))
            layers = [Bottleneck(c_in, c_out, width, "up")]
            layers += [Bottleneck(c_out, c_out, width) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*layers))
            c_in = c_out

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            z = stage(z)
            outs.append(z)
        return outs[::-1]  # shallowest first, like the teacher


class ReverseDistillation(ADModel):
    name = "rd"

    def __init__(self, teacher: Teacher, config: RDConfig = RDConfig()):
        super().__init__(teacher, config)
        if len(teacher.channels) != 3 or teacher.kind != "cnn":
            raise ValueError("RD needs a CNN teacher with three stages at strides 4, 8, 16")
        wm = config.width_mult or default_width_mult(teacher.name)
        self.ocbe = OCBE(teacher.channels, config.ocbe_blocks, wm)
        self.decoder = Decoder(self.ocbe.out_channels, teacher.channels, config.decoder_blocks, wm)

    def forward(self, x: torch.Tensor, t_feats: list[torch.Tensor] | None = None) -> dict:
        t_feats = self.teacher_features(x) if t_feats is None else [t.detach() for t in t_feats]
        s_feats = self.decoder(self.ocbe(t_feats))
        return {"t_feats": t_feats, "s_feats": s_feats, "size": tuple(x.shape[-2:])}

    def loss(self, out: dict) -> dict[str, torch.Tensor]:
        loss = rd_loss(out["t_feats"], out["s_feats"])
        return {"loss": loss, "rd": loss.detach()}

    def maps(self, out: dict) -> dict[str, torch.Tensor]:
        per_stage = [cosine_map(t, s) for t, s in zip(out["t_feats"], out["s_feats"])]
        local = fuse_maps(per_stage, out["size"], self.config.map_fusion)
        return {"amap": gaussian_blur(local, self.config.blur_sigma), "local": local}

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.student_parameters(), lr=self.config.lr, betas=self.config.betas)
