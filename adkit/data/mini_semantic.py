"""`--data mini_semantic`: the embedded photographs as a semantic AD task (METHODS §7), offline.

The `classes` given are the NORMAL classes of mini (default: its first class); the normal test photos of
every other mini class are the anomalies. The synthetic defects are left out: the question here is "is this
a photo of a class I was trained on?", not "is something wrong in it?". Same record conventions as the other
semantic loaders (`adkit.data.semantic`): `cls` is the task name ("+".join(normal classes)), the defect is
"good" or the anomaly's true class, no masks. The files are mini's own, under `$ADKIT_DATA/mini`.
"""

from __future__ import annotations

from pathlib import Path

from . import mini, semantic
from .checks import tally
from .core import GOOD, DataError, Record

FOLDER = "mini"  # the default root is mini's folder, not one of its own


def prepare(root: str | Path | None = None, progress: bool = True) -> Path:
    return mini.prepare(root, progress=progress)


def normal_classes(root: str | Path, classes: list[str] | None) -> list[str]:
    """The normal classes in mini's order; an unknown name is an error that lists the known ones."""
    found = sorted({r.cls for r in mini.records(root, "train")}, key=lambda c: (c not in mini.CLASSES, c))
    if not classes:
        return found[:1]
    unknown = [c for c in classes if c not in found]
    if unknown:
        raise DataError(f"mini_semantic: unknown class(es) {', '.join(unknown)}; classes are: {', '.join(found)}")
    if len(set(classes)) == len(found):
        raise DataError("mini_semantic: every class is normal, so nothing is left to be an anomaly")
    return [c for c in found if c in classes]


def records(root: str | Path, split: str = "train", classes: list[str] | None = None) -> list[Record]:
    """Train: the normal classes' training photos. Test: the normal test photos of every class."""
    semantic.check_split(split)
    normal = normal_classes(root, classes)
    group = semantic.task_name(normal)
    out = []
    for r in mini.records(root, split):
        if r.defect != GOOD or (split == "train" and r.cls not in normal):
            continue
        is_normal = r.cls in normal
        out.append(
            Record(r.path, 0 if is_normal else 1, group, GOOD if is_normal else r.cls, meta=(("true_class", r.cls),))
        )
    return out


def check(root: str | Path, classes: list[str] | None = None) -> dict:
    """mini's own check, then the task's records of both splits counted (or why they cannot be)."""
    out = mini.check(root, deep=False)
    if not out["problems"]:
        counts: dict = {}
        try:
            for split in semantic.SPLITS:
                tally(records(root, split, classes), split, counts, out["problems"], deep=False)
            out["counts"] = counts
        except DataError as err:
            out["problems"].append(str(err))
    return out
