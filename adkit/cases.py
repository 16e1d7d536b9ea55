"""Choosing what to show: which cases, failures and thresholds a figure draws, and the scale its maps share.

Numbers only (numpy); `adkit.viz` draws what these functions choose (and re-exports them under their old names).
"""

from __future__ import annotations

import numpy as np

# the colour-bar label of a map shown on its class's normal scale (`relative`)
RELATIVE_LABEL = "map relative to normals\n(0: typical normal pixel,\n1: a high normal peak)"


def cases(preds: dict[str, dict], images: dict[str, np.ndarray], n: int = 4) -> dict[str, list[dict]]:
    """Best and worst cases over classes: the highest-scoring defects ("best") and the lowest-scoring
    defects and highest-scoring normals ("worst"), each ranked by score relative to its class's normals."""
    rows = []
    for cls, p in preds.items():
        good = p["score"][p["label"] == 0]
        ref = float(np.median(good)) if len(good) else 0.0
        spread = float(np.std(good)) + 1e-8 if len(good) > 1 else 1.0
        for i in range(len(p["score"])):
            z = (float(p["score"][i]) - ref) / spread
            rows.append((cls, i, int(p["label"][i]), z))
    defects = sorted([r for r in rows if r[2] == 1], key=lambda r: -r[3])
    normals = sorted([r for r in rows if r[2] == 0], key=lambda r: -r[3])

    def item(r, tag):
        cls, i, _, z = r
        p = preds[cls]
        return {
            "image": images[cls][i],
            "amap": p["amap"][i],
            "mask": p["mask"][i],
            "title": f"{cls}/{p['defect'][i]} {tag} z={z:.1f}",
        }

    return {
        "best": [item(r, "hit") for r in defects[:n]],
        "worst": [item(r, "missed") for r in defects[::-1][:n]] + [item(r, "false alarm") for r in normals[:n]],
    }


def normal_scale(normal_maps: np.ndarray, q: float = 95.0) -> tuple[float, float]:
    """A colour scale read off maps of normal images: (median pixel, `q`-th percentile of their maxima).

    With `relative(amap, scale)`, 0 is an ordinary normal pixel and 1 the peak of a high-scoring normal
    image, so maps of models whose scores live on different scales can be compared by eye.
    """
    m = np.asarray(normal_maps, dtype=np.float64)
    m = m[None] if m.ndim == 2 else m
    lo = float(np.median(m))
    hi = float(np.percentile(m.reshape(len(m), -1).max(axis=1), q))
    return lo, max(hi, lo + 1e-8)


def relative(amap: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """`(amap − lo) / (hi − lo)` for `scale = (lo, hi)` from `normal_scale`."""
    lo, hi = scale
    return (np.asarray(amap, dtype=np.float32) - lo) / (hi - lo)


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The image-score threshold with the highest F1 (flag `score >= threshold`); inf without defects."""
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels) > 0
    if not labels.any():
        return float("inf")
    p, r, t = precision_recall_curve(labels, np.asarray(scores, dtype=np.float64))
    f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
    return float(t[int(np.argmax(f1))])


def browser_indices(preds: dict[str, dict], cls: str, defect: str | None = None) -> list[int]:
    """Indices of a class's test images, all or of one defect type ("good" for the normals)."""
    p = preds[cls]
    return [i for i, d in enumerate(p["defect"]) if defect in (None, "all", d)]


def failures(preds: dict[str, dict], images: dict[str, np.ndarray], n: int = 2) -> list[dict]:
    """Per class, the `n` highest-scoring normals and the `n` lowest-scoring defects, as `gallery` items
    (a row of 2n per class), each map relative to its class's normal maps (`normal_scale`, shown on 0..2)."""
    items = []
    for cls, p in preds.items():
        good, bad = np.flatnonzero(p["label"] == 0), np.flatnonzero(p["label"] == 1)
        scale = normal_scale(p["amap"][good]) if len(good) else None
        picks = [(i, "normal, high") for i in good[np.argsort(-p["score"][good])][:n]]
        picks += [(i, "defect, low") for i in bad[np.argsort(p["score"][bad])][:n]]
        for i, tag in picks:
            title = f"{cls}/{p['defect'][i]}\n{tag} {float(p['score'][i]):.2f}"
            items.append(relative_item(images[cls][i], p["amap"][i], p["mask"][i], scale, title, RELATIVE_LABEL))
    return items


def relative_item(image, amap, mask, scale, title: str, cbar_label: str | None = None) -> dict:
    """A `viz.gallery` item whose map is shown relative to its class's normal maps (`relative`, on 0..2) when
    there is a `scale`, else as it is; `cbar_label` labels the relative scale."""
    return {
        "image": image,
        "amap": relative(amap, scale) if scale else amap,
        "mask": mask,
        "vmin": 0.0 if scale else None,
        "vmax": 2.0 if scale else None,
        "cbar_label": cbar_label if scale else None,
        "title": title,
    }
