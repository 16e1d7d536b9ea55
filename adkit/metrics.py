"""Evaluation metrics: image and pixel AUROC, AP, F1-max, and the MVTec AUPRO at dataset level.

Every function takes numpy arrays or torch tensors. Anomaly maps are `(N, H, W)` (a `(N, 1, H, W)`
channel is squeezed); masks are binarised at `> 0.5`; labels are 0 = good, 1 = defect. Metrics
that are undefined on the input (one class only, no defect regions) return `nan` instead of raising.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

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
# threshold-free classification metrics on flat scores


def _auroc(s: np.ndarray, y: np.ndarray) -> float:
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def _ap(s: np.ndarray, y: np.ndarray) -> float:
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, s))


def _f1_max(s: np.ndarray, y: np.ndarray) -> float:
    if not y.any():
        return float("nan")
    p, r, _ = precision_recall_curve(y, s)
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


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
    a: np.ndarray, m: np.ndarray, num_thresholds: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact (FPR, PRO) curve from (0, 0) to (1, 1), one point per distinct score; None if undefined."""
    comps, n_comps = ndimage.label(m, structure=_EIGHT_CONNECTED)
    n_normal = m.size - int(m.sum())
    if n_comps == 0 or n_normal == 0:
        return None
    s, comps, normal = a.ravel(), comps.ravel(), ~m.ravel()
    if num_thresholds is not None:  # evaluate only at evenly spaced thresholds: quantise to grid indices
        s = np.searchsorted(np.linspace(s.min(), s.max(), num_thresholds), s, side="right")
    sizes = np.bincount(comps)  # (K+1,); entry 0 counts normal pixels and is never used below
    # a pixel of component k adds 1 / (|C_k| K) to PRO once the threshold drops to its score
    weight = np.where(comps > 0, 1.0 / (sizes[comps] * n_comps), 0.0)
    order = np.argsort(s, kind="stable")[::-1]  # descending score
    s = s[order]
    fpr = np.cumsum(normal[order]) / n_normal
    pro = np.cumsum(weight[order])
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a threshold admits all pixels with an equal score
    fpr = np.r_[0.0, fpr[last_of_tie]]
    pro = np.r_[0.0, np.clip(pro[last_of_tie], 0.0, 1.0)]
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


def aupro(
    amaps: ArrayLike, masks: ArrayLike, fpr_limit: float = 0.3, num_thresholds: int | None = None
) -> float:
    """Normalised area under the dataset-level PRO curve for FPR in [0, fpr_limit] (MVTec AD).

    Exact over all distinct scores by default; `num_thresholds` evaluates only that many evenly
    spaced thresholds instead. `nan` without defect regions or without normal pixels.
    """
    _check_limit(fpr_limit)
    curve = _full_pro_curve(*_maps_masks(amaps, masks), num_thresholds=num_thresholds)
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
    out = {"image_auroc": _auroc(s, y), "image_ap": _ap(s, y), "image_f1_max": _f1_max(s, y)}
    if amaps is None:
        return out
    if masks is None:
        raise ValueError("summarize: masks are required when amaps are given")
    a, m = _maps_masks(amaps, masks)
    nan = float("nan")
    has_defect = bool(m.any())
    out["pixel_auroc"] = _auroc(a.ravel(), m.ravel()) if has_defect else nan
    out["pixel_ap"] = _ap(a.ravel(), m.ravel()) if has_defect else nan
    out["pixel_f1_max"] = _f1_max(a.ravel(), m.ravel()) if has_defect else nan
    out["aupro"] = aupro(a, m, fpr_limit) if has_defect else nan
    return out
