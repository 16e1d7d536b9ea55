"""Evaluation metrics: image and pixel AUROC, AP, F1-max, and the MVTec AUPRO at dataset level.

Every function takes numpy arrays or torch tensors. Anomaly maps are `(N, H, W)` (a `(N, 1, H, W)`
channel is squeezed); masks are binarised at `> 0.5`; labels are 0 = good, 1 = defect. Metrics
that are undefined on the input (one class only, no defect regions) return `nan` instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.integrate import trapezoid  # the rule scikit-learn's `auc` uses

ArrayLike = Any  # numpy array, torch tensor or anything np.asarray accepts

# 8-connectivity inside each image, never across images of the (N, H, W) stack
_EIGHT_CONNECTED = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED[1] = True


# ---------------------------------------------------------------------------------------------------
# input handling


def _np(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = _np(scores).astype(np.float64).ravel()
    y = _np(labels).ravel() > 0.5
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    return s, y


def _as_nhw(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    elif x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W) or (N, 1, H, W), got shape {x.shape}")
    return x


def _maps_masks(amaps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = _as_nhw(np.asarray(_np(amaps), dtype=np.float32), "amaps")
    m = _as_nhw(_np(masks), "masks") > 0.5
    if a.shape != m.shape:
        raise ValueError(f"amaps and masks must have the same shape, got {a.shape} and {m.shape}")
    if not np.isfinite(a).all():
        raise ValueError("amaps contain NaN or inf")
    return a, m


# ---------------------------------------------------------------------------------------------------
# one ranking of a score set, shared by every threshold metric
#
# Every threshold metric (ROC, PR, F1, PRO) needs, for each distinct score t in descending order, how
# many positives and negatives score >= t. One value sort of all scores (no permutation: ties are
# grouped, so their order does not matter) plus a stable argsort of the positives' scores only (few
# pixels; AUPRO needs their order) gives all of it. The curves below then repeat scikit-learn's own
# arithmetic step for step (roc_curve with drop_intermediate, precision_recall_curve, trapezoid), so
# the values are the same floats scikit-learn returns, without its three sorts and input checks.


@dataclass(frozen=True)
class _Ranking:
    """Counts at each distinct score, descending: `tps[d]`, `fps[d]` = positives, negatives scoring >= it."""

    tps: np.ndarray  # (D,) float64
    fps: np.ndarray  # (D,) float64
    pos_order: np.ndarray  # (P,) indices into the positives (flat order), ascending score, ties by index

    @property
    def n_pos(self) -> int:
        return int(self.tps[-1])

    @property
    def n_neg(self) -> int:
        return int(self.fps[-1])


def _rank(s: np.ndarray, y: np.ndarray) -> _Ranking:
    """Rank flat scores `s` with boolean labels `y` once (raises on NaN or inf, as scikit-learn does)."""
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    asc = np.sort(s)  # values only: tied scores are one threshold, so a stable order is not needed
    first = np.empty(asc.size, dtype=bool)
    first[:1] = True
    np.not_equal(asc[1:], asc[:-1], out=first[1:])
    starts = np.flatnonzero(first)  # (D,) first index of each distinct value in `asc`
    pos = s[y]
    pos_order = np.argsort(pos, kind="stable")
    # which distinct value each positive has, counted per value, then summed from the top score down
    per_value = np.bincount(np.searchsorted(asc[starts], pos[pos_order]), minlength=starts.size)  # (D,)
    tps = np.cumsum(per_value[::-1]).astype(np.float64)  # (D,) descending thresholds from here on
    fps = (s.size - starts[::-1]) - tps  # all scores >= the threshold, less the positives
    return _Ranking(tps, fps, pos_order)


def _auroc_of(r: _Ranking | None) -> float:
    """sklearn's roc_auc_score: roc_curve (drop_intermediate=True), then the trapezoid rule."""
    if r is None or r.n_pos == 0 or r.n_neg == 0:
        return float("nan")
    fps, tps = r.fps, r.tps
    if fps.shape[0] > 2:  # drop points on straight segments, as roc_curve does
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps = fps[keep], tps[keep]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    return float(trapezoid(tps / tps[-1], fps / fps[-1]))


