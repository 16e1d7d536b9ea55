"""Probes of cross-class interference (SNL paper, figure 2), on any run and any dataset in MVTec layout.

- mixup: blend test normals of classes A and B, `x = λ·x_A + (1 − λ)·x_B`, over a sweep of λ. A model
  that learned "what any training class looks like" rather than "what this class looks like" scores
  the blends like normals. Per λ: blend-vs-normal image AUROC, score distributions and their ratio.
  The reference class of a blend is the one with the larger weight (A for λ ≥ 0.5); its normals are the
  negatives and its model (one-class) scores both.
- cut-paste: a patch of class A pasted onto test normals of class B (mask = the patch), scored by B's
  model (one-class) or the shared one: image AUROC, pixel AUROC, AUPRO, and the maps.
Both reuse the defect code of the embedded dataset (`adkit.data.defects`).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from . import data, metrics, runs
from .data import defects
from .evaluation import predict
from .runs import load_run, model_for

LAMBDAS = (0.1, 0.3, 0.5, 0.7, 0.9)


def load_images(
    data_name: str,
    root,
    cls: str,
    image_size: int,
    split: str = "test",
    normals_only: bool = True,
    n: int | None = None,
) -> np.ndarray:
    """Images of one class as uint8 `(N,H,W,3)` at `image_size` (test normals by default)."""
    recs = [r for r in data.load_records(data_name, root, split, [cls]) if r.label == 0 or not normals_only]
    if not recs:
        raise data.DataError(f"class {cls!r} has no {'normal ' if normals_only else ''}{split} images")
    recs = recs[:n] if n else recs
    return np.stack([data.core.load_record(r, image_size)[0] for r in recs])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 `(N,H,W,3)` -> float `(N,3,H,W)` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)


def mixup_probe(
    models_by_name: dict,
    a_imgs: np.ndarray,
    b_imgs: np.ndarray,
    a: str,
    b: str,
    lambdas=LAMBDAS,
    progress: bool = False,
) -> dict:
    """Blend-vs-normal AUROC and score statistics per λ; see the module docstring. `progress`: a bar over λ."""
    n = min(len(a_imgs), len(b_imgs))
    normal_scores = {
        a: predict(model_for(models_by_name, a), to_tensor(a_imgs))["score"],
        b: predict(model_for(models_by_name, b), to_tensor(b_imgs))["score"],
    }
    res = {
        "classes": [a, b],
        "lambda": [float(x) for x in lambdas],
        "auroc": [],
        "ratio": [],
        "reference": [],
        "_blend_scores": [],
        "_normal_scores": normal_scores,
        "_blends": [],
    }
    for lam in tqdm(lambdas, desc="mixup probe (λ)", leave=False, disable=not progress):
        blends = np.stack([defects.mixup(a_imgs[i], b_imgs[i], lam) for i in range(n)])
        ref = a if lam >= 0.5 else b
        s_blend = predict(model_for(models_by_name, ref), to_tensor(blends))["score"]
        s_norm = normal_scores[ref]
        labels = np.r_[np.zeros(len(s_norm)), np.ones(len(s_blend))]
        res["auroc"].append(metrics.image_auroc(np.r_[s_norm, s_blend], labels))
        res["ratio"].append(float(np.mean(s_blend) / max(np.mean(s_norm), 1e-12)))
        res["reference"].append(ref)
        res["_blend_scores"].append(s_blend)
        res["_blends"].append(blends[:4])
    res["mean_auroc"] = float(np.nanmean(res["auroc"]))
    return res


def cutpaste_probe(
    model, source_imgs: np.ndarray, target_imgs: np.ndarray, seed: int = 0, size_frac=(0.15, 0.3)
) -> dict:
    """Patches of the source class pasted onto the target's normals; metrics against the untouched normals."""
    rng = np.random.default_rng(seed)
    pasted, masks = [], []
    for i, tgt in enumerate(target_imgs):
        img, m = defects.cut_paste(tgt, source_imgs[i % len(source_imgs)], rng, size_frac=size_frac)
        pasted.append(img)
        masks.append(m)
    pasted, masks = np.stack(pasted), np.stack(masks)
    p_norm = predict(model, to_tensor(target_imgs))
    p_paste = predict(model, to_tensor(pasted))
    scores = np.r_[p_norm["score"], p_paste["score"]]
    labels = np.r_[np.zeros(len(target_imgs)), np.ones(len(pasted))]
    amaps = np.concatenate([p_norm["amap"], p_paste["amap"]])
    all_masks = np.concatenate([np.zeros_like(masks), masks])
    return {
        "image_auroc": metrics.image_auroc(scores, labels),
        "pixel_auroc": metrics.pixel_auroc(amaps, all_masks),
        "aupro": metrics.aupro(amaps, all_masks),
        "n": int(len(pasted)),
        "_pasted": pasted,
        "_masks": masks,
        "_amaps": p_paste["amap"],
        "_normal_amaps": p_norm["amap"],
        "_scores": p_paste["score"],
        "_normal_scores": p_norm["score"],
    }


