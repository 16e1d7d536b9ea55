"""Evaluation: per class, per defect type and the mean over classes, for a trained run.

    res = evaluate("runs/rd-multi")          # the run's own data, classes and image size
    res["mean"]["image_auroc"], res["classes"]["brick"], res["defects"]["scratch"]

Per-defect numbers compare a defect type's images with the normals of the same class, then average over
the classes that have it. Models may report extra maps (`model.report_maps`, e.g. SNL's local and
structural maps); each is measured the same way under `res["maps"][name]`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import data, metrics, runs
from .runs import load_run
from .runtime import device_default, share_cpus
from .tables import jsonable

SUMMARY_KEYS = ("image_auroc", "pixel_auroc", "aupro", "image_ap", "image_f1_max", "pixel_ap", "pixel_f1_max")


def _folded(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """A copy of `conv` that computes `bn(conv(x))` of a batch norm in eval mode: the norm's scale folded into
    the weights, its shift into the bias (the same numbers up to float rounding)."""
    scale = (bn.weight if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
    out = copy.deepcopy(conv)
    with torch.no_grad():
        shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
        out.weight = nn.Parameter(conv.weight * scale.view(shape), requires_grad=False)
        bias = shift if conv.bias is None else conv.bias * scale + shift
        out.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return out


def _fold_batch_norms(model, swapped: list[tuple[nn.Module, str, nn.Module]]) -> None:
    """Swap every (convolution, batch norm) pair of the student's `nn.Sequential`s for the folded convolution
    and an identity, recording in `swapped` what was swapped out (for `_unfold`, even after an error). The
    teacher (timm's own blocks) is left as it is."""
    teacher = set(model.teacher.modules())
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential) or seq in teacher:
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            foldable = isinstance(conv, nn.Conv2d) or (isinstance(conv, nn.ConvTranspose2d) and conv.groups == 1)
            if foldable and type(bn) is nn.BatchNorm2d and not bn.training and bn.track_running_stats:
                folded = _folded(conv, bn)
                swapped += [(seq, a, conv), (seq, b, bn)]
                seq._modules[a], seq._modules[b] = folded, nn.Identity()


def _unfold(swapped: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for seq, name, module in swapped:
        seq._modules[name] = module


@contextmanager
def inference_form(model, device: torch.device):
    """The model as inference runs it, given back unchanged afterwards (the same module objects and weights):
    its student's batch norms folded into the convolutions before them, and on the CPU a CNN in channels-last
    memory layout (oneDNN's faster convolutions; `benchmarks/README.md`). Yields whether it runs channels-last.
    The model must be in eval mode (a norm that is training is left as it is).

    Nested uses change the model once: the outermost one converts the weights (a copy of every one, twice) and
    the inner ones find it converted, so that scoring a test set class by class pays for the switch once."""
    if getattr(model, "_adkit_inference_form", None) is not None:
        yield model._adkit_inference_form
        return
    layout = device.type == "cpu" and model.teacher.kind == "cnn"  # every ADModel has a teacher
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        if layout:
            model.to(memory_format=torch.channels_last)
        _fold_batch_norms(model, swapped)  # the folded copies keep the layout of the weights they come from
        model._adkit_inference_form = layout
        yield layout
    finally:
        model._adkit_inference_form = None
        _unfold(swapped)
        if layout:
            model.to(memory_format=torch.contiguous_format)


def predict(
    model, images: torch.Tensor, batch_size: int = 32, progress: bool = False, desc: str = "scoring"
) -> dict[str, np.ndarray]:
    """Maps `(N,H,W)` and image scores `(N,)` of a model on images `(N,3,H,W)`, from `model.score`: one forward
    pass per batch gives "amap" and each report map, "score" (the main image score) and every other score."""
    device = model.student_device
    model.eval()
    parts: dict[str, list] = {}
    # the layout switch stays outside inference mode: parameters converted inside it could not be trained again
    with inference_form(model, device) as cl, torch.inference_mode():
        for i in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=not progress):
            share_cpus()  # fewer threads while other processes keep the CPUs busy (adkit.runtime)
            x = images[i : i + batch_size].to(device)
            for k, v in model.score(x.contiguous(memory_format=torch.channels_last) if cl else x).items():
                parts.setdefault(k, []).append(v.float().cpu())
    res = {}
    for k, v in parts.items():
        t = torch.cat(v)
        res[k] = (t[:, 0] if t.ndim == 4 else t).contiguous().numpy()  # maps (N,1,H,W) -> (N,H,W)
    return res


