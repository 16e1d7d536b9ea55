"""Semantic AD protocols (METHODS §7): a labelled image set split into normal and anomalous classes.

One-vs-rest: one class normal, all others anomalous (CIFAR-10, Fashion-MNIST, digits; CIFAR-100 by its 20
super-classes). Multi-class: several classes normal at once (UniAD's CIFAR-10 splits). The `classes` given
to a semantic loader are the NORMAL classes (names or indices); None means the first class alone.

Train: the normal classes' training images. Test: every test image, label 1 unless its class is normal.
Every record's `cls` is the task name ("+".join(normal classes)), so per-class code sees one group; the
defect is "good" or the anomaly's true class, and `meta` holds ("true_class", name). No masks: image AUROC
only, pixel metrics are nan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .checks import tally
from .core import GOOD, DataError, Record

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    # the 20 super-classes ("coarse labels") of CIFAR-100, in label order
    "cifar100": (
        "aquatic_mammals",
        "fish",
        "flowers",
        "food_containers",
        "fruit_and_vegetables",
        "household_electrical_devices",
        "household_furniture",
        "insects",
        "large_carnivores",
        "large_man-made_outdoor_things",
        "large_natural_outdoor_scenes",
        "large_omnivores_and_herbivores",
        "medium_mammals",
        "non-insect_invertebrates",
        "people",
        "reptiles",
        "small_mammals",
        "trees",
        "vehicles_1",
        "vehicles_2",
    ),
    "fashion_mnist": (
        "t-shirt_top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle_boot",
    ),
    "digits": tuple(str(d) for d in range(10)),
}
SPLITS = ("train", "test")

# UniAD (You et al., NeurIPS 2022) multi-class CIFAR-10 protocol: the normal classes of its four tasks
UNIAD_CIFAR10_SPLITS = [
    [CLASS_NAMES["cifar10"][i] for i in s] for s in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 2, 4, 6, 8], [1, 3, 5, 7, 9])
]


def one_vs_rest(dataset: str) -> list[list[str]]:
    """The one-vs-rest tasks of a dataset: each class alone as the normal set."""
    return [[c] for c in CLASS_NAMES[dataset]]


def normal_classes(dataset: str, classes: Sequence[str | int] | None) -> list[str]:
    """Normal class names in dataset order; indices (also as strings: "3") are accepted; None means the
    first class."""
    names = CLASS_NAMES[dataset]
    if not classes:
        return [names[0]]
    picked, unknown = set(), []
    for c in [classes] if isinstance(classes, str) else classes:
        if str(c) in names:
            picked.add(str(c))
        elif str(c).isdigit() and int(c) < len(names):
            picked.add(names[int(c)])
        else:
            unknown.append(str(c))
    if unknown:
        raise DataError(f"{dataset}: unknown class(es) {', '.join(unknown)}; classes are: {', '.join(names)}")
    return [n for n in names if n in picked]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def task_name(normal: Sequence[str]) -> str:
    return "+".join(normal)


def make_records(
    dataset: str,
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    paths: Sequence[str],
    split: str,
    classes: Sequence[str | int] | None,
) -> list[Record]:
    """Records of a split under the protocol above; `images` are kept in memory as `Record.array`."""
    check_split(split)
    names = CLASS_NAMES[dataset]
    normal = set(normal_classes(dataset, classes))
    group = task_name([n for n in names if n in normal])
    out = []
    for img, y, path in zip(images, labels, paths, strict=True):
        true = names[int(y)]
        if split == "train" and true not in normal:
            continue
        is_normal = true in normal
        out.append(
            Record(
                path,
                0 if is_normal else 1,
                group,
                GOOD if is_normal else true,
                array=img,
                meta=(("true_class", true),),
            )
        )
    return out


def check(
    dataset: str,
    classes: Sequence[str | int] | None,
    records: Callable[[str], list[Record]],
    read: Callable[[str, list[str]], object],
) -> dict:
    """`check` of a semantic loader: unknown classes and every unreadable file (`read(split, problems)`
    notes them), then, when all is well, the task's records of both splits counted."""
    counts: dict = {}
    problems: list[str] = []
    try:
        normal_classes(dataset, classes)
    except DataError as err:
        problems.append(str(err))
    for split in SPLITS:
        read(split, problems)
    if not problems:
        for split in SPLITS:
            tally(records(split), split, counts, problems, deep=False)
    return {"counts": counts, "problems": problems}
