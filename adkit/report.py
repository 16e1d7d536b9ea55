"""Results over seeds: means with Student-t intervals, and paired differences between two methods.

    evaluate_missing(run_dirs)     # evaluates the runs that have no eval.json yet (as `adkit eval` does)
    runs = load_results(run_dirs)  # each run's eval.json
    rep = aggregate(runs)          # rep["mean"]["image_auroc"] = {"mean", "ci_low", "ci_high", "n"}
    diff = paired(load_results(snl_runs), runs)   # SNL − RD, matched by seed, with "significant"
    print(to_markdown(diff)); fig = plot(rep, "image_auroc")

An interval is the mean of the per-run values ± t_{n−1} · s / √n (s the sample standard deviation over runs),
so it measures training noise across seeds, not test-set noise. With one run there is no interval: `ci_low`
and `ci_high` are None. Every report is JSON-safe: a missing or undefined value is None, never nan.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from .tables import markdown_table, percent

# the parts of an eval.json that hold {name: {metric: value}} rows, besides the top-level "mean"
GROUPS = ("classes", "defects", "maps", "scores")
IGNORED_SETTINGS = ("seed", "run")  # expected to differ between the runs of one method


# -- reading ----------------------------------------------------------------------------------------------------
def _eval_path(run: str | Path) -> Path:
    p = Path(run)
    return p if p.suffix == ".json" else p / "eval.json"


def _check_rows(rows, where: str, path: Path) -> None:
    if not isinstance(rows, dict):
        raise ValueError(f"{path}: '{where}' must be an object of metrics, got {type(rows).__name__}")
    for k, v in rows.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{path}: '{where}.{k}' must be a number or null, got {v!r}")


def _is_run(folder: Path) -> bool:
    from .runs import SETTINGS_FILE

    return (folder / SETTINGS_FILE).is_file()


def evaluate_missing(runs: Iterable[str | Path], progress: bool = True, say=None) -> list[Path]:
    """Evaluate each run folder that has no `eval.json` yet, as `adkit eval RUN` does (its own test set; the
    results saved in the run), and return those folders. A path that is no run folder is left to
    `load_results`, which names it. `say` (a function of one string) is told which run is being evaluated."""
    from .evaluation import evaluate

    todo = [Path(r) for r in runs if not _eval_path(r).is_file() and _is_run(Path(r))]
    for run in todo:
        if say is not None:
            say(f"evaluating {run} (it has no eval.json yet)")
        evaluate(run, progress=progress, save=True)
    return todo


def load_results(runs: Iterable[str | Path]) -> list[dict]:
    """Each run's `eval.json` (a run folder, or the JSON file itself), with its path under "path".

    A missing file is a FileNotFoundError, an unreadable or misshapen one a ValueError; both name the file.
    """
    out = []
    for run in runs:
        path = _eval_path(run)
        if not path.is_file():
            folder = path.parent
            hint = f"evaluate the run first: `adkit eval {folder}`" if _is_run(folder) else "nor a run's settings.json"
            raise FileNotFoundError(f"{path}: no such file ({hint})")
        try:
            res = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(res, dict) or not isinstance(res.get("mean"), dict):
            raise ValueError(f"{path}: not an eval.json (expected an object with a 'mean' object of metrics)")
        _check_rows(res["mean"], "mean", path)
        for group in GROUPS:
            block = res.get(group, {})
            if not isinstance(block, dict):
                raise ValueError(f"{path}: '{group}' must be an object, got {type(block).__name__}")
            for name, rows in block.items():
                _check_rows(rows, f"{group}.{name}", path)
        if not isinstance(res.get("settings", {}), dict):
            raise ValueError(f"{path}: 'settings' must be an object")
        out.append({**res, "path": str(path)})
    return out


# -- statistics -------------------------------------------------------------------------------------------------
def _finite(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def summarize(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean and Student-t interval (n − 1 degrees of freedom) of the finite values; no interval for n < 2."""
    x = np.asarray([v for v in values if _finite(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": 1}
    # mean ± t_{(1+level)/2, n−1} · s / √n
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def _metric_names(rows: Iterable[dict]) -> list[str]:
    """Metric keys in first-seen order; counts such as n_good / n_defect are not metrics."""
    names = {}
    for r in rows:
        for k in r:
            if not k.startswith("n_"):
                names.setdefault(k)
    return list(names)


def _layout(results: Sequence[dict]) -> list[tuple[tuple[str, ...], list[str]]]:
    """Every place a figure goes, `(("mean",) or (group, name), metrics)`, in first-seen order."""
    places = [(("mean",), _metric_names(r["mean"] for r in results))]
    for group in GROUPS:
        names = {}
        for r in results:
            for name in r.get(group, {}):
                names.setdefault(name)
        for name in names:
            rows = [r.get(group, {}).get(name, {}) for r in results]
            places.append(((group, name), _metric_names(rows)))
    return places


def _get(res: dict, place: tuple[str, ...], metric: str):
    rows = res["mean"] if place == ("mean",) else res.get(place[0], {}).get(place[1], {})
    return rows.get(metric)


def _put(report: dict, place: tuple[str, ...], metric: str, figure: dict) -> None:
    if figure["n"] == 0:  # no run has a value: omitted
        return
    rows = report["mean"] if place == ("mean",) else report.setdefault(place[0], {}).setdefault(place[1], {})
    rows[metric] = figure


def _settings(res: dict) -> dict:
    return dict(res.get("settings") or {})


def _seed(res: dict):
    return _settings(res).get("seed")


def _distinct(values: Iterable) -> list:
    """The distinct values, in first-seen order (compared as JSON, so lists and dicts work too)."""
    seen = {}
    for v in values:
        seen.setdefault(json.dumps(v, sort_keys=True), v)
    return list(seen.values())


def _sorted_seeds(seeds: Iterable) -> list:
    try:
        return sorted(seeds)
    except TypeError:  # mixed types
        return sorted(seeds, key=str)


def _consistency(results: Sequence[dict], label: str = "the runs") -> list[str]:
    """Warnings when runs that should differ only in their seed differ in anything else."""
    warnings = []
    settings = [_settings(r) for r in results]
    keys = sorted({k for s in settings for k in s} - set(IGNORED_SETTINGS))
    for k in keys:
        values = _distinct(s.get(k) for s in settings)
        if len(values) > 1:
            warnings.append(f"{label} differ in '{k}' ({', '.join(map(str, values))}), not only in their seed")
    seeds = [_seed(r) for r in results]
    if any(s is None for s in seeds):
        missing = [r.get("path", "?") for r in results if _seed(r) is None]
        warnings.append(f"{label}: no settings.seed in {', '.join(missing)}")
    dup = sorted({s for s in seeds if s is not None and seeds.count(s) > 1})
    if dup:
        warnings.append(f"{label} repeat seed(s) {dup}: repeated runs are not independent samples")
    classes = {json.dumps(sorted(r.get("classes", {}))) for r in results}
    if len(classes) > 1:
        warnings.append(f"{label} were evaluated on different classes")
    return warnings


def aggregate(results: Sequence[dict], level: float = 0.95) -> dict:
    """Mean over runs and a Student-t interval per metric, under "mean", "classes", "defects" (and "maps",
    "scores" when the runs have them); each figure is `{"mean", "ci_low", "ci_high", "n"}`, n the runs with
    a finite value (n = 1: no interval, None). "settings" lists the runs; "warnings" says what looks wrong."""
    if not results:
        raise ValueError("aggregate: no results")
    report = {"kind": "aggregate", "level": level, "mean": {}}
    for place, metrics in _layout(results):
        for m in metrics:
            _put(report, place, m, summarize([_get(r, place, m) for r in results], level))
    report["settings"] = {
        "runs": [_settings(r) for r in results],
        "seeds": [_seed(r) for r in results],
        "paths": [r.get("path") for r in results],
    }
    report["warnings"] = _consistency(results)
    return report


def _by_seed(results: Sequence[dict], side: str) -> dict:
    out = {}
    for r in results:
        seed = _seed(r)
        if seed is None:
            raise ValueError(f"paired: a run on side {side} has no settings.seed ({r.get('path', '?')})")
        if seed in out:
            raise ValueError(f"paired: seed {seed} appears twice on side {side}")
        out[seed] = r
    return out


def paired(a: Sequence[dict], b: Sequence[dict], level: float = 0.95) -> dict:
    """The difference a − b per metric, runs matched by `settings.seed`: mean and Student-t interval of the
    per-seed differences, plus "significant" (the interval excludes 0). Refuses runs whose seeds differ."""
    if not a or not b:
        raise ValueError("paired: both sides need at least one run")
    sa, sb = _by_seed(a, "a"), _by_seed(b, "b")
    if set(sa) != set(sb):
        only_a, only_b = _sorted_seeds(set(sa) - set(sb)), _sorted_seeds(set(sb) - set(sa))
        raise ValueError(
            f"paired: the seeds do not match: a has {_sorted_seeds(sa)}, b has {_sorted_seeds(sb)} "
            f"(only in a: {only_a}, only in b: {only_b})"
        )
    seeds = _sorted_seeds(sa)
    pairs = [(sa[s], sb[s]) for s in seeds]
    report = {"kind": "paired", "level": level, "mean": {}}
    for place, metrics in _layout([r for pair in pairs for r in pair]):
        for m in metrics:
            diffs = []
            for ra, rb in pairs:
                va, vb = _get(ra, place, m), _get(rb, place, m)
                diffs.append(va - vb if _finite(va) and _finite(vb) else None)
            fig = summarize(diffs, level)
            # significant: the interval lies wholly above or wholly below 0 (never with n < 2)
            fig["significant"] = fig["ci_low"] is not None and (fig["ci_low"] > 0 or fig["ci_high"] < 0)
            _put(report, place, m, fig)
    sets_a, sets_b = [_settings(r) for r in a], [_settings(r) for r in b]
    differs = {}  # what the comparison is about: settings whose values differ between the two sides
    for k in sorted({k for s in sets_a + sets_b for k in s} - set(IGNORED_SETTINGS)):
        va, vb = _distinct(s.get(k) for s in sets_a), _distinct(s.get(k) for s in sets_b)
        if va != vb:
            differs[k] = {"a": va, "b": vb}
    report["settings"] = {
        "seeds": seeds,
        "a": sets_a,
        "b": sets_b,
        "differs": differs,
        "paths": {"a": [r.get("path") for r in a], "b": [r.get("path") for r in b]},
    }
    report["warnings"] = _consistency(a, "the runs of a") + _consistency(b, "the runs of b")
    return report


# -- presentation -----------------------------------------------------------------------------------------------
def format_figure(fig: dict | None, signed: bool = False, n_runs: int | None = None) -> str:
    """`mean [low, high]` in percent; "n/a" without a value; says so when there is no interval."""
    if not fig or fig.get("mean") is None:
        return "n/a"
    text = percent(fig["mean"], signed=signed)
    if fig.get("ci_low") is None:
        return f"{text} (n = {fig['n']}, no interval)"
    text += f" [{percent(fig['ci_low'], signed=signed)}, {percent(fig['ci_high'], signed=signed)}]"
    if n_runs is not None and fig["n"] != n_runs:
        text += f" (n = {fig['n']})"
    return text


def format_difference(fig: dict | None) -> str:
    """A paired difference as `format_figure` writes it, signed, with " n.s." when its interval contains 0."""
    text = format_figure(fig, signed=True)
    if fig and fig.get("ci_low") is not None and fig["ci_low"] <= 0 <= fig["ci_high"]:
        text += " n.s."
    return text


def _verdict(row: dict, keys: Sequence[str]) -> str:
    """The paired table's last column: which of `keys` have an interval that contains 0."""
    figs = {k: row.get(k) for k in keys if row.get(k)}
    no_ci = [k for k, f in figs.items() if f.get("ci_low") is None]
    not_sig = [k for k, f in figs.items() if f.get("ci_low") is not None and not f["significant"]]
    parts = []
    if not_sig:
        parts.append("not significant" + ("" if len(keys) == 1 else ": " + ", ".join(not_sig)))
    if no_ci:
        parts.append("no interval" + ("" if len(keys) == 1 else ": " + ", ".join(no_ci)))
    return "; ".join(parts)


def _table(
    title: str, rows: dict[str, dict], keys: Sequence[str], is_paired: bool, n_runs: int, mean_row: dict | None = None
) -> str:
    """One markdown table: a row per name (the mean last), a column per metric; a paired one says which
    differences are not significant in a last, left-aligned column."""
    head = [title, *keys] + (["significance"] if is_paired else [])
    body = list(rows.items()) + ([("**mean**", mean_row)] if mean_row is not None else [])
    cells = [
        [name, *(format_figure(row.get(k), is_paired, n_runs) for k in keys)]
        + ([_verdict(row, keys)] if is_paired else [])
        for name, row in body
    ]
    return markdown_table(head, cells, align="l" + "r" * len(keys) + ("l" if is_paired else ""))


def to_markdown(report: dict, keys: Sequence[str] = ("image_auroc", "pixel_auroc", "aupro")) -> str:
    """Markdown tables in percent, each cell `mean [low, high]`: per class with the mean over classes, per
    defect type, per extra map or score. A paired report's last column says which differences are not
    significant (their interval contains 0)."""
    is_paired = report.get("kind") == "paired"
    s = report.get("settings", {})
    seeds = s.get("seeds", [])
    pct = f"{100 * report.get('level', 0.95):g}%"
    if is_paired:
        what = "; ".join(
            f"{k}: {' / '.join(map(str, v['a']))} vs {' / '.join(map(str, v['b']))}"
            for k, v in s.get("differs", {}).items()
        )
        lines = [
            f"Paired difference a − b over {len(seeds)} seeds {seeds}"
            + (f" ({what})" if what else "")
            + f", percentage points, mean [{pct} interval]."
        ]
    else:
        lines = [f"Mean over {len(seeds)} runs (seeds {seeds}), percent, mean [{pct} Student-t interval]."]
    lines.append("")
    n_runs = len(seeds)
    lines.append(_table("class", report.get("classes", {}), keys, is_paired, n_runs, report.get("mean", {})))
    for group, title in (("defects", "defect"), ("maps", "map"), ("scores", "score")):
        if report.get(group):
            lines += ["", _table(title, report[group], keys, is_paired, n_runs)]
    for w in report.get("warnings", []):
        lines += ["", f"> warning: {w}"]
    return "\n".join(lines)


def plot(
    report: dict,
    metric: str = "image_auroc",
    group: str = "classes",
    ax=None,
    label: str | None = None,
    color: str = "C0",
    offset: float = 0.0,
):
    """Error bars per class (or per defect, map, score: `group`) for one metric, the mean over classes last;
    returns the figure (not shown). A paired report is drawn around 0, hollow markers where the difference is
    not significant. Pass `ax`, `label`, `color` and a small `offset` to draw several reports side by side."""
    import matplotlib.pyplot as plt

    is_paired = report.get("kind") == "paired"
    rows = {name: row[metric] for name, row in report.get(group, {}).items() if metric in row}
    if metric in report.get("mean", {}) and group == "classes":
        rows["mean"] = report["mean"][metric]
    if not rows:
        raise ValueError(f"plot: no '{metric}' figures under '{group}' in this report")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(rows) + 1.5), 3.2))
    names = list(rows)
    x = np.arange(len(names)) + offset
    for i, name in enumerate(names):
        f = rows[name]
        mean = 100 * f["mean"]
        err = None if f["ci_low"] is None else [[mean - 100 * f["ci_low"]], [100 * f["ci_high"] - mean]]
        filled = f.get("significant", True)
        ax.errorbar(
            [x[i]],
            [mean],
            yerr=err,
            fmt="s" if name == "mean" else "o",
            color=color,
            capsize=3,
            markerfacecolor=color if filled else "white",
            label=label if i == 0 else None,
        )
    if is_paired:
        ax.axhline(0, color="0.5", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right")
    pct = f"{100 * report.get('level', 0.95):g}%"
    n = len(report.get("settings", {}).get("seeds", []))
    if is_paired:
        what = (
            "; ".join(
                f"{' / '.join(map(str, v['a']))} − {' / '.join(map(str, v['b']))}"
                for v in report["settings"].get("differs", {}).values()
            )
            or "a − b"
        )
        ax.set_ylabel(f"Δ {metric} (points)")
        ax.set_title(f"{what}: mean and {pct} interval over {n} seeds", fontsize=9)
    else:
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"mean and {pct} interval over {n} seeds", fontsize=9)
    if label is not None:
        ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure
