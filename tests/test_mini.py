"""The embedded "mini" set and the synthetic defects it is made with."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import adkit.data
from adkit.data import DataError, mini
from adkit.data.core import read_image, read_mask
from adkit.data.defects import DEFECTS, NEEDS_SOURCE, cut_paste, mixup, random_box

SMALL = mini.MiniRecipe(image_size=64, n_train=4, n_test_good=2, n_test_per_defect=1)
FEW = replace(SMALL, classes=("brick", "cat"))  # for tests that build more than once


def _images(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): read_image(p) for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return mini.build(tmp_path_factory.mktemp("data") / "mini", SMALL, progress=False)


# ---- the set on disk -------------------------------------------------------------------------------------


def test_registry():
    assert len(mini.CLASSES) >= 10 and set(mini.KINDS) == set(mini.CLASSES)
    assert {"texture", "object"} == set(mini.KINDS.values())
    for cls in mini.CLASSES:
        img = mini.source_image(cls)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 150


def test_layout_and_counts(built):
    n_def = len(mini.DEFECT_TYPES)
    for cls in SMALL.classes:
        assert len(list((built / cls / "train" / "good").glob("*.png"))) == 4
        assert len(list((built / cls / "test" / "good").glob("*.png"))) == 2
        for d in mini.DEFECT_TYPES:
            assert (built / cls / "test" / d / "000.png").is_file()
            assert (built / cls / "ground_truth" / d / "000_mask.png").is_file()
    meta = json.loads((built / "recipe.json").read_text())
    assert meta["hash"] == mini.recipe_hash(SMALL) and meta["recipe"]["seed"] == 0
    mtime = (built / "recipe.json").stat().st_mtime_ns

    test = adkit.data.load("mini", root=built, split="test", image_size=64)
    assert len(test) == len(SMALL.classes) * (2 + n_def)
    assert sum(r.label for r in test.records) == len(SMALL.classes) * n_def
    train = adkit.data.load("mini", root=built, split="train", classes=["brick", "cat"], image_size=64)
    assert len(train) == 8 and train.classes == ["brick", "cat"]
    s = test[0]
    assert s["image"].shape == (3, 64, 64) and s["mask"].shape == (1, 64, 64)
    assert (built / "recipe.json").stat().st_mtime_ns == mtime  # load kept the small recipe


def test_masks_mark_exactly_the_defects(built):
    for rec in adkit.data.load_records("mini", root=built, split="test"):
        img = read_image(rec.path)
        assert img.shape == (64, 64, 3)
        if rec.label == 0:
            assert not rec.mask_paths
            continue
        raw = np.asarray(Image.open(rec.mask_paths[0]))
        assert set(np.unique(raw)) <= {0, 255}
        mask = read_mask(rec.mask_paths[0])
        assert 0 < mask.sum() < 0.5 * mask.size, rec.path


@pytest.mark.parametrize("cls", ["brick", "stars", "cat", "retina"])
def test_generated_defects_change_only_their_mask(built, cls):
    for item in mini.generate(cls, SMALL):
        on_disk = read_image(built / cls / item["file"])
        assert np.array_equal(on_disk, item["image"])  # generate() is what build() wrote
        if item["mask"] is None:
            assert item["image"] is item["clean"]
            continue
        changed = (item["image"] != item["clean"]).any(-1)
        assert not (changed & ~item["mask"]).any(), item["file"]  # nothing outside the mask
        assert changed[item["mask"]].mean() > 0.5, item["file"]  # most of the mask really changed
        diff = np.abs(item["image"].astype(int) - item["clean"])[item["mask"]].mean()
        assert diff >= 4, item["file"]  # visible, not a patch of sky pasted on sky


def test_deterministic_and_seeded(tmp_path):
    a = _images(mini.build(tmp_path / "a", FEW, progress=False))
    b = _images(mini.build(tmp_path / "b", FEW, progress=False))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    c = _images(mini.build(tmp_path / "c", replace(FEW, seed=1), progress=False))
    assert a.keys() == c.keys() and not any(np.array_equal(a[k], c[k]) for k in a)
    # choosing classes changes no image of the others
    d = _images(mini.build(tmp_path / "d", replace(FEW, classes=("cat",)), progress=False))
    assert d and all(np.array_equal(d[k], a[k]) for k in d)


def test_rebuild_only_when_recipe_changes(tmp_path):
    root = mini.build(tmp_path / "mini", FEW, progress=False)
    stamp = {p: p.stat().st_mtime_ns for p in (root / "recipe.json", root / "cat" / "train" / "good" / "000.png")}
    assert mini.build(root, FEW, progress=False) == root
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp  # unchanged recipe: nothing rewritten
    assert mini.is_current(root, FEW) and not mini.is_current(root, replace(FEW, n_train=5))

    mini.build(root, replace(FEW, n_train=5), progress=False)
    assert len(list((root / "cat" / "train" / "good").glob("*.png"))) == 5
    assert mini.read_recipe(root)[0] == replace(FEW, n_train=5)
    assert [p.name for p in tmp_path.iterdir()] == ["mini"]  # no temporary folders left behind

    before = (root / "recipe.json").stat().st_mtime_ns
    mini.build(root, replace(FEW, n_train=5), force=True, progress=False)
    assert (root / "recipe.json").stat().st_mtime_ns != before


def test_prepare_builds_when_missing_and_after_a_version_bump(tmp_path, monkeypatch):
    monkeypatch.setattr(mini, "RECIPE", FEW)  # the default recipe, made small
    records = adkit.data.load_records("mini", root=tmp_path / "mini", split="train")
    assert len(records) == 2 * FEW.n_train and mini.is_current(tmp_path / "mini", FEW)
    small = replace(FEW, classes=("cat",), n_train=2)
    mini.build(tmp_path / "mini", small, progress=False)
    mini.prepare(tmp_path / "mini")  # another recipe is kept ...
    assert mini.is_current(tmp_path / "mini", small)
    monkeypatch.setattr(mini, "RECIPE_VERSION", 2)  # ... until the generator changes
    mini.prepare(tmp_path / "mini", progress=False)
    assert mini.read_recipe(tmp_path / "mini")[0] == replace(small, version=2)


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(mini, "_write_class", fail)
    with pytest.raises(KeyboardInterrupt):
        mini.build(tmp_path / "mini", FEW, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a mini set"):
        mini.build(tmp_path / "mine", FEW, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_texture_train_and_test_crops_are_disjoint(built):
    prov = json.loads((built / "provenance.json").read_text())
    for cls in SMALL.classes:
        if mini.KINDS[cls] != "texture":
            continue
        split_x = mini.TRAIN_FRAC * mini.source_image(cls).shape[1]
        train = [v["box"] for f, v in prov[cls].items() if f.startswith("train/")]
        test = [v["box"] for f, v in prov[cls].items() if f.startswith("test/")]
        assert len(train) == 4 and len(test) == 2 + len(mini.DEFECT_TYPES)
        assert max(b[3] for b in train) <= split_x <= min(b[1] for b in test), cls
    # and for many draws, not only the few written
    rng = np.random.default_rng(0)
    for cls in [c for c in mini.CLASSES if mini.KINDS[c] == "texture"]:
        split_x = mini.TRAIN_FRAC * mini.source_image(cls).shape[1]
        H, W = mini.source_image(cls).shape[:2]
        for _ in range(50):
            y0, x0, y1, x1 = mini.sample_view(cls, rng, "train", 32)[1]["box"]
            assert 0 <= x0 and x1 <= split_x and 0 <= y0 and y1 <= H
            y0, x0, y1, x1 = mini.sample_view(cls, rng, "test", 32)[1]["box"]
            assert split_x <= x0 and x1 <= W and 0 <= y0 and y1 <= H


def test_check(built, tmp_path):
    assert adkit.data.check("mini", root=built)["problems"] == []
    copy = Path(shutil.copytree(built, tmp_path / "mini"))
    gone = copy / "cat" / "ground_truth" / "scratch" / "000_mask.png"
    os.remove(gone)
    problems = mini.check(copy)["problems"]
    assert len(problems) == 1 and str(gone) in problems[0]
    os.remove(copy / "recipe.json")
    assert any("recipe.json" in p for p in mini.check(copy)["problems"])


def test_semantic_view_holds_out_the_other_classes(built, monkeypatch):
    train = adkit.data.load_records("mini_semantic", built, "train", ["cat", "brick"])
    test = adkit.data.load_records("mini_semantic", built, "test", ["cat", "brick"])
    assert {r.cls for r in train + test} == {"brick+cat"}
    assert len(train) == 2 * SMALL.n_train and {r.meta for r in train} == {
        (("true_class", "brick"),),
        (("true_class", "cat"),),
    }
    n_classes = len(mini.CLASSES)
    assert len(test) == n_classes * SMALL.n_test_good  # normal photos only: no synthetic defects
    anomalies = [r for r in test if r.label == 1]
    assert len(anomalies) == (n_classes - 2) * SMALL.n_test_good
    assert {r.defect for r in anomalies} == set(mini.CLASSES) - {"cat", "brick"}
    assert all(r.defect == dict(r.meta)["true_class"] and not r.mask_paths for r in anomalies)
    with pytest.raises(DataError, match="unknown class.*dog"):
        adkit.data.load_records("mini_semantic", built, "train", ["dog"])
    with pytest.raises(DataError, match="nothing is left"):
        adkit.data.load_records("mini_semantic", built, "train", list(mini.CLASSES))
    counts = adkit.data.check("mini_semantic", built, ["cat"])["counts"]["cat"]
    assert counts["train"] == {"good": SMALL.n_train} and counts["test"]["good"] == SMALL.n_test_good
    # without a root it reads mini's folder under $ADKIT_DATA
    monkeypatch.setenv("ADKIT_DATA", str(built.parent))
    assert adkit.data.default_root("mini_semantic") == built


# ---- defect functions ------------------------------------------------------------------------------------


@pytest.fixture
def photo() -> np.ndarray:
    return np.asarray(Image.fromarray(mini.source_image("coffee")).resize((96, 80)))


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_defect_changes_only_its_mask(name, photo):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        source = np.asarray(mini.source_image("brick")[:120, :120]) if name in NEEDS_SOURCE else None
        out, mask = DEFECTS[name](photo, rng, source)
        assert out.shape == photo.shape and out.dtype == np.uint8
        assert mask.shape == photo.shape[:2] and mask.dtype == bool
        assert 0 < mask.sum() < 0.3 * mask.size
        assert np.array_equal(out[~mask], photo[~mask])
        assert (out != photo).any(-1)[mask].mean() > 0.5
    # same seed, same defect
    src = mini.source_image("brick")[:120, :120] if name in NEEDS_SOURCE else None
    a = DEFECTS[name](photo, np.random.default_rng(7), src)
    b = DEFECTS[name](photo, np.random.default_rng(7), src)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("shape", ["rect", "ellipse"])
def test_cut_paste_pastes_the_source_patch(photo, shape):
    source = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    out, mask = cut_paste(photo, source, np.random.default_rng(0), box=(10, 20, 16, 24), src_yx=(5, 7), shape=shape)
    patch = source[5:21, 7:31]
    assert mask[10:26, 20:44].all() == (shape == "rect") and mask.sum() == mask[10:26, 20:44].sum()
    assert np.array_equal(out[10:26, 20:44][mask[10:26, 20:44]], patch[mask[10:26, 20:44]])
    assert np.array_equal(out[~mask], photo[~mask])
    # random placement stays inside and copies some patch of the source verbatim
    out, mask = cut_paste(photo, source, np.random.default_rng(1))
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    pasted = out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    windows = np.lib.stride_tricks.sliding_window_view(source, (h, w, 3))[..., 0, :, :, :]
    assert (windows == pasted).all(axis=(-3, -2, -1)).any()
    with pytest.raises(ValueError):
        cut_paste(photo, source, np.random.default_rng(0), box=(70, 0, 20, 20))


def test_random_box_and_mixup(photo):
    rng = np.random.default_rng(0)
    for _ in range(100):
        y, x, h, w = random_box((80, 96), rng, (0.1, 0.25))
        assert 0 <= y and 0 <= x and y + h <= 80 and x + w <= 96 and 2 <= h and 2 <= w
    other = photo[::-1].copy()
    assert np.array_equal(mixup(photo, other, 1.0), photo) and np.array_equal(mixup(photo, other, 0.0), other)
    mid = mixup(photo, other, 0.5).astype(int)
    assert np.abs(mid - (photo.astype(int) + other) / 2).max() <= 0.5


def test_the_interference_order_holds_every_class_once_textures_and_objects_alternating_first():
    order = mini.INTERFERENCE_ORDER
    assert sorted(order) == sorted(mini.CLASSES) and len(set(order)) == len(order)
    assert [mini.KINDS[c] for c in order[:4]] == ["texture", "object", "texture", "object"]
