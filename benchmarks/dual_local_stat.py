"""Which s_D the dual student trains on (issue 14, item 7: "s_D computed the same way in training and at test
time"), chosen on validation data built from training normals: `local_train="flat"` (the flattened cosine per
group, Dinomaly's loss; at test time s_D is the top-1% mean of the local map) against `local_train="map"` (that
top-1% mean in training too). Notebook 5's industrial recipe (mini, brick/grass/cat/cameraman, 128 px, batch 8,
400 steps), `calib_holdout=0.4` as in `dual_validation.py`, seeds 0–2. Image AUROC of the local branch (which no
calibration changes) and of the Noisy-OR (logistic link, calibrated on the held-out half that is not the
validation set, `noisy_or`, or on the fitted normals, `noisy_or_fitted`) on the validation set
(`adkit.validation`) — and on mini's test set for information, never for the choice. "flat" was the default
when the study ran (December 2026, dual revision 1); it chose "map" on the local branch, the statistic this
option trains (revision 2: the same training for the same options, new cache keys; the default calibration
changed after it, see dual_validation.py). The stored rows were measured from the revision-1 run folders.

    OMP_NUM_THREADS=2 python benchmarks/dual_local_stat.py run --cache /tmp/dualval      # resumable
    python benchmarks/dual_local_stat.py summary --cache /tmp/dualval [--json docs/results/dual_local_stat.json]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

# the same hold-out and the same measurement (links × calibration sets) as dual_validation.py, whose default
# runs are these "map" runs; the script's folder is on the path
import dual_validation
from dual_validation import HOLDOUT, SEEDS, measure_variants

VARIANTS = ("flat", "map")  # "flat" was the default when this study ran; it chose "map", the default since
DEFAULT = "map"
SCORES = ("score_local", "score_semantic", "score_noisy_or", "score_noisy_or_fitted")
ROWS = "local_stat.jsonl"


def config(seed: int, local_train: str):
    """dual_validation.py's run for this seed, with `local_train` among the options unless it is the default
    (which stays out: the same run and cache key as dual_validation.py's)."""
    cfg = dual_validation.config(seed)
    if local_train == DEFAULT:
        return cfg
    return dataclasses.replace(cfg, options={**cfg.options, "local_train": local_train})


def measure_run(seed: int, local_train: str, cache: str, run=None) -> dict:
    """One run's row; `run`: a trained run folder of this config to measure instead of `cached_run`'s."""
    from adkit.training import cached_run

    cfg = config(seed, local_train)
    run = cached_run(cfg, cache, progress=False) if run is None else Path(run)
    # the logistic link calibrated on the held-out half that is not the validation set, or on the fitted
    # normals (training itself calibrated on all the held-out normals, validation ones included: not used)
    m = measure_variants(cfg, run, links=("logistic",))
    row = {"seed": seed, "local_train": local_train, "run": run.name, "n_val": m["n_val"]}
    for name in ("validation", "test"):  # mean over classes of each class's image AUROC, in %
        held = m[name]["logistic link, calibrated on held-out normals"]
        fitted = m[name]["logistic link, calibrated on fitted normals"]
        row[name] = {
            "score_local": 100 * held["local"],
            "score_semantic": 100 * held["semantic"],
            "score_noisy_or": 100 * held["noisy_or"],
            "score_noisy_or_fitted": 100 * fitted["noisy_or"],
        }
    return row


def run(cache: str) -> None:
    out = Path(cache) / ROWS
    rows = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    done = {(r["seed"], r["local_train"]) for r in rows}
    for seed in SEEDS:
        for variant in VARIANTS:
            if (seed, variant) not in done:
                row = measure_run(seed, variant, cache)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


def summary(cache: str, json_out: str | None) -> dict:
    from adkit.report import format_difference, format_figure, summarize

    rows = {(r["seed"], r["local_train"]): r for r in map(json.loads, (Path(cache) / ROWS).read_text().splitlines())}
    seeds = sorted({s for s, v in rows if all((s, w) in rows for w in VARIANTS)})
    table = {}
    print(f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); image AUROC in %, mean [95% t interval]")
    for split in ("validation", "test"):
        print(f"\n{split}{' (not used for the choice)' if split == 'test' else ''}\n")
        diffs = " | local − flat | noisy_or − flat | noisy_or_fitted − flat |"
        print("| local_train | " + " | ".join(k.removeprefix("score_") for k in SCORES) + diffs)
        print("|---|" + "---:|" * (len(SCORES) + 3))
        for variant in VARIANTS:  # rows hold %, the report's figures fractions
            v = {k: [rows[s, variant][split][k] / 100 for s in seeds] for k in SCORES}
            fig = {k: summarize(x) for k, x in v.items()}
            for k in ("score_local", "score_noisy_or", "score_noisy_or_fitted"):
                base = [rows[s, VARIANTS[0]][split][k] / 100 for s in seeds]
                fig[f"{k.removeprefix('score_')} − flat"] = summarize([a - b for a, b in zip(v[k], base)])
            table.setdefault(split, {})[variant] = fig
            cells = [format_figure(fig[k]) for k in SCORES]
            cells += [format_difference(fig[k]) for k in ("local − flat", "noisy_or − flat", "noisy_or_fitted − flat")]
            print(f"| {variant} | " + " | ".join(cells) + " |")
    if json_out:
        Path(json_out).write_text(json.dumps({"seeds": seeds, "holdout": HOLDOUT, "table": table}, indent=1) + "\n")
    return table


if __name__ == "__main__":
    from _study import main  # benchmarks/_study.py: the script's folder is on the path

    sys.exit(main(__doc__, run, summary))
