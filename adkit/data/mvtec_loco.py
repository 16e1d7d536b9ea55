"""MVTec LOCO AD (Bergmann et al., IJCV 2022): structural and logical anomalies.

    <class>/{train,validation}/good/*.png, <class>/test/{good,logical_anomalies,structural_anomalies}/*.png
    <class>/ground_truth/<type>/<stem>/000.png   (001.png, ... when a defect has several regions)

All mask files of an image go into `Record.mask_paths`; `core.load_record` OR-merges them.
"""

from __future__ import annotations

from pathlib import Path

from .checks import check_splits, fail, image_files, resolve_classes
from .core import GOOD, Record

SPLITS = ("train", "validation", "test")


def list_classes(root: str | Path) -> list[str]:
    """Class folders under `root` (those with a `train` or `test` folder)."""
    root = Path(root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))


def _scan(root: Path, split: str, classes: list[str] | None, problems: list[str] | None) -> list[Record]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    found = list_classes(root) if root.is_dir() else []
    if not found:
        fail(
            problems,
            f"{root}: no class folders in MVTec LOCO layout (expected <class>/train/good and "
            "<class>/test/<type>); pass --root DIR or set $ADKIT_DATA",
        )
    out: list[Record] = []
    for cls in resolve_classes(found, classes, root, problems):
        split_dir = root / cls / split
        if not split_dir.is_dir():
            fail(problems, f"{split_dir}: missing folder; MVTec LOCO layout needs <class>/{split}/")
            continue
        defects = sorted(p.name for p in split_dir.iterdir() if p.is_dir()) if split == "test" else [GOOD]
        n_before = len(out)
        for defect in defects:
            if not (split_dir / defect).is_dir():
                fail(
                    problems,
                    f"{split_dir / defect}: missing folder; {split} images go in <class>/{split}/good/",
                )
                continue
            for p in image_files(split_dir / defect):
                if defect == GOOD:
                    out.append(Record(str(p), 0, cls, GOOD))
                    continue
                mask_dir = root / cls / "ground_truth" / defect / p.stem
                masks = image_files(mask_dir) if mask_dir.is_dir() else []
                if not masks:
                    fail(problems, f"{p}: its mask is missing (expected {mask_dir / '000.png'})")
                    continue
                out.append(Record(str(p), 1, cls, defect, tuple(str(m) for m in masks)))
        if len(out) == n_before:
            fail(problems, f"{split_dir}: no images for class {cls!r} in split {split!r}")
    return out


def records(root: str | Path, split: str = "train", classes: list[str] | None = None) -> list[Record]:
    """Records of one split ("train", "validation" or "test"); anomalies carry all their mask files."""
    return _scan(Path(root), split, classes, None)


def check(root: str | Path, classes: list[str] | None = None, deep: bool = True) -> dict:
    """Count images per class, split and defect; list every problem, each naming its file."""
    return check_splits(_scan, Path(root), SPLITS, classes, deep)
