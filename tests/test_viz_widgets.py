"""Pictures, explorers and feature helpers the notebooks use: each runs without a browser."""

from __future__ import annotations

import matplotlib
import matplotlib.container

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from adkit import cases, features, models, runs, viz, widgets  # noqa: E402


def _preds(rng, n_good=6, n_bad=4, size=16):
    """Predictions of one class in the shape `evaluate(..., return_preds=True)` gives them."""
    label = np.r_[np.zeros(n_good, int), np.ones(n_bad, int)]
    amap = rng.random((n_good + n_bad, size, size)).astype(np.float32)
    mask = np.zeros_like(amap, dtype=bool)
    mask[n_good:, 4:8, 4:8] = True
    amap[mask] += 2.0
    return {
        "score": amap.reshape(len(amap), -1).max(1),
        "amap": amap,
        "label": label,
        "mask": mask,
        "defect": ["good"] * n_good + ["scratch"] * (n_bad - 1) + ["color_spot"],
    }


@pytest.fixture()
def preds_images():
    rng = np.random.default_rng(0)
    preds = {"brick": _preds(rng), "cat": _preds(rng)}
    images = {c: rng.integers(0, 255, (len(p["score"]), 16, 16, 3), dtype=np.uint8) for c, p in preds.items()}
    return preds, images


@pytest.fixture()
def tiny_rd(teacher):
    torch.manual_seed(0)
    return models.create("rd", teacher=teacher).eval()


def test_f1_threshold_separates_perfectly_ranked_scores():
    scores, labels = np.array([0.1, 0.2, 0.3, 0.8, 0.9]), np.array([0, 0, 0, 1, 1])
    t = cases.f1_threshold(scores, labels)
    assert 0.3 < t <= 0.8
    assert ((scores >= t) == labels.astype(bool)).all()
    assert cases.f1_threshold(scores, np.zeros(5)) == float("inf")


def test_normal_scale_maps_normal_median_to_0_and_high_normal_peak_to_1():
    maps = np.stack([np.full((4, 4), 1.0) for _ in range(10)])
    maps[:, 0, 0] = np.arange(10) + 2.0  # peaks 2..11
    lo, hi = cases.normal_scale(maps, q=100)
    assert lo == 1.0 and hi == 11.0
    rel = cases.relative(maps, (lo, hi))
    assert rel[0, 1, 1] == 0.0 and rel[-1, 0, 0] == 1.0


def test_browser_indices_filter_by_defect(preds_images):
    preds, _ = preds_images
    assert cases.browser_indices(preds, "cat") == list(range(10))
    assert cases.browser_indices(preds, "cat", "good") == list(range(6))
    assert cases.browser_indices(preds, "cat", "scratch") == [6, 7, 8]
    assert cases.browser_indices(preds, "cat", "all") == list(range(10))


def test_browser_figure_shows_image_mask_map_and_verdict(preds_images):
    preds, images = preds_images
    fig = viz.browser_figure(preds, images, "brick", 7)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "brick/scratch #7" and titles[1] == "ground truth"
    assert "threshold" in titles[3] and titles[3].endswith("correct")  # defects score 2 higher: caught
    assert "relative to normals" in fig.axes[-1].get_ylabel()  # the map's colour bar
    fig2 = viz.browser_figure(preds, images, "brick", 0, threshold=-1.0)
    assert fig2.axes[3].get_title().endswith("false alarm")
    plt.close("all")


def test_failures_picks_high_normals_and_low_defects(preds_images):
    preds, images = preds_images
    items = cases.failures(preds, images, n=2)
    assert len(items) == 2 * 2 * len(preds)
    p = preds["brick"]
    top_normal = int(np.argmax(np.where(p["label"] == 0, p["score"], -np.inf)))
    assert f"{p['score'][top_normal]:.2f}" in items[0]["title"] and "normal, high" in items[0]["title"]
    assert "defect, low" in items[2]["title"]
    assert {(it["vmin"], it["vmax"]) for it in items} == {(0.0, 2.0)}  # relative to each class's normals
    fig = viz.gallery(items, ncols=4)
    assert len([ax for ax in fig.axes if ax.images]) == len(items)
    assert fig.axes[-1].get_ylabel() == cases.RELATIVE_LABEL and fig.axes[-1].get_ylim() == (0.0, 2.0)
    plain = [{k: v for k, v in it.items() if k != "cbar_label"} for it in items]
    assert viz.gallery(plain).axes[-1].get_ylabel() == "anomaly score"  # a common scale without a label
    assert viz.gallery(plain, cbar_label="x").axes[-1].get_ylabel() == "x"
    mixed = [dict(items[0], vmin=None, vmax=None), items[1]]  # scales differ: the bar reads low → high
    assert [t.get_text() for t in viz.gallery(mixed).axes[-1].get_yticklabels()] == ["low", "high"]
    plt.close("all")


