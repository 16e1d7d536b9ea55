"""Metrics agree with scikit-learn, with brute force, and (AUPRO) with a slow, obviously-correct reference."""

import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from adkit import metrics

trapezoid = getattr(np, "trapezoid", None) or np.trapz


# ---------------------------------------------------------------------------------------------------
# helpers


def reference_aupro(amaps, masks, limit=0.3, thresholds=None):
    """Slow and plain: label each image on its own, evaluate every threshold explicitly."""
    masks = masks > 0.5
    regions = []  # (image index, boolean region)
    for i, mask in enumerate(masks):
        lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    normal = ~masks
    if thresholds is None:
        thresholds = np.unique(amaps)
    fprs, pros = [0.0], [0.0]
    for t in sorted(thresholds, reverse=True):
        pred = amaps >= t
        fprs.append(pred[normal].mean())
        pros.append(np.mean([pred[i][region].mean() for i, region in regions]))
    xs, ys = [], []
    for j, (x, y) in enumerate(zip(fprs, pros, strict=True)):
        if x <= limit:
            xs.append(x)
            ys.append(y)
            continue
        x0, y0 = fprs[j - 1], pros[j - 1]
        if x0 < limit:
            xs.append(limit)
            ys.append(y0 + (y - y0) * (limit - x0) / (x - x0))
        break
    return trapezoid(ys, xs) / limit


