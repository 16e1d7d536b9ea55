"""adkit.report: means and Student-t intervals over seeds, paired differences, tables, plots — checked
against numbers computed here by hand (t quantiles 4.302653 for 2 degrees of freedom, 12.706205 for 1)."""

import json
import math

import numpy as np
import pytest

from adkit import report
from adkit.tables import jsonable

T2 = 4.302652729  # t_{0.975} with 2 degrees of freedom (n = 3 seeds)
T1 = 12.706204736  # with 1 degree of freedom (n = 2)


def ci(values, t=T2):
    """The interval computed independently: mean ± t · sd(ddof=1) / √n."""
    x = np.asarray(values, dtype=float)
    half = t * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean(), x.mean() - half, x.mean() + half


def write_eval(folder, seed, image_auroc, brick, cat, scratch, model="rd", setting="multi-class", aupro=0.6):
    """A run folder with an eval.json in the format adkit.evaluation writes (nan as null, counts per class)."""
    folder.mkdir(parents=True, exist_ok=True)
    res = {
        "mean": {"image_auroc": image_auroc, "pixel_auroc": 0.9, "aupro": aupro, "image_ap": None},
        "classes": {
            "brick": {
                "image_auroc": brick,
                "pixel_auroc": 0.9,
                "aupro": aupro,
                "image_ap": None,
                "n_good": 20,
                "n_defect": 20,
            },
            "cat": {
                "image_auroc": cat,
                "pixel_auroc": 0.9,
                "aupro": aupro,
                "image_ap": None,
                "n_good": 20,
                "n_defect": 20,
            },
        },
        "defects": {"scratch": {"image_auroc": scratch, "pixel_auroc": 0.9, "aupro": aupro, "image_ap": None}},
        "settings": {
            "run": folder.name,
            "data": "mini",
            "model": model,
            "setting": setting,
            "backbone": "efficientnet_lite0",
            "image_size": 128,
            "iters": 800,
            "seed": seed,
        },
    }
    (folder / "eval.json").write_text(json.dumps(res))
    return folder


@pytest.fixture()
def three_seeds(tmp_path):
    vals = {
        "image_auroc": [0.80, 0.82, 0.84],
        "brick": [0.70, 0.75, 0.90],
        "cat": [0.90, 0.89, 0.78],
        "scratch": [0.60, 0.66, 0.69],
    }
    runs = [
        write_eval(tmp_path / f"rd-s{s}", s, *(vals[k][s] for k in ("image_auroc", "brick", "cat", "scratch")))
        for s in range(3)
    ]
    return runs, vals


def test_aggregate_three_seeds(three_seeds):
    runs, vals = three_seeds
    rep = report.aggregate(report.load_results(runs))
    fig = rep["mean"]["image_auroc"]
    # by hand: mean 0.82, sd 0.02, half-width 4.302653 · 0.02 / √3 = 0.0496828
    assert fig["n"] == 3
    assert fig["mean"] == pytest.approx(0.82, abs=1e-12)
    assert fig["ci_low"] == pytest.approx(0.82 - 0.0496828, abs=1e-6)
    assert fig["ci_high"] == pytest.approx(0.82 + 0.0496828, abs=1e-6)
    for where, key in (
        (rep["classes"]["brick"], "brick"),
        (rep["classes"]["cat"], "cat"),
        (rep["defects"]["scratch"], "scratch"),
    ):
        mean, lo, hi = ci(vals[key])
        assert (
            where["image_auroc"]["mean"],
            where["image_auroc"]["ci_low"],
            where["image_auroc"]["ci_high"],
        ) == pytest.approx((mean, lo, hi), rel=1e-8)
    # identical values over seeds: a zero-width interval, not a missing one
    assert rep["mean"]["pixel_auroc"] == pytest.approx({"mean": 0.9, "ci_low": 0.9, "ci_high": 0.9, "n": 3})
    # null in every run: omitted; counts per class are not metrics
    assert "image_ap" not in rep["mean"] and "image_ap" not in rep["classes"]["brick"]
    assert "n_good" not in rep["classes"]["brick"]
    assert rep["settings"]["seeds"] == [0, 1, 2]
    assert [s["model"] for s in rep["settings"]["runs"]] == ["rd"] * 3
    assert rep["warnings"] == []  # runs differ only in seed and folder name
    json.dumps(rep, allow_nan=False)  # strict JSON: no nan anywhere


