"""Failure analysis (adkit.analysis) and its explorer: counts checked by hand, the export's refusals, the CSV."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from adkit import analysis, widgets  # noqa: E402
from adkit.errors import UsageError  # noqa: E402

REPO = analysis.Path(__file__).resolve().parents[1]

# six images counted by hand at threshold 0.4 (flagged: score >= 0.4)
SCORES = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.9])
LABELS = np.array([0, 0, 1, 1, 0, 1])
#            TN   FP   FN   TP   FP   TP


def _class(rng, scores, labels, defects, size=16, name="x"):
    """One class's predictions in the shape `evaluate(..., return_preds=True)` gives, maps peaking at `scores`."""
    n = len(scores)
    amap = rng.random((n, size, size)).astype(np.float32) * 0.05
    mask = np.zeros((n, size, size), bool)
    for i in range(n):
        amap[i, 5, 5] = scores[i]
        if labels[i]:
            mask[i, 4:8, 4:8] = True
    return {
        "score": np.asarray(scores, np.float32),
        "label": np.asarray(labels),
        "amap": amap,
        "mask": mask,
        "defect": list(defects),
        "path": [f'data/{name},{i}/test/"{d}"/{i:03d}.png' for i, d in enumerate(defects)],
    }


@pytest.fixture()
def preds_images():
    rng = np.random.default_rng(0)
    preds = {
        "brick": _class(
            rng, SCORES, LABELS, ["good", "good", "scratch", "scratch", "good", "color_spot"], name="brick"
        ),
        "cat": _class(
            rng,
            [0.2, 0.3, 0.45, 0.6, 0.05],
            [0, 0, 0, 1, 1],
            ["good", "good", "good", "scratch", "color_spot"],
            name="cat",
        ),
    }
    images = {c: rng.integers(0, 255, (len(p["score"]), 16, 16, 3), dtype=np.uint8) for c, p in preds.items()}
    return preds, images


# -- counts ---------------------------------------------------------------------------------------------------
def test_confusion_matches_a_hand_count():
    c = analysis.confusion(SCORES, LABELS, 0.4)
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 2, 1, 1)
    assert c["precision"] == pytest.approx(0.5) and c["recall"] == pytest.approx(2 / 3)


def test_threshold_edges():
    # a score equal to the threshold is flagged
    assert analysis.confusion([0.5], [1], 0.5)["tp"] == 1
    assert analysis.confusion([0.5], [0], 0.5)["fp"] == 1
    assert analysis.confusion([0.5], [0], np.nextafter(0.5, 1))["tn"] == 1
    none = analysis.confusion(SCORES, LABELS, math.inf)  # nothing flagged: precision undefined, recall 0
    assert (none["tp"], none["fp"], none["tn"], none["fn"]) == (0, 0, 3, 3)
    assert math.isnan(none["precision"]) and none["recall"] == 0
    every = analysis.confusion(SCORES, LABELS, -math.inf)
    assert (every["tp"], every["fp"], every["tn"], every["fn"]) == (3, 3, 0, 0) and every["precision"] == 0.5
    assert math.isnan(analysis.confusion([0.1, 0.2], [0, 0], 0.15)["recall"])  # no defects
    with pytest.raises(ValueError, match="NaN"):
        analysis.confusion(SCORES, LABELS, float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        analysis.confusion([0.1, float("nan")], [0, 1], 0.5)
    with pytest.raises(ValueError, match="labels"):
        analysis.confusion([0.1, 0.2], [0, 2], 0.5)


def test_sweep_equals_confusion_at_every_threshold_ties_included():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 6, 40).astype(float)  # many ties
    y = rng.integers(0, 2, 40)
    ts = np.r_[-np.inf, np.unique(s), np.unique(s) + 0.5, np.inf]
    sw = analysis.sweep(s, y, ts)
    for k, t in enumerate(ts):
        c = analysis.confusion(s, y, t)
        assert [int(sw[key][k]) for key in ("tp", "fp", "tn", "fn")] == [c[key] for key in ("tp", "fp", "tn", "fn")]
        for key in ("precision", "recall"):
            assert (math.isnan(c[key]) and math.isnan(sw[key][k])) or sw[key][k] == pytest.approx(c[key])


def test_confusion_table_totals_add_up(preds_images):
    preds, _ = preds_images
    table = analysis.confusion_table(preds, 0.4)
    assert (table["cat"]["tp"], table["cat"]["fp"], table["cat"]["tn"], table["cat"]["fn"]) == (1, 1, 2, 1)
    total = table["all"]
    assert (total["tp"], total["fp"], total["tn"], total["fn"]) == (3, 3, 3, 2)
    assert total["precision"] == pytest.approx(0.5) and total["recall"] == pytest.approx(0.6)
    md = analysis.confusion_markdown(table)
    assert md.splitlines()[-1].startswith("| **all** | 3 | 3 | 3 | 2 |")


