"""Notebooks 5 and 6's dual-student comparisons over seeds 0-2 (README, "The dual student"): image AUROC of each
branch, the sum and the Noisy-OR, and multi-class RD, on mini (notebook 5's industrial recipe) and digits (notebook
6's recipe); then the paired differences with 95% Student-t intervals (`adkit.report.summarize`).

    ADKIT_DATA=data python benchmarks/dual_seeds.py            # trains what the cache (data/runs) lacks

Runs go through `cached_run`, so the notebooks' seed-0 runs are reused. Prints one JSON line per run, then the table.
"""

from __future__ import annotations

import json

MINI = ("brick", "grass", "cat", "cameraman")
DIGITS = ("0", "1", "2", "3", "4")
SEEDS = (0, 1, 2)


def config(task: str, model: str, seed: int):
    from adkit.config import TrainConfig
    from adkit.training import protocol_configs

    if task == "mini":
        common = dict(data="mini", root=None, backbone="efficientnet_lite0", image_size=128, batch_size=8, seed=seed)
        return protocol_configs(model, 100, MINI, **common)["multi-class"]
    return TrainConfig(
        model=model, data="digits", classes=DIGITS, setting="multi-class", backbone="efficientnet_lite0",
        image_size=32, iters=300, batch_size=16, seed=seed,
    )  # fmt: skip


def measure() -> dict:
    from adkit.evaluation import evaluate
    from adkit.training import cached_run

    out = {}
    for task in ("mini", "digits"):
        for model in ("dual", "rd"):
            for seed in SEEDS:
                res = evaluate(cached_run(config(task, model, seed), progress=False), progress=False, save=False)
                row = {"image_auroc": res["mean"]["image_auroc"]}
                row.update({k.removeprefix("score_"): v["image_auroc"] for k, v in res.get("scores", {}).items()})
                out.setdefault(task, {}).setdefault(model, {})[seed] = row
                print(json.dumps({"task": task, "model": model, "seed": seed, **row}), flush=True)
    return out


def table(out: dict) -> str:
    from adkit.report import format_difference, summarize

    def diff(a, b) -> str:
        return format_difference(summarize([a[s] - b[s] for s in SEEDS]))

    lines = []
    for task, runs in out.items():
        dual, rd = runs["dual"], runs["rd"]
        branch = {k: {s: dual[s][k] for s in SEEDS} for k in ("local", "semantic", "sum", "noisy_or")}
        rd_auroc = {s: rd[s]["image_auroc"] for s in SEEDS}
        means = {k: 100 * sum(v.values()) / len(SEEDS) for k, v in {**branch, "rd": rd_auroc}.items()}
        lines.append(f"{task}: " + ", ".join(f"{k} {v:.1f}" for k, v in means.items()))
        lines.append(f"  noisy_or − local {diff(branch['noisy_or'], branch['local'])}")
        lines.append(f"  sum − local {diff(branch['sum'], branch['local'])}")
        lines.append(f"  local − rd {diff(branch['local'], rd_auroc)}")
        lines.append(f"  noisy_or − rd {diff(branch['noisy_or'], rd_auroc)}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(measure()))
