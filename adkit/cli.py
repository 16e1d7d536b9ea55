"""The `adkit` command: demo, train, eval, report, probe, ablate, bench, data.

Every command that measures prints a table; with `--json` it prints one JSON object on stdout instead
(progress bars go to stderr). A failure prints one line, `adkit: error: <file>: <what> — <fix>`, and exits
with 2 (a bad argument; nothing was written) or 1 (anything else); `--debug` or `ADKIT_DEBUG=1` shows the
traceback. Building the parser loads no torch: `adkit --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

from .config import DATA_FORMATS, EMBEDDED, TrainConfig, cli_fields
from .errors import UsageError, describe


def _classes(s: str | None) -> list[str] | None:
    return [c.strip() for c in s.split(",") if c.strip()] if s else None


def _options(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--opt {pair!r}: expected key=value, e.g. --opt map_fusion=sum")
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _print_json(obj) -> None:
    from .tables import jsonable

    print(json.dumps(jsonable(obj), indent=None, sort_keys=True))


def _data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--data",
        default=None if not required else "mini",
        choices=sorted(DATA_FORMATS),
        help="dataset format (default: mini, the embedded set)",
    )
    p.add_argument("--root", default=None, help="dataset folder (default: $ADKIT_DATA/<data>, $ADKIT_DATA=./data)")
    p.add_argument("--classes", default=None, help="comma-separated class names (default: all)")


# -- commands ---------------------------------------------------------------------------------------------
def _train_config(a, seed: int | None = None) -> TrainConfig:
    """`TrainConfig` from `adkit train`'s flags (which are its fields)."""
    values = {f.name: getattr(a, f.name) for f in cli_fields()}
    values["classes"] = tuple(_classes(a.classes) or ()) or None
    values["options"] = _options(a.opt)
    if seed is not None:
        values["seed"] = seed
    return TrainConfig(**values)


def _seeds(s: str | None) -> list[int] | None:
    if s is None:
        return None
    try:
        seeds = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--seeds {s!r}: expected whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {s!r}: give distinct seeds ≥ 0, e.g. 0,1,2")
    return seeds


def cmd_train(a) -> int:
    seeds = _seeds(a.seeds)
    cfgs = [_train_config(a, seed) for seed in seeds] if seeds else [_train_config(a)]  # all checked first
    from .distributed import is_main
    from .training import train

    outs = [os.path.join(a.out, f"seed{c.seed}") for c in cfgs] if seeds else [a.out]
    for cfg, out in zip(cfgs, outs):
        t0 = time.perf_counter()
        run = train(cfg, out, progress=not a.quiet)
        if is_main():
            print(
                f"trained {cfg.model} ({cfg.setting}, seed {cfg.seed}) into {run} in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
            )
    if seeds and is_main():
        print(f"runs: {' '.join(outs)} — summarise them with `adkit report {' '.join(outs)}`", file=sys.stderr)
    return 0


def cmd_eval(a) -> int:
    from .evaluation import evaluate
    from .runs import write_results
    from .tables import jsonable, results_table

    res = evaluate(a.run, a.data, a.root, _classes(a.classes), progress=not a.json, save=False)
    if a.json:
        _print_json(res)
    else:
        print(results_table(res))
        for k, v in res.get("maps", {}).items():
            print(
                f"map {k:>8}: image AUROC {v['image_auroc']:.3f}  pixel AUROC {v['pixel_auroc']:.3f}  "
                f"AUPRO {v['aupro']:.3f}"
            )
        for k, v in res.get("scores", {}).items():
            print(f"score {k:>10}: image AUROC {v['image_auroc']:.3f}")
    sys.stdout.flush()  # the results are out before the file is written: a full disk cannot lose them
    write_results(a.run, jsonable(res))
    return 0


def cmd_data(a) -> int:
    from . import data

    if a.action == "build":
        if a.name != "mini":
            raise UsageError(
                f"data build {a.name}: only the embedded set (mini) is built here — other "
                "datasets: `adkit data download NAME`"
            )
        from .data import mini

        recipe = mini.MiniRecipe(seed=a.seed, image_size=a.image_size)
        root = mini.build(data.default_root("mini", a.root), recipe, force=a.force)
        print(f"mini is ready in {root}", file=sys.stderr)
        return 0
    if a.action == "download":
        from .data import download

        path = download.download(a.name, data.default_root(a.name, a.root), url=a.url, sha256=a.sha256)
        print(f"{a.name} is in {path}", file=sys.stderr)
        return 0
    res = data.check(a.data or "mvtec", a.root, _classes(a.classes))
    if a.json:
        _print_json(res)
    else:
        for cls, splits in res["counts"].items():
            for split, defects in splits.items():
                parts = ", ".join(f"{d} {n}" for d, n in defects.items())
                print(f"{cls:20s} {split:10s} {parts}")
        print(f"{len(res['problems'])} problem(s)")
        for p in res["problems"]:
            print(f"  - {p}")
    return 1 if res["problems"] else 0


