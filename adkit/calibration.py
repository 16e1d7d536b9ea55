"""Calibration after training: which training normals a model calibrates on, and the choice between candidate sets.

A model declares what it needs in `model.calibration` (`adkit.models.base.Calibration`); `fit` asks `split` which
images to train on and, after the last step, `calibrate` hands the model its calibration normals through its one
hook, `model.calibrate`. With `choose`, the held-out normals are split in two, alternately (each half has every
class): one half is a candidate calibration set, the other becomes validation data (its clean images and one
synthetic-defect copy per family, `adkit.data.synthetic`); the other candidate is as many fitted normals. The
set whose calibration gives the higher validation AUROC of the model's main score wins (ties: fitted), and the
model keeps the choice with its weights. Our construction; docs/methods.md §5 and §8.

    fit_idx, cal_idx = split(model, len(images), seed)
    calibrate(model, cache, fit_idx, cal_idx, seed)           # cache: anything with .batch(indices)
"""

from __future__ import annotations

import sys

import torch

from .data.splits import calibration_halves, calibration_split, fitted_sample
from .data.synthetic import synthetic_defects
from .metrics import image_auroc
from .models.base import CALIBRATION_SETS, ADModel, CalibrationChoice

MIN_CHOICE_HOLDOUT = 4  # the choice splits the held-out normals in two and needs two in each half


def min_held(model: ADModel) -> int:
    """The fewest held-out normals `model`'s calibration can use: 4 for a choice, else 1."""
    return MIN_CHOICE_HOLDOUT if model.calibration.choose else 1


def split(model: ADModel, n: int, seed: int, say: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices `(fit, calibrate)` of `n` training normals for `model`: a seeded fraction `calibration.holdout`
    held out, or every image for both where the model holds none out or too few would be (`say`: then print a
    note to stderr)."""
    spec = model.calibration
    if spec is None or spec.holdout <= 0:
        return torch.arange(n), torch.arange(n)
    fit_idx, cal_idx = calibration_split(n, spec.holdout, seed, min_held(model))
    if say and len(cal_idx) == n:
        print(
            f"note: {n} training images are too few to keep {min_held(model)} of them out for the calibration "
            f"(a fraction {spec.holdout}); training on all of them and calibrating on them",
            file=sys.stderr,
        )
    return fit_idx, cal_idx


def calibrate(model: ADModel, cache, fit_idx: torch.Tensor, cal_idx: torch.Tensor, seed: int) -> None:
    """Put `model` in eval mode and calibrate it on `cache.batch(cal_idx)` (images and teacher features; `cache`
    holds the `len(cache)` training normals), or on the set `choose` picks among them; a model without
    `calibration` loads nothing."""
    model.eval()
    spec = model.calibration
    if spec is None:
        return
    if spec.choose and len(cal_idx) < len(cache):  # some were held out: there is a choice
        held = cache.batch(cal_idx)
        choose(model, *held, *cache.batch(fitted_sample(fit_idx, len(cal_idx), seed)))
    else:
        model.calibrate(*cache.batch(cal_idx))


@torch.no_grad()
def choose(
    model: ADModel,
    held: torch.Tensor,
    held_feats: list[torch.Tensor] | None,
    fitted: torch.Tensor,
    fitted_feats: list[torch.Tensor] | None,
) -> CalibrationChoice:
    """Calibrate `model` on the better of two sets of normals: every other held-out one (`held`, from the first),
    or as many `fitted` ones, judged by the AUROC of `model.image_scores(...)["score"]` on synthetic defects of the
    other held-out half (seeded with 0). Returns what the choice saw; the model keeps it too."""
    if len(held) < MIN_CHOICE_HOLDOUT or len(fitted) < 1:
        raise ValueError(
            f"a choice of calibration set needs at least {MIN_CHOICE_HOLDOUT} held-out normals and some fitted "
            f"ones, got {len(held)} and {len(fitted)}: raise the holdout or use more training images"
        )
    held_cal, held_val = calibration_halves(held)
    val = synthetic_defects(held_val.cpu(), ["val"] * len(held_val), seed=0)  # made on the CPU, scored on the model's
    k = min(len(held_cal), len(fitted))
    candidates = {
        "fitted": (fitted[:k], None if fitted_feats is None else [t[:k] for t in fitted_feats]),
        "held-out": (held_cal, None if held_feats is None else [calibration_halves(t)[0] for t in held_feats]),
    }
    auroc = {}
    for name, normals in candidates.items():
        model.calibrate(*normals)
        score = model.image_scores(val["image"])["score"]  # damaged images: the teacher runs again
        auroc[name] = image_auroc(score.double().numpy(), val["label"].numpy())
    choice = CalibrationChoice(auroc, max(CALIBRATION_SETS, key=lambda n: (auroc[n], n == "fitted")))
    model.calibrate(*candidates[choice.chosen], choice=choice)
    return choice


__all__ = ["MIN_CHOICE_HOLDOUT", "calibrate", "choose", "min_held", "split"]
