"""Fashion-MNIST (Xiao et al., 2017) as a semantic AD set (protocols in `semantic`).

    <root>/{train,t10k}-images-idx3-ubyte.gz, <root>/{train,t10k}-labels-idx1-ubyte.gz

The IDX files may also be unzipped, or under torchvision's `FashionMNIST/raw/`. Images are 28x28 grayscale
uint8 in `Record.array` (`core.load_record` repeats them to RGB), paths `<file>#<index>`.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import semantic
from .checks import fail
from .core import DataError, Record

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MAGIC = {3: 2051, 1: 2049}  # IDX magic of uint8 images (3 dims) and labels (1 dim)
URL = "https://github.com/zalandoresearch/fashion-mnist (data/fashion/)"


def find(root: Path, name: str) -> Path:
    """`name.gz` or `name` under root or root/FashionMNIST/raw; the first candidate if none exists."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        for path in (folder / f"{name}.gz", folder / name):
            if path.is_file():
                return path
    return root / f"{name}.gz"


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of uint8 with `ndim` dimensions, gzipped or not."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(
            f"{path}: not found; download the four Fashion-MNIST .gz files from {URL} into {path.parent}"
        ) from None
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: unreadable ({err}); re-download it") from None
    magic = int.from_bytes(raw[:4], "big")
    if magic != MAGIC[ndim]:
        raise DataError(
            f"{path}: magic number {magic} is not {MAGIC[ndim]} (IDX uint8, {ndim} dims); "
            "wrong or corrupt file, re-download it"
        )
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    if len(raw) != 4 + 4 * ndim + int(np.prod(dims)):
        raise DataError(f"{path}: {len(raw)} bytes do not match the header's shape {dims}; truncated? re-download it")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read(root: Path, split: str, problems: list[str] | None = None):
    """Images `(N,28,28)`, labels `(N,)` and paths of one split, or None after a noted problem."""
    arrays = []
    for name, ndim in zip(FILES[split], (3, 1), strict=True):
        try:
            arrays.append(read_idx(find(root, name), ndim))
        except DataError as err:
            fail(problems, str(err))
    if len(arrays) < 2:
        return None
    x, y = arrays
    if len(x) != len(y) or (len(y) and y.max() > 9):
        fail(problems, f"{find(root, FILES[split][1])}: {len(y)} labels (0..9 expected) for {len(x)} images")
        return None
    path = find(root, FILES[split][0])
    return x, y, [f"{path}#{i}" for i in range(len(x))]


def records(root: str | Path, split: str = "train", classes: Sequence[str | int] | None = None) -> list[Record]:
    """Records of a semantic task; `classes` are the normal classes (default: the first class only)."""
    semantic.check_split(split)
    semantic.normal_classes("fashion_mnist", classes)  # unknown classes fail before the files are read
    images, labels, paths = _read(Path(root), split)
    return semantic.make_records("fashion_mnist", images, labels, paths, split, classes)


def check(root: str | Path, classes: Sequence[str | int] | None = None) -> dict:
    """Counts of the task's records per split and defect; every unreadable file or unknown class."""
    return semantic.check(
        "fashion_mnist",
        classes,
        lambda split: records(root, split, classes),
        lambda split, problems: _read(Path(root), split, problems),
    )
