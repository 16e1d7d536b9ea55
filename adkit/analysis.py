"""Failure analysis of a detector's test-set predictions: what it gets wrong at a threshold, and which images.

    thr = analysis.default_threshold(preds)             # one threshold for all classes (F1-optimal, pooled)
    analysis.confusion_table(preds, thr)                # {class | "all": TP, FP, TN, FN, precision, recall}
    analysis.worst(preds, thr, n=4)                     # {"false positive": [...], "false negative": [...]}
    analysis.defect_table(preds, thr)                   # per defect type: count, detected, AUROC, pixel metrics
    analysis.export_failures(preds, images, thr, out, root)   # PNGs of image + map and failures.csv

`preds` is `{class: {score (N,), label (N,), amap (N,H,W), mask (N,H,W), defect [N], path [N]}}` as from
`evaluate(..., return_preds=True)`; `images[class]` the class's test images, uint8 `(N,H,W,3)`, same order.
An image is flagged when `score >= threshold` (as in `cases.f1_threshold` and `viz.browser_figure`).
The functions compute with numpy; the pictures at the end return matplotlib figures and need no browser.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np

from . import cases, metrics, tables, viz
from .errors import AdkitError, UsageError

FP, FN, TP, TN = "false positive", "false negative", "true positive", "true negative"
CSV_NAME = "failures.csv"
CSV_COLUMNS = ("png", "path", "class", "defect", "score", "verdict")
OVERALL = "all"


# -- the folder ---------------------------------------------------------------------------------------------
class FolderProblem(AdkitError):
    """A dataset folder that fails `adkit.data.check`; in a notebook it shows as one line, not a traceback."""

    def __init__(self, msg: str, problems: list[str]):
        super().__init__(msg)
        self.problems = problems

    def _render_traceback_(self) -> list[str]:  # IPython shows these lines instead of the traceback
        return [f"adkit: error: {self}"]


def check_folder(data_name: str, root: str | Path | None = None, classes: list[str] | None = None) -> dict:
    """`adkit.data.check` on a dataset folder (the embedded set is built first when missing): the counts
    `{class: {split: {defect: n}}}`, or `FolderProblem` naming the first problem and how many there are."""
    from . import data

    try:
        mod = data.format_module(data_name)
        where = data.default_root(data_name, root)
        if hasattr(mod, "prepare"):  # the embedded sets: built when missing, as `load_records` does
            mod.prepare(where)
        res = data.check(data_name, root, list(classes) if classes else None)
    except (data.DataError, OSError, ValueError) as err:
        raise FolderProblem(str(err), [str(err)]) from None
    problems = res["problems"]
    if problems:
        more = f" (and {len(problems) - 1} more: adkit.data.check lists them all)" if len(problems) > 1 else ""
        raise FolderProblem(f"{problems[0]}{more}", problems)
    return res["counts"]


# -- counts at a threshold ------------------------------------------------------------------------------------
def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if np.isnan(s).any():
        raise ValueError("a score is NaN — the model's maps hold NaN; check the run before analysing it")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (defect)")
    return s, y.astype(bool)


def _threshold(threshold) -> float:
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("the threshold is NaN")
    return t


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def confusion(scores, labels, threshold: float) -> dict:
    """TP, FP, TN, FN of `score >= threshold` against the labels, with precision and recall (`nan` where a
    ratio has nothing to count: no image flagged, or no defect)."""
    s, y = _scores_labels(scores, labels)
    flagged = s >= _threshold(threshold)
    tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
    fn, tn = int((~flagged & y).sum()), int((~flagged & ~y).sum())
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}


def confusion_table(preds: dict[str, dict], threshold: float) -> dict[str, dict]:
    """`confusion` per class at one threshold, and over all classes together under "all"."""
    rows = {cls: confusion(p["score"], p["label"], threshold) for cls, p in preds.items()}
    total = {k: sum(r[k] for r in rows.values()) for k in ("tp", "fp", "tn", "fn")}
    total.update(
        precision=_ratio(total["tp"], total["tp"] + total["fp"]), recall=_ratio(total["tp"], total["tp"] + total["fn"])
    )
    return {**rows, OVERALL: total}


def sweep(scores, labels, thresholds) -> dict[str, np.ndarray]:
    """`confusion` at many thresholds at once: arrays tp, fp, tn, fn, precision, recall over `thresholds`."""
    s, y = _scores_labels(scores, labels)
    t = np.asarray(thresholds, dtype=np.float64)
    if np.isnan(t).any():
        raise ValueError("a threshold is NaN")
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    # images with score >= t: all but those strictly below t
    tp = len(pos) - np.searchsorted(pos, t, side="left")
    fp = len(neg) - np.searchsorted(neg, t, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
        recall = np.where(len(pos) > 0, tp / max(len(pos), 1), np.nan)
    return {"tp": tp, "fp": fp, "tn": len(neg) - fp, "fn": len(pos) - tp, "precision": precision, "recall": recall}


def pooled(preds: dict[str, dict]) -> tuple[np.ndarray, np.ndarray]:
    """All classes' scores and labels in one pair of arrays."""
    return (
        np.concatenate([np.asarray(p["score"], dtype=np.float64) for p in preds.values()]),
        np.concatenate([np.asarray(p["label"]) for p in preds.values()]),
    )


