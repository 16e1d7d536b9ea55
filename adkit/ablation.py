"""Ablations. SNL as one loop: base → +spatial-channel → +intra → +inter → +CRAM, one-class and multi-class;
and the dual student's fusion on one trained run (`dual_ablation`).

    adkit ablate --out runs/ablation --classes brick,grass,cat,coffee --iters-one 100
    adkit ablate --dual runs/digits-dual            # each branch, sum, Noisy-OR × link × calibration

Each step is a cumulative set of `rd+snl` (or `fd+snl`) options (`ABLATION` below); every run
goes through `cached_run`, so re-running the loop only trains what is missing. Prints a markdown table
of mean image AUROC / pixel AUROC / AUPRO, and the cross-class cut-paste subset, and writes it as JSON.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from . import calibration, checkpoint, data
from .config import ALL, IMAGE_SIZE, TrainConfig
from .evaluation import evaluate, predict_classes, score_sets, test_records
from .models.dual import BRANCHES
from .runs import load_run
from .tables import jsonable, markdown_table, percent
from .training import cached_run

_CALIBRATION = {f"{k}_{b}" for k in ("tau", "mean", "std") for b in BRANCHES}

# The ablation of METHODS §4, cumulative: each step's full options, so it runs as one loop over
# `create(name, **options)`. The structural map enters the score (α = 1) with the intra term that trains
# it; before that α = 0 and the score is a positive affine map of the base model's, i.e. the same metrics.
_OFF = dict(use_ch=False, use_sp=False, use_intra=False, use_inter=False, use_cram=False, alpha=0.0)
ABLATION: dict[str, dict] = {
    "base": _OFF,
    "+spatial-channel": {**_OFF, "use_ch": True, "use_sp": True},
    "+intra": {**_OFF, "use_ch": True, "use_sp": True, "use_intra": True, "alpha": 1.0},
    "+inter": {**_OFF, "use_ch": True, "use_sp": True, "use_intra": True, "use_inter": True, "alpha": 1.0},
    "+cram": {
        **_OFF,
        "use_ch": True,
        "use_sp": True,
        "use_intra": True,
        "use_inter": True,
        "use_cram": True,
        "alpha": 1.0,
    },
}


def run_ablation(
    out: str | Path,
    classes: list[str],
    iters_one: int = 100,
    image_size: int = IMAGE_SIZE,
    base: str = "rd",
    seed: int = 0,
    steps: list[str] | None = None,
    progress: bool = True,
) -> dict:
    out = Path(out)
    rows = {}
    for step in steps or list(ABLATION):
        for setting in ("one-class", "multi-class"):
            iters = iters_one if setting == "one-class" else iters_one * len(classes)
            cfg = TrainConfig(
                data="mini",
                classes=tuple(classes),
                setting=setting,
                model=f"{base}+snl",
                image_size=image_size,
                iters=iters,
                seed=seed,
                options=dict(ABLATION[step]),
            )
            run = cached_run(cfg, out, progress=progress)
            res = evaluate(run, progress=False)
            rows[f"{step} | {setting}"] = {
                "mean": res["mean"],
                "run": run.name,
                "cut_paste_cross": res["defects"].get("cut_paste_cross"),
                **({"maps": res["maps"]} if "maps" in res else {}),
            }
            print(f"{step:18s} {setting:12s} " + format_row(rows[f"{step} | {setting}"]), file=sys.stderr)
    checkpoint.write_json(out / "ablation.json", jsonable(rows))
    return rows


def dual_ablation(
    run_dir: str | Path,
    links: tuple[str, ...] = ("exp", "logistic"),
    data_name: str | None = None,
    classes: list[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Mean image AUROC of every score of a trained multi-class `dual` run — E–D alone, E–E alone, the sum of
    z-scored scores, Noisy-OR — with each link, calibrated on the images the students were fitted on and, for a
    run trained with `calib_holdout` > 0, on its held-out training normals. Only the calibration is redone; the
    students are the run's own.
    `data_name`/`classes`: another test set (e.g. "mini_semantic")."""
    cfg, models_by_name = load_run(run_dir)
    model = models_by_name.get(ALL)
    if model is None or model.name != "dual":
        raise ValueError(f"{run_dir}: dual_ablation needs a multi-class run of the dual model")
    train_recs = data.run_records(cfg)
    images = data.load_all(data.ImageDataset(train_recs, cfg.image_size))["image"]
    # a run trained on every normal (`calib_holdout=0`, or too few images to hold any out) has no held-out
    # normals: its one calibration set is the fitted images
    fit_idx, cal_idx = calibration.split(model, len(images), cfg.seed)
    sets = {"held-out": cal_idx, "fitted": fit_idx} if len(cal_idx) < len(images) else {"fitted": fit_idx}
    test = test_records(cfg, data_name, classes=classes)
    # one forward pass over the test set and one over the training images; every variant is arithmetic on
    # their raw branch scores (`dual_variants`), since only the calibration changes
    preds = predict_classes({ALL: model}, test, cfg.image_size, progress=False)
    raw_train = model.raw_scores_of(images)
    return dual_variants(model, preds, {w: {b: r[i] for b, r in raw_train.items()} for w, i in sets.items()}, links)


