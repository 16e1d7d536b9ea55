"""The SNL ablation as one loop: base → +spatial-channel → +intra → +inter → +CRAM, one-class and multi-class.

    python -m adkit.ablation --out runs/ablation --classes brick,grass,cat,coffee --iters-one 100

Each step is a cumulative set of `rd+snl` (or `fd+snl`) options (`adkit.models.snl.ABLATION`); every run
goes through `cached_run`, so re-running the loop only trains what is missing. Prints a markdown table
of mean image AUROC / pixel AUROC / AUPRO, and the cross-class cut-paste subset, and writes it as JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import checkpoint
from .evaluate import _jsonable, evaluate
from .models.snl import ABLATION
from .train import TrainConfig, cached_run


def run_ablation(out: str | Path, classes: list[str], iters_one: int = 100, image_size: int = 128,
                 base: str = "rd", seed: int = 0, steps: list[str] | None = None, progress: bool = True) -> dict:
    out = Path(out)
    rows = {}
    for step in steps or list(ABLATION):
        for setting in ("one-class", "multi-class"):
            iters = iters_one if setting == "one-class" else iters_one * len(classes)
            cfg = TrainConfig(data="mini", classes=tuple(classes), setting=setting, model=f"{base}+snl",
                              image_size=image_size, iters=iters, seed=seed, options=dict(ABLATION[step]))
            run = cached_run(cfg, out, progress=progress)
            res = evaluate(run, progress=False)
            rows[f"{step} | {setting}"] = {"mean": res["mean"], "run": run.name,
                                           "cut_paste_cross": res["defects"].get("cut_paste_cross"),
                                           **({"maps": res["maps"]} if "maps" in res else {})}
            print(f"{step:18s} {setting:12s} " + format_row(rows[f"{step} | {setting}"]), file=sys.stderr)
    checkpoint.write_json(out / "ablation.json", _jsonable(rows))
    return rows


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def format_row(r: dict) -> str:
    m, cp = r["mean"], r["cut_paste_cross"] or {}
    return " | ".join(_pct(x) for x in (m["image_auroc"], m["pixel_auroc"], m["aupro"], cp.get("image_auroc"),
                                         cp.get("pixel_auroc")))


def markdown(rows: dict) -> str:
    lines = ["| step | setting | image AUROC | pixel AUROC | AUPRO | cut-paste (cross) image AUROC | "
             "cut-paste (cross) pixel AUROC |", "|---|---|---:|---:|---:|---:|---:|"]
    for key, r in rows.items():
        step, setting = key.split(" | ")
        lines.append(f"| {step} | {setting} | {format_row(r)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--classes", default="brick,grass,gravel,tissue,cat,coffee,cameraman,rocket")
    p.add_argument("--iters-one", type=int, default=100)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--base", default="rd", choices=["rd", "fd"])
    p.add_argument("--steps", default=None, help="comma-separated subset of " + ", ".join(ABLATION))
    a = p.parse_args(argv)
    rows = run_ablation(a.out, a.classes.split(","), a.iters_one, a.image_size, a.base,
                        steps=a.steps.split(",") if a.steps else None)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
