"""`adkit.tables`: percentages, markdown tables and strict JSON, one way each."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adkit import runs
from adkit.tables import jsonable, markdown_table, percent


def test_jsonable_reaches_every_nan_and_numpy_number_in_lists_and_dicts(tmp_path):
    res = {
        "mean": {"image_auroc": np.float32(0.5), "aupro": float("nan")},
        "per_seed": [0.9, float("nan"), np.float64(0.7), float("inf")],
        "pairs": ({"d": -math.inf}, (np.int64(3), np.bool_(True))),
        7: "a key that is no string",
    }
    clean = jsonable(res)
    text = json.dumps(clean, allow_nan=False)  # strict JSON: raises on any NaN or inf left
    assert json.loads(text) == {
        "mean": {"image_auroc": 0.5, "aupro": None},
        "per_seed": [0.9, None, 0.7, None],
        "pairs": [{"d": None}, [3, True]],
        "7": "a key that is no string",
    }
    path = runs.write_results(tmp_path, clean)  # what `adkit eval` writes: eval.json
    assert json.loads(path.read_text())["per_seed"][1] is None


def test_percent_and_markdown_table():
    assert [percent(v) for v in (0.91234, 1.0, 0.0, None, float("nan"), np.float32("nan"))] == [
        "91.2",
        "100.0",
        "0.0",
        "n/a",
        "n/a",
        "n/a",
    ]
    assert percent(0.0123, signed=True) == "+1.2" and percent(-0.05, signed=True) == "-5.0"
    assert percent(0.5, width=6) == "  50.0" and percent(None, width=6) == "   n/a"
    table = markdown_table(["step", "setting", "AUROC"], [["base", "one-class", "91.2"]], left=2)
    assert table.splitlines() == ["| step | setting | AUROC |", "|---|---|---:|", "| base | one-class | 91.2 |"]


def test_markdown_table_aligns_column_by_column():
    table = markdown_table(["class", "AUROC", "note"], [["cat", "91.2", "n.s."]], align="lrl")
    assert table.splitlines()[1] == "|---|---:|---|"  # a text column after the numbers stays left-aligned
    with pytest.raises(ValueError, match="one 'l' or 'r' per column"):
        markdown_table(["class", "AUROC"], [], align="l")
