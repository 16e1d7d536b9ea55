"""The interference curve: one-class RD minus multi-class RD, in mean image AUROC, against the number of classes.

At equal total compute (one-class: `S` steps per class; multi-class: `k × S` steps for `k` classes), over seeds,
on nested class sets of mini (2 ⊂ 4 ⊂ 8 ⊂ 14: the first four are notebook 1's classes, the first eight the
demo's). One one-class run per seed trains every class once; the one-class mean for `k` classes is the mean of
those `k` class models (each is trained alone, so it does not depend on the others).

Evaluated on a larger test split than mini's default (`--test-good`, `--test-per-defect`: the same training
images, more test images — mini draws every image from its own (seed, class, part, index) stream), so that one
seed's mean has a small standard error (printed, from a bootstrap over test images within each class).

    python benchmarks/interference.py run --out /tmp/curve --workers 2          # resumable; 1 thread per worker
    python benchmarks/interference.py run --out /tmp/curve --factor steps       # what else moves the gap
    python benchmarks/interference.py run --out /tmp/curve --factor width       # the student's width
    python benchmarks/interference.py summary --out /tmp/curve [--json]

`summary` gives, per (k, recipe), the paired gap per seed, its mean and a 95% Student-t interval over seeds,
and the gap per defect type (cross-class pastes are expected to suffer most).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from adkit.data import mini

ORDER = mini.INTERFERENCE_ORDER  # 2 ⊂ 4 ⊂ 8 ⊂ 14: the curve's nested class sets
KS = (2, 4, 8, 14)


def default_width() -> float:
    """RD's default `width_mult` on the studies' teacher (rows written before the width factor have it)."""
    from adkit.models.rd import default_width_mult

    return default_width_mult("efficientnet_lite0")


@dataclass(frozen=True)
class Job:
    setting: str  # "one-class" | "multi-class"
    k: int  # classes (one-class: the first k of ORDER, each its own model)
    steps: int  # per class
    size: int
    batch: int
    seed: int
    model: str = "rd"
    width: float | None = None  # RD's `width_mult` (bottleneck width = out/4 · width); None: the model's default

    @property
    def name(self) -> str:
        tag = ("oc" if self.setting == "one-class" else "mc") + ("" if self.model == "rd" else "-" + self.model)
        wide = "" if self.width is None else f"-w{self.width:g}"
        return f"{tag.replace('+', '_')}-k{self.k}-S{self.steps}-px{self.size}-b{self.batch}{wide}-s{self.seed}"

    @property
    def width_mult(self) -> float:
        """The width the student is built with (the default spelled out, so that rows compare by value)."""
        return self.width if self.width is not None else default_width()

    @property
    def classes(self) -> tuple[str, ...]:
        return ORDER[: self.k]


def plan(factor: str, seeds: list[int]) -> list[Job]:
    """The curve (S=100, 128 px, batch 16), or one extra factor at a fixed k."""
    jobs = []
    for s in seeds:
        if factor == "curve":
            jobs.append(Job("one-class", 14, 100, 128, 16, s))
            jobs += [Job("multi-class", k, 100, 128, 16, s) for k in KS]
        elif factor == "steps":  # three times the training, at notebook 1's four classes, against the same
            # four classes at the curve's 100 steps (trained here too, so the pair comes from one code version)
            for steps in (100, 300):
                jobs.append(Job("one-class", 4, steps, 128, 16, s))
                jobs.append(Job("multi-class", 4, steps, 128, 16, s))
        elif factor == "size":  # half the image side (a quarter of the compute), at 8 and 14 classes
            jobs.append(Job("one-class", 14, 100, 64, 16, s))
            jobs += [Job("multi-class", k, 100, 64, 16, s) for k in (8, 14)]
        elif factor == "width":  # half and twice RD's default width (2 on this teacher), at notebook 1's four
            # classes, against the default trained in the same call: does a student with more capacity, which
            # can fit the normals better, make the one-class − multi-class gap appear?
            for width in (1.0, None, 4.0):
                jobs.append(Job("one-class", 4, 100, 128, 16, s, width=width))
                jobs.append(Job("multi-class", 4, 100, 128, 16, s, width=width))
        elif factor == "snl":  # multi-class RD+SNL where the gap is largest: does it close it?
            jobs.append(Job("multi-class", 14, 100, 128, 16, s, "rd+snl"))
        else:
            raise SystemExit(f"unknown factor {factor!r}: curve, steps, size, width, snl")
    return jobs


def data_root(out: Path, good: int, per_defect: int) -> Path:
    return out / f"mini-test{good}x{per_defect}"


def build_data(out: Path, good: int, per_defect: int) -> Path:
    from adkit.data import mini

    root = data_root(out, good, per_defect)
    mini.build(root, mini.MiniRecipe(n_test_good=good, n_test_per_defect=per_defect), progress=False)
    return root


def _auroc(scores, labels) -> float:
    from adkit import metrics

    return float(metrics.image_auroc(scores, labels))


def run_job(job: Job, out: Path, root: Path) -> dict:
    """Train (resuming if a kill left a checkpoint), evaluate, and keep per class: the image AUROC, the AUROC
    of each defect type against the class's normals, and 200 bootstrap AUROCs over the class's test images."""
    import numpy as np

    from adkit.config import TrainConfig
    from adkit.evaluation import evaluate
    from adkit.training import train

    run = out / "runs" / job.name
    stats_path = run / "stats.json"
    if stats_path.exists():
        return json.loads(stats_path.read_text())
    iters = job.steps if job.setting == "one-class" else job.steps * job.k
    cfg = TrainConfig(
        model=job.model,
        data="mini",
        root=str(root),
        classes=job.classes,
        setting=job.setting,
        image_size=job.size,
        iters=iters,
        batch_size=job.batch,
        seed=job.seed,
        options={} if job.width is None else {"width_mult": job.width},
    )
    t0 = time.perf_counter()
    train(cfg, run, progress=False)
    t_train = time.perf_counter() - t0
    _, preds = evaluate(run, progress=False, return_preds=True)
    rng = np.random.default_rng(1234)
    classes = {}
    for cls, p in preds.items():
        s, y, d = p["score"], p["label"], np.array(p["defect"])
        row = {"image_auroc": _auroc(s, y), "defects": {}}
        for dt in sorted(set(d) - {"good"}):
            sel = (d == dt) | (d == "good")
            row["defects"][dt] = _auroc(s[sel], y[sel])
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        boots = []
        for _ in range(200):  # resample normals and defects separately (stratified bootstrap)
            idx = np.concatenate([rng.choice(neg, len(neg)), rng.choice(pos, len(pos))])
            boots.append(_auroc(s[idx], y[idx]))
        row["bootstrap"] = boots
        classes[cls] = row
    stats = {"job": asdict(job), "train_seconds": round(t_train, 1), "classes": classes}
    tmp = stats_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, stats_path)
    return stats


def cmd_run(a) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    root = build_data(out, a.test_good, a.test_per_defect)
    seeds = [int(x) for x in a.seeds.split(",")]
    jobs = [j for f in a.factor.split(",") for j in plan(f, seeds)]
    todo = [j for j in jobs if not (out / "runs" / j.name / "stats.json").exists()]
    # longest first, so the two workers finish together
    todo.sort(key=lambda j: -j.steps * j.k * (j.size / 128) ** 2 * j.width_mult)
    print(f"{len(jobs)} jobs, {len(todo)} to run, {a.workers} workers at {a.threads} thread(s) each", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    running: list[tuple[Job, subprocess.Popen, float]] = []
    failed = []
    while todo or running:
        while todo and len(running) < a.workers:
            j = todo.pop(0)
            cmd = [sys.executable, __file__, "job", "--out", str(out), "--root", str(root), json.dumps(asdict(j))]
            log = open(out / f"{j.name}.log", "w")
            running.append((j, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), time.time()))
        time.sleep(2)
        for item in list(running):
            j, p, t0 = item
            if p.poll() is not None:
                running.remove(item)
                status = "done" if p.returncode == 0 else f"FAILED rc={p.returncode} (see {j.name}.log)"
                if p.returncode:
                    failed.append(j.name)
                print(
                    f"{time.strftime('%H:%M:%S')} {j.name}: {status} in {time.time() - t0:.0f} s "
                    f"({len(todo)} queued, {len(running)} running)",
                    flush=True,
                )
    if failed:
        raise SystemExit(f"{len(failed)} job(s) failed: {', '.join(failed)}")


def cmd_job(a) -> None:
    job = Job(**json.loads(a.spec))
    run_job(job, Path(a.out), Path(a.root))


def t_interval(values: list[float], level: float = 0.95) -> dict:
    from adkit.report import summarize

    return summarize(values, level)


def collect(out: Path) -> dict:
    stats = {}
    for p in sorted((out / "runs").glob("*/stats.json")):
        s = json.loads(p.read_text())
        stats[Job(**s["job"]).name] = s
    return stats


def mean_over(stats: dict, classes, key=lambda row: row["image_auroc"]) -> float:
    vals = [key(stats["classes"][c]) for c in classes]
    return sum(vals) / len(vals)


def summarize_gaps(out: Path) -> list[dict]:
    """Per (multi-class job recipe): the paired gap one-class − multi-class per seed, in AUROC points."""
    import numpy as np

    stats = collect(out)
    rows = []
    mcs = {}
    for s in stats.values():
        j = Job(**s["job"])
        if j.setting == "multi-class":
            mcs.setdefault((j.k, j.steps, j.size, j.batch, j.model, j.width_mult), []).append((j, s))
    jobs = [Job(**s["job"]) for s in stats.values()]
    for (k, steps, size, batch, model, width), items in sorted(mcs.items()):
        gaps, oc_means, mc_means, ses, defect_gaps, vs_rd = [], [], [], [], {}, []
        seeds = []
        for j, mc in sorted(items, key=lambda t: t[0].seed):
            # the one-class RD run of this seed and recipe with the most classes (it holds the first k)
            ocs = [
                o
                for o in jobs
                if o.setting == "one-class"
                and o.model == "rd"
                and (o.steps, o.size, o.batch, o.seed, o.width_mult) == (steps, size, batch, j.seed, width)
                and o.k >= k
            ]
            if not ocs:
                continue
            oc = stats[max(ocs, key=lambda o: o.k).name]
            cls = j.classes
            seeds.append(j.seed)
            oc_m, mc_m = mean_over(oc, cls), mean_over(mc, cls)
            oc_means.append(100 * oc_m)
            mc_means.append(100 * mc_m)
            gaps.append(100 * (oc_m - mc_m))
            if model != "rd":  # paired against multi-class RD of the same seed and recipe
                rd = Job("multi-class", k, steps, size, batch, j.seed, width=j.width).name
                vs_rd.append(100 * (mc_m - mean_over(stats[rd], cls)) if rd in stats else float("nan"))
            # one seed's standard error of the multi-class mean, from the bootstrap over test images
            boots = np.mean([mc["classes"][c]["bootstrap"] for c in cls], axis=0)
            ses.append(100 * float(np.std(boots, ddof=1)))
            for dt in mc["classes"][cls[0]]["defects"]:
                g = np.mean([oc["classes"][c]["defects"][dt] - mc["classes"][c]["defects"][dt] for c in cls])
                defect_gaps.setdefault(dt, []).append(100 * float(g))
        if not seeds:
            continue
        row = {
            "k": k,
            "model": model,
            "steps_per_class": steps,
            "image_size": size,
            "batch": batch,
            "width_mult": width,
            "seeds": seeds,
            "one_class": t_interval(oc_means),
            "multi_class": t_interval(mc_means),
            "gap": t_interval(gaps),
            "gap_per_seed": [round(g, 2) for g in gaps],
            "one_class_per_seed": [round(x, 2) for x in oc_means],
            "multi_class_per_seed": [round(x, 2) for x in mc_means],
            "se_one_seed_multi_class": [round(x, 2) for x in ses],
            "gap_by_defect": {d: t_interval(v) for d, v in defect_gaps.items()},
        }
        if model != "rd":
            row["multi_class_minus_rd_multi_class"] = t_interval(vs_rd)
        rows.append(row)
    return rows


RECIPE = ("k", "model", "steps_per_class", "image_size", "batch", "width_mult")  # what a row's recipe is


def factor_effects(rows: list[dict], factor: str) -> list[dict]:
    """For rows whose recipes differ only in `factor` (a key of RECIPE): how each step up in it moves one-class
    RD, multi-class RD and their gap — per seed (paired: the same seed at both values), then mean and 95% t
    interval. Rows written before a key existed read as its default (width: RD's 2 on this teacher)."""
    others = [key for key in RECIPE if key != factor]

    def value(r, key):
        return r.get(key, default_width()) if key == "width_mult" else r[key]

    groups = {}
    for r in rows:
        groups.setdefault(tuple(value(r, key) for key in others), []).append(r)
    effects = []
    for recipe, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rs = sorted(rs, key=lambda r: value(r, factor))
        for lo, hi in zip(rs, rs[1:]):
            seeds = [x for x in lo["seeds"] if x in hi["seeds"]]
            if not seeds:
                continue
            d = {
                key: [hi[key][hi["seeds"].index(x)] - lo[key][lo["seeds"].index(x)] for x in seeds]
                for key in ("one_class_per_seed", "multi_class_per_seed", "gap_per_seed")
            }
            effects.append(
                {
                    **dict(zip(others, recipe)),
                    factor: [value(lo, factor), value(hi, factor)],
                    "seeds": seeds,
                    "one_class_change": t_interval(d["one_class_per_seed"]),
                    "multi_class_change": t_interval(d["multi_class_per_seed"]),
                    "gap_change": t_interval(d["gap_per_seed"]),
                }
            )
    return effects


def steps_effects(rows: list[dict]) -> list[dict]:
    return factor_effects(rows, "steps_per_class")


def width_effects(rows: list[dict]) -> list[dict]:
    return factor_effects(rows, "width_mult")


def _fmt(f: dict) -> str:
    if f["n"] < 2 or f["ci_low"] is None or not math.isfinite(f["ci_low"]):
        return f"{f['mean']:+.1f} (n={f['n']})"
    sig = "" if f["ci_low"] > 0 or f["ci_high"] < 0 else " n.s."
    return f"{f['mean']:+.1f} [{f['ci_low']:+.1f}, {f['ci_high']:+.1f}]{sig}"


def cmd_summary(a) -> None:
    rows = summarize_gaps(Path(a.out))
    effects = steps_effects(rows)
    widths = width_effects(rows)
    if a.write:  # the file notebook 1 and the README read: the rows plus how they were made
        roots = sorted(p.name for p in Path(a.out).glob("mini-test*"))
        doc = {
            "what": "one-class RD minus multi-class RD, mean image AUROC in points, paired by seed; "
            "mean and 95% Student-t interval over seeds",
            "made_by": f"python benchmarks/interference.py run --out OUT --factor {a.factors} "
            "(1 thread per job); python benchmarks/interference.py summary --out OUT --write FILE",
            "train_seconds_total": round(sum(s["train_seconds"] for s in collect(Path(a.out)).values())),
            "machine": a.machine,
            "classes_in_order": list(ORDER),
            "test_split": roots,
            "backbone": "efficientnet_lite0",
            "batch": 16,
            "rows": rows,
        }
        if effects:
            doc["steps_effects"] = effects
        if widths:
            doc["width_effects"] = widths
        Path(a.write).parent.mkdir(parents=True, exist_ok=True)
        Path(a.write).write_text(json.dumps(doc, indent=1) + "\n")
    if a.json:
        print(json.dumps({"rows": rows, "steps_effects": effects, "width_effects": widths}, indent=1))
        return
    print(
        "gap = one-class RD − multi-class RD, mean image AUROC points, mean [95% t interval] over seeds; "
        "n.s.: the interval contains 0"
    )
    print(
        "| k | multi-class model | steps/class | px | width | seeds | one-class RD | multi-class | gap | "
        "multi-class − RD multi-class | SE one seed (MC) | gap by defect type |"
    )
    print("|---:|---|---:|---:|---:|---|---:|---:|---|---|---:|---|")
    for r in rows:
        defects = "; ".join(f"{d} {_fmt(f)}" for d, f in r["gap_by_defect"].items())
        vs = _fmt(r["multi_class_minus_rd_multi_class"]) if "multi_class_minus_rd_multi_class" in r else "—"
        print(
            f"| {r['k']} | {r['model']} | {r['steps_per_class']} | {r['image_size']} | "
            f"{r.get('width_mult', default_width()):g} | {r['seeds']} | "
            f"{r['one_class']['mean']:.1f} | {r['multi_class']['mean']:.1f} | {_fmt(r['gap'])} | {vs} | "
            f"{max(r['se_one_seed_multi_class']):.2f} | {defects} |"
        )
    for title, factor, col, found in (
        ("more steps per class", "steps_per_class", "steps/class", effects),
        ("a wider student (RD's width_mult)", "width_mult", "width", widths),
    ):
        if not found:
            continue
        print(f"\n{title}, paired by seed (points): change of one-class RD, of multi-class, of the gap")
        print(f"| k | model | px | {col} | seeds | one-class change | multi-class change | gap change |")
        print("|---:|---|---:|---|---|---|---|---|")
        for e in found:
            lo, hi = e[factor]
            print(
                f"| {e['k']} | {e['model']} | {e['image_size']} | {lo:g} → {hi:g} | {e['seeds']} | "
                f"{_fmt(e['one_class_change'])} | {_fmt(e['multi_class_change'])} | {_fmt(e['gap_change'])} |"
            )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--factor", default="curve", help="comma-separated: curve, steps, size, width, snl")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--test-good", type=int, default=60)
    r.add_argument("--test-per-defect", type=int, default=15)
    j = sub.add_parser("job")
    j.add_argument("--out", required=True)
    j.add_argument("--root", required=True)
    j.add_argument("spec")
    s = sub.add_parser("summary")
    s.add_argument("--out", required=True)
    s.add_argument("--json", action="store_true")
    s.add_argument("--write", default=None, metavar="FILE", help="also write the rows and their provenance as JSON")
    s.add_argument("--machine", default="", help="with --write: where and how it ran, in words")
    s.add_argument("--factors", default="curve,size,snl", help="with --write: the factors the runs were made with")
    a = p.parse_args(argv)
    {"run": cmd_run, "job": cmd_job, "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    main()
