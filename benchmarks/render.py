"""Render the result tables of README.md and docs/results.md from docs/results/*.json, and draw the README's figure.

    python benchmarks/render.py            # rewrite every generated block, and docs/figures/interference_curve.png
    python benchmarks/render.py --check    # exit 1 when a committed block differs from what its JSON renders to

A generated block sits between two comments, `<!-- begin: NAME -->` and `<!-- end -->`; the prose around it is
written by hand, the block never is. NAME is a key of BLOCKS. Numbers in points (the interference studies) are
shown as they are, fractions (AUROC as 0–1) times 100; every cell is `mean [low, high]`, a 95% Student-t interval
over seeds, and a difference whose interval contains 0 ends in "n.s.". tests/test_render.py runs `--check`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
PAGES = ("README.md", "docs/results.md")  # the files whose blocks are generated
FIGURE = REPO / "docs" / "figures" / "interference_curve.png"
BLOCK = re.compile(r"(<!-- begin: (?P<name>[\w/.-]+) -->\n)(?P<body>.*?)(<!-- end -->)", re.S)

DEFECTS = {
    "cut_paste_cross": "cross-class paste",
    "cut_paste_same": "same-photo paste",
    "scratch": "scratch",
    "color_spot": "colour spot",
}
OTHER_SET = "a 15-class set in MVTec layout (not shipped)"
SCORES = {"local": "E–D (local)", "semantic": "E–E (semantic)", "sum": "z-scored sum", "noisy_or": "Noisy-OR"}


# -- reading and formatting -------------------------------------------------------------------------------------
def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def _num(v: float, signed: bool) -> str:
    text = f"{v:+.1f}" if signed else f"{v:.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def mean(fig: dict | None, scale: float = 1.0) -> str:
    """The mean alone."""
    return "n/a" if not fig or fig.get("mean") is None else _num(scale * fig["mean"], False)


def interval(fig: dict | None, scale: float = 1.0, diff: bool = False) -> str:
    """`mean [low, high]`; a difference is signed and says "n.s." when its interval contains 0."""
    if not fig or fig.get("mean") is None:
        return "n/a"
    if diff and fig["mean"] == fig.get("ci_low") == fig.get("ci_high") == 0:
        return "— (reference)"
    text = _num(scale * fig["mean"], diff)
    if fig.get("ci_low") is None:
        return f"{text} (no interval)"
    text += f" [{_num(scale * fig['ci_low'], diff)}, {_num(scale * fig['ci_high'], diff)}]"
    if diff and fig["ci_low"] <= 0 <= fig["ci_high"]:
        text += " n.s."
    return text


def summarize(values) -> dict:
    from adkit.report import summarize as t_interval

    return t_interval(list(values))


def per_seed(values, scale: float = 1.0, signed: bool = True) -> str:
    return ", ".join(_num(scale * v, signed) for v in values)


def table(head: list[str], rows: list[list[str]], right: int = 1) -> list[str]:
    """A Markdown table; columns from `right` on are right-aligned."""
    if any("|" in cell for r in [head, *rows] for cell in r):
        raise ValueError(f"a cell of the table headed {head} holds '|', which would split it")
    align = ["---" if i < right else "---:" for i in range(len(head))]
    return ["| " + " | ".join(r) + " |" for r in [head, align, *rows]]


def is_difference(key: str) -> bool:
    return " − " in key or key.endswith("_change") or key == "gap"


def figure_table(rows: dict[str, dict[str, dict]], first: str, scale: float = 100.0, labels=None) -> list[str]:
    """Rows of `{key: figure}` (the shape the validation studies store): one column per key."""
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    labels = labels or {}
    head = [first, *(labels.get(k, k.replace("_", " ")) for k in keys)]
    body = [[name, *(interval(r.get(k), scale, is_difference(k)) for k in keys)] for name, r in rows.items()]
    return table(head, body)


def _rd_rows(res: dict, image_size: int | None = 128) -> list[dict]:
    rows = [r for r in res["rows"] if r["model"] == "rd" and (image_size is None or r["image_size"] == image_size)]
    return sorted(rows, key=lambda r: (-r["image_size"], r["k"]))


def _row(res: dict, k: int, model: str = "rd", image_size: int = 128) -> dict:
    (row,) = [r for r in res["rows"] if (r["k"], r["model"], r["image_size"]) == (k, model, image_size)]
    return row


# -- blocks -----------------------------------------------------------------------------------------------------
def course() -> list[str]:
    res = load("notebook_times")
    rows = [
        [str(i), f"`{nb['notebook']}`", nb["teaches"], f"{nb['cold_s']:.0f} s" + (" (alone)" if nb["alone"] else "")]
        for i, nb in enumerate(res["notebooks"], 1)
    ]
    return table(["#", "notebook", "what it teaches", "cold"], rows, right=3)


def interference() -> list[str]:
    res = load("interference")
    rows = [
        [str(r["k"]), mean(r["one_class"]), mean(r["multi_class"]), interval(r["gap"], diff=True)]
        for r in _rd_rows(res)
    ]
    return table(["classes", "one-class RD", "multi-class RD", "gap (one-class − multi-class)"], rows)


def scope() -> list[str]:
    mini, other = _row(load("interference"), 14), load("interference_other_set")
    cross = other.get("gap_cut_paste_cross_mean")
    mini_cross = interval(mini["gap_by_defect"]["cut_paste_cross"], diff=True)
    other_cross = "n/a" if cross is None else f"{_num(cross, True)} (no interval)"
    rows = [
        ["mini (embedded)", str(mini["k"]), interval(mini["gap"], diff=True), mini_cross],
        [OTHER_SET, str(other["recipe"]["classes"]), interval(other["gap"], diff=True), other_cross],
    ]
    return table(["data", "classes", "gap", "gap on cross-class pastes"], rows)


def snl() -> list[str]:
    res = load("interference")
    rd, sn = _row(res, 14), _row(res, 14, "rd+snl")
    below_one_class = {k: -sn["gap"][h] for k, h in (("mean", "mean"), ("ci_low", "ci_high"), ("ci_high", "ci_low"))}
    rows = [
        ["one-class RD", mean(rd["one_class"]), interval(below_one_class, diff=True)],
        ["multi-class RD", mean(rd["multi_class"]), interval(sn["multi_class_minus_rd_multi_class"], diff=True)],
        ["multi-class RD+SNL (ours)", mean(sn["multi_class"]), ""],
    ]
    return table([f"{sn['k']} classes, {sn['image_size']} px", "mean image AUROC", "RD+SNL minus this row"], rows)


def _dual_choice_rows(res: dict, task: str, variant: str = "choice") -> dict[int, dict]:
    return {r["seed"]: r for r in res["rows"] if r["task"] == task and r["variant"] == variant}


def dual() -> list[str]:
    res = load("dual_calib_choice")
    rows = []
    for task in ("mini", "digits"):
        by = _dual_choice_rows(res, task)
        cells = [interval(summarize(r[k] for r in by.values()), 100) for k in SCORES]
        fused_minus_local = summarize(r["noisy_or"] - r["local"] for r in by.values())
        rows.append([task, *cells, interval(fused_minus_local, 100, diff=True)])
    return table(["task", *SCORES.values(), "Noisy-OR − E–D"], rows)


def interference_full() -> list[str]:
    res = load("interference")
    head = ["classes", "px", "one-class RD", "multi-class RD", "gap", "gap per seed"]
    head += [*DEFECTS.values(), "SE of one seed"]
    rows = []
    for r in _rd_rows(res, None):
        se = r["se_one_seed_multi_class"]
        rows.append(
            [str(r["k"]), str(r["image_size"]), interval(r["one_class"]), interval(r["multi_class"])]
            + [interval(r["gap"], diff=True), per_seed(r["gap_per_seed"])]
            + [interval(r["gap_by_defect"][d], diff=True) for d in DEFECTS]
            + [f"{min(se):.1f}–{max(se):.1f}"]
        )
    return table(head, rows, right=2)


def interference_snl() -> list[str]:
    sn = _row(load("interference"), 14, "rd+snl")
    rows = [
        ["multi-class RD+SNL", interval(sn["multi_class"])],
        ["multi-class RD+SNL − multi-class RD", interval(sn["multi_class_minus_rd_multi_class"], diff=True)],
        ["one-class RD − multi-class RD+SNL", interval(sn["gap"], diff=True)],
        ["one-class RD − multi-class RD+SNL, per seed", per_seed(sn["gap_per_seed"])],
    ]
    rows += [[f"… on {name}", interval(sn["gap_by_defect"][d], diff=True)] for d, name in DEFECTS.items()]
    return table(["14 classes, 128 px, seeds " + ", ".join(map(str, sn["seeds"])), "image AUROC (points)"], rows)


def _factor(name: str, key: str, label: str) -> list[str]:
    res = load(name)
    rows = [
        [f"{r.get(key, 2.0):g}", interval(r["one_class"]), interval(r["multi_class"]), interval(r["gap"], diff=True)]
        + [per_seed(r["gap_per_seed"])]
        for r in res["rows"]
    ]
    lines = table([label, "one-class RD", "multi-class RD", "gap", "gap per seed"], rows)
    effects = [
        [f"{e[key][0]:g} → {e[key][1]:g}"]
        + [interval(e[f"{what}_change"], diff=True) for what in ("one_class", "multi_class", "gap")]
        for e in res[f"{name.removeprefix('interference_')}_effects"]
    ]
    head = [f"{label}, paired by seed", "one-class change", "multi-class change", "gap change"]
    return lines + ["", *table(head, effects)]


def interference_steps() -> list[str]:
    return _factor("interference_steps", "steps_per_class", "steps per class")


def interference_width() -> list[str]:
    return _factor("interference_width", "width_mult", "student width (`width_mult`)")


def interference_other_set() -> list[str]:
    other = load("interference_other_set")
    rows = [
        ["gap", interval(other["gap"], diff=True)],
        ["gap per seed", per_seed(other["gap_per_seed"])],
        ["gap on cross-class pastes", f"{_num(other['gap_cut_paste_cross_mean'], True)} (no interval)"],
    ]
    recipe = other["recipe"]
    head = f"{recipe['classes']} classes, {recipe['steps_per_class']} steps per class, {recipe['image_size']} px"
    return table([head, "image AUROC (points)"], rows)


def interference_classes() -> list[str]:
    res = load("interference_classes")

    def row(label: str, key: str, seed_key: str | None = None, scale: float = 1.0) -> list[str]:
        """The figure `res[key]` with its interval, then each seed's value (`rows[..][seed_key or key]`)."""
        seeds = (r[seed_key or key] for r in res["rows"])
        return [label, interval(res[key], scale, diff=True), per_seed(seeds, scale)]

    gaps = [
        row("gap, mean over the 14 classes", "gap", "gap_mean"),
        row("gap of the object classes", "gap_objects"),
        row("gap of the texture classes", "gap_textures"),
        row("objects − textures", "gap_objects_minus_textures"),
        row("drop of a cross-class paste", "paste_drop_mean"),
    ]
    corr = [
        row("class gap vs teacher similarity to its nearest class", "spearman_gap_nearest", scale=100),
        row("class gap vs mean teacher similarity to the others", "spearman_gap_mean_other", scale=100),
        row("paste drop vs teacher similarity of its donor class", "spearman_drop_donor_similarity", scale=100),
    ]
    seeds = ", ".join(str(x) for x in res["seeds"])
    return [
        *table([f"seeds {seeds}", "points, mean [95% interval]", "per seed"], gaps),
        "",
        *table(["Spearman correlation (× 100)", "mean [95% interval]", "per seed"], corr),
    ]


