"""VisA (Zou et al., ECCV 2022) in its raw release layout, split by the official `split_csv/1cls.csv`.

    <root>/<class>/Data/Images/{Normal,Anomaly}/*.JPG, <root>/<class>/Data/Masks/Anomaly/*.png
    <root>/split_csv/1cls.csv: object,split,label,image,mask (paths relative to root; mask empty for normals)

VisA has no per-type defect folders, so every anomaly gets the defect type "anomaly". Masks hold small
non-zero values; any non-zero pixel is defect (`core.read_mask`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from .checks import check_splits, fail, inside, resolve_classes
from .core import GOOD, Record

CLASSES = (
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
)
SPLIT_CSV = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
SPLITS = ("train", "test")
ANOMALY = "anomaly"
GET_CSV = "it ships in VisA_20220922.tar and in github.com/amazon-science/spot-diff (split_csv/1cls.csv)"


def _rows(root: Path, problems: list[str] | None) -> list[tuple[int, dict]]:
    """(line number, row) of the split file."""
    path = root / SPLIT_CSV
    if not path.is_file():
        fail(problems, f"{path}: split file not found; {GET_CSV}")
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            fail(problems, f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
            return []
        return [(i, {k: (v or "").strip() for k, v in row.items()}) for i, row in enumerate(reader, start=2)]


def _scan(root: Path, split: str, classes: list[str] | None, problems: list[str] | None) -> list[Record]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rows = _rows(root, problems)
    found = sorted({row["object"] for _, row in rows})
    wanted = resolve_classes(found, classes, root / SPLIT_CSV, problems)
    out: list[Record] = []
    for line, row in rows:
        cls, label = row["object"], row["label"].lower()
        if cls not in wanted or row["split"] != split:
            continue
        where = f"{root / SPLIT_CSV} line {line}"
        img = inside(root, row["image"], where, problems)
        mask = inside(root, row["mask"], where, problems) if row["mask"] else None
        if img is None or (row["mask"] and mask is None):
            continue
        if label not in ("normal", ANOMALY):
            fail(problems, f"{where}: label {row['label']!r} is neither 'normal' nor 'anomaly'")
        elif not img.is_file():
            fail(problems, f"{img}: image not found (listed in {where}); re-extract VisA into {root}")
        elif label == "normal":
            out.append(Record(str(img), 0, cls, GOOD))
        elif mask is None or not mask.is_file():
            fail(
                problems,
                f"{img}: its mask {mask or '(no mask column value)'} is missing (listed in {where}); "
                "anomalies need a mask",
            )
        else:
            out.append(Record(str(img), 1, cls, ANOMALY, (str(mask),)))
    for cls in wanted:
        if not any(r.cls == cls for r in out):
            fail(problems, f"{root / SPLIT_CSV}: no usable {split} images for class {cls!r}")
    return out


def records(root: str | Path, split: str = "train", classes: list[str] | None = None) -> list[Record]:
    """Records of one split as the official 1cls split lists them; anomalies carry their mask."""
    return _scan(Path(root), split, classes, None)


def check(root: str | Path, classes: list[str] | None = None, deep: bool = True) -> dict:
    """Count images per class, split and defect; list every problem, each naming its file."""
    return check_splits(_scan, Path(root), SPLITS, classes, deep)
