"""Validation data from training normals: the splits (`adkit.data.splits`), the synthetic defects
(`adkit.data.synthetic`: what each family changes, and only there) and a run's held-out set (`adkit.validation`)."""

from __future__ import annotations

import pytest
import torch

from adkit import data, validation
from adkit.data import synthetic
from adkit.data.splits import holdout_split


def _images(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g)


def test_holdout_split_is_disjoint_seeded_and_bounded():
    fit_idx, cal_idx = holdout_split(50, 0.2, seed=3)
    assert len(cal_idx) == 10 and len(fit_idx) == 40
    assert sorted(torch.cat([fit_idx, cal_idx]).tolist()) == list(range(50))
    again = holdout_split(50, 0.2, seed=3)
    assert torch.equal(again[1], cal_idx) and not torch.equal(holdout_split(50, 0.2, seed=4)[1], cal_idx)
    assert [len(i) for i in holdout_split(3, 0.01, 0)] == [2, 1]  # at least one image to calibrate with
    assert [len(i) for i in holdout_split(3, 0.9, 0)] == [1, 2]  # and at least one to train on
    for bad_fraction, n in ((1.0, 10), (0.0, 10), (0.5, 1)):
        with pytest.raises(ValueError, match="holdout"):
            holdout_split(n, bad_fraction, 0)


def test_each_normal_is_kept_clean_and_gets_one_copy_per_family():
    x = _images()
    val = synthetic.synthetic_defects(x, ["a", "a", "b", "b"], seed=1)
    n, k = len(x), len(synthetic.FAMILIES)
    assert val["image"].shape == (n * (1 + k), 3, 32, 32) and val["mask"].shape == (n * (1 + k), 1, 32, 32)
    assert val["label"].tolist() == [0] * n + [1] * (n * k)
    assert val["defect"] == ["good"] * n + [f for f in synthetic.FAMILIES for _ in range(n)]
    assert val["cls"] == ["a", "a", "b", "b"] * (1 + k)
    assert torch.equal(val["image"][:n], x) and val["mask"][:n].sum() == 0
    for j in range(n, n * (1 + k)):
        src, m = x[j % n], val["mask"][j, 0] > 0
        changed = (val["image"][j] - src).abs().amax(0) > 1e-6
        assert 0.005 < m.float().mean() < 0.1, "a region of about 1-6 % of the image"
        assert not (changed & ~m).any(), "nothing changes outside the mask"
        assert changed[m].float().mean() > 0.5, "most of the region changes"


def test_a_blob_brings_in_another_image_and_a_tint_changes_colour():
    dark, light = torch.full((3, 32, 32), 0.2), torch.full((3, 32, 32), 0.8)
    val = synthetic.synthetic_defects(torch.stack([dark, light]), ["a", "b"], seed=0, families=("blob", "tint"))
    blob, m = val["image"][2], val["mask"][2, 0] > 0
    assert (blob[:, m] > 0.2 + 0.6 * 0.6 - 1e-4).all()  # blended toward the other image at alpha >= 0.6
    tint, m = val["image"][4], val["mask"][4, 0] > 0
    assert (tint[:, m] - 0.2).abs().amax() >= 0.2 * 0.25 - 1e-6  # one channel's gain moved by at least 0.25


def test_the_same_seed_gives_the_same_set_and_another_seed_another():
    x = _images()
    a, b = (synthetic.synthetic_defects(x, ["a"] * 4, seed=s) for s in (3, 3))
    c = synthetic.synthetic_defects(x, ["a"] * 4, seed=4)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["mask"], c["mask"])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least 2 images"):
        synthetic.synthetic_defects(_images(1), ["a"])
    with pytest.raises(ValueError, match="one class name each"):
        synthetic.synthetic_defects(_images(3), ["a"])
    with pytest.raises(ValueError, match="unknown defect family"):
        synthetic.synthetic_defects(_images(2), ["a", "a"], families=("scratch",))


def test_by_class_splits_predictions_with_their_labels_masks_and_defects():
    import numpy as np

    val = synthetic.synthetic_defects(_images(3), ["a", "b", "a"], seed=0, families=("tint",))
    pred = {"score": np.arange(6.0), "amap": np.zeros((6, 32, 32))}
    out = validation.by_class(pred, val)
    assert list(out) == ["a", "b"]
    assert out["a"]["score"].tolist() == [0.0, 2.0, 3.0, 5.0] and out["b"]["score"].tolist() == [1.0, 4.0]
    assert out["a"]["label"].tolist() == [0, 0, 1, 1] and out["a"]["defect"] == ["good", "good", "tint", "tint"]
    assert out["b"]["mask"].shape == (2, 32, 32) and out["b"]["mask"][1].any() and not out["b"]["mask"][0].any()


def test_held_out_splits_the_training_normals_as_training_did(mvtec_root):
    from adkit.config import TrainConfig

    cfg = TrainConfig(data="mvtec", root=str(mvtec_root), setting="multi-class", model="dual", image_size=32, seed=3)
    split = validation.held_out(cfg, 0.5)
    n = len(split["images"])
    fit, held = holdout_split(n, 0.5, 3)
    assert torch.equal(split["fit"], fit) and torch.equal(split["cal"], held[0::2])
    val_idx = held[1::2]  # alternate: the held-out images come sorted by class, and each half gets every class
    recs = data.load_records("mvtec", str(mvtec_root), "train", None)
    classes = {recs[i].cls for i in held.tolist()}
    assert len(classes) > 1 and {recs[i].cls for i in val_idx.tolist()} == classes
    assert {recs[i].cls for i in split["cal"].tolist()} == classes
    assert len(split["val"]["label"]) == len(val_idx) * (1 + len(synthetic.FAMILIES))
    assert torch.equal(split["val"]["image"][: len(val_idx)], split["images"][val_idx])  # the clean copies
    assert sorted(torch.cat([fit, split["cal"], val_idx]).tolist()) == list(range(n))


def test_semantic_set_puts_every_normal_against_every_foreign_image():
    import numpy as np

    from adkit.evaluation import score_sets

    normals, foreign = _images(3), _images(5)[3:] * 0.5
    val = synthetic.semantic_set(normals, foreign)
    assert val["label"].tolist() == [0, 0, 0, 1, 1] and torch.equal(val["image"][3:], foreign)
    assert val["defect"] == ["good"] * 3 + ["unseen class"] * 2 and set(val["cls"]) == {"semantic"}
    assert not val["mask"].any()
    # one group, one AUROC over all 6 (normal, foreign) pairs: both foreign images above every normal: 1.0;
    # one of them below every normal: 3 of 6 pairs right, 0.5
    good = validation.by_class({"score": np.array([0.1, 0.2, 0.3, 0.9, 0.8])}, val)
    half = validation.by_class({"score": np.array([0.1, 0.2, 0.3, 0.9, 0.0])}, val)
    assert list(good) == ["semantic"]
    assert score_sets(good, None, "score")["mean"]["image_auroc"] == pytest.approx(1.0)
    assert score_sets(half, None, "score")["mean"]["image_auroc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="need normals and anomalies"):
        synthetic.semantic_set(normals, foreign[:0])
    with pytest.raises(ValueError, match="differ"):
        synthetic.semantic_set(normals, torch.zeros(1, 3, 16, 16))