CRAM_LABELS = {
    "val_image_auroc": "validation image AUROC",
    "val_pixel_auroc": "validation pixel AUROC",
    "test_image_auroc": "test image AUROC (not used)",
    "val_image_auroc − default": "validation image − default",
    "val_pixel_auroc − default": "validation pixel − default",
    "test_image_auroc − default": "test image − default",
}


def cram() -> list[str]:
    # the study's variants are named "<form>, compact <weight> | <calibration set>"
    rows = {}
    for name, row in load("cram_ablation")["table"].items():
        form, calib = (part.strip() for part in name.split("|"))
        rows[f"{form.replace('compact ', 'compactness ')}; calibrated on {calib} normals"] = row
    return figure_table(rows, "CRAM form, compactness; SNL's calibration set", labels=CRAM_LABELS)


def patch_seeds() -> list[str]:
    res = load("patch_seeds")
    out = []
    for threads, block in res["by_threads"].items():
        rows = block["rows"]
        body = [[name, per_seed(v, 100, False), interval(summarize(v), 100)] for name, v in rows.items()]
        snl_minus_rd = summarize(a - b for a, b in zip(rows["RD+SNL multi-class"], rows["RD multi-class"]))
        body.append(["RD+SNL − RD, multi-class", "", interval(snl_minus_rd, 100, diff=True)])
        seeds = ", ".join(map(str, block["seeds"]))
        trained = f"`OMP_NUM_THREADS={threads.split()[0]}`"  # the study's key: "1 thread", "2 threads"
        out += [*table([f"trained with {trained}, seeds {seeds}", "per seed", "mean"], body), ""]
    return out[:-1]


