"""Splits of a run's training normals: which images train, which are held out for a calibration, and how
held-out normals divide into a calibration half and a validation half. Index arithmetic only, seeded.

    fit_idx, cal_idx = holdout_split(n, 0.4, seed)          # a seeded 40 % kept out of training
    fit_idx, cal_idx = calibration_split(n, 0.4, seed, 4)   # the same, or all of them for both when < 4 held out
    cal, val = calibration_halves(held)                     # alternate halves: each has every class
"""

from __future__ import annotations

import torch


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices `(fit, calibrate)` of `n` training images: a seeded random `fraction` of them (at least one
    image, never all) is kept out of training for calibration."""
    if not 0 < fraction < 1 or n < 2:
        raise ValueError(
            f"calibration holdout must be in (0, 1) and leave images to train on and to calibrate "
            f"with; got {fraction} of {n} images"
        )
    n_cal = min(n - 1, max(1, round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_cal:].sort().values, perm[:n_cal].sort().values


def calibration_split(n: int, fraction: float, seed: int, min_held: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices `(fit, calibrate)` of `n` training images: `holdout_split`, or every image for both where
    `fraction` is 0 or the split would keep fewer than `min_held` images out."""
    everything = torch.arange(n)
    if fraction <= 0:
        return everything, everything
    fit_idx, cal_idx = holdout_split(n, fraction, seed)
    if len(cal_idx) < min_held:
        return everything, everything
    return fit_idx, cal_idx


def calibration_halves(held):
    """Held-out normals (images, features or indices, sorted by class as training stores them) split into
    `(calibrate, validate)`: alternately, from the first, so that each half holds every class."""
    return held[0::2], held[1::2]


def fitted_sample(fit_idx: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """`k` of the trained-on indices `fit_idx`, drawn at random (seeded), in their order: as many fitted normals
    as are held out, to compare with them."""
    pick = torch.randperm(len(fit_idx), generator=torch.Generator().manual_seed(seed))[:k]
    return fit_idx[pick.sort().values]


__all__ = ["calibration_halves", "calibration_split", "fitted_sample", "holdout_split"]