def test_default_threshold_is_the_pooled_f1_optimum(preds_images):
    preds, _ = preds_images
    s, y = analysis.pooled(preds)
    t = analysis.default_threshold(preds)
    f1 = {
        float(u): 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"])
        for u in np.unique(s)
        for c in [analysis.confusion(s, y, u)]
    }
    assert f1[float(t)] == pytest.approx(max(f1.values()))


def test_histograms_count_every_image_once(preds_images):
    preds, _ = preds_images
    h = analysis.histograms(preds, bins=7)
    assert len(h["edges"]) == 8
    for cls, p in preds.items():
        assert h[cls]["normal"].sum() == (p["label"] == 0).sum()
        assert h[cls]["defect"].sum() == (p["label"] == 1).sum()


# -- which images ---------------------------------------------------------------------------------------------
def test_worst_lists_exactly_the_failures_worst_first(preds_images):
    preds, _ = preds_images
    w = analysis.worst(preds, 0.4)
    fp = [(r["class"], r["index"]) for r in w[analysis.FP]]
    fn = [(r["class"], r["index"]) for r in w[analysis.FN]]
    assert fp == [("brick", 4), ("cat", 2), ("brick", 1)]  # scores 0.5, 0.45, 0.4
    assert fn == [("cat", 4), ("brick", 2)]  # scores 0.05, 0.35
    assert w[analysis.FN][1]["defect"] == "scratch" and w[analysis.FN][1]["score"] == pytest.approx(0.35)
    assert analysis.worst(preds, 0.4, n=1, classes=["cat"]) == {
        analysis.FP: [w[analysis.FP][1]],
        analysis.FN: [w[analysis.FN][0]],
    }


def test_failure_items_show_maps_relative_to_the_class_normals(preds_images):
    preds, images = preds_images
    rows = analysis.worst(preds, 0.4)[analysis.FP]
    items = analysis.failure_items(preds, images, rows)
    lo, hi = analysis.normal_scales(preds)["brick"]
    assert items[0]["vmin"] == 0.0 and items[0]["vmax"] == 2.0
    assert items[0]["amap"][5, 5] == pytest.approx((0.5 - lo) / (hi - lo))
    assert items[0]["title"].startswith("FP brick/good")


def test_defect_table_counts_rates_and_auroc(preds_images):
    from adkit.evaluation import score_sets

    preds, _ = preds_images
    rows = {r["defect"]: r for r in analysis.defect_table(preds, 0.4)}
    assert (rows["good"]["n"], rows["good"]["flagged"]) == (6, 3)  # the three false positives
    assert (rows["scratch"]["n"], rows["scratch"]["flagged"], rows["scratch"]["rate"]) == (3, 2, pytest.approx(2 / 3))
    assert (rows["color_spot"]["n"], rows["color_spot"]["flagged"]) == (2, 1)
    assert rows["color_spot"]["classes"] == ["brick", "cat"]
    ref = score_sets(preds)["defects"]  # the library's per-defect numbers: the same definition
    for d in ("scratch", "color_spot"):
        for k in ("image_auroc", "pixel_auroc", "aupro"):
            assert rows[d][k] == pytest.approx(ref[d][k])
    assert math.isnan(rows["good"]["image_auroc"])


# -- export ---------------------------------------------------------------------------------------------------
def test_export_writes_a_png_per_failure_and_the_csv_round_trips(preds_images, tmp_path):
    from PIL import Image

    preds, images = preds_images
    csv_path = analysis.export_failures(preds, images, 0.4, tmp_path / "failures" / "run", tmp_path)
    rows = analysis.read_failures(csv_path)
    w = analysis.worst(preds, 0.4)
    expected = w[analysis.FP] + w[analysis.FN]
    assert [(r["path"], r["class"], r["defect"], r["score"], r["verdict"]) for r in rows] == [
        (e["path"], e["class"], e["defect"], e["score"], e["verdict"]) for e in expected
    ]  # scores exactly
    assert "," in rows[0]["path"] and '"' in rows[0]["path"]  # quoted and read back
    pngs = sorted(p.name for p in csv_path.parent.glob("*.png"))
    assert pngs == sorted(r["png"] for r in rows) and len(pngs) == 5
    assert all("/" not in p and "," not in p and '"' not in p for p in pngs)
    with Image.open(csv_path.parent / pngs[0]) as im:
        assert im.format == "PNG" and im.info["dpi"][0] == pytest.approx(100, abs=0.5)
    assert sorted(os.listdir(tmp_path / "failures")) == ["run"]  # no temporary folder left