def test_compare_maps_grid_has_a_row_per_model(preds_images):
    preds, images = preds_images
    p = preds["cat"]
    maps = {"one-class": p["amap"][6:9], "multi-class": p["amap"][6:9] * 0.5}
    scales = {k: cases.normal_scale(p["amap"][:6]) for k in maps}
    fig = viz.compare_maps(images["cat"][6:9], maps, p["mask"][6:9], ["a", "b", "c"], scales)
    assert len(fig.axes) == 3 * 3 + 1  # the grid, then one colour bar for the map rows
    assert fig.axes[0].get_title() == "a" and fig.axes[3].get_title().startswith("defect")  # row-major
    bar = fig.axes[-1]
    assert "relative to normals" in bar.get_ylabel() and bar.get_ylim() == (0.0, 2.0)
    fig = viz.compare_maps(images["cat"][6:9], maps)  # without scales: each map on its own range
    assert "own range" in fig.axes[-1].get_ylabel()
    plt.close("all")


def test_loss_plot_and_live_loss_png():
    hist = [{"loss": 1.0 / (i + 1), "rd": 1.0 / (i + 1)} for i in range(30)]
    ax = viz.loss_plot(hist, total=40)
    assert ax.get_yscale() == "log" and ax.get_xlim()[1] == 40
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss"]  # "rd" repeats it: not drawn
    live = widgets.LiveLoss(total=30, every=1000)
    for i, h in enumerate(hist[:5]):
        live(i, h)
    assert len(live.history) == 5 and live.png().startswith(b"\x89PNG")
    plt.close("all")


def test_embedding_figure_is_plotly_json_with_one_legend_per_group():
    xy = np.random.default_rng(0).random((6, 2))
    fig = viz.embedding_figure(
        {"teacher": xy, "student": xy},
        color=["a", "a", "b", "b", "b", "a"],
        symbol=["good", "defect"] * 3,
        hover=[f"img {i}" for i in range(6)],
    ).plotly
    assert len(fig.data) == 2 * 4  # 2 panels × (class, status) groups
    assert sum(t.showlegend for t in fig.data) == 4
    assert sorted(sum((list(t.text) for t in fig.data[:4]), [])) == sorted(f"img {i}" for i in range(6))
    fig.to_json()


def test_noisy_or_plane_draws_each_group_over_the_fused_contours():
    rng = np.random.default_rng(0)
    groups = {"normal": (rng.random(5) * 0.5, rng.random(5) * 0.5), "anomaly": (rng.random(3), rng.random(3))}
    ax = viz.noisy_or_plane(groups, levels=(0.5, 0.9))
    offsets = [c.get_offsets() for c in ax.collections if len(c.get_offsets()) in (3, 5)]
    assert [len(o) for o in offsets] == [5, 3]
    assert np.allclose(offsets[0][:, 0], groups["normal"][0]) and np.allclose(offsets[1][:, 1], groups["anomaly"][1])
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["P=0.5", "P=0.9"]  # one label per contour: the fused probability
    for t in ax.texts:  # on its contour, at p_local = 0.08, inside the square
        x, y = t.get_position()
        v = float(t.get_text()[2:])
        assert x == pytest.approx(0.08) and 1 - (1 - x) * (1 - y) == pytest.approx(v) and 0 < y < 1
    anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert anchor.x0 > 1  # the legend sits right of the axes, over no point
    plt.close("all")


def test_paste_patch_places_a_centred_square():
    src = np.full((32, 32, 3), 200, np.uint8)
    tgt = np.zeros((32, 32, 3), np.uint8)
    img, mask = widgets.paste_patch(src, tgt, size=0.25, cy=0.5, cx=0.5)
    assert mask.sum() == 8 * 8 and mask[12:20, 12:20].all()
    assert (img[mask] == 200).all() and (img[~mask] == 0).all()
    _, corner = widgets.paste_patch(src, tgt, size=0.25, cy=0.0, cx=1.0)
    assert corner[0:8, 24:32].all()


