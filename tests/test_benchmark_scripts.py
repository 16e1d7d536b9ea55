"""The summaries of benchmark scripts, on rows made up by hand: each script is loaded from benchmarks/ under its
own name, as it runs (test_render.py does the same for benchmarks/render.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    """benchmarks/<name>.py as the module `name` (its dataclasses and its siblings' imports look it up there)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def test_interference_steps_effect_pairs_each_seed_with_itself():
    # benchmarks/interference.py: the change that more steps per class makes, seed by seed; a seed present at
    # only one step count is left out, and a row of another recipe (here: 8 classes) is never paired
    mod = script("interference")

    def row(k, steps, seeds, oc, mc):
        return {"k": k, "model": "rd", "image_size": 128, "batch": 16, "steps_per_class": steps, "seeds": seeds,
                "one_class_per_seed": oc, "multi_class_per_seed": mc,
                "gap_per_seed": [a - b for a, b in zip(oc, mc)]}  # fmt: skip

    rows = [
        row(4, 300, [2, 0, 1], [90.0, 80.0, 85.0], [80.0, 78.0, 81.0]),
        row(4, 100, [0, 1, 2, 3], [79.0, 83.0, 86.0, 50.0], [77.0, 82.0, 84.0, 50.0]),
        row(8, 100, [0, 1, 2], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
    ]
    (e,) = mod.steps_effects(rows)
    assert e["k"] == 4 and e["steps_per_class"] == [100, 300] and e["seeds"] == [0, 1, 2]
    assert e["one_class_change"]["mean"] == pytest.approx((1 + 2 + 4) / 3)  # seed 0: 80−79, 1: 85−83, 2: 90−86
    assert e["multi_class_change"]["mean"] == pytest.approx((1 - 1 - 4) / 3)  # 78−77, 81−82, 80−84
    assert e["gap_change"]["mean"] == pytest.approx((0 + 3 + 8) / 3)  # (2→2, 1→4, 2→10)
    assert e["gap_change"]["n"] == 3

    # the width factor: rows without the key (written before it existed) are the default width, 2; a width row
    # pairs with the default of the same recipe and never enters the steps comparison
    wide = dict(row(4, 100, [0, 1, 2], [81.0, 84.0, 90.0], [70.0, 84.0, 80.0]), width_mult=4.0)
    narrow = dict(row(4, 100, [0, 1, 2], [75.0, 80.0, 85.0], [75.0, 80.0, 85.0]), width_mult=1.0)
    rows += [wide, narrow]
    (e,) = mod.steps_effects(rows)
    assert e["width_mult"] == 2 and e["steps_per_class"] == [100, 300] and e["seeds"] == [0, 1, 2]
    lo, hi = mod.width_effects(rows)
    assert lo["width_mult"] == [1.0, 2] and hi["width_mult"] == [2, 4.0] and hi["steps_per_class"] == 100
    assert hi["one_class_change"]["mean"] == pytest.approx((2 + 1 + 4) / 3)  # 81−79, 84−83, 90−86
    assert hi["gap_change"]["mean"] == pytest.approx((9 + -1 + 8) / 3)  # gaps 2, 1, 2 → 11, 0, 10
    assert lo["gap_change"]["mean"] == pytest.approx((2 + 1 + 2) / 3)  # gaps 0, 0, 0 → 2, 1, 2


def test_dual_semantic_validation_averages_folds_within_a_seed_and_both_splits():
    # benchmarks/dual_semantic_validation.py: a seed's value is the mean over its folds; "both" is the mean of
    # the synthetic-defect and the semantic AUROC, variant by variant
    script("dual_validation")  # its sibling, imported by name
    mod = script("dual_semantic_validation")

    def variant(x):
        return {k: x + i / 10 for i, k in enumerate(mod.SCORES)}

    def row(fold, seed, syn, sem):
        return {"fold": fold, "seed": seed, "synthetic": {"v": variant(syn)}, "semantic": {"v": variant(sem)}}

    rows = [row("grass", 0, 0.8, 0.6), row("cameraman", 0, 0.6, 0.4), row("grass", 1, 0.9, 0.5)]
    out = mod.per_seed(rows)
    assert sorted(out) == [0, 1]
    assert out[0]["synthetic"]["v"]["local"] == pytest.approx(0.7) and out[0]["semantic"]["v"]["local"] == 0.5
    assert out[0]["both"]["v"]["local"] == pytest.approx(0.6)
    assert out[1]["both"]["v"]["noisy_or"] == pytest.approx((0.9 + 0.5) / 2 + 0.3)  # noisy_or is SCORES[3]
