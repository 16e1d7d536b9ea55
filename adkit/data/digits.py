"""scikit-learn's bundled handwritten digits (`load_digits`, 1797 images of 8x8 in 0..16) as an embedded
semantic AD set: no download, no root (protocols in `semantic`).

A stratified 50/50 train/test split drawn with `seed`; images upscaled (nearest) to 32x32 and stored as RGB
uint8 in `Record.array`, paths `sklearn:load_digits#<index>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import semantic
from .core import Record

SIZE = 32
PATH = "sklearn:load_digits"


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    """Images `(N,32,32,3)` uint8, upscaled nearest from 8x8 in 0..16, and digit labels `(N,)`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)  # (N,8,8)
    k = SIZE // x.shape[1]
    x = x.repeat(k, axis=1).repeat(k, axis=2)  # (N,32,32)
    return np.repeat(x[..., None], 3, axis=3), digits.target  # (N,32,32,3), (N,)


@lru_cache(maxsize=4)
def _split(seed: int) -> dict[str, np.ndarray]:
    """Indices of the train and test halves, stratified by digit."""
    from sklearn.model_selection import train_test_split

    y = _load()[1]
    train, test = train_test_split(np.arange(len(y)), test_size=0.5, stratify=y, random_state=seed)
    return {"train": np.sort(train), "test": np.sort(test)}


def _read(split: str, seed: int):
    images, labels = _load()
    idx = _split(seed)[split]
    return images[idx], labels[idx], [f"{PATH}#{i}" for i in idx]


def records(
    root: str | Path | None = None,
    split: str = "train",
    classes: Sequence[str | int] | None = None,
    seed: int = 0,
) -> list[Record]:
    """Records of a semantic task; `classes` are the normal digits (default: "0" only); `root` is unused."""
    semantic.check_split(split)
    semantic.normal_classes("digits", classes)
    images, labels, paths = _read(split, seed)
    return semantic.make_records("digits", images, labels, paths, split, classes)


def check(root: str | Path | None = None, classes: Sequence[str | int] | None = None, seed: int = 0) -> dict:
    """Counts of the task's records per split and defect; an unknown class is the only possible problem."""
    return semantic.check(
        "digits", classes, lambda split: records(root, split, classes, seed), lambda split, problems: None
    )
