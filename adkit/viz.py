"""Pictures: heat-map overlays, galleries of cases, PRO curves, score histograms (matplotlib);
interactive scatters (plotly) live in the notebooks' helpers below.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def to_hwc(image) -> np.ndarray:
    """An image as float `(H,W,3)` in [0, 1], from `(3,H,W)` tensors/arrays or uint8 `(H,W,3)`."""
    a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    a = a.astype(np.float32)
    return a / 255.0 if a.max() > 1.5 else a


def overlay(image, amap: np.ndarray, vmin: float | None = None, vmax: float | None = None,
            alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """The image with its anomaly map blended on top, as float RGB `(H,W,3)`."""
    img = to_hwc(image)
    a = np.asarray(amap, dtype=np.float32)
    lo = float(a.min()) if vmin is None else vmin
    hi = float(a.max()) if vmax is None else vmax
    norm = np.clip((a - lo) / max(hi - lo, 1e-8), 0, 1)
    heat = plt.get_cmap(cmap)(norm)[..., :3]
    return (1 - alpha) * img + alpha * heat


def mask_outline(ax, mask: np.ndarray, color: str = "white") -> None:
    if mask is not None and np.asarray(mask).any():
        ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors=color, linewidths=1.0)


def gallery(items: list[dict], ncols: int = 4, vmin: float | None = None, vmax: float | None = None,
            size: float = 2.4, title: str | None = None):
    """A grid of overlays; each item: {"image", "amap", optional "mask", "title"}. Returns the figure."""
    n = max(1, len(items))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if title else 0)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, it in zip(axes.flat, items):
        ax.imshow(overlay(it["image"], it["amap"], vmin, vmax))
        mask_outline(ax, it.get("mask"))
        ax.set_title(it.get("title", ""), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


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
        return {"image": images[cls][i], "amap": p["amap"][i], "mask": p["mask"][i],
                "title": f"{cls}/{p['defect'][i]} {tag} z={z:.1f}"}

    return {"best": [item(r, "hit") for r in defects[:n]],
            "worst": [item(r, "missed") for r in defects[::-1][:n]] + [item(r, "false alarm") for r in normals[:n]]}


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def pro_curve_plot(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float = 0.3, label: str = "", ax=None):
    """PRO over FPR up to the integration limit."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    ax.plot(fpr, pro, label=label)
    ax.set_xlim(0, fpr_limit)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("per-region overlap")
    if label:
        ax.legend(fontsize=8)
    return ax


def score_hist(groups: dict[str, np.ndarray], bins: int = 30, ax=None, title: str = ""):
    """Overlaid histograms of image scores, one per group (e.g. normal vs blend)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3))
    allv = np.concatenate([np.asarray(v) for v in groups.values()])
    edges = np.linspace(allv.min(), allv.max() + 1e-9, bins + 1)
    for name, v in groups.items():
        ax.hist(v, bins=edges, alpha=0.5, label=name)
    ax.set_xlabel("image score")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return ax