def _split_tables(name: str, splits: dict[str, str], first: str, labels=None) -> list[str]:
    res = load(name)
    out = []
    for key, title in splits.items():
        out += [f"*{title}*", "", *figure_table(res["table"][key], first, labels=labels), ""]
    return out[:-1]


LOCAL_STAT_LABELS = {
    "score_local": "E–D (local)",
    "score_semantic": "E–E (semantic)",
    "score_noisy_or": "Noisy-OR",
    "score_noisy_or_fitted": "Noisy-OR, calibrated on fitted normals",
    "local − flat": "E–D − flat",
    "noisy_or − flat": "Noisy-OR − flat",
    "noisy_or_fitted − flat": "Noisy-OR (fitted) − flat",
}
VALIDATION_LABELS = {
    **SCORES,
    "noisy_or − local": "Noisy-OR − E–D",
    "noisy_or − logistic, fitted": "Noisy-OR − default",
}


def dual_local_stat() -> list[str]:
    splits = {"validation": "validation data (chosen on)", "test": "test set (for information)"}
    return _split_tables("dual_local_stat", splits, "`local_train`", LOCAL_STAT_LABELS)


def dual_validation() -> list[str]:
    splits = {"validation": "validation data (chosen on)", "test": "test set (for information)"}
    return _split_tables("dual_validation", splits, "link, calibration set", VALIDATION_LABELS)