def default_threshold(preds: dict[str, dict]) -> float:
    """The one threshold with the highest F1 over all classes' images together (chosen on the test set: a
    starting point for the analysis, not a number to report)."""
    return cases.f1_threshold(*pooled(preds))


def histograms(preds: dict[str, dict], bins: int = 30) -> dict:
    """Score histograms per class, normals and defects apart, on common bin edges:
    `{"edges": (bins+1,), class: {"normal": (bins,), "defect": (bins,)}}`."""
    s, _ = pooled(preds)
    lo, hi = float(s.min()), float(s.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    out: dict = {"edges": edges}
    for cls, p in preds.items():
        sc, y = _scores_labels(p["score"], p["label"])
        out[cls] = {"normal": np.histogram(sc[~y], edges)[0], "defect": np.histogram(sc[y], edges)[0]}
    return out


# -- which images ---------------------------------------------------------------------------------------------
def worst(
    preds: dict[str, dict], threshold: float, n: int | None = None, classes: list[str] | None = None
) -> dict[str, list[dict]]:
    """The failures at a threshold, worst first: normals flagged (false positives, highest score first) and
    defects not flagged (false negatives, lowest score first), `n` of each at most (all when None). Each is
    `{"class", "index", "defect", "score", "verdict", "path"}`."""
    t = _threshold(threshold)
    out: dict[str, list[dict]] = {FP: [], FN: []}
    for cls in classes or list(preds):
        p = preds[cls]
        s, y = _scores_labels(p["score"], p["label"])
        paths = p.get("path")
        paths = [""] * len(s) if paths is None else paths
        for i in np.flatnonzero((s >= t) != y):
            verdict = FN if y[i] else FP
            out[verdict].append(
                {
                    "class": cls,
                    "index": int(i),
                    "defect": str(p["defect"][i]),
                    "score": float(s[i]),
                    "verdict": verdict,
                    "path": str(paths[i]),
                }
            )
    out[FP].sort(key=lambda r: (-r["score"], r["class"], r["index"]))
    out[FN].sort(key=lambda r: (r["score"], r["class"], r["index"]))
    if n is not None:
        out = {k: v[:n] for k, v in out.items()}
    return out


def normal_scales(preds: dict[str, dict]) -> dict[str, tuple[float, float] | None]:
    """Per class, the scale of its normal test images' maps (`cases.normal_scale`); None without normals."""
    return {
        cls: cases.normal_scale(p["amap"][np.asarray(p["label"]) == 0]) if (np.asarray(p["label"]) == 0).any() else None
        for cls, p in preds.items()
    }


def failure_items(
    preds: dict[str, dict], images: dict[str, np.ndarray], rows: list[dict], scales: dict | None = None
) -> list[dict]:
    """`viz.gallery` items for rows of `worst`: each map relative to its class's normal maps (0: a typical
    normal pixel, 1: a high normal peak; shown on 0..2, as `cases.failures` does), the mask outlined."""
    scales = normal_scales(preds) if scales is None else scales
    items = []
    for r in rows:
        p, cls, i = preds[r["class"]], r["class"], r["index"]
        tag = "FP" if r["verdict"] == FP else "FN"
        title = f"{tag} {cls}/{r['defect']}\nscore {r['score']:.3g}"
        items.append(cases.relative_item(images[cls][i], p["amap"][i], p["mask"][i], scales.get(cls), title))
    return items


# -- per defect type ------------------------------------------------------------------------------------------
def defect_table(preds: dict[str, dict], threshold: float) -> list[dict]:
    """One row per defect type over all classes, and a first row for the normals ("good").

    Each row: `n` images, `classes` that have it, `flagged` at the threshold and its `rate` (detection rate;
    for "good" the false-alarm rate), and the type's images against the normals of the same class: image
    AUROC, and pixel AUROC and AUPRO where masks mark defect pixels, each averaged over classes (as
    `evaluate` does); `nan` where undefined."""
    t = _threshold(threshold)
    per: dict[str, dict] = {}
    for cls, p in preds.items():
        s, y = _scores_labels(p["score"], p["label"])
        defect = np.asarray([str(d) for d in p["defect"]])
        good = ~y
        for d in ["good"] + sorted({str(d) for d in defect[y]}):
            sel = good if d == "good" else (defect == d) & y
            row = per.setdefault(d, {"defect": d, "n": 0, "classes": [], "flagged": 0, "_m": []})
            row["n"] += int(sel.sum())
            row["classes"].append(cls)
            row["flagged"] += int((s[sel] >= t).sum())
            if d == "good":
                continue
            both = sel | good
            amaps, masks = np.asarray(p["amap"])[both], np.asarray(p["mask"])[both] > 0.5
            has_px = bool(masks.any())
            row["_m"].append(
                {
                    "image_auroc": metrics.image_auroc(s[both], y[both]),
                    "pixel_auroc": metrics.pixel_auroc(amaps, masks) if has_px else math.nan,
                    "aupro": metrics.aupro(amaps, masks) if has_px else math.nan,
                }
            )
    rows = []
    for row in per.values():
        ms = row.pop("_m")
        row["rate"] = _ratio(row["flagged"], row["n"])
        for k in ("image_auroc", "pixel_auroc", "aupro"):
            vals = [m[k] for m in ms if not math.isnan(m[k])]
            row[k] = float(np.mean(vals)) if vals else math.nan
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], columns: dict[str, str], digits: int = 2) -> str:
    """Rows of dicts as a markdown table; `columns` maps a key to its header. Floats to `digits`, nan as –."""

    def fmt(v):
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        if isinstance(v, (list, tuple)):
            return ", ".join(map(str, v))
        return str(v)

    cells = [[fmt(r.get(k, "")) for k in columns] for r in rows]
    return tables.markdown_table(list(columns.values()), cells, left=len(columns))


