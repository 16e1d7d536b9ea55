"""Real-IAD (Wang et al., CVPR 2024): 30 objects, each photographed by five cameras C1-C5.

    <root>/realiad_jsons/realiad_jsons/<class>.json      multi-view split (variant="mv")
    <root>/realiad_jsons/realiad_jsons_sv/<class>.json   single-view split (variant="sv")
    <root>/realiad_<res>/<prefix>/<image_path>           images and masks (res: 256, 512, 1024, raw)

A split file is `{"meta": {"prefix": ...}, "train": [...], "test": [...]}` of items `{"category",
"anomaly_class" ("OK" normal, else a defect code such as "AK"), "image_path", "mask_path"}`. The defect is
the lower-cased code; the camera, read from the file name (`..._C1_...jpg`), goes into `Record.meta`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .checks import fail, inside, resolve_classes, tally
from .core import GOOD, Record

JSON_DIRS = {"mv": "realiad_jsons", "sv": "realiad_jsons_sv"}
SPLITS = ("train", "test")
NORMAL = "OK"
VIEW = re.compile(r"_(C\d+)(?=[_.])")
IMAGES_DIR = re.compile(r"realiad_(\d+|raw)")


def json_dir(root: str | Path, variant: str = "mv") -> Path:
    if variant not in JSON_DIRS:
        raise ValueError(f"variant must be one of {tuple(JSON_DIRS)}, got {variant!r}")
    return Path(root) / "realiad_jsons" / JSON_DIRS[variant]


def list_classes(root: str | Path, variant: str = "mv") -> list[str]:
    folder = json_dir(root, variant)
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def image_root(root: Path, resolution: int | str | None = None, problems: list[str] | None = None) -> Path | None:
    """The `realiad_<resolution>` folder; with `resolution=None`, the only one present."""
    found = (
        sorted(p.name for p in root.iterdir() if p.is_dir() and IMAGES_DIR.fullmatch(p.name)) if root.is_dir() else []
    )
    if resolution is not None:
        if f"realiad_{resolution}" in found:
            return root / f"realiad_{resolution}"
        fail(
            problems,
            f"{root / f'realiad_{resolution}'}: images folder not found "
            f"(found: {', '.join(found) or 'none'}); unzip realiad_{resolution}.zip into {root}",
        )
    elif len(found) == 1:
        return root / found[0]
    elif not found:
        fail(
            problems,
            f"{root}: no images folder realiad_<resolution>/ (e.g. realiad_1024); unzip one into {root}",
        )
    else:
        fail(problems, f"{root}: several images folders ({', '.join(found)}); choose one with resolution=")
    return None


def _scan(
    root: Path,
    split: str,
    classes: list[str] | None,
    problems: list[str] | None,
    variant: str = "mv",
    resolution: int | str | None = None,
) -> list[Record]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    found = list_classes(root, variant)
    if not found:
        fail(
            problems,
            f"{json_dir(root, variant)}: no <class>.json split files; unzip realiad_jsons.zip into {root}",
        )
    wanted = resolve_classes(found, classes, json_dir(root, variant), problems)
    images = image_root(root, resolution, problems)
    out: list[Record] = []
    if images is None:
        return out
    for cls in wanted:
        path = json_dir(root, variant) / f"{cls}.json"
        try:
            data = json.loads(path.read_text())
            items, prefix = data[split], (data.get("meta") or {}).get("prefix", "")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            fail(
                problems,
                f"{path}: unreadable split file ({type(err).__name__}: {err}); re-extract realiad_jsons.zip",
            )
            continue
        rel_base = os.path.join(images.name, prefix if isinstance(prefix, str) else "\0")
        if inside(root, rel_base, str(path), problems) is None:
            continue
        n_before = len(out)
        for i, item in enumerate(items):
            if (
                not isinstance(item, dict)
                or not all(isinstance(item.get(k), str) and item[k] for k in ("image_path", "anomaly_class"))
                or not isinstance(item.get("mask_path") or "", str)
            ):
                fail(problems, f"{path}: {split}[{i}] lacks image_path or anomaly_class")
                continue
            where = f"{path} {split}[{i}]"
            img, kind, mask = (
                inside(root, os.path.join(rel_base, item["image_path"]), where, problems),
                item["anomaly_class"],
                item.get("mask_path"),
            )
            mask_file = inside(root, os.path.join(rel_base, mask), where, problems) if mask else None
            if img is None or (mask and mask_file is None):
                continue
            view = VIEW.search(img.name)
            meta = (("view", view.group(1)),) if view else ()
            if not img.is_file():
                fail(problems, f"{img}: image not found (listed in {path}); is {images.name} complete?")
            elif kind == NORMAL:
                out.append(Record(str(img), 0, cls, GOOD, meta=meta))
            elif mask_file is None or not mask_file.is_file():
                fail(
                    problems,
                    f"{img}: its mask {mask_file or '(mask_path empty)'} is missing (listed in {path})",
                )
            else:
                out.append(Record(str(img), 1, cls, kind.lower(), (str(mask_file),), meta=meta))
        if len(out) == n_before:
            fail(problems, f"{path}: no usable {split} images for class {cls!r}")
    return out


def records(
    root: str | Path,
    split: str = "train",
    classes: list[str] | None = None,
    variant: str = "mv",
    resolution: int | str | None = None,
) -> list[Record]:
    """Records of one split of the multi-view ("mv") or single-view ("sv") protocol."""
    return _scan(Path(root), split, classes, None, variant, resolution)


def check(
    root: str | Path,
    classes: list[str] | None = None,
    deep: bool = True,
    variant: str = "mv",
    resolution: int | str | None = None,
) -> dict:
    """Count images per class, split and defect; list every problem, each naming its file."""
    counts: dict = {}
    problems: list[str] = []
    for split in SPLITS:
        tally(_scan(Path(root), split, classes, problems, variant, resolution), split, counts, problems, deep)
    return {"counts": counts, "problems": list(dict.fromkeys(problems))}  # scans repeat root-level ones