def dual_semantic_validation() -> list[str]:
    splits = {"synthetic": "synthetic defects", "semantic": "the held-out digit", "both": "mean of the two"}
    return _split_tables("dual_semantic_validation", splits, "link, calibration set", VALIDATION_LABELS)


def dual_calib_choice() -> list[str]:
    res = load("dual_calib_choice")
    out = []
    for task in ("mini", "digits"):
        fitted, choice = _dual_choice_rows(res, task, "fitted"), _dual_choice_rows(res, task)
        seeds = sorted(choice)
        body = []
        for variant, by in (("every normal trains, fitted calibration", fitted), ("per-run choice", choice)):
            best = summarize(by[s]["noisy_or"] - max(by[s]["local"], by[s]["semantic"]) for s in seeds)
            body.append(
                [variant]
                + [interval(summarize(by[s][k] for s in seeds), 100) for k in SCORES]
                + [interval(best, 100, diff=True)]
            )
        body.append(
            ["choice − fitted"]
            + [interval(summarize(choice[s][k] - fitted[s][k] for s in seeds), 100, diff=True) for k in SCORES]
            + [""]
        )
        val = summarize(
            choice[s]["validation_auroc"]["held-out"] - choice[s]["validation_auroc"]["fitted"] for s in seeds
        )
        chosen = ", ".join(choice[s]["chosen"] for s in seeds)
        val = interval(val, 100, diff=True)
        out += [
            f"*{task}*: calibration set chosen per seed: {chosen}; validation Noisy-OR, held-out − fitted {val}",
            "",
        ]
        out += [*table(["", *SCORES.values(), "Noisy-OR − best branch"], body), ""]
    return out[:-1]