def test_model_for_prefers_the_class_model():
    assert runs.model_for({"cat": 1, "all": 2}, "cat") == 1
    assert runs.model_for({"all": 2}, "cat") == 2
    with pytest.raises(KeyError):
        runs.model_for({"brick": 1}, "cat")


def test_probe_figure_and_explorers_build(tiny_rd, preds_images):
    rng = np.random.default_rng(0)
    imgs = {c: rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8) for c in ("brick", "cat")}
    runs = {"RD multi-class": {"all": tiny_rd}, "RD one-class": {"brick": tiny_rd, "cat": tiny_rd}}
    fig = widgets.probe_figure(runs, imgs["brick"][0], imgs["cat"][0], "brick", "cat", lam=0.3)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("mixup λ=0.30") and "model of cat" in titles[0]
    assert "patch" in titles[4]  # second row, first model: the pasted patch is scored
    assert len(fig.axes) == 2 * 3 + 1 and fig.axes[-1].get_ylabel() == cases.RELATIVE_LABEL  # one colour bar
    scales = widgets.probe_scales(runs, imgs)
    assert set(scales) == set(runs) and set(scales["RD one-class"]) == {"brick", "cat"}
    widgets.probe_figure(runs, imgs["brick"][0], imgs["cat"][0], "brick", "cat", scales=scales)
    plt.close("all")
    box = widgets.probe_explorer(runs, imgs)
    assert len(box.children) == 4
    preds, images = preds_images
    browser = widgets.test_set_browser(preds, images)
    cls_w, def_w, idx_w = browser.children[0].children
    def_w.value = "scratch"
    assert idx_w.max == 2
    cls_w.value = "cat"
    assert def_w.value == "all" and idx_w.max == 9
    plt.close("all")


def test_pooled_and_patch_features(tiny_rd):
    x = torch.rand(3, 3, 32, 32)
    feats = features.extract(tiny_rd, x, batch_size=2)
    assert [f.shape[0] for f in feats["teacher"]] == [3, 3, 3]
    assert [f.shape[1] for f in feats["student"]] == tiny_rd.teacher.channels
    X = features.pooled_features(feats, "teacher")
    assert X.shape == (3, sum(tiny_rd.teacher.channels))
    # each stage's part has unit length
    c0 = tiny_rd.teacher.channels[0]
    assert np.allclose(np.linalg.norm(X[:, :c0], axis=1), 1.0, atol=1e-5)
    # the residual of identical features is zero
    same = {"teacher": feats["teacher"], "student": feats["teacher"]}
    assert np.abs(features.stage_maps(same, "residual")[2].numpy()).max() == 0.0
    masks = np.zeros((3, 32, 32))
    masks[1, :16, :16] = 1
    P = features.patch_features(feats, "residual", stage=1, masks=masks, per_image=6)
    assert P["X"].shape == (18, tiny_rd.teacher.channels[1])
    assert P["inside"][P["image"] != 1].sum() == 0
    assert P["inside"][P["image"] == 1].sum() == 3  # half the positions of the masked image
    with pytest.raises(ValueError):
        features.pooled_features(feats, "other")


@pytest.mark.slow
def test_embed_umap_is_deterministic_and_keeps_clusters_apart():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.1, (30, 8)), rng.normal(3, 0.1, (30, 8))]
    a, b = features.embed_umap(X, seed=0), features.embed_umap(X, seed=0)
    assert a.shape == (60, 2) and np.allclose(a, b)
    d_within = np.linalg.norm(a[:30] - a[:30].mean(0), axis=1).mean()
    d_between = np.linalg.norm(a[:30].mean(0) - a[30:].mean(0))
    assert d_between > 3 * d_within


def _embedding(on_top=None):
    rng = np.random.default_rng(0)
    xy = {"teacher": rng.random((12, 2)), "student": rng.random((12, 2))}
    color = ["brick", "cat", "grass"] * 4
    symbol = ["normal", "defect"] * 6
    fig = viz.embedding_figure(
        xy,
        color=color,
        symbol=symbol,
        title="pooled features",
        symbols={"normal": "circle", "defect": "x"},
        on_top=on_top,
    )
    return fig, xy, color, symbol


