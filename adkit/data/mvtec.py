"""MVTec AD layout: `<class>/train/good`, `<class>/test/<defect>`, `<class>/ground_truth/<defect>/<stem>_mask.png`.

Reads MVTec AD itself (Bergmann et al., CVPR 2019) and any folder in its layout, the embedded "mini" set
included. `records` raises on the first problem; `check` walks everything and lists every problem.
"""

from __future__ import annotations

from pathlib import Path

from .core import GOOD, DataError, Record, read_image, read_mask

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
SPLITS = ("train", "test")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def list_classes(root: str | Path) -> list[str]:
    """Class folders under `root` (those with a `train` or `test` folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found; pass --root DIR or set $ADKIT_DATA")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))


def _resolve_classes(root: Path, classes: list[str] | None) -> list[str]:
    found = list_classes(root)
    if not found:
        raise DataError(
            f"{root}: no class folders in MVTec AD layout (expected <class>/train/good and <class>/test/<defect>)"
        )
    if not classes:
        return found
    unknown = [c for c in classes if c not in found]
    if unknown:
        raise DataError(f"{root}: unknown class(es) {', '.join(unknown)}; found: {', '.join(found)}")
    return list(classes)


def mask_path(root: Path, cls: str, defect: str, stem: str) -> Path:
    return root / cls / "ground_truth" / defect / f"{stem}_mask.png"


def records(root: str | Path, split: str = "train", classes: list[str] | None = None) -> list[Record]:
    """Records of one split. Train: `train/good` only. Test: every defect folder, masks required."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    out: list[Record] = []
    for cls in _resolve_classes(root, classes):
        split_dir = root / cls / split
        if not split_dir.is_dir():
            raise DataError(f"{split_dir}: missing folder; MVTec AD layout needs <class>/{split}/")
        defects = [GOOD] if split == "train" else sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        n_before = len(out)
        for defect in defects:
            folder = split_dir / defect
            if not folder.is_dir():
                raise DataError(f"{folder}: missing folder; training images go in <class>/train/good/")
            for p in _images(folder):
                if defect == GOOD:
                    out.append(Record(str(p), 0, cls, GOOD))
                    continue
                mp = mask_path(root, cls, defect, p.stem)
                if not mp.is_file():
                    raise DataError(f"{p}: its mask {mp} is missing; every defect image needs <stem>_mask.png")
                out.append(Record(str(p), 1, cls, defect, (str(mp),)))
        if len(out) == n_before:
            raise DataError(f"{split_dir}: no images for class {cls!r} in split {split!r}")
    return out


def check(root: str | Path, classes: list[str] | None = None, deep: bool = True) -> dict:
    """Walk the layout; count images per class, split and defect; list every problem by file."""
    root = Path(root)
    counts: dict[str, dict[str, dict[str, int]]] = {}
    problems: list[str] = []
    try:
        cls_list = _resolve_classes(root, classes)
    except DataError as err:
        return {"counts": {}, "problems": [str(err)]}
    for cls in cls_list:
        counts[cls] = {}
        for split in SPLITS:
            split_dir = root / cls / split
            counts[cls][split] = {}
            if not split_dir.is_dir():
                problems.append(f"{split_dir}: missing folder")
                continue
            defects = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
            if split == "train" and defects != [GOOD]:
                extra = [d for d in defects if d != GOOD]
                if GOOD not in defects:
                    problems.append(f"{split_dir / GOOD}: missing folder (training images go there)")
                if extra:
                    problems.append(f"{split_dir}: unexpected folder(s) {', '.join(extra)}; train holds only good/")
            for defect in defects:
                imgs = _images(split_dir / defect)
                counts[cls][split][defect] = len(imgs)
                if not imgs:
                    problems.append(f"{split_dir / defect}: empty folder")
                for p in imgs:
                    size = None
                    if deep:
                        try:
                            size = read_image(p).shape[:2]
                        except DataError as err:
                            problems.append(str(err))
                    if split == "test" and defect != GOOD:
                        mp = mask_path(root, cls, defect, p.stem)
                        if not mp.is_file():
                            problems.append(f"{p}: mask missing (expected {mp})")
                        elif deep:
                            try:
                                m = read_mask(mp)
                                if size is not None and m.shape != size:
                                    problems.append(
                                        f"{mp}: mask is {m.shape[1]}x{m.shape[0]}, image is {size[1]}x{size[0]}"
                                    )
                            except DataError as err:
                                problems.append(str(err))
            if sum(counts[cls][split].values()) == 0 and split_dir.is_dir():
                problems.append(f"{split_dir}: no images")
    return {"counts": counts, "problems": problems}
