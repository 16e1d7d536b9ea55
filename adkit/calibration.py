"""Calibration after training: which training normals a model calibrates on, and the choice between candidate sets.

A model declares what it needs in `model.calibration` (`adkit.models.base.Calibration`); `fit` asks `split` which
images to train on and, after the last step, `calibrate` hands the model its calibration normals through its one
hook, `model.calibrate_batches`, a batch at a time (a calibration set is never in memory at once). With
`choose`, the held-out normals are split in two, alternately (each half has every class): one half is a
candidate calibration set, the other becomes validation data (its clean images and one synthetic-defect copy
per family, `adkit.data.synthetic`, made batch by batch); the other candidate is as many fitted normals. The
set whose calibration gives the higher validation AUROC of the model's main score wins (ties: fitted), and the
model keeps the choice with its weights. Our construction; docs/methods.md §5 and §8.

    fit_idx, cal_idx = split(model, len(images), seed)
    calibrate(model, cache, fit_idx, cal_idx, seed)  # cache: anything with .batch(idx) and .batches(windows)
"""

from __future__ import annotations

import sys

import torch

from .data.splits import calibration_halves, calibration_split, fitted_sample
from .data.synthetic import synthetic_batches
from .metrics import image_auroc
from .models.base import CALIBRATION_SETS, ADModel, CalibrationChoice

MIN_CHOICE_HOLDOUT = 4  # the choice splits the held-out normals in two and needs two in each half
BATCH = 32  # images a calibration reads at a time (the models' own batch size)


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


class Stack:
    """Images `(N,3,H,W)` and their teacher features (or None) in memory, read as the feature cache is:
    `batch(idx)` and `batches(index windows)` give `(images, features or None)`."""

    def __init__(self, images: torch.Tensor, feats: list[torch.Tensor] | None = None):
        self.images, self.feats = images, feats

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        return self.images[idx], None if self.feats is None else [t[idx] for t in self.feats]

    def batches(self, index_windows):
        return (self.batch(idx) for idx in index_windows)


def _index_windows(idx: torch.Tensor, size: int = BATCH) -> list[torch.Tensor]:
    """`idx` in consecutive pieces of `size`: the batches a calibration reads."""
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def calibrate(model: ADModel, cache, fit_idx: torch.Tensor, cal_idx: torch.Tensor, seed: int) -> None:
    """Put `model` in eval mode and calibrate it on the normals `cal_idx` of `cache` (the `len(cache)` training
    normals, read `BATCH` at a time through `cache.batches`), or on the set `choose` picks among them; a model
    without `calibration` reads nothing."""
    model.eval()
    spec = model.calibration
    if spec is None:
        return
    if spec.choose and len(cal_idx) < len(cache):  # some were held out: there is a choice
        choose_among(model, cache, cal_idx, cache, fitted_sample(fit_idx, len(cal_idx), seed))
    else:
        model.calibrate_batches(cache.batches(_index_windows(cal_idx)))


def choose(
    model: ADModel,
    held: torch.Tensor,
    held_feats: list[torch.Tensor] | None,
    fitted: torch.Tensor,
    fitted_feats: list[torch.Tensor] | None,
) -> CalibrationChoice:
    """`choose_among` for normals in memory: the held-out ones `held` and the fitted ones `fitted` (with their
    teacher features, or None)."""
    return choose_among(
        model, Stack(held, held_feats), torch.arange(len(held)), Stack(fitted, fitted_feats), torch.arange(len(fitted))
    )


@torch.no_grad()
def choose_among(model: ADModel, held_src, held_idx: torch.Tensor, fitted_src, fitted_idx: torch.Tensor):
    """Calibrate `model` on the better of two sets of normals: every other held-out one (rows `held_idx` of
    `held_src`, from the first), or as many fitted ones (rows `fitted_idx` of `fitted_src`), judged by the AUROC
    of `model.image_scores(...)["score"]` on synthetic defects of the other held-out half (seeded with 0).
    Sources are read `BATCH` images at a time (`batches`, `batch`), so the memory this takes does not grow with
    the number of normals. Returns what the choice saw; the model keeps it too."""
    if len(held_idx) < MIN_CHOICE_HOLDOUT or len(fitted_idx) < 1:
        raise ValueError(
            f"a choice of calibration set needs at least {MIN_CHOICE_HOLDOUT} held-out normals and some fitted "
            f"ones, got {len(held_idx)} and {len(fitted_idx)}: raise the holdout or use more training images"
        )
    held_cal, held_val = calibration_halves(held_idx)
    k = min(len(held_cal), len(fitted_idx))
    candidates = {"fitted": (fitted_src, fitted_idx[:k]), "held-out": (held_src, held_cal)}

    def val_normals(i: torch.Tensor) -> torch.Tensor:  # made on the CPU, scored on the model's device
        return held_src.batch(held_val[i])[0].cpu()

    auroc = {}
    for name, (src, idx) in candidates.items():
        model.calibrate_batches(src.batches(_index_windows(idx)))
        scores, labels = [], []
        for x, y in synthetic_batches(val_normals, len(held_val), seed=0, batch_size=BATCH):
            scores.append(model.image_scores(x, BATCH)["score"])  # damaged images: the teacher runs again
            labels.append(y)
        auroc[name] = image_auroc(torch.cat(scores).double().numpy(), torch.cat(labels).numpy())
    choice = CalibrationChoice(auroc, max(CALIBRATION_SETS, key=lambda n: (auroc[n], n == "fitted")))
    src, idx = candidates[choice.chosen]
    model.calibrate_batches(src.batches(_index_windows(idx)), choice=choice)
    return choice


__all__ = [
    "BATCH",
    "MIN_CHOICE_HOLDOUT",
    "Stack",
    "calibrate",
    "choose",
    "choose_among",
    "min_held",
    "split",
]