def test_a_missing_value_lowers_n(tmp_path):
    runs = [
        write_eval(tmp_path / f"s{s}", s, 0.8 + 0.01 * s, 0.7, 0.9, 0.6, aupro=a)
        for s, a in enumerate([0.50, None, 0.56])
    ]
    rep = report.aggregate(report.load_results(runs))
    fig = rep["mean"]["aupro"]
    assert fig["n"] == 2
    # two values 0.50, 0.56: mean 0.53, sd 0.06/√2, half-width 12.706205 · 0.03 = 0.381186
    assert (fig["mean"], fig["ci_low"], fig["ci_high"]) == pytest.approx(
        (0.53, 0.53 - 0.381186, 0.53 + 0.381186), abs=1e-6
    )
    assert "(n = 2)" in report.to_markdown(rep)


def test_one_run_has_no_interval(tmp_path):
    run = write_eval(tmp_path / "only", 0, 0.8, 0.7, 0.9, 0.6)
    rep = report.aggregate(report.load_results([run]))
    assert rep["mean"]["image_auroc"] == {"mean": 0.8, "ci_low": None, "ci_high": None, "n": 1}
    json.dumps(rep, allow_nan=False)
    md = report.to_markdown(rep)
    assert "80.0 (n = 1, no interval)" in md


def test_summarize_matches_scipy_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(0.8, 0.05, size=7)
    from scipy import stats

    lo, hi = stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    fig = report.summarize(list(x) + [float("nan"), None], level=0.9)
    assert fig["n"] == 7
    assert (fig["ci_low"], fig["ci_high"]) == pytest.approx((lo, hi), rel=1e-10)


def _pair(tmp_path, name, model, seeds, image_auroc):
    return [write_eval(tmp_path / f"{name}-s{s}", s, v, v, v, v, model=model) for s, v in zip(seeds, image_auroc)]


def test_paired_significant_and_not(tmp_path):
    base = [0.76, 0.80, 0.72]
    b = _pair(tmp_path, "rd", "rd", [0, 1, 2], base)
    # a gains 0.05, 0.04, 0.06 over b on the same seeds: significant
    a_good = _pair(tmp_path, "snl", "rd+snl", [0, 1, 2], [0.81, 0.84, 0.78])
    # a gains +0.02, −0.01, +0.01: the interval contains 0
    a_flat = _pair(tmp_path, "fd", "fd", [0, 1, 2], [0.78, 0.79, 0.73])
    rb = report.load_results(b)

    rep = report.paired(report.load_results(a_good), rb)
    fig = rep["mean"]["image_auroc"]
    mean, lo, hi = ci([0.05, 0.04, 0.06])  # 0.05 ± 4.302653 · 0.01 / √3 = 0.05 ± 0.0248414
    assert (fig["mean"], fig["ci_low"], fig["ci_high"]) == pytest.approx((mean, lo, hi), rel=1e-8)
    assert (fig["ci_low"], fig["ci_high"]) == pytest.approx((0.05 - 0.0248414, 0.05 + 0.0248414), abs=1e-6)
    assert fig["significant"] is True and fig["n"] == 3
    assert rep["classes"]["cat"]["image_auroc"]["significant"] is True
    assert rep["settings"]["differs"]["model"] == {"a": ["rd+snl"], "b": ["rd"]}
    # the unpaired interval of the same numbers is far wider: pairing is what makes it significant
    unpaired = ci([0.81, 0.84, 0.78])[1] - ci(base)[2]
    assert unpaired < 0

    flat = report.paired(report.load_results(a_flat), rb)
    f = flat["mean"]["image_auroc"]
    mean, lo, hi = ci([0.02, -0.01, 0.01])
    assert (f["mean"], f["ci_low"], f["ci_high"]) == pytest.approx((mean, lo, hi), rel=1e-8)
    assert f["ci_low"] < 0 < f["ci_high"] and f["significant"] is False

    md_good = report.to_markdown(rep, keys=("image_auroc",))
    md_flat = report.to_markdown(flat, keys=("image_auroc",))
    assert "+5.0 [+2.5, +7.5]" in md_good
    assert "not significant" not in md_good
    mean_row = next(line for line in md_flat.splitlines() if line.startswith("| **mean**"))
    assert mean_row.endswith("| not significant |")
    json.dumps(rep, allow_nan=False)