def confusion_markdown(table: dict[str, dict]) -> str:
    """`confusion_table` as markdown, one row per class and the total last."""
    rows = [{"class": f"**{c}**" if c == OVERALL else c, **r} for c, r in table.items()]
    return markdown_table(
        rows,
        {
            "class": "class",
            "tp": "TP",
            "fp": "FP",
            "tn": "TN",
            "fn": "FN",
            "precision": "precision",
            "recall": "recall",
        },
    )


# -- export ---------------------------------------------------------------------------------------------------
def _source_folders(path: Path) -> tuple[Path, list[Path]] | None:
    """The adkit source that holds `path`, and the one folder of it that may be written to: the checkout
    (a folder with pyproject.toml and adkit/) and its data/, or the installed package and nothing."""
    package = Path(os.path.realpath(Path(__file__).parent))
    for folder in path.parents:
        if (folder / "pyproject.toml").is_file() and (folder / "adkit" / "__init__.py").is_file():
            return folder, [folder / "data"]
    return (package, []) if path.is_relative_to(package) else None


def export_folder(out: str | Path, root: str | Path, overwrite: bool = False, avoid: tuple = ()) -> Path:
    """`out`, resolved, if it is a place to export into: strictly below the existing folder `root` (links
    resolved), not inside adkit's source (in a checkout: only under its data/) nor inside any folder of `avoid`
    (the dataset: its loader would read the PNGs as test images), and new or empty — or, with `overwrite`, a
    previous export (only PNGs and failures.csv). Otherwise `UsageError`; nothing is created."""
    root_r = Path(os.path.realpath(root))
    out_r = Path(os.path.realpath(out))
    if not root_r.is_dir():
        raise UsageError(f"{root}: the export root is not an existing folder — create it, or choose another root")
    if out_r == root_r or not out_r.is_relative_to(root_r):
        raise UsageError(f"{out}: not inside the export root {root} — refused; export into a folder below it")
    for a in avoid:
        if out_r.is_relative_to(os.path.realpath(a)):
            raise UsageError(
                f"{out}: inside {a} — refused (the dataset's loader would read the exported PNGs as "
                "images); export elsewhere below the root"
            )
    source = _source_folders(out_r)
    if source and not any(out_r.is_relative_to(a) for a in source[1]):
        source, allowed = source
        where = f"{source / 'data'}" if allowed else "another folder"
        raise UsageError(f"{out}: inside adkit's source folder {source} — refused; export under {where}")
    if out_r.exists():
        if not out_r.is_dir():
            raise UsageError(f"{out}: exists and is not a folder — choose another name")
        found = list(out_r.iterdir())
        if found and not overwrite:
            raise UsageError(
                f"{out}: not empty — choose a new folder, or pass overwrite=True to replace a previous export"
            )
        foreign = [f.name for f in found if not (f.is_file() and (f.suffix == ".png" or f.name == CSV_NAME))]
        if found and (foreign or not (out_r / CSV_NAME).is_file()):
            what = ", ".join(foreign[:3]) or f"no {CSV_NAME}"
            raise UsageError(
                f"{out}: holds files that are not an adkit export ({what}) — refused to replace it; choose a new folder"
            )
    return out_r


