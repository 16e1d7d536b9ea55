"""What the format modules share: stop-or-collect problems, list image files, count and verify records.

A module writes one `_scan(root, split, classes, problems)`: with `problems=None` (its `records`) the first
problem raises `DataError`; with a list (its `check`) every problem is noted and the walk goes on.
"""

from __future__ import annotations

import os
from pathlib import Path

from .core import DataError, Record, read_image, read_mask

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def fail(problems: list[str] | None, msg: str) -> None:
    """Raise `DataError(msg)`, or note it when collecting problems."""
    if problems is None:
        raise DataError(msg)
    problems.append(msg)


def inside(root: Path, rel: str, where: str, problems: list[str] | None) -> Path | None:
    """`root / rel` if that path (symbolic links resolved) stays inside `root`; else a problem naming `where`
    (a split file may not point at files elsewhere: `../../etc/...`, absolute paths, links out of the root)."""
    path = Path(root) / rel
    try:
        ok = not os.path.isabs(rel) and Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
    except (OSError, RuntimeError, ValueError):  # symlink loops, bad bytes
        ok = False
    if not ok:
        fail(
            problems,
            f"{where}: path {rel!r} points outside the dataset root {root} — refused; fix the file or "
            "re-extract the dataset",
        )
        return None
    return path


def image_files(folder: Path) -> list[Path]:
    """Image files in `folder`, sorted; hidden files skipped."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def resolve_classes(
    found: list[str], classes: list[str] | None, where: Path | str, problems: list[str] | None
) -> list[str]:
    """The requested classes that exist (all when `classes` is None); an unknown one is a problem."""
    if not classes:
        return list(found)
    unknown = [c for c in classes if c not in found]
    if unknown:
        fail(problems, f"{where}: unknown class(es) {', '.join(unknown)}; found: {', '.join(found) or 'none'}")
    return [c for c in classes if c in found]


def tally(recs: list[Record], split: str, counts: dict, problems: list[str], deep: bool = True) -> None:
    """Count `recs` into `counts[cls][split][defect]`; with `deep`, read every image and mask file."""
    for r in recs:
        per_defect = counts.setdefault(r.cls, {}).setdefault(split, {})
        per_defect[r.defect] = per_defect.get(r.defect, 0) + 1
        if not deep or r.array is not None:
            continue
        try:
            size = read_image(r.path).shape[:2]
        except DataError as err:
            problems.append(str(err))
            size = None
        for mp in r.mask_paths:
            try:
                m = read_mask(mp)
            except DataError as err:
                problems.append(str(err))
                continue
            if size is not None and m.shape != size:
                problems.append(f"{mp}: mask is {m.shape[1]}x{m.shape[0]}, its image {r.path} is {size[1]}x{size[0]}")


def check_splits(
    scan, root: Path, splits: tuple[str, ...], classes: list[str] | None = None, deep: bool = True
) -> dict:
    """A format's `check`: its `scan(root, split, classes, problems)` over every split in collecting mode, the
    records counted (and, with `deep`, read) by `tally`; a root that cannot be read at all is one problem."""
    counts: dict = {}
    problems: list[str] = []
    try:
        for split in splits:
            tally(scan(root, split, classes, problems), split, counts, problems, deep)
    except DataError as err:  # raised before any collecting could start: no root, an unreadable split file
        problems.append(str(err))
    return {"counts": counts, "problems": list(dict.fromkeys(problems))}  # the splits repeat root-level ones