def random_problem(seed, n=4, size=16, decimals=None):
    """A few random blobs per image (some images defect-free) and maps that are higher on them."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(1, n):  # image 0 stays defect-free
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, size, 2)
            h, w = rng.integers(1, 6, 2)
            masks[i, r : r + h, c : c + w] = 1
    amaps = rng.random((n, size, size)) + 0.5 * masks * rng.random((n, size, size))
    if decimals is not None:  # many ties
        amaps = np.round(amaps, decimals)
    return amaps.astype(np.float32), masks


def brute_f1_max(scores, labels):
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & (labels == 1))
        fp = np.sum(pred & (labels == 0))
        fn = np.sum(~pred & (labels == 1))
        if tp > 0:
            p, r = tp / (tp + fp), tp / (tp + fn)
            best = max(best, 2 * p * r / (p + r))
    return best


# ---------------------------------------------------------------------------------------------------
# image and pixel metrics


@pytest.mark.parametrize("seed", range(3))
def test_image_metrics_match_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.3 * labels, 2)  # with ties
    assert metrics.image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    ap = average_precision_score(labels, scores)
    assert metrics.average_precision(scores, labels) == pytest.approx(ap, abs=1e-12)
    assert metrics.f1_max(scores, labels) == pytest.approx(brute_f1_max(scores, labels), abs=1e-12)


def test_perfect_separation_and_single_class():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    for fn in (metrics.image_auroc, metrics.average_precision, metrics.f1_max):
        assert fn(scores, labels) == pytest.approx(1.0)
    assert math.isnan(metrics.image_auroc(scores, np.zeros(5)))
    assert math.isnan(metrics.image_auroc(scores, np.ones(5)))
    assert math.isnan(metrics.average_precision(scores, np.zeros(5)))
    assert math.isnan(metrics.f1_max(scores, np.zeros(5)))


@pytest.mark.parametrize("seed", range(2))
def test_pixel_metrics_match_sklearn(seed):
    amaps, masks = random_problem(seed, decimals=2)
    y, s = masks.ravel(), amaps.ravel()
    assert metrics.pixel_auroc(amaps, masks) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.pixel_ap(amaps, masks) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert metrics.pixel_f1_max(amaps, masks) == pytest.approx(brute_f1_max(s, y), abs=1e-12)
    # a (N, 1, H, W) channel is accepted, and masks are binarised at > 0.5
    soft = masks[:, None] * 0.9 + 0.05
    assert metrics.pixel_auroc(amaps[:, None], soft) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_pixel_auroc_single_class_is_nan():
    amaps = np.random.default_rng(0).random((2, 8, 8))
    assert math.isnan(metrics.pixel_auroc(amaps, np.zeros((2, 8, 8))))


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    amaps, masks = random_problem(0)
    expected = metrics.aupro(amaps, masks)
    assert metrics.aupro(torch.from_numpy(amaps), torch.from_numpy(masks)) == pytest.approx(expected)
    scores, labels = torch.tensor([0.1, 0.9]), torch.tensor([0, 1])
    assert metrics.image_auroc(scores, labels) == 1.0


# ---------------------------------------------------------------------------------------------------
# AUPRO


@pytest.mark.parametrize("decimals", [None, 1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_reference(seed, decimals):
    amaps, masks = random_problem(seed, decimals=decimals)
    expected = reference_aupro(amaps, masks)
    assert metrics.aupro(amaps, masks) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("limit", [0.01, 0.05, 0.3, 0.5, 1.0])
def test_aupro_matches_reference_at_other_limits(limit):
    amaps, masks = random_problem(7, decimals=2)
    expected = reference_aupro(amaps, masks, limit)
    assert metrics.aupro(amaps, masks, fpr_limit=limit) == pytest.approx(expected, abs=1e-6)


def test_aupro_with_num_thresholds_matches_reference_on_that_grid():
    amaps, masks = random_problem(3)
    grid = np.linspace(amaps.min(), amaps.max(), 50)
    expected = reference_aupro(amaps, masks, thresholds=grid)
    assert metrics.aupro(amaps, masks, num_thresholds=50) == pytest.approx(expected, abs=1e-6)


def test_aupro_perfect_and_constant_maps():
    _, masks = random_problem(1)
    assert metrics.aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)
    # all scores tied: the curve jumps from (0, 0) to (1, 1); PRO(0.3) = 0.3; area 0.5 * 0.3 * 0.3
    assert metrics.aupro(np.ones(masks.shape), masks) == pytest.approx(0.15)
    assert metrics.aupro(np.ones(masks.shape), masks, fpr_limit=1.0) == pytest.approx(0.5)


def test_aupro_limit_on_a_curve_point():
    # 10 normal pixels at 0.9, 0.8, ..., one defect pixel at 0.65: the curve reaches FPR 0.3 with PRO 0
    # and only then rises to PRO 1, a vertical step at exactly FPR = 0.3 that adds no area
    amaps = np.array([[[0.65, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]]])
    masks = np.zeros_like(amaps)
    masks[0, 0, 0] = 1
    assert metrics.aupro(amaps, masks) == pytest.approx(0.0, abs=1e-12)
    assert metrics.aupro(amaps, masks, fpr_limit=0.4) == pytest.approx(0.1 / 0.4)
    assert reference_aupro(amaps, masks, 0.4) == pytest.approx(0.1 / 0.4)


def test_aupro_undefined_is_nan():
    amaps = np.random.default_rng(0).random((2, 8, 8))
    assert math.isnan(metrics.aupro(amaps, np.zeros((2, 8, 8))))
    assert math.isnan(metrics.aupro(amaps, np.ones((2, 8, 8))))
    fpr, pro = metrics.pro_curve(amaps, np.zeros((2, 8, 8)))
    assert fpr.size == pro.size == 0


def test_aupro_is_dataset_level_not_per_image():
    # image A: defect found perfectly; image B: defect at 0.5, below 12 normal pixels at 0.6
    amaps = np.zeros((2, 8, 8))
    masks = np.zeros((2, 8, 8))
    masks[:, :2, :2] = 1
    amaps[0, :2, :2] = 1.0
    amaps[1, :2, :2] = 0.5
    amaps[1, 7, :] = 0.6
    amaps[1, 6, :4] = 0.6
    # per image: A = 1; B's curve (0,0) (0.2,0) (0.2,1) (1,1) gives 0.1 / 0.3 = 1/3; mean 2/3
    per_image = np.mean([metrics.aupro(amaps[i : i + 1], masks[i : i + 1]) for i in range(2)])
    assert per_image == pytest.approx(2 / 3)
    # pooled: (0,0) (0,0.5) (0.1,0.5) (0.1,1) (1,1) gives (0.05 + 0.2) / 0.3 = 5/6
    assert metrics.aupro(amaps, masks) == pytest.approx(5 / 6)
    assert reference_aupro(amaps, masks) == pytest.approx(5 / 6)


def test_pro_curve_shape():
    amaps, masks = random_problem(2, decimals=2)
    fpr, pro = metrics.pro_curve(amaps, masks, fpr_limit=0.3)
    assert fpr[0] == 0.0 and pro[0] == 0.0
    assert fpr[-1] == pytest.approx(0.3)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    area = trapezoid(pro, fpr) / 0.3
    assert area == pytest.approx(metrics.aupro(amaps, masks))


def test_aupro_is_fast_on_a_realistic_size():
    rng = np.random.default_rng(0)
    masks = np.zeros((40, 256, 256), dtype=bool)
    masks[:, 100:140, 60:90] = True
    amaps = rng.random(masks.shape).astype(np.float32) + masks
    assert 0.9 < metrics.aupro(amaps, masks) <= 1.0


# ---------------------------------------------------------------------------------------------------
# summarize


def test_summarize_keys_and_shapes():
    amaps, masks = random_problem(0)
    labels = masks.reshape(len(masks), -1).max(1)
    scores = amaps.reshape(len(amaps), -1).max(1)
    image_keys = {"image_auroc", "image_ap", "image_f1_max"}
    assert set(metrics.summarize(scores, labels)) == image_keys
    out = metrics.summarize(scores, labels, amaps, masks)
    assert set(out) == image_keys | {"pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"}
    assert out["aupro"] == pytest.approx(metrics.aupro(amaps, masks))
    assert out["pixel_auroc"] == pytest.approx(metrics.pixel_auroc(amaps, masks))
    # no defect pixels: pixel metrics are nan, image metrics still computed
    out = metrics.summarize(scores, labels, amaps, np.zeros_like(masks))
    assert all(math.isnan(out[k]) for k in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"))
    with pytest.raises(ValueError, match="same shape"):
        metrics.summarize(scores, labels, amaps, masks[:, :8])
    with pytest.raises(ValueError, match="same shape"):
        metrics.aupro(amaps, masks[:2])
    with pytest.raises(ValueError, match="length"):
        metrics.summarize(scores, labels[:2])
    with pytest.raises(ValueError, match="masks are required"):
        metrics.summarize(scores, labels, amaps)


# ---------------------------------------------------------------------------------------------------
# the shared ranking: one sort serves every threshold metric, with scikit-learn's exact values


def sklearn_f1_max(labels, scores):
    p, r, _ = precision_recall_curve(labels, scores)
    denom = p + r
    return np.max(np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0))


@pytest.mark.parametrize("decimals", [None, 0, 1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_summarize_equals_sklearn_and_reference_exactly(seed, decimals):
    amaps, masks = random_problem(seed, n=6, size=24, decimals=decimals)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 30)
    scores = np.round(rng.random(30) + 0.2 * labels, 1)  # many ties
    out = metrics.summarize(scores, labels, amaps, masks)
    y, s = masks.ravel(), amaps.ravel()
    # the same floats, not merely close: the shared pass repeats scikit-learn's arithmetic
    assert out["image_auroc"] == roc_auc_score(labels, scores)
    assert out["image_ap"] == average_precision_score(labels, scores)
    assert out["image_f1_max"] == sklearn_f1_max(labels, scores)
    assert out["pixel_auroc"] == roc_auc_score(y, s)
    assert out["pixel_ap"] == average_precision_score(y, s)
    assert out["pixel_f1_max"] == sklearn_f1_max(y, s)
    assert out["pixel_f1_max"] == pytest.approx(brute_f1_max(s, y), abs=1e-12)
    assert out["aupro"] == pytest.approx(reference_aupro(amaps, masks), abs=1e-6)
    # the one-metric functions give the same values as the shared pass
    assert out["aupro"] == metrics.aupro(amaps, masks)
    assert out["pixel_auroc"] == metrics.pixel_auroc(amaps, masks)
    assert out["image_f1_max"] == metrics.f1_max(scores, labels)


def test_ranking_counts_match_brute_force():
    rng = np.random.default_rng(5)
    s = np.round(rng.random(300), 1)
    y = rng.random(300) < 0.3
    r = metrics._rank(s, y)
    thresholds = np.unique(s)[::-1]
    assert np.array_equal(r.tps, [np.sum(y & (s >= t)) for t in thresholds])
    assert np.array_equal(r.fps, [np.sum(~y & (s >= t)) for t in thresholds])
    assert np.array_equal(s[y][r.pos_order], np.sort(s[y], kind="stable"))


def test_summarize_undefined_cases_are_nan_or_errors_as_sklearn():
    amaps, masks = random_problem(0)
    scores = amaps.reshape(len(amaps), -1).max(1)
    # all defective: AUROC undefined, AP and F1 are 1
    out = metrics.summarize(scores, np.ones(len(scores)), amaps, np.ones_like(masks))
    assert math.isnan(out["image_auroc"]) and math.isnan(out["pixel_auroc"]) and math.isnan(out["aupro"])
    assert out["image_ap"] == out["pixel_ap"] == out["image_f1_max"] == 1.0
    # no defect: everything nan, even with a NaN score (nothing is ranked)
    out = metrics.summarize(np.r_[np.nan, scores[1:]], np.zeros(len(scores)))
    assert all(math.isnan(v) for v in out.values())
    # NaN or inf scores where a metric is defined raise, as scikit-learn does
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError):
            metrics.summarize(np.r_[bad, scores[1:]], np.r_[0, np.ones(len(scores) - 1)])
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.pixel_auroc(np.where(masks > 0, np.nan, amaps), masks)
