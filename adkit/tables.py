"""Results into text and JSON, one way each: a fraction as a percentage, a markdown table, a JSON-safe copy.

percent(0.9134)                                     # "91.3"; None or NaN: "n/a"
markdown_table(["run", "AUROC"], [["rd", "91.3"]])  # the first column left-aligned, the others right
json.dumps(jsonable(res), allow_nan=False)          # NaN/inf anywhere (lists and dicts too) become null
print(results_table(adkit.evaluate(run)))           # one run: per class, the mean, per defect type
comparison_table({"one-class": a, "multi-class": b})  # several runs side by side, in markdown
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def percent(v: float | None, width: int = 0, signed: bool = False) -> str:
    """A fraction `v` as a percentage with one decimal (`signed`: with its sign), right-aligned in `width`
    characters; "n/a" where there is no value (None or NaN)."""
    if v is None or math.isnan(v):
        return f"{'n/a':>{width}}"
    spec = ("+" if signed else "") + (str(width) if width else "") + ".1f"
    return f"{100 * v:{spec}}"


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1, align: str | None = None
) -> str:
    """A markdown table of text cells; the first `left` columns are left-aligned, the others right-aligned, or
    else `align` says it column by column ("l" or "r", e.g. "lrrl")."""
    align = align or "l" * left + "r" * (len(header) - left)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one 'l' or 'r' per column ({len(header)}), got {align!r}")
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---|" if a == "l" else "---:|" for a in align)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def jsonable(obj):
    """A copy of `obj` that `json.dumps(..., allow_nan=False)` writes: dicts (keys as strings), lists and tuples
    recursed into, numpy scalars as Python numbers, NaN and ±inf as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def results_table(res: dict, keys=("image_auroc", "pixel_auroc", "aupro")) -> str:
    """A plain-text table: one row per class, then the mean, then one row per defect type."""

    def fmt(v):
        return percent(v, width=6)

    width = max([len(c) for c in list(res["classes"]) + list(res["defects"])] + [8])
    head = f"{'':{width}}  " + "  ".join(f"{k:>11}" for k in keys)
    lines = [head, "-" * len(head)]
    for cls, row in res["classes"].items():
        lines.append(f"{cls:{width}}  " + "  ".join(f"{fmt(row[k]):>11}" for k in keys))
    lines.append("-" * len(head))
    lines.append(f"{'mean':{width}}  " + "  ".join(f"{fmt(res['mean'][k]):>11}" for k in keys))
    if res["defects"]:
        lines.append("-" * len(head))
        for d, row in res["defects"].items():
            lines.append(f"{d:{width}}  " + "  ".join(f"{fmt(row[k]):>11}" for k in keys))
    return "\n".join(lines)


def comparison_table(results: dict[str, dict], keys=("image_auroc", "pixel_auroc", "aupro")) -> str:
    """Markdown: per class image AUROC for every run, then the means and the per-defect image AUROC."""
    runs = list(results)
    classes = list(next(iter(results.values()))["classes"])
    head = "| class | " + " | ".join(runs) + " |"
    sep = "|---|" + "---:|" * len(runs)
    lines = ["Image AUROC (%) per class", "", head, sep]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(percent(results[r]["classes"][c]["image_auroc"], 5) for r in runs) + " |")
    lines += ["", "Mean over classes (%)", "", "| metric | " + " | ".join(runs) + " |", sep]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(percent(results[r]["mean"][k], 5) for r in runs) + " |")
    defects = list(next(iter(results.values()))["defects"])
    if defects:
        lines += ["", "Image AUROC (%) per defect type", "", "| defect | " + " | ".join(runs) + " |", sep]
        for d in defects:
            lines.append(
                f"| {d} | " + " | ".join(percent(results[r]["defects"][d]["image_auroc"], 5) for r in runs) + " |"
            )
    # the extra maps (SNL) and extra image scores (dual student) that `evaluate` reports, one line per run
    for key, heading, cell in (
        (
            "maps",
            "SNL maps alone, mean image AUROC / pixel AUROC (%)",
            lambda v: f"{percent(v['image_auroc'], 5)} / {percent(v['pixel_auroc'], 5)}",
        ),
        ("scores", "Image scores of the dual student, mean image AUROC (%)", lambda v: percent(v["image_auroc"], 5)),
    ):
        extra = {r: res[key] for r, res in results.items() if key in res}
        if extra:
            lines += ["", heading, ""]
            for r, by_name in extra.items():
                items = (f"{k.removeprefix('score_')} {cell(v)}" for k, v in by_name.items())
                lines.append(f"- {r}: " + ", ".join(items))
    return "\n".join(lines)


__all__ = ["comparison_table", "jsonable", "markdown_table", "percent", "results_table"]