def test_paired_matches_by_seed_not_by_order(tmp_path):
    a = report.load_results(_pair(tmp_path, "a", "rd+snl", [0, 1, 2], [0.90, 0.70, 0.80]))
    b = report.load_results(_pair(tmp_path, "b", "rd", [0, 1, 2], [0.85, 0.66, 0.77]))
    rep = report.paired(a, b[::-1])  # b listed in another order
    mean, lo, hi = ci([0.05, 0.04, 0.03])
    fig = rep["mean"]["image_auroc"]
    assert (fig["mean"], fig["ci_low"], fig["ci_high"]) == pytest.approx((mean, lo, hi), rel=1e-8)
    assert rep["settings"]["seeds"] == [0, 1, 2]


def test_paired_refuses_mismatched_seeds(tmp_path):
    a = report.load_results(_pair(tmp_path, "a", "rd+snl", [0, 1, 2], [0.9, 0.8, 0.7]))
    b = report.load_results(_pair(tmp_path, "b", "rd", [0, 1, 3], [0.9, 0.8, 0.7]))
    with pytest.raises(ValueError, match=r"seeds do not match.*only in a: \[2\].*only in b: \[3\]"):
        report.paired(a, b)
    with pytest.raises(ValueError, match="seed 0 appears twice"):
        report.paired(a, b[:1] + b[:1])


def test_missing_and_malformed_files_are_named(tmp_path):
    missing = tmp_path / "never-evaluated"
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match="never-evaluated/eval.json"):
        report.load_results([missing])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "eval.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad/eval.json: not valid JSON"):
        report.load_results([bad])
    (bad / "eval.json").write_text(json.dumps({"classes": {}}))
    with pytest.raises(ValueError, match="bad/eval.json: not an eval.json"):
        report.load_results([bad])
    (bad / "eval.json").write_text(json.dumps({"mean": {"image_auroc": "high"}}))
    with pytest.raises(ValueError, match=r"bad/eval.json: 'mean.image_auroc' must be a number"):
        report.load_results([bad])


def test_runs_that_differ_in_more_than_the_seed_are_flagged(tmp_path):
    runs = [
        write_eval(tmp_path / "a", 0, 0.8, 0.7, 0.9, 0.6),
        write_eval(tmp_path / "b", 1, 0.8, 0.7, 0.9, 0.6, setting="one-class"),
    ]
    rep = report.aggregate(report.load_results(runs))
    assert len(rep["warnings"]) == 1 and "'setting'" in rep["warnings"][0]
    assert "warning:" in report.to_markdown(rep)


def test_real_eval_format_round_trip(tmp_path):
    """eval.json as adkit.evaluation builds it (score_sets on predictions, nan -> null) aggregates cleanly."""
    from adkit import evaluation

    rng = np.random.default_rng(0)
    runs, means = [], []
    for seed in range(3):
        preds = {}
        for cls in ("brick", "cat"):
            label = np.r_[np.zeros(6), np.ones(6)].astype(int)
            mask = np.zeros((12, 16, 16), bool)
            mask[6:, 4:8, 4:8] = True
            preds[cls] = {
                "score": rng.normal(size=12) + label,
                "label": label,
                "mask": mask,
                "amap": rng.random((12, 16, 16)) + mask,
                "defect": ["good"] * 6 + ["scratch"] * 6,
            }
        res = evaluation.score_sets(preds)
        res["settings"] = {"run": f"s{seed}", "model": "rd", "seed": seed}
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        (folder / "eval.json").write_text(json.dumps(jsonable(res)))
        runs.append(folder)
        means.append(res["mean"]["image_auroc"])
    rep = report.aggregate(report.load_results(runs))
    assert rep["mean"]["image_auroc"]["mean"] == pytest.approx(np.mean(means))
    assert set(rep["classes"]) == {"brick", "cat"} and "scratch" in rep["defects"]
    assert rep["mean"]["aupro"]["n"] == 3
    json.dumps(rep, allow_nan=False)


def test_plot_draws_each_class_and_the_mean(three_seeds):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, vals = three_seeds
    rep = report.aggregate(report.load_results(runs))
    fig = report.plot(rep, "image_auroc")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["brick", "cat", "mean"]
    ys = [line.get_ydata()[0] for line in ax.lines if len(line.get_ydata()) == 1 and line.get_marker() in "os"]
    assert ys == pytest.approx([100 * np.mean(vals["brick"]), 100 * np.mean(vals["cat"]), 82.0])
    plt.close(fig)
    with pytest.raises(ValueError, match="no 'nope'"):
        report.plot(rep, "nope")


