"""Results into text and JSON, one way each: a fraction as a percentage, a markdown table, a JSON-safe copy.

percent(0.9134)                                     # "91.3"; None or NaN: "n/a"
markdown_table(["run", "AUROC"], [["rd", "91.3"]])  # the first column left-aligned, the others right
json.dumps(jsonable(res), allow_nan=False)          # NaN/inf anywhere (lists and dicts too) become null
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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A markdown table of text cells; the first `left` columns are left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * left + "---:|" * (len(header) - left)]
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


__all__ = ["jsonable", "markdown_table", "percent"]