def _safe(name: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")[:limit] or "x"


def failure_png(
    image: np.ndarray, amap: np.ndarray, mask: np.ndarray | None, title: str, relative: bool = True, dpi: int = 100
) -> bytes:
    """One failure as PNG bytes: the image (mask outlined) and its map over it, with a colour bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 2.6))
    ax0, ax1 = fig.subplots(1, 2)
    lo, hi = (0.0, 2.0) if relative else (None, None)
    ax0.imshow(viz.to_hwc(image))
    ax1.imshow(viz.overlay(image, amap, lo, hi))
    for ax in (ax0, ax1):
        viz.mask_outline(ax, mask)
        ax.axis("off")
    ax0.set_title(title, fontsize=8)
    ax1.set_title("map relative to the class's normals" if relative else "map (own range)", fontsize=8)
    cb = fig.colorbar(ScalarMappable(Normalize(lo or 0.0, hi or 1.0), "jet"), ax=ax1, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=7)
    if not relative:
        cb.set_ticks([0, 1], labels=["low", "high"])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def export_failures(
    preds: dict[str, dict],
    images: dict[str, np.ndarray],
    threshold: float,
    out: str | Path,
    root: str | Path,
    overwrite: bool = False,
    n: int | None = None,
    avoid: tuple = (),
) -> Path:
    """Write the failures at `threshold` into the folder `out` (checked by `export_folder` against `root` and
    `avoid`): one PNG per failure (image and map relative to its class's normals) and `failures.csv` with columns
    png, path, class, defect, score, verdict. Everything is checked and drawn before the folder is created; the
    files go into a temporary folder beside it, then move into place. Returns the CSV's path."""
    out_r = export_folder(out, root, overwrite, avoid)
    failed = worst(preds, threshold, n)
    rows = failed[FP] + failed[FN]
    for r in rows:
        if r["class"] not in images or len(images[r["class"]]) != len(preds[r["class"]]["score"]):
            raise ValueError(f"images[{r['class']!r}] does not hold the class's test images in the order of preds")
    scales = normal_scales(preds)
    files, table = {}, []
    for k, (r, item) in enumerate(zip(rows, failure_items(preds, images, rows, scales))):
        stem = Path(r["path"]).stem if r["path"] else str(r["index"])
        tag = "fp" if r["verdict"] == FP else "fn"
        name = f"{k:03d}_{tag}_{_safe(r['class'])}_{_safe(r['defect'])}_{_safe(stem)}.png"
        title = f"{r['class']}/{r['defect']} · {r['verdict']}\nscore {r['score']:.4g} (threshold {threshold:.4g})"
        files[name] = failure_png(item["image"], item["amap"], item["mask"], title, scales.get(r["class"]) is not None)
        table.append(
            {
                "png": name,
                "path": r["path"],
                "class": r["class"],
                "defect": r["defect"],
                "score": repr(r["score"]),
                "verdict": r["verdict"],
            }
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    # everything is checked and drawn: now, and only now, write
    out_r.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_r.parent / f".{out_r.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, png in files.items():
            (tmp / name).write_bytes(png)
        (tmp / CSV_NAME).write_text(buf.getvalue(), encoding="utf-8")
        if out_r.exists():
            shutil.rmtree(out_r)
        tmp.rename(out_r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_r / CSV_NAME


def read_failures(path: str | Path) -> list[dict]:
    """The rows of a `failures.csv`, scores as floats."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {list(CSV_COLUMNS)}")
        return [{**row, "score": float(row["score"])} for row in reader]


# -- pictures -------------------------------------------------------------------------------------------------
def histogram_figure(
    preds: dict[str, dict],
    threshold: float | None = None,
    bins: int = 30,
    classes: list[str] | None = None,
    ncols: int = 4,
    size: float = 2.6,
):
    """Score histograms, one panel per class: normals (blue) and defects (red) on common bins, the threshold
    dashed, and each class's counts at it in the panel's title."""
    import matplotlib.pyplot as plt

    classes = classes or list(preds)
    h = histograms({c: preds[c] for c in classes}, bins)
    edges = h["edges"]
    ncols = min(ncols, len(classes))
    nrows = int(np.ceil(len(classes) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + 0.3, 0.4 + 2.1 * nrows), squeeze=False, sharex=True)
    for ax in axes.flat[len(classes) :]:
        ax.axis("off")
    for ax, cls in zip(axes.flat, classes):
        for key, color in (("normal", "tab:blue"), ("defect", "tab:red")):
            ax.stairs(h[cls][key], edges, fill=True, alpha=0.45, color=color, label=key)
        title = cls
        if threshold is not None:
            ax.axvline(threshold, color="black", ls="--", lw=1)
            c = confusion(preds[cls]["score"], preds[cls]["label"], threshold)
            title += f"\nTP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']}"
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("image score", fontsize=8)
    axes.flat[0].set_ylabel("images", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def sweep_figure(preds: dict[str, dict], threshold: float | None = None, size: float = 2.6, ncols: int = 5):
    """What moving the threshold does, for static viewers: precision (solid) and recall (dashed) over the
    threshold, per class and over all classes, and the false positives and negatives of all classes."""
    import matplotlib.pyplot as plt

    s_all, _ = pooled(preds)
    t = np.linspace(float(s_all.min()), float(s_all.max()), 200)
    groups = {**{c: (p["score"], p["label"]) for c, p in preds.items()}, "all classes": pooled(preds)}
    n = len(groups) + 1
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, 0.4 + 2.3 * nrows), squeeze=False, sharex=True)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, (s, y)) in zip(axes.flat, groups.items()):
        sw = sweep(s, y, t)
        ax.plot(t, sw["precision"], color="tab:green", label="precision")
        ax.plot(t, sw["recall"], color="tab:purple", ls="--", label="recall")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(name, fontsize=8)
    ax = axes.flat[len(groups)]
    sw = sweep(*pooled(preds), t)
    ax.plot(t, sw["fp"], color="tab:blue", label="false positives")
    ax.plot(t, sw["fn"], color="tab:red", label="false negatives")
    ax.set_title("all classes: failures", fontsize=8)
    ax.legend(fontsize=7)
    axes.flat[0].legend(fontsize=7)
    for ax in axes.flat[:n]:
        ax.tick_params(labelsize=7, labelbottom=True)
        ax.set_xlabel("threshold", fontsize=8)
        if threshold is not None:
            ax.axvline(threshold, color="black", ls=":", lw=1)
    fig.tight_layout()
    return fig
