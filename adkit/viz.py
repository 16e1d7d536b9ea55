"""Pictures: heat-map overlays, galleries of cases, side-by-side maps of several models, a test-set
browser panel, PRO curves, score histograms, loss curves (matplotlib), and embedding scatters (plotly,
with a matplotlib copy for static viewers).

Every function returns its figure and needs no browser, so it is tested like any other code; the
interactive explorers in `adkit.widgets` only wire these to ipywidgets controls.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .cases import RELATIVE_LABEL, f1_threshold, normal_scale, relative
from .config import IMAGE_SIZE


def to_hwc(image) -> np.ndarray:
    """An image as float `(H,W,3)` in [0, 1], from `(3,H,W)` tensors/arrays or uint8 `(H,W,3)`."""
    a = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    a = a.astype(np.float32)
    return a / 255.0 if a.max() > 1.5 else a


def overlay(
    image, amap: np.ndarray, vmin: float | None = None, vmax: float | None = None, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
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


OWN_RANGE_LABEL = "anomaly map, each on\nits own range (low → high)"


def colorbar(fig, axes, vmin: float, vmax: float, label: str, cmap: str = "jet"):
    """One colour bar beside `axes` for overlays drawn with `overlay(..., vmin, vmax, cmap=cmap)`."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    sm = ScalarMappable(Normalize(vmin, vmax), plt.get_cmap(cmap))
    cb = fig.colorbar(sm, ax=axes, fraction=0.04, pad=0.02, shrink=0.9)
    cb.set_label(label, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return cb


def gallery(
    items: list[dict],
    ncols: int = 4,
    vmin: float | None = None,
    vmax: float | None = None,
    size: float = 2.4,
    title: str | None = None,
    cbar_label: str | None = None,
):
    """A grid of overlays; each item: {"image", "amap", optional "mask", "title", "vmin", "vmax", "cbar_label"}.

    A colour bar says what the colours mean: the common scale's values when every item shares one
    (labelled `cbar_label`, else the items' common label, else "anomaly score"), otherwise low → high of each
    map's own range."""
    n = max(1, len(items))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols + 0.9, size * nrows + (0.4 if title else 0)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    ranges = set()
    for ax, it in zip(axes.flat, items):
        lo, hi = it.get("vmin", vmin), it.get("vmax", vmax)
        ranges.add((lo, hi, it.get("cbar_label")))
        ax.imshow(overlay(it["image"], it["amap"], lo, hi))
        mask_outline(ax, it.get("mask"))
        ax.set_title(it.get("title", ""), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    ((lo, hi, label),) = ranges if len(ranges) == 1 else ((None, None, None),)
    if lo is not None and hi is not None:
        colorbar(fig, axes, lo, hi, cbar_label or label or "anomaly score")
    else:
        colorbar(fig, axes, 0.0, 1.0, OWN_RANGE_LABEL).set_ticks([0, 1], labels=["low", "high"])
    return fig


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


def gap_curve(rows: list[dict], ax=None, title: str = ""):
    """The interference curve: one-class minus multi-class mean image AUROC (points) against the number of
    classes, one line per recipe, each point the mean over seeds with its 95% interval (`rows` as written by
    `benchmarks/interference.py summary --json`: "k", "gap" = {"mean", "ci_low", "ci_high", "n"}, and the
    recipe's "steps_per_class", "image_size")."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    recipes = sorted({(r["steps_per_class"], r["image_size"]) for r in rows})
    for i, (steps, size) in enumerate(recipes):
        pts = sorted(
            (r for r in rows if (r["steps_per_class"], r["image_size"]) == (steps, size)), key=lambda r: r["k"]
        )
        k = np.array([r["k"] for r in pts], dtype=float) * (1 + 0.03 * (i - (len(recipes) - 1) / 2))
        mean = np.array([r["gap"]["mean"] for r in pts])
        lo = np.array([r["gap"]["ci_low"] if r["gap"]["ci_low"] is not None else np.nan for r in pts])
        hi = np.array([r["gap"]["ci_high"] if r["gap"]["ci_high"] is not None else np.nan for r in pts])
        n = min(r["gap"]["n"] for r in pts)
        ax.errorbar(
            k,
            mean,
            yerr=[mean - lo, hi - mean],
            marker="o",
            capsize=3,
            label=f"{steps} steps/class, {size} px ({n} seeds)",
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ks = sorted({r["k"] for r in rows})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("classes trained together (multi-class) / one model each (one-class)")
    ax.set_ylabel("one-class − multi-class\nmean image AUROC (points)")
    ax.set_title(title or "Cross-class interference: mean and 95% interval over seeds", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
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


def noisy_or_plane(
    groups: dict[str, tuple[np.ndarray, np.ndarray]],
    ax=None,
    title: str = "",
    levels: tuple[float, ...] = (0.5, 0.75, 0.9, 0.99),
):
    """The dual student's two probabilities as a point per image, `(p_local, p_semantic)` per group, over
    the contours of their Noisy-OR `P = 1 − (1 − p_local)(1 − p_semantic)`. The contour labels sit on the
    square's left side (where `p_local` is small and few points fall), on a white ground, and the legend
    outside the axes, so neither covers a point or is cut by the square's edge."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 4.0))
    g = np.linspace(0, 1, 201)
    px, py = np.meshgrid(g, g)
    cs = ax.contour(px, py, 1 - (1 - px) * (1 - py), levels=list(levels), colors="gray", linewidths=0.8)
    # on the contour P = v, the point at p_local = 0.08 has p_semantic = 1 − (1 − v)/0.92
    spots = [(0.08, 1 - (1 - v) / 0.92) for v in levels]
    for t in ax.clabel(cs, fmt=lambda v: f"P={v:g}", fontsize=7, inline=False, manual=spots):
        top = t.get_position()[1] > 0.95
        t.set(rotation=0, va="top" if top else "center", bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    for name, (p_local, p_semantic) in groups.items():
        ax.scatter(p_local, p_semantic, s=10, alpha=0.6, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("p_local (E–D student)")
    ax.set_ylabel("p_semantic (E–E student)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
    return ax


# -- notebooks ------------------------------------------------------------------------------------------
def notebook_defaults(dpi: int = 100, jpeg_quality: int | None = None) -> None:
    """Stored outputs a static viewer can show: matplotlib figures as PNG at `dpi` (as JPEG at `jpeg_quality`
    when given: photographs and heat maps are 5–10× smaller, at a loss of sharpness). Interactive figures
    (`InteractiveFigure`) carry their own PNG."""
    plt.rcParams["figure.dpi"] = dpi
    plt.rcParams["savefig.dpi"] = dpi
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # not in IPython
        return
    if jpeg_quality is not None:
        set_matplotlib_formats("jpeg", pil_kwargs={"quality": jpeg_quality})
    else:
        set_matplotlib_formats("png")


# -- scales ---------------------------------------------------------------------------------------------


# -- several models side by side ------------------------------------------------------------------------
def compare_maps(
    images,
    maps: dict[str, np.ndarray],
    masks=None,
    col_titles: list[str] | None = None,
    scales: dict[str, tuple[float, float]] | None = None,
    vmax: float = 2.0,
    size: float = 1.9,
    title: str | None = None,
):
    """A grid: the images (mask outlined) in the first row, then one row of overlays per model.

    `maps[name]` is `(N,H,W)` for the N images. With `scales[name]` (see `normal_scale`) each row shows
    its relative map on 0..`vmax`, so that rows compare, titled with its maximum inside the mask and
    overall; without, each map is scaled to its own range.
    """
    n = len(images)
    rows = ["image"] + list(maps)
    fig, axes = plt.subplots(
        len(rows), n, figsize=(size * n + 1.2, size * len(rows) + (0.3 if title else 0)), squeeze=False
    )
    for j in range(n):
        for i, row in enumerate(rows):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            mask = None if masks is None else masks[j]
            if row == "image":
                ax.imshow(to_hwc(images[j]))
                if col_titles:
                    ax.set_title(col_titles[j], fontsize=8)
            else:
                a = maps[row][j]
                if scales and row in scales:
                    a = relative(a, scales[row])
                    ax.imshow(overlay(images[j], a, 0.0, vmax))
                    m = None if mask is None else np.asarray(mask, dtype=bool)
                    inside = f"defect {float(a[m].max()):.1f} · " if m is not None and m.any() else ""
                    ax.set_title(f"{inside}max {float(a.max()):.1f}", fontsize=7)
                else:
                    ax.imshow(overlay(images[j], a))
            mask_outline(ax, mask)
            if j == 0:
                ax.set_ylabel(row, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if scales and all(r in scales for r in rows[1:]):
        colorbar(fig, axes[1:], 0.0, vmax, RELATIVE_LABEL)
    elif len(rows) > 1:
        colorbar(fig, axes[1:], 0.0, 1.0, OWN_RANGE_LABEL).set_ticks([0, 1], labels=["low", "high"])
    return fig


def compare_runs(
    preds_by_run: dict[str, dict],
    images: dict[str, np.ndarray],
    picks: list[tuple[str, int]],
    vmax: float = 2.0,
    title: str | None = None,
):
    """The same test images under several runs: `compare_maps` with each run's maps of a class shown
    relative to that run's maps of the class's normal test images (`normal_scale`).

    `preds_by_run[label][cls]` as from `evaluate(..., return_preds=True)`; `picks` = [(class, index)].
    """
    maps = {}
    for label, preds in preds_by_run.items():
        rows = []
        for cls, i in picks:
            p = preds[cls]
            rows.append(relative(p["amap"][i], normal_scale(p["amap"][p["label"] == 0])))
        maps[label] = np.stack(rows)
    first = next(iter(preds_by_run.values()))
    imgs = [images[c][i] for c, i in picks]
    masks = [first[c]["mask"][i] for c, i in picks]
    titles = [f"{c}/{first[c]['defect'][i]}" for c, i in picks]
    return compare_maps(imgs, maps, masks, titles, {k: (0.0, 1.0) for k in maps}, vmax=vmax, title=title)


def image_grid(images, titles: list[str] | None = None, masks=None, ncols: int = 6, size: float = 1.6):
    """Plain images in a grid (masks outlined when given)."""
    n = max(1, len(images))
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, ax in enumerate(axes.flat[: len(images)]):
        ax.imshow(to_hwc(images[k]))
        if masks is not None:
            mask_outline(ax, masks[k], color="red")
        if titles:
            ax.set_title(titles[k], fontsize=7)
    fig.tight_layout()
    return fig


def class_examples(data_name: str, root, classes: list[str], image_size: int = IMAGE_SIZE):
    """One row per class: a training image, a normal test image, and one test image of each defect type
    (its mask outlined in red)."""
    from . import data
    from .data.core import load_record

    train = data.load_records(data_name, root, "train", list(classes))
    test = data.load_records(data_name, root, "test", list(classes))
    defects = sorted({r.defect for r in test} - {data.GOOD})
    cols = ["train", data.GOOD] + defects
    imgs, masks, titles = [], [], []
    for cls in classes:
        first = {"train": next(r for r in train if r.cls == cls)}
        for d in cols[1:]:
            first[d] = next((r for r in test if r.cls == cls and r.defect == d), None)
        for d in cols:
            rec = first[d]
            if rec is None:
                img, m = np.ones((image_size, image_size, 3), np.uint8) * 255, None
            else:
                img, m = load_record(rec, image_size)
            imgs.append(img)
            masks.append(m)
            titles.append(f"{cls}: {d}" if d == "train" else d)
    return image_grid(imgs, titles, masks, ncols=len(cols))


# -- the test-set browser -------------------------------------------------------------------------------


def browser_figure(
    preds: dict[str, dict],
    images: dict[str, np.ndarray],
    cls: str,
    idx: int,
    threshold: float | None = None,
    size: float = 2.3,
):
    """One test image: the image, its ground-truth mask, the anomaly map, and its score against the
    threshold among the class's normal and defect scores. `preds` as from `evaluate(..., return_preds=True)`,
    `images[cls]` the class's test images in the same order. Default threshold: the class's F1-optimal one."""
    p = preds[cls]
    score, label, defect = float(p["score"][idx]), int(p["label"][idx]), p["defect"][idx]
    thr = f1_threshold(p["score"], p["label"]) if threshold is None else float(threshold)
    good = p["score"][p["label"] == 0]
    scale = normal_scale(p["amap"][p["label"] == 0]) if len(good) else None
    fig, axes = plt.subplots(1, 4, figsize=(size * 4 + 1.0, size), gridspec_kw={"width_ratios": [1, 1, 1, 1.4]})
    img = to_hwc(images[cls][idx])
    axes[0].imshow(img)
    axes[0].set_title(f"{cls}/{defect} #{idx}", fontsize=8)
    axes[1].imshow(np.asarray(p["mask"][idx], dtype=float), cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("ground truth", fontsize=8)
    amap = p["amap"][idx]
    if scale is not None:
        axes[2].imshow(overlay(img, relative(amap, scale), 0.0, 2.0))
        colorbar(fig, axes[2], 0.0, 2.0, RELATIVE_LABEL)
    else:
        axes[2].imshow(overlay(img, amap))
        colorbar(fig, axes[2], 0.0, 1.0, OWN_RANGE_LABEL).set_ticks([0, 1], labels=["low", "high"])
    mask_outline(axes[2], p["mask"][idx])
    axes[2].set_title("anomaly map", fontsize=8)
    for ax in axes[:3]:
        ax.axis("off")
    ax = axes[3]
    rng = np.random.default_rng(0)
    for lab, name, color in ((0, "normal", "tab:blue"), (1, "defect", "tab:red")):
        s = p["score"][p["label"] == lab]
        ax.scatter(s, lab + rng.uniform(-0.15, 0.15, len(s)), s=10, alpha=0.5, color=color, label=name)
    ax.scatter([score], [label], s=80, facecolors="none", edgecolors="black", linewidths=1.5)
    if np.isfinite(thr):
        ax.axvline(thr, color="black", ls="--", lw=1)
    ax.set_yticks([0, 1], ["normal", "defect"], fontsize=8)
    ax.set_xlabel("image score", fontsize=8)
    flagged = score >= thr
    verdict = "correct" if flagged == bool(label) else ("false alarm" if flagged else "missed")
    ax.set_title(f"score {score:.3g} {'≥' if flagged else '<'} threshold {thr:.3g}: {verdict}", fontsize=8)
    fig.tight_layout()
    return fig


# -- failure gallery ------------------------------------------------------------------------------------


# -- training -------------------------------------------------------------------------------------------
def loss_plot(
    history: list[dict],
    keys: list[str] | None = None,
    ax=None,
    smooth: int = 10,
    total: int | None = None,
    title: str = "",
    log: bool | None = None,
):
    """Loss terms over training steps (thin: raw, thick: running mean over `smooth` steps). Default keys:
    "loss" and every term that differs from it; `log` scale by default when the values span over 10×."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    if keys is None:
        keys = [
            k
            for k in (history[0] if history else {"loss": 0})
            if k == "loss" or any(h.get(k) != h.get("loss") for h in history)
        ]
    steps = np.arange(1, len(history) + 1)
    for k in keys:
        v = np.array([h.get(k, np.nan) for h in history], dtype=float)
        (line,) = ax.plot(steps, v, lw=0.6, alpha=0.35)
        if len(v) >= smooth:
            run = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
            ax.plot(steps[smooth - 1 :], run, lw=1.6, color=line.get_color(), label=k)
        else:
            line.set_label(k)
    if total:
        ax.set_xlim(0, total)
    vals = np.array([h.get(k, np.nan) for h in history for k in keys], dtype=float)
    if log is None:
        log = bool(len(vals)) and np.nanmin(vals) > 0 and np.nanmax(vals) > 10 * np.nanmin(vals)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


# -- interactive figures (plotly) with a static copy (matplotlib) ------------------------------------------
class InteractiveFigure:
    """A plotly figure and a matplotlib drawing of the same data. Displayed, it gives plotly's JSON (JupyterLab
    draws the live figure) and a PNG of the drawing (GitHub, nbviewer and nbconvert show that); no browser,
    no kaleido."""

    def __init__(self, plotly, draw, dpi: int = 100):
        self.plotly = plotly  # a plotly.graph_objects.Figure
        self._draw = draw  # () -> matplotlib Figure
        self.dpi = dpi

    def matplotlib(self):
        """The static copy, a new `matplotlib.figure.Figure` (not registered with pyplot)."""
        return self._draw()

    def png(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.matplotlib().savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        import base64

        import plotly.io as pio

        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(self.plotly.to_dict())
        bundle["image/png"] = base64.b64encode(self.png()).decode("ascii")
        return bundle

    def _ipython_display_(self) -> None:
        """Shown in IPython as exactly these two outputs (no `text/plain` repr beside them)."""
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)

    show = _ipython_display_


# -- embeddings ---------------------------------------------------------------------------------------------
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
# plotly marker symbols and the matplotlib markers drawn for them (filled, like plotly's)
MARKERS = {
    "circle": "o",
    "x": "X",
    "diamond": "D",
    "square": "s",
    "triangle-up": "^",
    "cross": "P",
    "triangle-down": "v",
    "star": "*",
    "hexagon": "h",
    "pentagon": "p",
}
OUTLINE = 1.0  # px, the black edge of the markers drawn on top


def _embedding_groups(
    color: list[str],
    symbol: list[str] | None = None,
    symbols: dict[str, str] | None = None,
    on_top: str | None = None,
) -> list[dict]:
    """The point groups of an embedding scatter, in drawing order: one per (color, symbol) value, with its
    `label`, point indices `idx`, hex `color`, plotly `symbol` and whether it is drawn `top` (its symbol value
    holds `on_top`). Groups go symbol by symbol in the order of `symbols` when given, then by first use;
    the top groups last."""
    color = [str(c) for c in color]
    symbol = [str(s) for s in symbol] if symbol is not None else [""] * len(color)
    shapes = list(MARKERS)
    colors = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(dict.fromkeys(color))}
    marks = {**{s: shapes[i % len(shapes)] for i, s in enumerate(dict.fromkeys(symbol))}, **(symbols or {})}
    sym_order = list(dict.fromkeys(list(symbols or {}) + symbol))
    col_order = list(dict.fromkeys(color))

    def top(s: str) -> bool:
        return bool(on_top) and on_top in s

    keys = sorted(
        dict.fromkeys(zip(color, symbol)), key=lambda g: (top(g[1]), sym_order.index(g[1]), col_order.index(g[0]))
    )
    return [
        {
            "label": f"{c} {s}".strip(),
            "idx": [i for i in range(len(color)) if color[i] == c and symbol[i] == s],
            "color": colors[c],
            "symbol": marks[s],
            "top": top(s),
        }
        for c, s in keys
    ]


def embedding_figure(
    panels: dict[str, np.ndarray],
    color: list[str],
    symbol: list[str] | None = None,
    hover: list[str] | None = None,
    title: str = "",
    height: int = 380,
    marker_size: int = 6,
    symbols: dict[str, str] | None = None,
    on_top: str | None = None,
    top_size: int = 8,
    width: int = 900,
) -> InteractiveFigure:
    """Side-by-side 2-D scatters (one per panel, e.g. teacher / student / residual) of the same points,
    coloured by `color` (e.g. class), shaped by `symbol` (e.g. normal / defect), hover text `hover`.
    `symbols` maps symbol values to plotly marker symbols (default: circle, x, diamond, ... by first use).
    Groups whose symbol value holds `on_top` are drawn last, `top_size` px, opaque, outlined in black.
    The static copy is `width` × `height` px."""
    groups = _embedding_groups(color, symbol, symbols, on_top)
    hover = [str(h) for h in hover] if hover is not None else [""] * len(color)
    xy = {name: np.round(np.asarray(v, dtype=float), 3) for name, v in panels.items()}
    for g in groups:
        g["size"], g["opacity"] = (top_size, 1.0) if g["top"] else (marker_size, 0.75)
    plotly = _embedding_plotly(xy, groups, hover, title, height)
    return InteractiveFigure(plotly, lambda: _embedding_matplotlib(xy, groups, title, width, height))


def _embedding_plotly(xy: dict[str, np.ndarray], groups: list[dict], hover: list[str], title: str, height: int):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(xy), subplot_titles=list(xy), horizontal_spacing=0.04)
    for j, pts in enumerate(xy.values()):
        for g in groups:
            edge = dict(width=OUTLINE, color="black") if g["top"] else dict(width=0)
            fig.add_trace(
                go.Scatter(
                    x=pts[g["idx"], 0],
                    y=pts[g["idx"], 1],
                    mode="markers",
                    name=g["label"],
                    legendgroup=g["label"],
                    showlegend=j == 0,
                    text=[hover[i] for i in g["idx"]],
                    hoverinfo="text",
                    marker=dict(color=g["color"], symbol=g["symbol"], size=g["size"], opacity=g["opacity"], line=edge),
                ),
                row=1,
                col=j + 1,
            )
        fig.update_xaxes(showticklabels=False, row=1, col=j + 1)
        fig.update_yaxes(showticklabels=False, row=1, col=j + 1)
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=60, b=10), legend=dict(font=dict(size=10)))
    return fig


def _embedding_matplotlib(xy: dict[str, np.ndarray], groups: list[dict], title: str, width: int, height: int):
    """The same panels, groups, colours, symbols and legend as `_embedding_plotly`, drawn by matplotlib."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    pt = 72 / 100  # points per pixel at 100 dpi
    fig = Figure(figsize=(width / 100, height / 100), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(xy)))
    legend_px = 60 + 7 * max((len(g["label"]) for g in groups), default=0)  # marker and names at 8 pt
    room = (width - legend_px) / len(xy)  # px per panel, about
    for ax, (name, pts) in zip(axes, xy.items()):
        for g in groups:
            ax.scatter(
                pts[g["idx"], 0],
                pts[g["idx"], 1],
                s=(g["size"] * pt) ** 2,
                marker=MARKERS.get(g["symbol"], "o"),
                c=g["color"],
                alpha=g["opacity"],
                edgecolors="black" if g["top"] else "none",
                linewidths=OUTLINE * pt if g["top"] else 0,
                label=g["label"],
            )
        # a panel title fits its panel: about 0.6 em a character
        ax.set_title(name, fontsize=max(6.0, min(10.0, room / (0.6 * len(name) / pt + 1e-9))))
        ax.tick_params(labelbottom=False, labelleft=False, length=0)  # grid lines at the ticks, as plotly
        ax.grid(True, color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
    handles = [
        Line2D(
            [],
            [],
            ls="",
            marker=MARKERS.get(g["symbol"], "o"),
            ms=g["size"] * pt,
            color=g["color"],
            alpha=g["opacity"],
            mec="black" if g["top"] else g["color"],
            mew=OUTLINE * pt if g["top"] else 0,
        )
        for g in groups
    ]
    fig.legend(handles, [g["label"] for g in groups], loc="outside right upper", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    return fig
