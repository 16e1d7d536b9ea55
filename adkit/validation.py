"""Validation data of a trained run, from its training normals only: its held-out normals split as training split
them, with synthetic defects of one half (`held_out`), and predictions on such a set grouped by class for
`adkit.evaluation.score_sets` (`by_class`). The sets themselves are made in `adkit.data.synthetic`.

    split = held_out(cfg, 0.4)                    # {"images", "fit", "cal", "val"}
    res = score_sets(by_class(predict(model, split["val"]["image"]), split["val"]))
"""

from __future__ import annotations

import numpy as np

from . import data
from .data.splits import calibration_halves, holdout_split
from .data.synthetic import synthetic_defects


def held_out(cfg, holdout: float) -> dict:
    """The training normals of a run trained with `calib_holdout=holdout`, split as its training split them
    (`adkit.data.splits.holdout_split` with the run's seed): {"images": all of them `(N,3,H,W)`, "fit": the
    indices trained on, "cal": every other held-out one, from the first (to calibrate), "val": `synthetic_defects`
    of the rest (seeded with the run's seed; its clean copies, label 0, come first)}. `cfg` is the run's
    `TrainConfig`. The halves alternate because the images come sorted by class: halves that did not would hold
    different classes on a multi-class run, and a comparison of calibration sets would measure a transfer across
    classes."""
    recs = data.run_records(cfg)
    images = data.load_all(data.ImageDataset(recs, cfg.image_size))["image"]
    fit_idx, held = holdout_split(len(recs), holdout, cfg.seed)
    cal_idx, val_idx = calibration_halves(held)
    val = synthetic_defects(images[val_idx], [recs[i].cls for i in val_idx], seed=cfg.seed)
    return {"images": images, "fit": fit_idx, "cal": cal_idx, "val": val}


def by_class(pred: dict[str, np.ndarray], val: dict) -> dict[str, dict]:
    """A model's predictions on a validation set (`adkit.evaluation.predict(model, val["image"])`) split by class,
    with the labels, masks and defect names: the `{cls: {...}}` form `adkit.evaluation.score_sets` takes."""
    cls = np.asarray(val["cls"])
    labels, masks = val["label"].numpy(), val["mask"][:, 0].numpy() > 0.5
    return {
        c: {
            **{k: v[cls == c] for k, v in pred.items()},
            "label": labels[cls == c],
            "mask": masks[cls == c],
            "defect": [d for d, k in zip(val["defect"], cls) if k == c],
        }
        for c in dict.fromkeys(cls.tolist())
    }


__all__ = ["by_class", "held_out"]