def test_embedding_static_copy_draws_every_group_of_every_panel_from_the_data():
    fig, xy, color, symbol = _embedding()
    out = fig.matplotlib()
    axes = out.axes
    assert [ax.get_title() for ax in axes] == ["teacher", "student"]
    assert axes[0].get_position().x1 < axes[1].get_position().x0  # side by side
    assert out.get_suptitle() == "pooled features"
    traces = {t.name: t for t in fig.plotly.data[:6]}  # the first panel's traces
    for ax, pts in zip(axes, xy.values()):
        drawn = {c.get_label(): c for c in ax.collections}
        assert len(drawn) == 6  # one scatter per (class, status) group
        for c, s in {(c, s) for c, s in zip(color, symbol)}:
            label = f"{c} {s}"
            want = pts[[i for i in range(12) if color[i] == c and symbol[i] == s]]
            got = drawn[label].get_offsets()
            assert len(got) == len(want) == 2
            assert sorted(map(tuple, np.round(got, 3))) == sorted(map(tuple, np.round(want, 3)))
            face = matplotlib.colors.to_hex(drawn[label].get_facecolor()[0], keep_alpha=False)
            assert face == traces[label].marker.color  # the interactive figure's colour
    legend = out.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [t.name for t in fig.plotly.data if t.showlegend]
    assert {h.get_marker() for h in legend.legend_handles} == {"o", "X"}  # circle and x, as asked


def test_embedding_on_top_groups_come_last_opaque_and_outlined_in_both_figures():
    fig, xy, _, _ = _embedding(on_top="defect")
    names = [t.name for t in fig.plotly.data if t.showlegend]
    assert names[-3:] == ["brick defect", "cat defect", "grass defect"]
    for t in fig.plotly.data:
        top = "defect" in t.name
        assert (t.marker.opacity == 1.0) is top and (t.marker.line.width > 0) is top
    for ax in fig.matplotlib().axes:
        labels = [c.get_label() for c in ax.collections]
        assert [la for la in labels if "defect" in la] == labels[-3:]  # drawn over the normals
        for c in ax.collections:
            edge = c.get_edgecolor()
            assert (len(edge) > 0 and matplotlib.colors.to_hex(edge[0]) == "#000000") is ("defect" in c.get_label())


def test_embedding_bundle_holds_the_plotly_json_and_a_png_without_browser_or_kaleido(monkeypatch):
    import base64
    import io
    import sys

    import plotly.io as pio
    from PIL import Image

    monkeypatch.setitem(sys.modules, "kaleido", None)  # importing kaleido would fail
    monkeypatch.setattr(pio.renderers, "default", "browser")  # the bundle must not go through it
    fig, _, _, _ = _embedding()
    bundle = fig._repr_mimebundle_()
    assert set(bundle) == {"application/vnd.plotly.v1+json", "image/png"}
    shown = bundle["application/vnd.plotly.v1+json"]["data"]
    assert [t["name"] for t in shown] == [t.name for t in fig.plotly.data]
    img = Image.open(io.BytesIO(base64.b64decode(bundle["image/png"])))
    assert img.size == (900, 380)  # 900 px wide by default, the figure's height, at 100 dpi
    pixels = np.asarray(img.convert("RGB"), dtype=float).reshape(-1, 3)
    for t in fig.plotly.data[:6]:  # each group's markers are drawn: its colour, at its opacity over white
        rgb = np.array([int(t.marker.color[i : i + 2], 16) for i in (1, 3, 5)])
        seen = t.marker.opacity * rgb + (1 - t.marker.opacity) * 255
        assert (np.abs(pixels - seen).max(axis=1) < 8).sum() > 10, t.name
    plt.close("all")


def test_gap_curve_draws_each_recipe_with_its_intervals():
    def row(k, steps, mean, half, n=3):
        return {
            "k": k,
            "steps_per_class": steps,
            "image_size": 128,
            "gap": {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n},
        }

    rows = [row(2, 100, 1.0, 2.0), row(8, 100, 3.0, 1.0), row(4, 300, -1.0, 0.5), row(14, 100, 5.0, 1.5)]
    ax = viz.gap_curve(rows)
    bars = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(bars) == 2  # one line per recipe
    ys = sorted(tuple(np.round(c.lines[0].get_ydata(), 6)) for c in bars)
    assert ys == [(-1.0,), (1.0, 3.0, 5.0)]  # sorted by k within a recipe
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["100 steps/class, 128 px (3 seeds)", "300 steps/class, 128 px (3 seeds)"]
    plt.close(ax.figure)