def dual_variants(
    model,
    preds: dict[str, dict],
    calibration: dict[str, dict[str, torch.Tensor]],
    links: tuple[str, ...] = ("exp", "logistic"),
) -> dict[str, dict[str, float]]:
    """Mean image AUROC of each of a dual model's scores on `preds` (its `predict_classes` output, which holds the
    raw branch scores) for each link × calibration set; `calibration` maps a name to the normals' raw branch
    scores `{branch: (N,)}`. Arithmetic only (`DualStudent.fused_scores`): the model's link and calibration are
    put back afterwards."""
    raw = {cls: {b: torch.as_tensor(p[f"score_{b}"]) for b in BRANCHES} for cls, p in preds.items()}
    config, saved, rows = model.config, {k: v.clone() for k, v in model.state_dict().items() if k in _CALIBRATION}, {}
    try:
        for link in links:
            for where, normals in calibration.items():
                model.config = dataclasses.replace(config, score_link=link)
                model.calibrate_from(normals)
                variant = {cls: {**p, **_numpy(model.fused_scores(raw[cls]))} for cls, p in preds.items()}
                rows[f"{link} link, calibrated on {where} normals"] = {
                    k.removeprefix("score_"): score_sets(variant, None, k)["mean"]["image_auroc"]
                    for k in model.report_scores
                }
    finally:  # the model leaves as it came: its link and its own calibration
        model.config = config
        model.load_state_dict(saved, strict=False)
    return rows


def _numpy(scores: dict) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in scores.items()}


def dual_markdown(rows: dict[str, dict[str, float]]) -> str:
    """`dual_ablation`'s rows as a markdown table: a row per calibration, a column per score, in percent."""
    keys = list(next(iter(rows.values())))
    return markdown_table(["calibration", *keys], [[name, *(percent(r[k]) for k in keys)] for name, r in rows.items()])


def _cells(r: dict) -> list[str]:
    m, cp = r["mean"], r["cut_paste_cross"] or {}
    values = (m["image_auroc"], m["pixel_auroc"], m["aupro"], cp.get("image_auroc"), cp.get("pixel_auroc"))
    return [percent(x) for x in values]


def format_row(r: dict) -> str:
    return " | ".join(_cells(r))


MARKDOWN_HEADER = (
    "step",
    "setting",
    "image AUROC",
    "pixel AUROC",
    "AUPRO",
    "cut-paste (cross) image AUROC",
    "cut-paste (cross) pixel AUROC",
)


def markdown(rows: dict) -> str:
    """`run_ablation`'s rows as a markdown table, in percent."""
    return markdown_table(MARKDOWN_HEADER, [[*key.split(" | "), *_cells(r)] for key, r in rows.items()], left=2)


def run_cli(a) -> int:
    """`adkit ablate` with parsed arguments (its flags are defined in `adkit.cli`, which loads no torch)."""
    if a.dual:
        print(dual_markdown(dual_ablation(a.dual, data_name=a.data)))
        return 0
    rows = run_ablation(
        a.out, a.classes.split(","), a.iters_one, a.image_size, a.base, steps=a.steps.split(",") if a.steps else None
    )
    print(markdown(rows))
    return 0