def _run_data(run_dir, data_name, root, scored: list[str]):
    """A run's models and where its data is; the classes whose images its models score must be trained ones."""
    _, trained = runs.read_settings(run_dir)
    runs.check_classes(run_dir, scored, trained)
    cfg, models_by_name = load_run(run_dir)
    name = data_name or cfg.data
    root = root if root is not None else (cfg.root if name == cfg.data else None)
    return cfg, models_by_name, name, root


def mixup_run(
    run_dir,
    a: str,
    b: str,
    data_name: str | None = None,
    root=None,
    lambdas=LAMBDAS,
    n: int | None = 20,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """The mixup probe on a trained run (its data, or `data_name`/`root`)."""
    cfg, models_by_name, name, root = _run_data(run_dir, data_name, root, [a, b])
    a_imgs = load_images(name, root, a, cfg.image_size, n=n)
    b_imgs = load_images(name, root, b, cfg.image_size, n=n)
    res = mixup_probe(models_by_name, a_imgs, b_imgs, a, b, lambdas, progress)
    res.update(probe="mixup", run=str(run_dir), setting=cfg.setting, model=cfg.model)
    return res


def cutpaste_run(
    run_dir,
    a: str,
    b: str,
    data_name: str | None = None,
    root=None,
    n: int | None = 20,
    seed: int = 0,
    size_frac=(0.15, 0.3),
) -> dict:
    """The cut-paste probe on a trained run: patches of class `a` on normals of class `b`."""
    cfg, models_by_name, name, root = _run_data(run_dir, data_name, root, [b])
    src = load_images(name, root, a, cfg.image_size, n=n)
    tgt = load_images(name, root, b, cfg.image_size, n=n)
    res = cutpaste_probe(model_for(models_by_name, b), src, tgt, seed, size_frac)
    res.update(probe="cutpaste", classes=[a, b], run=str(run_dir), setting=cfg.setting, model=cfg.model)
    return res


def format_probe(res: dict) -> str:
    head = f"{res['probe']} probe, {res['model']} {res['setting']}, classes {res['classes'][0]} / {res['classes'][1]}"
    if res["probe"] == "mixup":
        lines = [head, "   λ   ref        blend-vs-normal AUROC   score ratio"]
        for lam, ref, auc, ratio in zip(res["lambda"], res["reference"], res["auroc"], res["ratio"]):
            lines.append(f"{lam:5.2f}  {ref:10s} {auc:12.3f}           {ratio:8.2f}")
        return "\n".join(lines)
    return (
        f"{head}\n  {res['n']} pasted images: image AUROC {res['image_auroc']:.3f}, "
        f"pixel AUROC {res['pixel_auroc']:.3f}, AUPRO {res['aupro']:.3f}"
    )
