"""Models: a plain registry and one `create`.

    model = adkit.models.create("rd", backbone="efficientnet_lite0")
    model = adkit.models.create("fd", teacher=teacher, map_fusion="sum")

Options are fields of the model's frozen config dataclass; unknown options are an error.
"""

from __future__ import annotations

import dataclasses
import os

from .. import backbones
from ..backbones import Teacher
from .base import ADModel
from .dual import DualConfig, DualStudent
from .dual import input_teacher as dual_input_teacher
from .fd import FDConfig, ForwardDistillation
from .rd import RDConfig, ReverseDistillation
from .snl import SNL, FDSNLConfig, RDSNLConfig, fd_snl, rd_snl

# name -> (constructor (teacher, config) -> model: a model class, or a function that composes one; config class)
MODELS: dict[str, tuple] = {
    "rd": (ReverseDistillation, RDConfig),
    "fd": (ForwardDistillation, FDConfig),
    "rd+snl": (rd_snl, RDSNLConfig),  # SNL around RD (composition: adkit.models.snl.SNL)
    "fd+snl": (fd_snl, FDSNLConfig),
    "dual": (DualStudent, DualConfig),
}


def make_config(name: str, **options):
    """The model's config with `options` applied; lists become tuples (JSON round trips)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    cls = MODELS[name][1]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {unknown}; options: {sorted(fields)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


def input_teacher(name: str, teacher: Teacher, **options) -> Teacher:
    """The teacher as model `name` reads it, for a training feature cache built before the model: the teacher
    itself, except for the dual student on a ViT, which also takes the class token (`DualConfig.global_token`)."""
    config = make_config(name, **options)
    return dual_input_teacher(teacher, config) if name == "dual" else teacher


def create(
    name: str,
    backbone: str = backbones.EMBEDDED,
    teacher: Teacher | None = None,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    **options,
) -> ADModel:
    """A model by registry name on a teacher (given, or created from `backbone`)."""
    config = make_config(name, **options)
    if teacher is None:
        teacher = backbones.create(backbone, pretrained=pretrained, weights=weights)
    return MODELS[name][0](teacher, config)


__all__ = [
    "MODELS",
    "ADModel",
    "create",
    "input_teacher",
    "make_config",
    "RDConfig",
    "FDConfig",
    "ReverseDistillation",
    "ForwardDistillation",
    "SNL",
    "RDSNLConfig",
    "FDSNLConfig",
    "DualStudent",
    "DualConfig",
]
