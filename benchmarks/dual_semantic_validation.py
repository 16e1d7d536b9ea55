"""The dual student's link and calibration set, re-checked on validation data that has semantic anomalies.

`dual_validation.py` chose them on synthetic local defects only; the E–E branch exists for the other kind, whole
images of a class the detector was never trained on, and that validation set has none. Here one of notebook 5's
four industrial classes is held out of training (a fold), so its training images can stand in for semantic
anomalies without touching any test set (our construction, `adkit.validation.semantic_set`):

* the run: notebook 5's recipe on the other three classes (mini, 128 px, batch 8, 100 steps per class),
  trained with `calib_holdout=0.4` so that part of each class's normals is never fitted;
* "synthetic": the held-out normals' second half with synthetic defects (as in `dual_validation.py`), mean
  AUROC over the three classes;
* "semantic": the same held-out normals (clean) against every training image of the held-out class, one AUROC;
* "both": the mean of the two, the criterion a default should be chosen on when both kinds of anomaly matter.

Each variant (link exp / logistic × calibration on held-out or on fitted normals) is scored from one forward
pass per set (`adkit.ablation.dual_variants`). Folds: `cameraman` (an object) and `grass` (a texture), seeds 0–2;
the interval is over seeds, each seed's value the mean of its folds.

    OMP_NUM_THREADS=1 python benchmarks/dual_semantic_validation.py run --cache /tmp/semval --fold cameraman &
    OMP_NUM_THREADS=1 python benchmarks/dual_semantic_validation.py run --cache /tmp/semval --fold grass
    python benchmarks/dual_semantic_validation.py summary --cache /tmp/semval [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dual_validation import DEFAULT, HOLDOUT, SCORES  # benchmarks/ is on the path (the script's folder)
from dual_validation import config as industrial_config

CLASSES = ("brick", "grass", "cat", "cameraman")
FOLDS = ("cameraman", "grass")
SEEDS = (0, 1, 2)
SPLITS = ("synthetic", "semantic", "both")


def config(fold: str, seed: int):
    import dataclasses

    kept = tuple(c for c in CLASSES if c != fold)
    cfg = industrial_config(seed)
    return dataclasses.replace(cfg, classes=kept, iters=100 * len(kept))


def measure(fold: str, seed: int, cache: str) -> dict:
    from adkit import data, validation
    from adkit.ablation import dual_variants
    from adkit.config import ALL
    from adkit.evaluate import predict
    from adkit.runs import load_run
    from adkit.train import cached_run

    cfg = config(fold, seed)
    run = cached_run(cfg, cache, progress=False)
    model = load_run(run)[1][ALL]
    split = validation.held_out(cfg, HOLDOUT)
    raw = model.raw_scores_of(split["images"])
    calibration = {w: {b: r[split[k]] for b, r in raw.items()} for w, k in (("held-out", "cal"), ("fitted", "fit"))}
    syn = split["val"]
    normals = syn["image"][syn["label"] == 0]  # the clean copies: held-out normals never fitted nor calibrated on
    recs = data.load_records(cfg.data, cfg.root, "train", [fold])
    foreign = data.load_all(data.ImageDataset(recs, cfg.image_size))["image"]
    sem = validation.semantic_set(normals, foreign)
    rows = {}
    for name, val in (("synthetic", syn), ("semantic", sem)):
        rows[name] = dual_variants(model, validation.by_class(predict(model, val["image"]), val), calibration)
    return {"fold": fold, "seed": seed, "run": run.name, "n_normals": len(normals), "n_foreign": len(foreign), **rows}


def run(cache: str, folds: tuple[str, ...]) -> None:
    for fold in folds:
        out = Path(cache) / f"rows-{fold}.jsonl"
        done = {json.loads(x)["seed"] for x in out.read_text().splitlines()} if out.exists() else set()
        for seed in SEEDS:
            if seed not in done:
                row = measure(fold, seed, cache)
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


def summary(cache: str, json_out: str | None) -> dict:
    from adkit.report import format_difference, format_figure, summarize

    rows = [json.loads(x) for p in sorted(Path(cache).glob("rows-*.jsonl")) for x in p.read_text().splitlines()]
    folds = sorted({r["fold"] for r in rows})
    complete = [s for s in SEEDS if all(any(r["seed"] == s and r["fold"] == f for r in rows) for f in folds)]
    rows = [r for r in rows if r["seed"] in complete]  # a seed counts once every fold has it
    seeds = per_seed(rows)
    print(f"folds {', '.join(folds)}; seeds {complete}; image AUROC in %, mean [95% t interval] over seeds")
    table: dict = {}
    for split in SPLITS:
        print(f"\n{split}\n")
        print("| link, calibration | " + " | ".join(SCORES) + " | noisy_or − local | noisy_or − default |")
        print("|---|" + "---:|" * (len(SCORES) + 2))
        for variant in seeds[complete[0]][split]:
            v = {k: [seeds[s][split][variant][k] for s in complete] for k in SCORES}
            fig = {k: summarize(x) for k, x in v.items()}
            fig["noisy_or − local"] = summarize([a - b for a, b in zip(v["noisy_or"], v["local"])])
            fig["noisy_or − default"] = summarize(
                [a - seeds[s][split][DEFAULT]["noisy_or"] for a, s in zip(v["noisy_or"], complete)]
            )
            table.setdefault(split, {})[variant] = fig
            cells = [format_figure(fig[k]) for k in SCORES]
            cells += [format_difference(fig["noisy_or − local"]), format_difference(fig["noisy_or − default"])]
            print(f"| {variant} | " + " | ".join(cells) + " |")
    if json_out:
        doc = {"folds": folds, "seeds": complete, "holdout": HOLDOUT, "made_by": __doc__.split("\n\n")[-1].strip()}
        Path(json_out).write_text(json.dumps({**doc, "table": table}, indent=1) + "\n")
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("run", "summary"))
    ap.add_argument("--cache", required=True, help="folder of the trained runs and of rows-<fold>.jsonl")
    ap.add_argument("--fold", action="append", choices=CLASSES, help="run: the class to hold out (default: FOLDS)")
    ap.add_argument("--json", help="summary: also write the table here")
    a = ap.parse_args()
    Path(a.cache).mkdir(parents=True, exist_ok=True)
    if a.what == "run":
        run(a.cache, tuple(a.fold or FOLDS))
    else:
        summary(a.cache, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