def cmd_bench(a) -> int:
    from . import bench

    if a.vs_anomalib:
        try:
            res = bench.bench_vs_anomalib(
                a.backbone if "resnet" in a.backbone else "resnet18",  # anomalib's RD mirrors ResNets only
                a.image_size,
                a.batch_size,
                steps=a.steps,
                warmup=a.warmup,
            )
        except ImportError:
            raise UsageError(f"--vs-anomalib: {bench.ANOMALIB_MISSING}") from None
        print(json.dumps(res, sort_keys=True) if a.json else bench.format_vs_anomalib(res))
        return 0
    res = bench.bench(
        a.model,
        a.backbone,
        a.image_size,
        a.batch_size,
        steps=a.steps,
        warmup=a.warmup,
        pretrained=a.pretrained,
        options=_options(a.opt),
        cache_images=a.cache_images,
        progress=not a.json,
    )
    print(json.dumps(res, sort_keys=True) if a.json else bench.format_bench(res))
    return 0


def cmd_probe(a) -> int:
    from . import probes

    classes = _classes(a.classes)
    if not classes or len(classes) != 2:
        raise UsageError("--classes: give two classes, A,B (mixup blends A with B; cut-paste pastes A onto B)")
    if a.kind == "mixup":
        res = probes.mixup_run(
            a.run, classes[0], classes[1], data_name=a.data, root=a.root, seed=a.seed, progress=not a.json
        )
    else:
        res = probes.cutpaste_run(a.run, classes[0], classes[1], data_name=a.data, root=a.root, seed=a.seed)
    if a.json:
        _print_json({k: v for k, v in res.items() if not k.startswith("_")})
    else:
        print(probes.format_probe(res))
    return 0


def cmd_report(a) -> int:
    from . import report
    from .tables import jsonable

    def say(msg: str) -> None:
        print(msg, file=sys.stderr)

    report.evaluate_missing(a.runs + (a.vs or []), say=say)  # as `adkit eval` would, with a progress bar each
    res = report.load_results(a.runs)
    rep = report.paired(res, report.load_results(a.vs)) if a.vs else report.aggregate(res)
    if a.json:
        print(json.dumps(jsonable(rep), sort_keys=True, allow_nan=False))
    else:
        print(report.to_markdown(rep))
        for w in rep.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
    if a.plot:
        from .viz import save_figure

        print(f"plot written to {save_figure(report.plot(rep, a.metric), a.plot)}", file=sys.stderr)
    return 0


def cmd_ablate(a) -> int:
    from .ablation import run_cli

    return run_cli(a)


