"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) as semantic AD sets (protocols in `semantic`).

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <root>/cifar-100-python/{train, test, meta}        (classes: the 20 coarse super-classes)

The batches are Python pickles (the official "python version" of the data). A pickle can name any function
to call, so they are read with a restricted unpickler that admits only what numpy arrays, dicts, lists and
bytes need (`SafeUnpickler.ALLOWED`) and refuses every other global by file name: a crafted batch cannot
run code. Images are 32x32x3 uint8 in `Record.array`, paths `<file>#<index>`. With both sets under one
root, the class names pick the set.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import semantic
from .checks import fail
from .core import DataError, Record


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data only: builtins' containers and numpy arrays; any other global is refused."""

    ALLOWED = {
        # numpy arrays as pickled by Python 2 (the official files) and by numpy 1.x / 2.x under Python 3
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # Python 3 pickles of bytes at protocol < 3: encode(str, "latin1")
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name} (not plain data)")
        return super().find_class(module, name)


def safe_load(path: str | Path) -> dict:
    """A CIFAR batch: a dict read by `SafeUnpickler`; object arrays (which could hold anything) are refused."""
    with open(path, "rb") as f:
        batch = SafeUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise pickle.UnpicklingError("not a dict of arrays")
    for v in batch.values():
        if isinstance(v, np.ndarray) and v.dtype.hasobject:
            raise pickle.UnpicklingError("holds an object array")
    return batch


DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"train": ["train"], "test": ["test"]},
}
LABEL_KEY = {"cifar10": b"labels", "cifar100": b"coarse_labels"}
URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}


def which(root: str | Path, classes: Sequence[str | int] | None = None, dataset: str | None = None) -> str:
    """ "cifar10" or "cifar100": `dataset` if given, else the one present, else the one naming `classes`."""
    if dataset is not None:
        if dataset not in DIRS:
            raise ValueError(f"dataset must be one of {tuple(DIRS)}, got {dataset!r}")
        return dataset
    present = [d for d, folder in DIRS.items() if (Path(root) / folder).is_dir()]
    if len(present) == 1:
        return present[0]
    if not present:
        raise DataError(
            f"{root}: neither {DIRS['cifar10']}/ nor {DIRS['cifar100']}/ found; download "
            f"{URLS['cifar10']} or {URLS['cifar100']} and unpack it into {root}"
        )
    named = [d for d in DIRS if classes and all(str(c) in semantic.CLASS_NAMES[d] for c in classes)]
    if len(named) != 1:
        raise DataError(
            f"{root}: holds both CIFAR-10 and CIFAR-100; name classes of one set "
            "(e.g. airplane or aquatic_mammals) or pass dataset="
        )
    return named[0]


def _read(root: Path, dataset: str, split: str, problems: list[str] | None = None):
    """Images `(N,32,32,3)` uint8, labels `(N,)` and paths of one split, or None after a noted problem."""
    images, labels, paths = [], [], []
    for name in FILES[dataset][split]:
        path = root / DIRS[dataset] / name
        try:
            batch = safe_load(path)
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.asarray(batch[LABEL_KEY[dataset]], dtype=np.int64)
        except FileNotFoundError:
            fail(problems, f"{path}: not found; unpack {URLS[dataset]} into {root}")
            continue
        except (
            pickle.UnpicklingError,
            EOFError,
            OSError,
            KeyError,
            TypeError,
            ValueError,
            IndexError,
        ) as err:
            fail(
                problems,
                f"{path}: not a {dataset} python batch ({type(err).__name__}: {err}); re-download it",
            )
            continue
        n_classes = len(semantic.CLASS_NAMES[dataset])
        if len(y) != len(x) or (len(y) and (y.min() < 0 or y.max() >= n_classes)):
            fail(problems, f"{path}: {len(x)} images but {len(y)} labels or labels outside 0..{n_classes - 1}")
            continue
        images.append(np.ascontiguousarray(x))  # (N,32,32,3)
        labels.append(y)
        paths += [f"{path}#{i}" for i in range(len(y))]
    if len(images) < len(FILES[dataset][split]):
        return None
    return np.concatenate(images), np.concatenate(labels), paths


def records(
    root: str | Path,
    split: str = "train",
    classes: Sequence[str | int] | None = None,
    dataset: str | None = None,
) -> list[Record]:
    """Records of a semantic task; `classes` are the normal classes (default: the first class only)."""
    semantic.check_split(split)
    dataset = which(root, classes, dataset)
    semantic.normal_classes(dataset, classes)  # unknown classes fail before the files are read
    images, labels, paths = _read(Path(root), dataset, split)
    return semantic.make_records(dataset, images, labels, paths, split, classes)


def check(root: str | Path, classes: Sequence[str | int] | None = None, dataset: str | None = None) -> dict:
    """Counts of the task's records per split and defect; every unreadable file or unknown class."""
    try:
        dataset = which(root, classes, dataset)
    except DataError as err:
        return {"counts": {}, "problems": [str(err)]}
    return semantic.check(
        dataset,
        classes,
        lambda split: records(root, split, classes, dataset),
        lambda split, problems: _read(Path(root), dataset, split, problems),
    )
