"""Datasets: loaders for on-disk formats and the embedded "mini" set, all yielding the same samples.

    ds = adkit.data.load("mini", split="test", image_size=128)   # builds mini under $ADKIT_DATA if missing
    ds = adkit.data.load("mvtec", root="data/mvtec", classes=["bottle"], split="train")

Every format module offers `records(root, split, classes)` and `check(root, classes)`; `FORMATS` maps a
name to its module. `--data NAME --root DIR` on the CLI goes through `load` and `check` here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..config import DATA_FORMATS as FORMATS  # name -> module, each with records(), check()[, prepare()]
from ..config import IMAGE_SIZE
from . import mini  # the embedded default (`adkit.data.mini.KINDS`: its classes, texture or object)
from .core import GOOD, DataError, ImageDataset, Record, data_root, load_all, stack

__all__ = [
    "GOOD",
    "DataError",
    "ImageDataset",
    "Record",
    "FORMATS",
    "data_root",
    "default_root",
    "load",
    "load_records",
    "run_records",
    "check",
    "load_all",
    "stack",
    "format_module",
    "mini",
]


def format_module(name: str):
    if name not in FORMATS:
        raise DataError(f"unknown dataset format {name!r}; choose one of: {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[name])


def default_root(name: str, root: str | Path | None = None) -> Path:
    """Where a dataset lives: `root` if given, else `$ADKIT_DATA/<folder>` (default `./data/<folder>`); the
    folder is the format's name unless its module names another (`FOLDER`: mini_semantic reads mini)."""
    return Path(root) if root else data_root() / getattr(format_module(name), "FOLDER", name)


def load_records(
    name: str, root: str | Path | None = None, split: str = "train", classes: list[str] | None = None
) -> list[Record]:
    mod = format_module(name)
    root = default_root(name, root)
    if hasattr(mod, "prepare"):
        mod.prepare(root)
    return mod.records(root, split=split, classes=classes)


def run_records(cfg, split: str = "train") -> list[Record]:
    """The records of a run's settings (`TrainConfig`: its data, root and classes) in `split`."""
    return load_records(cfg.data, cfg.root, split, list(cfg.classes) if cfg.classes else None)


def load(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    classes: list[str] | None = None,
    image_size: int = IMAGE_SIZE,
) -> ImageDataset:
    """A dataset split as an `ImageDataset` of Sample dicts at `image_size`."""
    return ImageDataset(load_records(name, root, split, classes), image_size)


def check(name: str, root: str | Path | None = None, classes: list[str] | None = None) -> dict:
    """`{"counts": {class: {split: {defect: n}}}, "problems": [...]}` — every problem, each naming its file."""
    mod = format_module(name)
    return mod.check(default_root(name, root), classes=classes)