# name: (function, the JSON files it reads)
BLOCKS: dict[str, tuple[Callable[[], list[str]], tuple[str, ...]]] = {
    "course": (course, ("notebook_times",)),
    "results/interference": (interference, ("interference",)),
    "results/scope": (scope, ("interference", "interference_other_set")),
    "results/snl": (snl, ("interference",)),
    "results/dual": (dual, ("dual_calib_choice",)),
    "results/interference-full": (interference_full, ("interference",)),
    "results/interference-snl": (interference_snl, ("interference",)),
    "results/interference-steps": (interference_steps, ("interference_steps",)),
    "results/interference-width": (interference_width, ("interference_width",)),
    "results/interference-other-set": (interference_other_set, ("interference_other_set",)),
    "results/interference-classes": (interference_classes, ("interference_classes",)),
    "results/cram": (cram, ("cram_ablation",)),
    "results/patch-seeds": (patch_seeds, ("patch_seeds",)),
    "results/dual-local-stat": (dual_local_stat, ("dual_local_stat",)),
    "results/dual-validation": (dual_validation, ("dual_validation",)),
    "results/dual-semantic-validation": (dual_semantic_validation, ("dual_semantic_validation",)),
    "results/dual-calib-choice": (dual_calib_choice, ("dual_calib_choice",)),
}


def render_block(name: str, page: Path) -> str:
    """The block's Markdown, ending with a line that links the JSON it was rendered from (relative to `page`)."""
    if name not in BLOCKS:
        raise KeyError(f"{page}: no block named {name!r} (known: {', '.join(BLOCKS)})")
    fn, sources = BLOCKS[name]
    links = ", ".join(
        f"[`{s}.json`]({os.path.relpath(RESULTS / f'{s}.json', page.parent).replace(os.sep, '/')})" for s in sources
    )
    return "\n".join([*fn(), "", f"<sub>Rendered from {links} by `benchmarks/render.py`.</sub>", ""])


def render_text(text: str, page: Path) -> str:
    """`text` (the content of `page`) with every generated block rendered afresh; the rest is left as it is."""
    if text.count("<!-- begin: ") != len(BLOCK.findall(text)):
        raise ValueError(f"{page}: a '<!-- begin: NAME -->' without its '<!-- end -->'")
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group("name"), page) + m.group(4), text)


def render_page(page: Path) -> str:
    return render_text(page.read_text(encoding="utf-8"), page)


def rendered_sources() -> set[str]:
    """The JSON files (stems) some block renders."""
    return {s for _, sources in BLOCKS.values() for s in sources}


# -- the figure -------------------------------------------------------------------------------------------------
def draw_figure(path: Path = FIGURE) -> Path:
    """The interference curve: one-class and multi-class RD over the number of classes, 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = load("interference")
    rows = _rd_rows(res)
    ks = [r["k"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.6, 3.0), dpi=100)
    for key, label, color, dx in (
        ("one_class", "one-class RD", "C0", -0.12),
        ("multi_class", "multi-class RD", "C3", 0.12),
    ):
        m = [r[key]["mean"] for r in rows]
        err = [[r[key]["mean"] - r[key]["ci_low"] for r in rows], [r[key]["ci_high"] - r[key]["mean"] for r in rows]]
        ax.errorbar([i + dx for i in range(len(ks))], m, yerr=err, fmt="o-", color=color, capsize=3, label=label)
    sn = _row(res, 14, "rd+snl")["multi_class"]
    err = [[sn["mean"] - sn["ci_low"]], [sn["ci_high"] - sn["mean"]]]
    ax.errorbar([len(ks) - 1 + 0.3], [sn["mean"]], yerr=err, fmt="s", color="C2", capsize=3, label="multi-class RD+SNL")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlabel("classes trained together (mini)")
    ax.set_ylabel("mean image AUROC (%)")
    seeds = len(rows[0]["seeds"])
    ax.set_title(f"One-class vs multi-class on mini: mean of {seeds} seeds, 95% intervals", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


# -- command line -----------------------------------------------------------------------------------------------
def check() -> list[str]:
    """The pages whose committed blocks differ from what their JSON renders to, and a missing figure."""
    stale = [p for p in PAGES if render_page(REPO / p) != (REPO / p).read_text(encoding="utf-8")]
    if not FIGURE.is_file():
        stale.append(str(FIGURE.relative_to(REPO)))
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page differs from its JSON")
    a = ap.parse_args(argv)
    if a.check:
        stale = check()
        for p in stale:
            print(f"{p}: differs from what docs/results/*.json renders to — run `python benchmarks/render.py`")
        return 1 if stale else 0
    for p in PAGES:
        page = REPO / p
        new = render_page(page)
        if new != page.read_text(encoding="utf-8"):
            page.write_text(new, encoding="utf-8")
            print(f"rewrote {p}")
    print(f"drew {draw_figure().relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