def test_export_refuses_a_folder_outside_its_root_and_creates_nothing(preds_images, tmp_path):
    preds, images = preds_images
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    for out in (tmp_path / "outside" / "x", root / ".." / "outside" / "x", root / "link" / "x", root, "/etc/x"):
        with pytest.raises(UsageError, match="not inside the export root"):
            analysis.export_failures(preds, images, 0.4, out, root)
    assert not (tmp_path / "outside").exists() and not list((tmp_path / "elsewhere").iterdir())
    with pytest.raises(UsageError, match="not an existing folder"):
        analysis.export_failures(preds, images, 0.4, tmp_path / "nowhere" / "x", tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    data = root / "mvtec"
    with pytest.raises(UsageError, match="loader would read"):
        analysis.export_failures(preds, images, 0.4, data / "bottle" / "test" / "failures", root, avoid=(data,))
    assert not data.exists()


def test_export_refuses_the_repository_source_but_not_its_data_folder():
    for part in ("adkit", "notebooks", "tests", "."):
        with pytest.raises(UsageError, match="source"):
            analysis.export_folder(REPO / part / "failures-x", REPO)
    assert not (REPO / "adkit" / "failures-x").exists()
    out = REPO / "data" / "failures" / "never-written-by-this-test"
    assert analysis.export_folder(out, REPO / "data") == out.resolve()
    assert not out.exists()  # checking creates nothing


def test_export_replaces_only_a_previous_export(preds_images, tmp_path):
    preds, images = preds_images
    out = tmp_path / "run"
    analysis.export_failures(preds, images, 0.4, out, tmp_path)
    with pytest.raises(UsageError, match="not empty"):
        analysis.export_failures(preds, images, 0.4, out, tmp_path)
    csv_path = analysis.export_failures(preds, images, 0.5, out, tmp_path, overwrite=True)
    assert len(analysis.read_failures(csv_path)) == len(list(out.glob("*.png"))) == 3  # 5 before: none stale
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UsageError, match="not an adkit export"):
        analysis.export_failures(preds, images, 0.4, other, tmp_path, overwrite=True)
    assert (other / "holiday.jpg").read_bytes() == b"x"


def test_read_failures_refuses_other_columns(tmp_path):
    f = tmp_path / "failures.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        analysis.read_failures(f)


# -- the folder check -----------------------------------------------------------------------------------------
def test_check_folder_counts_a_good_folder_and_reports_a_bad_one_in_one_line(tmp_path):
    from fixtures import write_mvtec

    root = tmp_path / "mine"
    written = write_mvtec(root, classes=("bottle",), n_train=3, defects={"crack": 2})
    assert analysis.check_folder("mvtec", root) == written
    (root / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(analysis.FolderProblem) as err:
        analysis.check_folder("mvtec", root)
    lines = err.value._render_traceback_()
    assert len(lines) == 1 and "001_mask.png" in lines[0] and "\n" not in lines[0]
    with pytest.raises(analysis.FolderProblem, match="not found"):
        analysis.check_folder("mvtec", tmp_path / "typo")
    with pytest.raises(analysis.FolderProblem, match="unknown class"):
        analysis.check_folder("mvtec", root, ["cable"])
    with pytest.raises(analysis.FolderProblem, match="unknown dataset format"):
        analysis.check_folder("mvtech", root)


# -- pictures and the explorer --------------------------------------------------------------------------------
def test_figures_and_explorer(preds_images):
    preds, images = preds_images
    fig = analysis.histogram_figure(preds, 0.4)
    assert "TP 2 FP 2 TN 1 FN 1" in fig.axes[0].get_title()
    analysis.sweep_figure(preds, 0.4)
    figs = widgets.threshold_figures(preds, images, 0.4, "cat", n=3)
    assert len(figs) == 2 and "false positives (1) and false negatives (1)" in figs[1].texts[0].get_text()
    perfect = {"ok": _class(np.random.default_rng(2), [0.1, 0.9], [0, 1], ["good", "scratch"])}
    assert len(widgets.threshold_figures(perfect, {"ok": images["cat"][:2]}, 0.5, "ok")) == 1  # nothing fails
    plt.close("all")
    box = widgets.threshold_explorer(preds, images)
    slider, cls_w = box.children[0].children
    assert cls_w.index == 0 and cls_w.label == "(all)"  # a selected option, so that picking another one redraws
    assert slider.min == pytest.approx(0.05) and slider.max == pytest.approx(0.9)
    assert slider.value == pytest.approx(analysis.default_threshold(preds))
    slider.value = slider.max  # redraws without error
    cls_w.value = "cat"
    assert cls_w.label == "cat" and cls_w.options[0] == ("(all)", "")
    cls_w.index = 0
    assert cls_w.label == "(all)"
    plt.close("all")