def _pr_of(r: _Ranking) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's precision_recall_curve: recall decreasing, ending at (precision 1, recall 0)."""
    ps = r.tps + r.fps  # >= 1 at every threshold
    precision = r.tps / ps
    recall = r.tps / r.tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]


def _ap_of(r: _Ranking | None) -> float:
    """Average precision, sklearn's step-wise sum: AP = sum_n (R_n - R_{n-1}) P_n."""
    if r is None or r.n_pos == 0:
        return float("nan")
    p, rec = _pr_of(r)
    return float(max(0.0, -np.sum(np.diff(rec) * p[:-1])))


def _f1_max_of(r: _Ranking | None) -> float:
    if r is None or r.n_pos == 0:
        return float("nan")
    p, rec = _pr_of(r)
    denom = p + rec
    # F1 = 2PR / (P + R)
    f1 = np.divide(2 * p * rec, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def _ranking(s: np.ndarray, y: np.ndarray, need_negatives: bool = False) -> _Ranking | None:
    """`_rank(s, y)`, or None where the metrics are `nan` (no positives; for AUROC, no negatives either)."""
    if not y.any() or (need_negatives and y.all()):
        return None
    return _rank(s, y)


def _auroc(s: np.ndarray, y: np.ndarray) -> float:
    return _auroc_of(_ranking(s, y, need_negatives=True))


def _ap(s: np.ndarray, y: np.ndarray) -> float:
    return _ap_of(_ranking(s, y))


def _f1_max(s: np.ndarray, y: np.ndarray) -> float:
    return _f1_max_of(_ranking(s, y))


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ROC-AUC of image scores; `nan` if only one class is present."""
    return _auroc(*_scores_labels(scores, labels))


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision (scikit-learn's step-wise definition); `nan` without defects."""
    return _ap(*_scores_labels(scores, labels))


def f1_max(scores: ArrayLike, labels: ArrayLike) -> float:
    """Maximum over thresholds of F1 = 2PR / (P + R); `nan` without defects."""
    return _f1_max(*_scores_labels(scores, labels))


def pixel_auroc(amaps: ArrayLike, masks: ArrayLike) -> float:
    """ROC-AUC over all pixels of all maps (exact, no subsampling); `nan` if one class."""
    a, m = _maps_masks(amaps, masks)
    return _auroc(a.ravel(), m.ravel())


def pixel_ap(amaps: ArrayLike, masks: ArrayLike) -> float:
    """Average precision over all pixels of all maps."""
    a, m = _maps_masks(amaps, masks)
    return _ap(a.ravel(), m.ravel())


def pixel_f1_max(amaps: ArrayLike, masks: ArrayLike) -> float:
    """F1-max over all pixels of all maps."""
    a, m = _maps_masks(amaps, masks)
    return _f1_max(a.ravel(), m.ravel())


# ---------------------------------------------------------------------------------------------------
# AUPRO
#
# The MVTec AD definition (Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021; official
# mvtec_ad_evaluation, generic_util.compute_pro and trapezoid_area): connected components of the
# ground truth over the whole test set; for a threshold t, PRO(t) = mean over components C_k of
# |{amap >= t} ∩ C_k| / |C_k| and FPR(t) = |{amap >= t} ∩ normal| / |normal|; AUPRO is the area under
# PRO(FPR) for FPR in [0, fpr_limit], interpolated linearly at fpr_limit, divided by fpr_limit.


def _full_pro_curve(
    a: np.ndarray, m: np.ndarray, num_thresholds: int | None = None, ranking: _Ranking | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact (FPR, PRO) curve from (0, 0) to (1, 1), one point per distinct score; None if undefined.

    `ranking`: `_rank(a.ravel(), m.ravel())` if the caller already has it (exact curve only).
    """
    comps, n_comps = ndimage.label(m, structure=_EIGHT_CONNECTED)
    n_normal = m.size - int(m.sum())
    if n_comps == 0 or n_normal == 0:
        return None
    s, comps, y = a.ravel(), comps.ravel(), m.ravel()
    if num_thresholds is not None:  # evaluate only at evenly spaced thresholds: quantise to grid indices
        s = np.searchsorted(np.linspace(s.min(), s.max(), num_thresholds), s, side="right")
        ranking = None
    r = ranking if ranking is not None else _rank(s, y)
    comps_pos = comps[y]  # (P,) component of each defect pixel, flat order
    sizes = np.bincount(comps_pos)  # (K+1,); entry 0 is never used
    # a pixel of component k adds 1 / (|C_k| K) to PRO once the threshold drops to its score
    weight = 1.0 / (sizes[comps_pos] * n_comps)
    # defect pixels by descending score (ties: later pixel first, as a reversed stable sort of all pixels)
    cum = np.r_[0.0, np.cumsum(weight[r.pos_order[::-1]])]
    fpr = r.fps / n_normal
    pro = cum[r.tps.astype(np.int64)]  # PRO at each threshold: all defect pixels scoring >= it
    fpr = np.r_[0.0, fpr]
    pro = np.r_[0.0, np.clip(pro, 0.0, 1.0)]
    return fpr, pro


def _truncate(fpr: np.ndarray, pro: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """The curve's points with FPR <= limit, plus the linearly interpolated point at FPR = limit."""
    i = int(np.searchsorted(fpr, limit, side="right"))  # fpr[0] = 0 <= limit and fpr[-1] = 1
    fpr_c, pro_c = fpr[:i], pro[:i]
    if fpr_c[-1] < limit:
        t = (limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
        fpr_c = np.r_[fpr_c, limit]
        pro_c = np.r_[pro_c, pro[i - 1] + t * (pro[i] - pro[i - 1])]
    return fpr_c, pro_c


def _check_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def pro_curve(amaps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Dataset-level (FPR, PRO) curve up to and including the interpolated point at `fpr_limit`.

    Empty arrays if the curve is undefined (no defect regions or no normal pixels).
    """
    _check_limit(fpr_limit)
    curve = _full_pro_curve(*_maps_masks(amaps, masks))
    if curve is None:
        return np.zeros(0), np.zeros(0)
    return _truncate(*curve, fpr_limit)


def aupro(amaps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3, num_thresholds: int | None = None) -> float:
    """Normalised area under the dataset-level PRO curve for FPR in [0, fpr_limit] (MVTec AD).

    Exact over all distinct scores by default; `num_thresholds` evaluates only that many evenly
    spaced thresholds instead. `nan` without defect regions or without normal pixels.
    """
    _check_limit(fpr_limit)
    return _aupro(*_maps_masks(amaps, masks), fpr_limit, num_thresholds)


def _aupro(
    a: np.ndarray, m: np.ndarray, fpr_limit: float, num_thresholds: int | None = None, ranking: _Ranking | None = None
) -> float:
    curve = _full_pro_curve(a, m, num_thresholds=num_thresholds, ranking=ranking)
    if curve is None:
        return float("nan")
    fpr, pro = _truncate(*curve, fpr_limit)
    # trapezoid rule
    area = np.sum(np.diff(fpr) * (pro[1:] + pro[:-1]) / 2)
    return float(area / fpr_limit)


# ---------------------------------------------------------------------------------------------------


def summarize(
    scores: ArrayLike,
    labels: ArrayLike,
    amaps: ArrayLike | None = None,
    masks: ArrayLike | None = None,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """Image metrics, and pixel metrics plus AUPRO when maps are given.

    Pixel metrics are `nan` when the masks contain no defect pixel.
    """
    s, y = _scores_labels(scores, labels)
    r = _ranking(s, y)  # one sort of the image scores for the three
    out = {"image_auroc": _auroc_of(r), "image_ap": _ap_of(r), "image_f1_max": _f1_max_of(r)}
    if amaps is None:
        return out
    if masks is None:
        raise ValueError("summarize: masks are required when amaps are given")
    a, m = _maps_masks(amaps, masks)
    pixel_keys = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")
    if not m.any():
        return out | dict.fromkeys(pixel_keys, float("nan"))
    _check_limit(fpr_limit)
    r = _rank(a.ravel(), m.ravel())  # the one sort of all pixel scores, shared by the four
    out["pixel_auroc"] = _auroc_of(r)
    out["pixel_ap"] = _ap_of(r)
    out["pixel_f1_max"] = _f1_max_of(r)
    out["aupro"] = _aupro(a, m, fpr_limit, ranking=r)
    return out
