"""Interactive explorers for notebooks: thin ipywidgets wiring around plain, importable functions.

    test_set_browser(preds, images)                    # class / defect type / image -> image, mask, map, score
    probe_explorer(models_by_label, images)            # classes A and B, λ, patch -> mixup and cut-paste maps
    live = LiveLoss(total=400); fit(model, x, 400, callback=live)   # a loss curve redrawn while training

The figures come from `adkit.viz` and `probe_figure` below, which need no browser (and are unit-tested);
the widgets only call them when a control changes. In a stored notebook the controls show no state;
run the cell to use them.
"""

from __future__ import annotations

import io

import numpy as np

from . import cases, viz
from .data import defects
from .evaluation import predict
from .probes import to_tensor
from .runs import model_for


# -- plain functions ------------------------------------------------------------------------------------
def paste_patch(
    source: np.ndarray, target: np.ndarray, size: float = 0.25, cy: float = 0.5, cx: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """A square patch (side `size` × image side) cut from the centre of `source`, pasted onto `target`
    centred at (`cy`, `cx`) (fractions of the image). Returns the image and its mask."""
    h, w = target.shape[:2]
    side = int(np.clip(round(size * min(h, w)), 2, min(h, w)))
    y = int(np.clip(round(cy * h - side / 2), 0, h - side))
    x = int(np.clip(round(cx * w - side / 2), 0, w - side))
    sh, sw = source.shape[:2]
    src_yx = ((sh - side) // 2, (sw - side) // 2)
    return defects.cut_paste(target, source, np.random.default_rng(0), box=(y, x, side, side), src_yx=src_yx)


def probe_scales(models_by_label: dict[str, dict], images: dict[str, np.ndarray]) -> dict[str, dict]:
    """`{label: {cls: cases.normal_scale(maps of the class's normal images under that run)}}`."""
    return {
        label: {
            cls: cases.normal_scale(predict(model_for(models, cls), to_tensor(x))["amap"]) for cls, x in images.items()
        }
        for label, models in models_by_label.items()
    }


def probe_figure(
    models_by_label: dict[str, dict],
    a_img: np.ndarray,
    b_img: np.ndarray,
    a: str,
    b: str,
    lam: float = 0.5,
    size: float = 0.25,
    cy: float = 0.5,
    cx: float = 0.5,
    scales: dict[str, dict] | None = None,
):
    """Both probes on one pair of images, for several runs side by side.

    Row 1: the blend `λ·A + (1 − λ)·B`, scored by the model of the class with the larger weight. Row 2: a
    patch of A pasted onto B (outlined), scored by B's model. Each run's maps are shown relative to its
    maps of the reference class's normal images, `scales[label][cls]` from `probe_scales` (default: the clean
    image of that class alone): 1 = the peak of a high-scoring normal image, so what the model flags shows
    as > 1 and what it accepts stays ≤ 1.
    `models_by_label`: `{label: {name: model}}`, e.g. `{"RD one-class": one_class_models, ...}`.
    """
    blend = defects.mixup(a_img, b_img, lam)
    pasted, mask = paste_patch(a_img, b_img, size, cy, cx)
    ref = a if lam >= 0.5 else b
    clean = {a: a_img, b: b_img}
    rows = [
        (f"mixup λ={lam:.2f}\n(model of {ref})", blend, None, ref),
        (f"{a} patch on {b}\n(model of {b})", pasted, mask, b),
    ]
    maps: dict[str, list] = {label: [] for label in models_by_label}
    for _, img, _, cls in rows:
        for label, models in models_by_label.items():
            m = model_for(models, cls)
            if scales is not None:
                amap, scale = predict(m, to_tensor(img[None]))["amap"][0], scales[label][cls]
            else:
                p = predict(m, to_tensor(np.stack([img, clean[cls]])))
                amap, scale = p["amap"][0], cases.normal_scale(p["amap"][1:])
            maps[label].append(cases.relative(amap, scale))
    import matplotlib.pyplot as plt

    n = 1 + len(models_by_label)
    fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 4.5), squeeze=False)
    for i, (name, img, m, _) in enumerate(rows):
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(name, fontsize=8)
        viz.mask_outline(axes[i, 0], m)
        for j, label in enumerate(models_by_label, start=1):
            rel = maps[label][i]
            axes[i, j].imshow(viz.overlay(img, rel, 0.0, 2.0))
            viz.mask_outline(axes[i, j], m)
            inside = f"patch {float(rel[m].max()):.1f} · " if m is not None else ""
            axes[i, j].set_title(f"{label}\n{inside}max {float(rel.max()):.1f}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    viz.colorbar(fig, axes[:, 1:].ravel().tolist(), 0.0, 2.0, cases.RELATIVE_LABEL)  # what a map value means
    return fig


# -- live loss curve ------------------------------------------------------------------------------------
class LiveLoss:
    """A `callback(step, losses)` for `adkit.fit` that redraws the loss curve every `every` steps in
    one notebook output (updated in place), and keeps the history."""

    def __init__(
        self, total: int | None = None, every: int = 50, keys: list[str] | None = None, title: str = "", dpi: int = 100
    ):
        self.total, self.every, self.keys, self.title, self.dpi = total, every, keys, title, dpi
        self.history: list[dict] = []
        self.handle = None

    def png(self) -> bytes:
        """The current curve as PNG bytes."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3))
        viz.loss_plot(self.history, self.keys, ax=fig.add_subplot(), total=self.total, title=self.title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()

    def __call__(self, step: int, losses: dict) -> None:
        self.history.append(dict(losses))
        done = self.total is not None and step + 1 >= self.total
        if (step + 1) % self.every == 0 or done:
            self.show()

    def show(self) -> None:
        from IPython.display import Image, display

        img = Image(data=self.png(), format="png")
        if self.handle is None:
            self.handle = display(img, display_id=True)
        else:
            self.handle.update(img)


# -- widgets --------------------------------------------------------------------------------------------
def test_set_browser(preds: dict[str, dict], images: dict[str, np.ndarray], threshold: float | None = None):
    """Pick a class, a defect type and an image; see image, mask, map and score next to the threshold."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

    classes = list(preds)
    cls_w = W.Dropdown(options=classes, description="class")
    def_w = W.Dropdown(description="defect")
    idx_w = W.IntSlider(description="image", min=0, max=0, continuous_update=False)
    out = W.Output()

    def defect_options(cls):
        return ["all"] + sorted(set(preds[cls]["defect"]))

    def indices():
        return cases.browser_indices(preds, cls_w.value, def_w.value)

    def redraw(*_):
        ids = indices()
        if not ids:
            return
        with out:
            out.clear_output(wait=True)
            fig = viz.browser_figure(preds, images, cls_w.value, ids[min(idx_w.value, len(ids) - 1)], threshold)
            display(fig)
            plt.close(fig)

    def on_class(*_):
        def_w.options = defect_options(cls_w.value)
        def_w.value = "all"
        on_defect()

    def on_defect(*_):
        idx_w.max = max(0, len(indices()) - 1)
        idx_w.value = min(idx_w.value, idx_w.max)
        redraw()

    def_w.options = defect_options(classes[0])
    def_w.value = "all"
    cls_w.observe(on_class, names="value")
    def_w.observe(on_defect, names="value")
    idx_w.observe(redraw, names="value")
    on_defect()
    return W.VBox([W.HBox([cls_w, def_w, idx_w]), out])


def probe_explorer(
    models_by_label: dict[str, dict],
    images: dict[str, np.ndarray],
    a: str | None = None,
    b: str | None = None,
    scales: dict[str, dict] | None = None,
):
    """Controls for `probe_figure`: classes A and B, which image of each, λ, the patch's size and place.
    `images[cls]` holds each class's normal test images (uint8 `(N,H,W,3)`); `scales` as from
    `probe_scales` (computed here when not given)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

    classes = list(images)
    a = a or classes[0]
    b = b or classes[-1]
    n = min(len(v) for v in images.values())
    slider = dict(continuous_update=False, style={"description_width": "initial"})
    ctrl = {
        "a": W.Dropdown(options=classes, value=a, description="class A"),
        "b": W.Dropdown(options=classes, value=b, description="class B"),
        "i": W.IntSlider(value=0, min=0, max=n - 1, description="image", **slider),
        "lam": W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description="λ (weight of A)", **slider),
        "size": W.FloatSlider(value=0.25, min=0.1, max=0.5, step=0.05, description="patch size", **slider),
        "cy": W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="patch y", **slider),
        "cx": W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="patch x", **slider),
    }
    out = W.Output()
    scales = probe_scales(models_by_label, images) if scales is None else scales

    def redraw(*_):
        v = {k: w.value for k, w in ctrl.items()}
        with out:
            out.clear_output(wait=True)
            fig = probe_figure(
                models_by_label,
                images[v["a"]][v["i"]],
                images[v["b"]][v["i"]],
                v["a"],
                v["b"],
                v["lam"],
                v["size"],
                v["cy"],
                v["cx"],
                scales,
            )
            display(fig)
            plt.close(fig)

    for w in ctrl.values():
        w.observe(redraw, names="value")
    redraw()
    boxes = [
        W.HBox([ctrl["a"], ctrl["b"], ctrl["i"]]),
        W.HBox([ctrl["lam"], ctrl["size"]]),
        W.HBox([ctrl["cy"], ctrl["cx"]]),
    ]
    return W.VBox(boxes + [out])


# -- failure analysis at a threshold (notebook 7) -------------------------------------------------------
def threshold_figures(
    preds: dict[str, dict],
    images: dict[str, np.ndarray],
    threshold: float,
    cls: str | None = None,
    n: int = 3,
    scales: dict | None = None,
) -> list:
    """What `threshold_explorer` shows for one class (None or "": all classes together) at one threshold: the score
    histogram with the threshold, then a gallery of the `n` worst false positives and `n` worst false negatives
    (maps relative to their class's normals), or only the histogram when nothing fails."""
    from . import analysis

    classes = [cls] if cls else list(preds)
    if not cls:
        s, y = analysis.pooled(preds)
        shown = {"all classes": {"score": s, "label": y}}
    else:
        shown = {cls: preds[cls]}
    hist = analysis.histogram_figure(shown, threshold, ncols=1, size=4.2)
    hist.suptitle(f"threshold {threshold:.4g}", fontsize=9)
    hist.tight_layout()
    failed = analysis.worst(preds, threshold, n, classes)
    rows = failed[analysis.FP] + failed[analysis.FN]
    if not rows:
        return [hist]
    items = analysis.failure_items(preds, images, rows, scales)
    title = f"worst false positives ({len(failed[analysis.FP])}) and false negatives ({len(failed[analysis.FN])})"
    gal = viz.gallery(items, ncols=max(1, min(2 * n, len(items))), size=2.0, title=title, cbar_label=viz.RELATIVE_LABEL)
    return [hist, gal]


def threshold_explorer(
    preds: dict[str, dict], images: dict[str, np.ndarray], threshold: float | None = None, n: int = 3
):
    """A threshold slider and a class menu over `adkit.analysis`: TP, FP, TN, FN with precision and recall per
    class and overall, the chosen class's score histogram, and its worst failures at that threshold.
    Default threshold: `analysis.default_threshold` (the F1-optimal one over all classes)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    from . import analysis

    s, _ = analysis.pooled(preds)
    lo, hi = float(s.min()), float(s.max())
    hi = hi if hi > lo else lo + 1.0
    thr = analysis.default_threshold(preds) if threshold is None else float(threshold)
    thr = float(np.clip(thr, lo, hi)) if np.isfinite(thr) else hi
    slider = W.FloatSlider(
        value=thr,
        min=lo,
        max=hi,
        step=(hi - lo) / 200,
        readout_format=".4g",
        description="threshold",
        continuous_update=False,
        layout=W.Layout(width="460px"),
    )
    # labels without spaces: the browser shows a space in an option as a no-break space
    # "" (no class has that name) stands for all classes: a Dropdown value of None would select nothing
    cls_w = W.Dropdown(options=[("(all)", "")] + [(c, c) for c in preds], index=0, description="class")
    out = W.Output()
    scales = analysis.normal_scales(preds)

    def redraw(*_):
        t = float(slider.value)
        with out:
            out.clear_output(wait=True)
            figs = threshold_figures(preds, images, t, cls_w.value or None, n, scales)
            display(figs[0])
            display(
                Markdown(
                    f"Flagged: score ≥ {t:.4g}. Counts per class and over all classes:\n\n"
                    + analysis.confusion_markdown(analysis.confusion_table(preds, t))
                )
            )
            for fig in figs[1:]:
                display(fig)
            for fig in figs:
                plt.close(fig)

    slider.observe(redraw, names="value")
    cls_w.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox([slider, cls_w]), out])