def ablate_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `adkit ablate`."""
    p.add_argument("--out", default="runs/ablation", help="cache of the ablation's runs")
    p.add_argument("--classes", default="brick,grass,gravel,tissue,cat,coffee,cameraman,rocket")
    p.add_argument("--iters-one", type=int, default=100, help="steps per class (multi-class: × classes)")
    p.add_argument("--image-size", type=int, default=_DEFAULTS.image_size)
    p.add_argument("--base", default="rd", choices=["rd", "fd"])
    p.add_argument("--steps", default=None, help="comma-separated subset of the ablation steps (default: all)")
    p.add_argument("--dual", default=None, metavar="RUN", help="instead: the fusion ablation of a trained dual run")
    p.add_argument("--data", default=None, help="with --dual: another test set, e.g. mini_semantic")


def cmd_demo(a) -> int:
    from .demo import demo

    res = demo(
        a.out,
        iters_one=a.iters_one,
        iters_multi=a.iters_multi,
        image_size=a.image_size,
        classes=_classes(a.classes),
        quick=a.quick,
        snl=a.snl,
        echo=not a.json,
        full=a.full,
    )
    if a.json:
        _print_json(res)
    return 0


# -- parser -----------------------------------------------------------------------------------------------
_DEFAULTS = TrainConfig()


def _train_flags(p: argparse.ArgumentParser) -> None:
    """`adkit train`'s flags, one per `TrainConfig` field: names, defaults, choices and help come from there."""
    for f in cli_fields():
        default, meta = getattr(_DEFAULTS, f.name), f.metadata
        kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0])
        shown = "" if "default" in meta["help"] else f" (default: {default})"
        kw = {"default": default, "help": meta["help"] + shown}
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if kind is not None:
            kw["type"] = kind
        p.add_argument(f"--{f.name.replace('_', '-')}", **kw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adkit", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error (or ADKIT_DEBUG=1)")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="embedded default end to end: mini, RD one-class vs multi-class, report")
    d.add_argument("--out", default="adkit-demo", help="report folder (default: ./adkit-demo)")
    d.add_argument("--iters-one", type=int, default=None, help="steps per class, one-class (default 100)")
    d.add_argument("--iters-multi", type=int, default=None, help="steps, multi-class (default: classes × --iters-one)")
    d.add_argument("--image-size", type=int, default=None, help="input side in pixels (default: the demo's recipe)")
    d.add_argument("--classes", default=None, help="comma-separated mini classes, or all (default: 8 of the 14)")
    d.add_argument("--quick", action="store_true", help="a tiny run (seconds) to check the install")
    d.add_argument("--snl", action="store_true", help="also RD+SNL multi-class (about 7 more minutes on 2 cores)")
    d.add_argument("--full", action="store_true", help="RD+SNL one-class and multi-class too (about 15 more minutes)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train one-class or multi-class models into a run folder")
    _train_flags(t)
    t.add_argument("--opt", action="append", help="model option key=value (repeatable), e.g. map_fusion=sum")
    t.add_argument(
        "--seeds", default=None, help="several seeds, e.g. 0,1,2: one run per seed in <out>/seed<k> (overrides --seed)"
    )
    t.add_argument("--out", required=True, help="run folder (resumes if it holds an interrupted run)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run: per class, per defect, mean")
    e.add_argument("run")
    _data_args(e)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser(
        "report",
        help="runs over seeds: means with 95%% intervals; --vs: paired differences "
        "(a run without eval.json is evaluated first)",
    )
    r.add_argument("runs", nargs="+", help="run folders (one per seed), e.g. runs/rd/seed0 runs/rd/seed1 ...")
    r.add_argument("--vs", nargs="+", default=None, help="run folders of the method to compare with, same seeds")
    r.add_argument("--json", action="store_true")
    r.add_argument("--plot", default=None, metavar="FILE", help="write a per-class plot of --metric (PNG)")
    r.add_argument("--metric", default="image_auroc")
    r.set_defaults(func=cmd_report)

    pr = sub.add_parser("probe", help="cross-class interference probes: mixup, cutpaste")
    pr.add_argument("kind", choices=["mixup", "cutpaste"])
    pr.add_argument("run")
    _data_args(pr)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_probe)

    ab = sub.add_parser("ablate", help="SNL's parts one by one, or the dual student's fusion on a trained run")
    ablate_arguments(ab)
    ab.set_defaults(func=cmd_ablate)

    b = sub.add_parser("bench", help="training and inference speed, peak memory")
    b.add_argument("--model", default="rd")
    b.add_argument("--backbone", default=EMBEDDED)
    b.add_argument("--image-size", type=int, default=_DEFAULTS.image_size)
    b.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--pretrained", action="store_true", help="load real weights (timing does not need them)")
    b.add_argument("--opt", action="append")
    b.add_argument("--cache-images", type=int, default=None, help="images in the feature cache (default: 4 batches)")
    b.add_argument(
        "--vs-anomalib",
        action="store_true",
        help="anomalib's ReverseDistillation beside adkit's RD, same backbone (a ResNet), size and batch",
    )
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    da = sub.add_parser("data", help="build, download or check datasets")
    da.add_argument("action", choices=["build", "check", "download"])
    da.add_argument("name", nargs="?", default="mini", help="build/download: dataset name")
    _data_args(da)
    da.add_argument("--seed", type=int, default=0)
    da.add_argument("--image-size", type=int, default=_DEFAULTS.image_size)
    da.add_argument("--force", action="store_true")
    da.add_argument("--url", default=None)
    da.add_argument("--sha256", default=None)
    da.add_argument("--json", action="store_true")
    da.set_defaults(func=cmd_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("ADKIT_DEBUG", "").lower() in ("1", "true", "yes", "on")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("adkit: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure becomes one line; the traceback only on request
        if debug:
            traceback.print_exc()
        msg, code = describe(err)
        print(f"adkit: error: {msg}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