def test_plot_paired_marks_what_is_not_significant(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = report.load_results(_pair(tmp_path, "rd", "rd", [0, 1, 2], [0.76, 0.80, 0.72]))
    a = report.load_results(_pair(tmp_path, "fd", "fd", [0, 1, 2], [0.78, 0.79, 0.73]))  # +2, −1, +1 points
    fig = report.plot(report.paired(a, b), "image_auroc")
    markers = [line for line in fig.axes[0].lines if line.get_marker() in "os"]
    assert all(m.get_markerfacecolor() == "white" for m in markers)  # hollow: not significant
    assert "fd − rd" in fig.axes[0].get_title()
    plt.close(fig)


def test_numpy_scalars_count_as_values():
    fig = report.summarize([np.float32(0.5), np.float64(0.7), np.int64(1), True])
    assert fig["n"] == 3 and fig["mean"] == pytest.approx((0.5 + 0.7 + 1) / 3)


def test_format_difference_marks_an_interval_that_contains_zero():
    from adkit.report import format_difference, summarize

    assert format_difference(summarize([0.05, 0.06, 0.07])) == "+6.0 [+3.5, +8.5]"
    assert format_difference(summarize([-0.02, 0.01, 0.04])).endswith(" n.s.")
    assert "no interval" in format_difference(summarize([0.05])) and "n.s." not in format_difference(summarize([0.05]))


def _train_seeds(out, mvtec_root, seeds=(0, 1, 2)):
    from adkit.cli import main

    args = ["train", "--data", "mvtec", "--root", str(mvtec_root), "--model", "rd", "--image-size", "32"]
    args += ["--iters", "2", "--batch-size", "2", "--seeds", ",".join(map(str, seeds)), "--out", str(out), "--quiet"]
    assert main(args) == 0
    return [out / f"seed{s}" for s in seeds]


def test_report_evaluates_runs_that_have_no_eval_json(tmp_path, mvtec_root, capsys):
    # `adkit train --seeds ... && adkit report <the folders> --json` with nothing in between: each run is
    # evaluated as `adkit eval` would (its eval.json saved), stdout holds one JSON object, progress goes to stderr
    from adkit.cli import main

    runs = _train_seeds(tmp_path / "rd", mvtec_root)
    capsys.readouterr()
    assert not any((r / "eval.json").exists() for r in runs)
    assert main(["report", *map(str, runs), "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1
    rep = json.loads(out)
    assert all((r / "eval.json").is_file() for r in runs)
    assert err.count("has no eval.json yet") == 3
    figure = {"mean", "ci_low", "ci_high", "n"}
    assert set(rep["mean"]["image_auroc"]) == figure and rep["mean"]["image_auroc"]["n"] == 3
    assert set(rep["classes"]) == {"bottle", "cable"} and set(rep["defects"]) == {"crack", "scratch"}
    for group in ("classes", "defects"):
        for rows in rep[group].values():
            assert set(rows["image_auroc"]) == figure
    # the saved files are what `adkit eval` gives, and a second report reads them without evaluating again
    eval0 = json.loads((runs[0] / "eval.json").read_text())
    assert main(["eval", str(runs[0]), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["mean"] == eval0["mean"]
    assert main(["report", *map(str, runs), "--json"]) == 0
    assert "has no eval.json yet" not in capsys.readouterr().err


def test_report_vs_evaluates_both_sides_and_refuses_a_folder_that_is_no_run(tmp_path, mvtec_root, capsys):
    from adkit.cli import main

    a = _train_seeds(tmp_path / "a", mvtec_root, seeds=(0, 1))
    b = [tmp_path / "b" / f"seed{s}" for s in (0, 1)]
    for run in b:
        write_eval(run, int(run.name[-1]), 0.8, 0.7, 0.9, 0.6)
    assert main(["report", *map(str, a), "--vs", *map(str, b), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["kind"] == "paired" and rep["settings"]["seeds"] == [0, 1]
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    assert main(["report", str(nothing)]) == 1
    err = capsys.readouterr().err
    assert "nothing/eval.json: no such file" in err and "settings.json" in err