def _metrics(scores, labels, amaps, masks, full: bool = True) -> dict:
    """Summary metrics; `full=False` keeps to image AUROC, pixel AUROC and AUPRO (per-defect rows)."""
    has_px = masks is not None and amaps is not None and masks.any()
    if full:
        out = metrics.summarize(scores, labels, amaps if has_px else None, masks if has_px else None)
        return {k: out.get(k, math.nan) for k in SUMMARY_KEYS}
    out = dict.fromkeys(SUMMARY_KEYS, math.nan)
    out["image_auroc"] = metrics.image_auroc(scores, labels)
    if has_px:
        out["pixel_auroc"] = metrics.pixel_auroc(amaps, masks)
        out["aupro"] = metrics.aupro(amaps, masks)
    return out


def _mean(rows: list[dict]) -> dict:
    out = {}
    for k in SUMMARY_KEYS:
        vals = [r[k] for r in rows if r.get(k) is not None and not math.isnan(r[k])]
        out[k] = float(np.mean(vals)) if vals else math.nan
    return out


def score_sets(preds: dict[str, dict], map_key: str = "amap", score_key: str = "score") -> dict:
    """Metrics from per-class predictions `{cls: {score, amap, label, mask, defect}}`."""
    per_class, per_defect = {}, {}
    for cls, p in preds.items():
        amaps = p.get(map_key)
        per_class[cls] = _metrics(p[score_key], p["label"], amaps, p["mask"])
        per_class[cls]["n_good"] = int((p["label"] == 0).sum())
        per_class[cls]["n_defect"] = int((p["label"] == 1).sum())
        for d in sorted(set(p["defect"]) - {data.GOOD}):
            sel = np.array([x in (d, data.GOOD) for x in p["defect"]])
            row = _metrics(
                p[score_key][sel], p["label"][sel], None if amaps is None else amaps[sel], p["mask"][sel], full=False
            )
            per_defect.setdefault(d, []).append(row)
    return {
        "mean": _mean(list(per_class.values())),
        "classes": per_class,
        "defects": {d: _mean(rows) for d, rows in per_defect.items()},
    }


def predict_classes(
    models_by_name: dict, records: list[data.Record], image_size: int, progress: bool = True, batch_size: int = 32
) -> dict[str, dict]:
    """Run each class's test images through its model (one-class) or the shared one (multi-class)."""
    preds = {}
    classes = sorted({r.cls for r in records})
    with contextlib.ExitStack() as layouts:  # each model switches its memory layout once, not once per class
        for cls in tqdm(classes, desc="evaluating", disable=not progress):
            recs = [r for r in records if r.cls == cls]
            batch = data.load_all(data.ImageDataset(recs, image_size))
            model = runs.model_for(models_by_name, cls)
            model.eval()
            layouts.enter_context(inference_form(model, model.student_device))
            p = predict(model, batch["image"], batch_size)
            p.update(
                label=batch["label"].numpy(),
                mask=batch["mask"][:, 0].numpy() > 0.5,
                defect=list(batch["defect"]),
                path=list(batch["path"]),
            )
            preds[cls] = p
    return preds


def test_records(
    cfg, data_name: str | None = None, root: str | None = None, classes: list[str] | None = None
) -> list[data.Record]:
    """The test records a run is scored on: its own data, root and classes unless others are given (the run's
    root only goes with its own data format)."""
    root = root if root is not None else (cfg.root if data_name in (None, cfg.data) else None)
    classes = classes or (list(cfg.classes) if cfg.classes else None)
    return data.load_records(data_name or cfg.data, root, "test", classes)


def evaluate(
    run_dir: str | Path,
    data_name: str | None = None,
    root: str | None = None,
    classes: list[str] | None = None,
    progress: bool = True,
    save: bool = True,
    return_preds: bool = False,
    device: torch.device | None = None,
):
    """Evaluate a run on a test set (default: the one it was trained on); writes `eval.json` in the run."""
    cfg, trained = runs.read_settings(run_dir)
    runs.check_classes(run_dir, classes, trained)
    cfg, models_by_name = load_run(run_dir, device or device_default())
    name = data_name or cfg.data
    records = test_records(cfg, data_name, root, classes)
    preds = predict_classes(models_by_name, records, cfg.image_size, progress)
    res = score_sets(preds)
    first = next(iter(models_by_name.values()))
    extra = tuple(first.report_maps)
    if extra:
        res["maps"] = {k: score_sets(preds, k, f"score_{k}")["mean"] for k in extra}
    for k in first.report_scores:
        res.setdefault("scores", {})[k] = score_sets(preds, None, k)["mean"]
    res["settings"] = {
        "run": Path(run_dir).name,
        "data": name,
        "model": cfg.model,
        "setting": cfg.setting,
        "backbone": cfg.backbone,
        "image_size": cfg.image_size,
        "iters": cfg.iters,
        "seed": cfg.seed,
    }
    if save:
        runs.write_results(run_dir, jsonable(res))
    return (res, preds) if return_preds else res
