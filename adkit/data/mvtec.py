"""MVTec AD layout: `<class>/train/good`, `<class>/test/<defect>`, `<class>/ground_truth/<defect>/<stem>_mask.png`.

Reads MVTec AD itself (Bergmann et al., CVPR 2019) and any folder in its layout, the embedded "mini" set
included. `records` raises on the first problem; `check` walks everything and lists every problem.
"""

from __future__ import annotations

from pathlib import Path

from .checks import check_splits, fail, image_files, resolve_classes
from .core import GOOD, DataError, Record

SPLITS = ("train", "test")


def list_classes(root: str | Path) -> list[str]:
    """Class folders under `root` (those with a `train` or `test` folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found; pass --root DIR or set $ADKIT_DATA")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))


def mask_path(root: Path, cls: str, defect: str, stem: str) -> Path:
    return root / cls / "ground_truth" / defect / f"{stem}_mask.png"


def _classes(root: Path, classes: list[str] | None, problems: list[str] | None) -> list[str]:
    found = list_classes(root)
    if not found:
        fail(
            problems,
            f"{root}: no class folders in MVTec AD layout (expected <class>/train/good and <class>/test/<defect>)",
        )
    return resolve_classes(found, classes, root, problems)


def _scan(root: Path, split: str, classes: list[str] | None, problems: list[str] | None) -> list[Record]:
    """One split's records. Train: `train/good` only (other folders there are a problem when collecting).
    Test: every defect folder, each defect image with its `<stem>_mask.png`."""
    out: list[Record] = []
    for cls in _classes(root, classes, problems):
        split_dir = root / cls / split
        if not split_dir.is_dir():
            fail(problems, f"{split_dir}: missing folder; MVTec AD layout needs <class>/{split}/")
            continue
        found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        defects = found if split == "test" else [GOOD]
        if split == "train":
            extra = [d for d in found if d != GOOD]
            if extra and problems is not None:
                problems.append(f"{split_dir}: unexpected folder(s) {', '.join(extra)}; train holds only good/")
            if GOOD not in found:
                fail(problems, f"{split_dir / GOOD}: missing folder; training images go in <class>/train/good/")
                continue
        n_before = len(out)
        for defect in defects:
            images = image_files(split_dir / defect)
            if not images and problems is not None:
                problems.append(f"{split_dir / defect}: empty folder")
            for img in images:
                if defect == GOOD:
                    out.append(Record(str(img), 0, cls, GOOD))
                    continue
                mp = mask_path(root, cls, defect, img.stem)
                if not mp.is_file():
                    fail(problems, f"{img}: mask missing (expected {mp})")
                    continue
                out.append(Record(str(img), 1, cls, defect, (str(mp),)))
        if len(out) == n_before:
            fail(problems, f"{split_dir}: no images for class {cls!r} in split {split!r}")
    return out


def records(root: str | Path, split: str = "train", classes: list[str] | None = None) -> list[Record]:
    """Records of one split; the first problem raises `DataError`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _scan(Path(root), split, classes, None)


def check(root: str | Path, classes: list[str] | None = None, deep: bool = True) -> dict:
    """Walk the layout; count images per class, split and defect; list every problem by file (with `deep`,
    every image and mask is read, and each mask's size compared with its image's)."""
    return check_splits(_scan, Path(root), SPLITS, classes, deep)
