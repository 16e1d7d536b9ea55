"""The dual student's link and calibration set, re-checked on validation data that has semantic anomalies.

`dual_validation.py` chose them on synthetic local defects only; the E–E branch exists for the other kind, whole
images of a class the detector was never trained on, and that validation set has none. Here one normal class of
a task is held out of training (a fold), so its training images can stand in for semantic anomalies without
touching any test set (our construction, `adkit.data.synthetic.semantic_set`):

* the run: the task's notebook-5 recipe on the other normal classes, trained with `calib_holdout=0.4` so that
  part of each class's normals is never fitted;
* "synthetic": the held-out normals' second half with synthetic defects (as in `dual_validation.py`), mean
  AUROC over the trained classes;
* "semantic": the same held-out normals (clean) against every training image of the held-out class, one AUROC;
* "both": the mean of the two, the criterion a default should be chosen on when both kinds of anomaly matter.

Tasks: `digits` (notebook 6's task: normal digits 0–4, 32 px, batch 16, 300 steps; folds: digit 1 and
digit 3 held out) and `mini` (the industrial task: brick, grass, cat, cameraman, 128 px, batch 8, 100 steps per
class; folds cameraman and grass). On mini the semantic set is no test at all: each mini class is cut from one
photograph, so a held-out class differs from the others in every patch and every score separates it perfectly
(100.0 on both folds for every variant, seed 0, 2026-12-02) — use digits.

Each variant (link exp / logistic × calibration on held-out or on fitted normals) is scored from one forward
pass per set (`adkit.ablation.dual_variants`). Seeds 0–2; the interval is over seeds, each seed's value the mean
of its folds.

    OMP_NUM_THREADS=1 python benchmarks/dual_semantic_validation.py run --cache /tmp/semval --fold 1 &
    OMP_NUM_THREADS=1 python benchmarks/dual_semantic_validation.py run --cache /tmp/semval --fold 3
    python benchmarks/dual_semantic_validation.py summary --cache /tmp/semval [--json FILE]

Stored results (docs/results/dual_semantic_validation.json): re-run on 2026-12-02 evening with class-balanced
halves (`adkit.data.splits.calibration_halves`; before, the first half of the held-out normals calibrated and the
second validated, and sorted by class they held different classes), digits, both folds, seeds 0–2, 2 threads,
runs trained by revision 4's code with `calib_holdout=0.4` and the per-run choice (revision 5's default training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dual_validation import HOLDOUT, SCORES, variant_table  # benchmarks/ is on the path (the script's folder)
from dual_validation import config as industrial_config

TASKS = {  # normal classes, default folds
    "digits": (("0", "1", "2", "3", "4"), ("1", "3")),
    "mini": (("brick", "grass", "cat", "cameraman"), ("cameraman", "grass")),
}
SEEDS = (0, 1, 2)
SPLITS = ("synthetic", "semantic", "both")


def config(task: str, fold: str, seed: int):
    import dataclasses

    kept = tuple(c for c in TASKS[task][0] if c != fold)
    cfg = industrial_config(seed)  # mini, 128 px, batch 8, calib_holdout=HOLDOUT
    if task == "digits":  # notebook 6's recipe
        return dataclasses.replace(cfg, data="digits", classes=kept, image_size=32, iters=300, batch_size=16)
    return dataclasses.replace(cfg, classes=kept, iters=100 * len(kept))


def measure(task: str, fold: str, seed: int, cache: str) -> dict:
    from adkit import data, validation
    from adkit.ablation import dual_variants
    from adkit.config import ALL
    from adkit.data.synthetic import semantic_set
    from adkit.evaluation import predict
    from adkit.runs import load_run
    from adkit.training import cached_run

    cfg = config(task, fold, seed)
    run = cached_run(cfg, cache, progress=False)
    model = load_run(run)[1][ALL]
    split = validation.held_out(cfg, HOLDOUT)
    raw = model.raw_scores_of(split["images"])
    calibration = {w: {b: r[split[k]] for b, r in raw.items()} for w, k in (("held-out", "cal"), ("fitted", "fit"))}
    syn = split["val"]
    normals = syn["image"][syn["label"] == 0]  # the clean copies: held-out normals never fitted nor calibrated on
    recs = data.load_records(cfg.data, cfg.root, "train", [fold])
    foreign = data.load_all(data.ImageDataset(recs, cfg.image_size))["image"]
    sem = semantic_set(normals, foreign)
    rows = {}
    for name, val in (("synthetic", syn), ("semantic", sem)):
        rows[name] = dual_variants(model, validation.by_class(predict(model, val["image"]), val), calibration)
    return {
        "task": task,
        "fold": fold,
        "seed": seed,
        "run": run.name,
        "n_normals": len(normals),
        "n_foreign": len(foreign),
        **rows,
    }


def run(cache: str, task: str, folds: tuple[str, ...]) -> None:
    for fold in folds:
        out = Path(cache) / f"rows-{task}-{fold}.jsonl"
        done = {json.loads(x)["seed"] for x in out.read_text().splitlines()} if out.exists() else set()
        for seed in SEEDS:
            if seed not in done:
                row = measure(task, fold, seed, cache)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


def per_seed(rows: list[dict]) -> dict:
    """{seed: {split: {variant: {score: AUROC}}}}: each seed's mean over its folds, and "both" = the mean of the
    synthetic and semantic AUROCs."""
    out: dict = {}
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        s = {}
        for split in ("synthetic", "semantic"):
            s[split] = {v: {k: sum(r[split][v][k] for r in mine) / len(mine) for k in SCORES} for v in mine[0][split]}
        s["both"] = {v: {k: (s["synthetic"][v][k] + s["semantic"][v][k]) / 2 for k in SCORES} for v in s["synthetic"]}
        out[seed] = s
    return out


def summary(cache: str, task: str, json_out: str | None) -> dict:
    files = sorted(Path(cache).glob(f"rows-{task}-*.jsonl"))
    rows = [json.loads(x) for p in files for x in p.read_text().splitlines()]
    if not rows:
        raise SystemExit(f"{cache}: no rows of task {task} (rows-{task}-<fold>.jsonl) — run it first")
    folds = sorted({r["fold"] for r in rows})
    complete = [s for s in SEEDS if all(any(r["seed"] == s and r["fold"] == f for r in rows) for f in folds)]
    rows = [r for r in rows if r["seed"] in complete]  # a seed counts once every fold has it
    seeds = per_seed(rows)
    print(
        f"{task}: folds held out {', '.join(folds)}; seeds {complete}; "
        "image AUROC in %, mean [95% t interval] over seeds"
    )
    table = {}
    for split in SPLITS:
        print(f"\n{split}\n")
        table[split] = variant_table({s: seeds[s][split] for s in complete})
    if json_out:
        doc = {
            "task": task,
            "folds": folds,
            "seeds": complete,
            "holdout": HOLDOUT,
            "made_by": __doc__.split("\n\n")[-1].strip(),
        }
        Path(json_out).write_text(json.dumps({**doc, "table": table}, indent=1) + "\n")
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("run", "summary"))
    ap.add_argument("--cache", required=True, help="folder of the trained runs and of rows-<fold>.jsonl")
    ap.add_argument("--task", choices=tuple(TASKS), default="digits")
    ap.add_argument("--fold", action="append", help="run: a normal class to hold out (default: the task's folds)")
    ap.add_argument("--json", help="summary: also write the table here")
    a = ap.parse_args()
    Path(a.cache).mkdir(parents=True, exist_ok=True)
    classes, folds = TASKS[a.task]
    bad = [f for f in a.fold or () if f not in classes]
    if bad:
        ap.error(f"--fold {bad[0]}: not a normal class of {a.task} ({', '.join(classes)})")
    if a.what == "run":
        run(a.cache, a.task, tuple(a.fold or folds))
    else:
        summary(a.cache, a.task, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
