"""Draw the method figures of docs/methods.md and the notebooks: `python docs/figures/draw.py`.

Writes rd.png, fd.png, snl.png and dual.png next to this file (matplotlib only; the same PNG bytes on every
run with the same matplotlib). Boxes are named as in the code (`adkit/models/{rd,fd,snl,dual}.py`): t_feats,
s_feats, amap, score. Colours: blue = frozen teacher, orange = trained student (the papers' design), purple =
trained parts of our reconstruction (SNL, the dual student), grey = computation without weights, green = what
the model outputs. The small maps are synthetic pictures, not model outputs.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

HERE = Path(__file__).resolve().parent
DPI = 100
FONT = 9.5

STYLES = {  # face, edge
    "teacher": ("#dbe9f6", "#3f6f9f"),
    "student": ("#fde3c8", "#c8711f"),
    "op": ("#f3f3f3", "#7a7a7a"),
    "out": ("#dcefd6", "#4f8f3f"),
    "ours": ("#eadcf6", "#7b4fa8"),
}


def canvas(width_in: float, height_in: float):
    """A figure whose data units are tenths of an inch, so that boxes and text keep their proportions."""
    fig = plt.figure(figsize=(width_in, height_in), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width_in * 10)
    ax.set_ylim(0, height_in * 10)
    ax.set_axis_off()
    return fig, ax


def box(ax, x, y, w, h, text, kind="op", size=FONT, weight="normal", dashed=False):
    """A rounded box centred on (x, y); returns its centre and half sizes for arrows."""
    face, edge = STYLES[kind]
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.8",
            fc=face,
            ec=edge,
            lw=1.3,
            ls="--" if dashed else "-",
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size, weight=weight, linespacing=1.25)
    return (x, y, w / 2, h / 2)


def frame(ax, x, y, w, h, text, kind, text_x=None, bottom=False):
    """A dashed frame around a group of boxes, its caption inside the top (or bottom) edge, from `text_x`."""
    edge = STYLES[kind][1]
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=1.2", fc="none", ec=edge, lw=0.9, ls="--")
    )
    ax.text(
        x + 1.0 if text_x is None else text_x,
        y + 1.3 if bottom else y + h - 1.3,
        text,
        ha="left",
        va="center",
        fontsize=FONT - 1,
        color=edge,
    )


def node(ax, x, y, text, r=2.3, size=FONT):
    """A round comparison node (teacher vs student)."""
    ax.add_patch(
        FancyBboxPatch(
            (x - r, y - r * 0.62),
            2 * r,
            1.24 * r,
            boxstyle="round,pad=0,rounding_size=1.4",
            fc="white",
            ec="#444444",
            lw=1.3,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size)
    return (x, y, r, r * 0.62)


def edge_point(b, toward):
    """The point on box `b`'s border where the line from its centre to `toward` leaves it."""
    x, y, hw, hh = b
    dx, dy = toward[0] - x, toward[1] - y
    if dx == 0 and dy == 0:
        return x, y
    t = min(hw / abs(dx) if dx else np.inf, hh / abs(dy) if dy else np.inf)
    return x + dx * t, y + dy * t


def arrow(ax, a, b, text=None, color="#333333", ls="-", rad=0.0, text_offset=(0, 1.2), size=FONT - 1, lw=1.3):
    """An arrow from box/point `a` to box/point `b` (boxes are 4-tuples, points 2-tuples)."""
    pa = a[:2] if len(a) == 2 else edge_point(a, b[:2])
    pb = b[:2] if len(b) == 2 else edge_point(b, a[:2])
    ax.add_patch(
        FancyArrowPatch(
            pa,
            pb,
            arrowstyle="-|>",
            mutation_scale=11,
            color=color,
            lw=lw,
            ls=ls,
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=1,
            shrinkB=1,
        )
    )
    if text:
        ax.text(
            (pa[0] + pb[0]) / 2 + text_offset[0],
            (pa[1] + pb[1]) / 2 + text_offset[1],
            text,
            ha="center",
            va="center",
            fontsize=size,
            color="#333333",
        )


def line(ax, points, color="#333333", lw=1.3, ls="-"):
    xs, ys = zip(*points)
    ax.plot(xs, ys, color=color, lw=lw, ls=ls, solid_capstyle="round")


def title(ax, text, sub=None):
    top = ax.get_ylim()[1]
    ax.text(1.5, top - 2.2, text, ha="left", va="center", fontsize=FONT + 3, weight="bold")
    if sub:
        ax.text(1.5, top - 4.6, sub, ha="left", va="center", fontsize=FONT, color="#444444", style="italic")


def legend(ax, kinds, y=1.6, x0=1.5):
    labels = {
        "teacher": "frozen teacher",
        "student": "trained (student)",
        "ours": "trained, our reconstruction",
        "op": "computation, no weights",
        "out": "map / score",
    }
    x = x0
    for k in kinds:
        face, edge = STYLES[k]
        ax.add_patch(Rectangle((x, y - 0.8), 2.4, 1.6, fc=face, ec=edge, lw=1.2))
        ax.text(x + 3.0, y, labels[k], ha="left", va="center", fontsize=FONT - 1)
        x += 4.4 + 0.72 * len(labels[k])


def blob_map(n: int, centre=(0.62, 0.38), width=0.13, seed=0) -> np.ndarray:
    """A small synthetic anomaly map: one bright region on low noise (deterministic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / max(n - 1, 1)
    m = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * width**2))
    return m + 0.12 * rng.random((n, n))


def thumb(ax, x, y, side, data, label=None, cmap="magma"):
    """A map drawn as a small image centred on (x, y)."""
    ax.imshow(
        data,
        cmap=cmap,
        extent=(x - side / 2, x + side / 2, y - side / 2, y + side / 2),
        interpolation="nearest",
        zorder=3,
        origin="upper",
    )
    ax.add_patch(Rectangle((x - side / 2, y - side / 2), side, side, fc="none", ec="#555555", lw=0.8, zorder=4))
    if label:
        ax.text(x, y - side / 2 - 1.0, label, ha="center", va="top", fontsize=FONT - 1.5)
    return (x, y, side / 2, side / 2)


def upsample(m: np.ndarray, n: int) -> np.ndarray:
    """Bilinear resize to n×n (numpy only; for the pictures, not for the method)."""
    src = np.linspace(0, m.shape[0] - 1, n)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, m.shape[0] - 1)
    f = src - i0
    rows = m[i0] * (1 - f)[:, None] + m[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def blur(m: np.ndarray, sigma: float) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(m, r, mode="reflect")
    p = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, p)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, p)


def photo(n: int = 48, seed: int = 3) -> np.ndarray:
    """A small synthetic texture with one defect (a pasted patch of another texture), RGB in [0, 1]."""
    rng = np.random.default_rng(seed)
    base = blur(rng.random((n, n)), 1.2)
    img = np.stack([0.35 + 0.5 * base, 0.45 + 0.45 * base, 0.25 + 0.3 * base], -1)
    stripes = 0.5 + 0.5 * np.sin(np.arange(12)[:, None] * 1.3 + np.arange(12)[None, :] * 0.4)
    img[28:40, 8:20] = np.stack([0.8 * stripes + 0.2, 0.3 * stripes, 0.25 + 0 * stripes], -1)
    return np.clip(img, 0, 1)


def stage_maps(ax, x0, y, label="one map per stage", sizes=(32, 16, 8)):
    """Three small per-stage maps in a frame (the output of the comparison nodes); returns the frame's box."""
    maps = [blob_map(n, seed=i) for i, n in enumerate(sizes)]
    xs = [x0 + 3.2 + 6.2 * i for i in range(len(maps))]
    for i, (xx, m) in enumerate(zip(xs, maps)):
        thumb(ax, xx, y, 4.6, m, f"stage {i + 1}")
    w = 6.2 * len(maps) + 0.4
    ax.add_patch(
        FancyBboxPatch((x0, y - 4.6), w, 9.6, boxstyle="round,pad=0,rounding_size=0.8", fc="none", ec="#999999", lw=0.9)
    )
    ax.text(x0 + w / 2, y + 6.0, label, ha="center", va="center", fontsize=FONT - 1.5)
    return (x0 + w / 2, y, w / 2, 4.8), maps


def scoring_strip(ax, y, fusion: str, fuse_text: str, score_text: str, x0=2.0, label="one map per stage (h_l × w_l)"):
    """Per-stage maps (three resolutions) -> upsampled and fused -> blurred amap -> image score."""
    group, maps = stage_maps(ax, x0, y, label)
    ups = [upsample(m, 64) for m in maps]
    fused = np.prod(ups, axis=0) if fusion == "product" else np.sum(ups, axis=0)
    amap = blur(fused, 3.0)
    fuse = box(ax, group[0] + group[2] + 9.5, y, 14.0, 6.4, fuse_text)
    arrow(ax, group, fuse)
    blurred = box(ax, fuse[0] + 15.5, y, 10.5, 6.4, "Gaussian blur\nσ = 4 px")
    arrow(ax, fuse, blurred)
    a = thumb(ax, blurred[0] + 11.5, y, 6.4, amap, "amap (B,1,H,W)")
    arrow(ax, blurred, a)
    s = box(ax, a[0] + 13.0, y, 12.5, 6.4, score_text, kind="out")
    arrow(ax, a, s)
    return s


def feature_labels(ax, i: int, x: float, y_teacher: float, y_student: float) -> None:
    """The `t_feats[i]` and `s_feats[i]` labels beside the arrows into stage i's comparison."""
    for y, name, kind in ((y_teacher, "t_feats", "teacher"), (y_student, "s_feats", "student")):
        ax.text(x + 1.0, y, f"{name}[{i}]", ha="left", va="center", fontsize=FONT - 2, color=STYLES[kind][1])


def save(fig, name: str) -> None:
    fig.savefig(HERE / name, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


# -- the figures ------------------------------------------------------------------------------------------
def draw_rd() -> None:
    fig, ax = canvas(9.0, 6.2)
    title(
        ax,
        "Reverse Distillation (RD)",
        "the student never sees the image: it rebuilds the teacher's features from a narrow code",
    )
    xs = (24.0, 40.0, 56.0)
    top, mid, low = 44.0, 35.0, 26.0
    img = thumb(ax, 7.0, top, 7.0, photo(), "x (B,3,H,W)")
    # teacher: three stages, frozen
    frame(ax, 16.0, top - 4.3, 48.0, 11.5, "teacher (frozen)", "teacher", text_x=44.6)
    enc = [box(ax, x, top, 12.0, 6.0, f"stage {i + 1}\nstride {4 * 2**i}", "teacher") for i, x in enumerate(xs)]
    arrow(ax, img, enc[0])
    arrow(ax, enc[0], enc[1])
    arrow(ax, enc[1], enc[2])
    # OCBE: all three stages in, one code out
    box(ax, 77.0, mid, 13.0, 13.0, "OCBE\nfuses the 3\nstages into\none code\n(stride 32)", "student")
    bus = top + 9.2
    for e in enc:
        line(ax, [(e[0] + 3.0, top + 3.0), (e[0] + 3.0, bus)], lw=1.0, color="#555555")
    line(ax, [(xs[0] + 3.0, bus), (77.0, bus)], lw=1.0, color="#555555")
    arrow(ax, (77.0, bus), (77.0, mid + 6.5), lw=1.0, color="#555555")
    ax.text(66.0, bus + 1.2, "t_feats (all three)", ha="center", va="center", fontsize=FONT - 1.5)
    # decoder: the teacher mirrored, deepest stage first
    dec = [box(ax, x, low, 12.0, 6.0, f"decoder\nstage {i + 1}", "student") for i, x in enumerate(xs)]
    line(ax, [(77.0, mid - 6.5), (77.0, low)])
    arrow(ax, (77.0, low), dec[2])
    arrow(ax, dec[2], dec[1])
    arrow(ax, dec[1], dec[0])
    # per-stage comparison
    for i, (e, d) in enumerate(zip(enc, dec)):
        n = node(ax, e[0], mid, "1 − cos", r=3.2)
        arrow(ax, e, n)
        arrow(ax, d, n)
        feature_labels(ax, i, e[0], (top - 4.3 + mid + 2.0) / 2, (low + 3.0 + mid - 2.0) / 2)
    ax.text(3.0, mid + 1.6, "per stage l:", ha="left", va="center", fontsize=FONT - 1, weight="bold")
    ax.text(3.0, mid - 1.6, "teacher vs its\nreconstruction", ha="left", va="center", fontsize=FONT - 1.5)
    ax.text(
        2.0,
        18.6,
        "Training (normal images only):  L = Σ_l mean_b [1 − cos(vec T_l, vec S_l)],  each stage's whole map "
        "flattened into one vector.\nTest: the same cosine per position (along the channels) gives one map per "
        "stage, higher where the decoder fails.",
        ha="left",
        va="center",
        fontsize=FONT - 1,
    )
    scoring_strip(ax, 8.6, "sum", "Up to H×W\n(bilinear),\nsum over stages", "score (B,)\n= max of amap")
    legend(ax, ("teacher", "student", "op", "out"), y=1.8)
    save(fig, "rd.png")


def draw_fd() -> None:
    fig, ax = canvas(9.0, 6.2)
    title(
        ax,
        "Forward distillation (FD, STFPM-style)",
        "teacher and student read the same image; the student "
        "has the teacher's architecture but starts from random weights",
    )
    xs = (28.0, 46.0, 64.0)
    top, mid, low = 47.0, 38.0, 29.0
    img = thumb(ax, 7.0, mid, 7.0, photo(), "x (B,3,H,W)")
    frame(ax, 19.5, top - 4.3, 53.0, 11.5, "teacher (frozen, ImageNet weights)", "teacher")
    frame(ax, 19.5, low - 7.2, 53.0, 10.4, "student (same architecture, random init, trained)", "student", bottom=True)
    enc = [box(ax, x, top, 12.0, 6.0, f"stage {i + 1}\nstride {4 * 2**i}", "teacher") for i, x in enumerate(xs)]
    stu = [box(ax, x, low, 12.0, 6.0, f"stage {i + 1}\nstride {4 * 2**i}", "student") for i, x in enumerate(xs)]
    arrow(ax, img, enc[0])
    arrow(ax, img, stu[0])
    for row in (enc, stu):
        arrow(ax, row[0], row[1])
        arrow(ax, row[1], row[2])
    for i, (e, st) in enumerate(zip(enc, stu)):
        n = node(ax, e[0], mid, "‖T̂ − Ŝ‖²", r=3.6)
        arrow(ax, e, n)
        arrow(ax, st, n)
        feature_labels(ax, i, e[0], (top - 4.3 + mid + 2.2) / 2, (low + 3.0 + mid - 2.2) / 2)
    ax.text(75.0, mid + 1.8, "per position:", ha="left", va="center", fontsize=FONT - 1, weight="bold")
    ax.text(
        75.0,
        mid - 1.6,
        "unit-length feature\nvectors T̂, Ŝ;\n‖T̂ − Ŝ‖² = 2 − 2·cos",
        ha="left",
        va="center",
        fontsize=FONT - 1.5,
    )
    ax.text(
        2.0,
        18.4,
        "Training (normal images only):  L = Σ_l mean_{b,i} ‖T̂ − Ŝ‖²,  the map's own distance averaged.  "
        "Test: the same distance per position,\none map per stage; where the image holds something the "
        "student never saw, its features drift from the teacher's.",
        ha="left",
        va="center",
        fontsize=FONT - 1,
    )
    scoring_strip(ax, 8.6, "product", "Up to H×W\n(bilinear), product\nover stages", "score (B,)\n= max of amap")
    legend(ax, ("teacher", "student", "op", "out"), y=1.8)
    save(fig, "fd.png")


def draw_dual() -> None:
    fig, ax = canvas(9.0, 6.4)
    title(
        ax,
        "The dual student (our reconstruction)",
        "one frozen teacher, two students: an encoder–decoder for "
        "local defects, an encoder–encoder for semantic anomalies",
    )
    img = thumb(ax, 5.0, 36.0, 6.5, photo(), "x (B,3,H,W)")
    teacher = box(ax, 15.5, 36.0, 9.0, 11.0, "teacher\n(frozen,\nshared)", "teacher")
    arrow(ax, img, teacher)
    # E–D student: local defects
    ed_y = 48.0
    frame(ax, 21.5, 39.0, 40.0, 15.5, "E–D student: local defects", "ours")
    groups = box(ax, 28.0, ed_y, 10.0, 6.4, "t_feats:\nteacher maps\nin 2 groups", "op", size=FONT - 1.5)
    neck = box(ax, 40.0, ed_y, 10.5, 6.4, "noisy\nbottleneck\n(MLP, dropout)", "ours", size=FONT - 1.5)
    dec = box(ax, 53.0, ed_y, 11.0, 6.4, "decoder\n(residual convs)\n→ s_feats", "ours", size=FONT - 1.5)
    arrow(ax, (teacher[0], teacher[1] + 5.5), (groups[0] - 5.0, groups[1]), rad=-0.3)
    arrow(ax, groups, neck)
    arrow(ax, neck, dec)
    cmp_d = node(ax, 53.0, 41.8, "1 − cos", r=2.5, size=FONT - 1.5)
    arrow(ax, dec, cmp_d)
    line(ax, [(28.0, ed_y - 3.2), (28.0, 41.8)], lw=1.0, color="#555555")
    arrow(ax, (28.0, 41.8), cmp_d, lw=1.0, color="#555555")
    ax.text(40.0, 40.6, "per position, mean of the 2 groups", ha="center", va="center", fontsize=FONT - 2)
    amap = thumb(ax, 66.0, 46.0, 5.4, blur(upsample(blob_map(16), 48), 2.0))
    ax.text(66.0, 50.0, "amap", ha="center", va="center", fontsize=FONT - 1.5)
    arrow(ax, cmp_d, amap, text="Up,\nblur", text_offset=(0.6, -2.6), size=FONT - 2)
    # the teacher's global descriptor, to the E–E comparison
    g_y = 29.6
    line(ax, [(teacher[0] + 2.0, teacher[1] - 5.5), (teacher[0] + 2.0, g_y), (57.0, g_y)], lw=1.0, color="#555555")
    ax.text(
        38.0,
        g_y + 1.2,
        "g_T: global descriptor (CNN: last stage averaged; ViT: class token)",
        ha="center",
        va="center",
        fontsize=FONT - 2,
    )
    # E–E student: semantic anomalies
    ee_y = 22.0
    frame(ax, 21.5, 14.5, 40.0, 13.5, "E–E student: semantic anomalies", "ours")
    enc = box(ax, 31.0, ee_y, 13.0, 6.4, "encoder: teacher's\narchitecture,\nrandom init", "ours", size=FONT - 1.5)
    head = box(ax, 45.0, ee_y, 9.0, 6.4, "linear head\n→ g_S", "ours", size=FONT - 1.5)
    line(ax, [(img[0], img[1] - 5.6), (img[0], ee_y), (enc[0] - enc[2] - 0.2, ee_y)], lw=1.3)
    arrow(ax, (enc[0] - enc[2] - 1.5, ee_y), enc)
    arrow(ax, enc, head)
    cmp_e = node(ax, 57.0, ee_y, "1 − cos", r=2.5, size=FONT - 1.5)
    arrow(ax, head, cmp_e)
    arrow(ax, (57.0, g_y), cmp_e, lw=1.0, color="#555555")
    # scores, links, Noisy-OR
    s_d = box(ax, 74.5, 46.0, 10.0, 6.4, "s_D: mean of\nthe top 1 %\nof amap", "out", size=FONT - 1.5)
    arrow(ax, amap, s_d)
    s_e = box(ax, 74.5, ee_y, 10.0, 6.4, "s_E = 1 − cos\n(g_T, g_S)", "out", size=FONT - 1.5)
    arrow(ax, cmp_e, s_e)
    fuse = box(ax, 84.0, 34.0, 11.0, 8.0, "Noisy-OR\nP = 1 − (1 − p_D)\n× (1 − p_E)", "op", size=FONT - 1.5)
    arrow(ax, (s_d[0] + 2.0, s_d[1] - 3.2), (fuse[0] - 2.0, fuse[1] + 4.0), text="p_D", text_offset=(-2.2, -0.6))
    arrow(ax, (s_e[0] + 2.0, s_e[1] + 3.2), (fuse[0] - 2.0, fuse[1] - 4.0), text="p_E", text_offset=(-2.2, 0.6))
    score = box(ax, 84.0, 13.0, 11.0, 6.4, "score (B,)\n= −log(1 − P)", "out", size=FONT - 1.5)
    arrow(ax, fuse, score)
    ax.text(
        2.0,
        8.6,
        "Each branch score becomes p by a link fitted on training normals after training: "
        "p = σ((s − τ ln 2) / σ_s),\nτ and σ_s per branch. Training (normals only): −log(1 − p_D) − log(1 − p_E) "
        "with p = 1 − exp(−s/τ), both students at once.",
        ha="left",
        va="center",
        fontsize=FONT - 1.5,
    )
    legend(ax, ("teacher", "ours", "op", "out"), y=2.0)
    save(fig, "dual.png")


def layers(ax, x, y, n=5, cell=1.1, depth=4, shift=0.75, cells=(), front=False, color="#c8711f"):
    """A feature map drawn as `depth` stacked n×n grids (channels behind each other); `cells` (row, col) are
    highlighted on every layer, `front=True` highlights the whole front layer."""
    for k in reversed(range(depth)):
        ox, oy = x + k * shift, y + k * shift
        for r in range(n):
            for c in range(n):
                on = (r, c) in cells or (front and k == 0)
                ax.add_patch(
                    Rectangle(
                        (ox + c * cell, oy + (n - 1 - r) * cell),
                        cell,
                        cell,
                        lw=0.5,
                        ec="#666666",
                        fc=color if on else "white",
                        zorder=5 - k,
                    )
                )


def matrix(ax, x, y, m, side, row=None, cmap="Blues"):
    """A square matrix drawn as an image with its lower-left corner at (x, y); `row` outlined."""
    ax.imshow(m, cmap=cmap, extent=(x, x + side, y, y + side), interpolation="nearest", zorder=3, vmin=-0.2, vmax=1.0)
    ax.add_patch(Rectangle((x, y), side, side, fc="none", ec="#555555", lw=0.8, zorder=4))
    if row is not None:
        h = side / len(m)
        ax.add_patch(Rectangle((x, y + side - (row + 1) * h), side, h, fc="none", ec="#c8711f", lw=1.6, zorder=5))


def draw_snl() -> None:
    fig, ax = canvas(9.0, 8.6)
    title(
        ax,
        "SNL on RD (our reconstruction)",
        "RD's teacher, OCBE and decoder, plus a CRAM after each decoder "
        "stage and structural terms that compare relations, not only features",
    )
    xs = (24.0, 40.0, 56.0)
    top, mid, cram_y, low = 69.0, 59.0, 50.5, 43.0
    img = thumb(ax, 7.0, top, 7.0, photo(), "x (B,3,H,W)")
    frame(ax, 16.0, top - 4.3, 48.0, 11.0, "teacher (frozen)", "teacher", text_x=44.6)
    enc = [box(ax, x, top, 12.0, 5.6, f"stage {i + 1}\nstride {4 * 2**i}", "teacher") for i, x in enumerate(xs)]
    arrow(ax, img, enc[0])
    arrow(ax, enc[0], enc[1])
    arrow(ax, enc[1], enc[2])
    ocbe = box(ax, 77.0, mid - 3.0, 13.0, 11.0, "OCBE\n(as in RD)\n→ one code", "student")
    bus = top + 8.6
    for e in enc:
        line(ax, [(e[0] + 3.0, top + 2.8), (e[0] + 3.0, bus)], lw=1.0, color="#555555")
    line(ax, [(xs[0] + 3.0, bus), (77.0, bus)], lw=1.0, color="#555555")
    arrow(ax, (77.0, bus), (77.0, ocbe[1] + ocbe[3]), lw=1.0, color="#555555")
    ax.text(66.0, bus + 1.1, "t_feats (all three)", ha="center", va="center", fontsize=FONT - 1.5)
    dec = [box(ax, x, low, 12.0, 5.6, f"decoder\nstage {i + 1}", "student") for i, x in enumerate(xs)]
    crams = [box(ax, x, cram_y, 9.0, 4.0, "CRAM", "ours", size=FONT - 1) for x in xs]
    line(ax, [(77.0, ocbe[1] - ocbe[3]), (77.0, low)])
    arrow(ax, (77.0, low), dec[2])
    for i in range(3):
        arrow(ax, dec[i], crams[i])
    arrow(ax, (crams[2][0] - 4.5, cram_y - 1.0), (dec[1][0] + 6.0, low + 1.5))
    arrow(ax, (crams[1][0] - 4.5, cram_y - 1.0), (dec[0][0] + 6.0, low + 1.5))
    terms = ("L_ch  L_sp\nL_inter", "L_ch  L_sp\nL_intra  L_inter", "L_ch  L_sp\nL_intra  L_inter")
    for i, (e, c) in enumerate(zip(enc, crams)):
        n = box(ax, e[0], mid, 13.0, 5.0, terms[i], "ours", size=FONT - 1.5)
        arrow(ax, e, n)
        arrow(ax, c, n)
        feature_labels(ax, i, e[0], (top - 2.8 + mid + 2.5) / 2, (cram_y + 2.0 + mid - 2.5) / 2)
    ax.text(2.0, mid + 1.2, "loss per stage l", ha="left", va="center", fontsize=FONT - 1, weight="bold")
    ax.text(
        2.0,
        mid - 2.0,
        "+ RD's own loss;\nL_intra on the\nstride-8, -16 stages",
        ha="left",
        va="center",
        fontsize=FONT - 2,
    )
    ax.text(2.0, cram_y, "CRAM output\nfeeds the next\ndecoder stage", ha="left", va="center", fontsize=FONT - 2)
    # what each term compares
    py, gy = 35.0, 27.5  # panel titles, glyph centres
    panels = (9.0, 27.0, 45.0, 63.0, 80.5)
    heads = ("channel-wise  L_ch", "spatial-wise  L_sp", "intra-affinity  L_intra", "inter-affinity  L_inter", "CRAM")
    for x, h in zip(panels, heads):
        ax.text(x, py, h, ha="center", va="center", fontsize=FONT - 1, weight="bold")
    layers(ax, panels[0] - 4.0, gy - 4.2, cells={(0, 4)})
    layers(ax, panels[1] - 4.0, gy - 4.2, front=True)
    rng = np.random.default_rng(1)
    f = rng.normal(size=(16, 4)) + np.repeat(np.eye(4) * 2.5, 4, axis=0)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    matrix(ax, panels[2] - 4.2, gy - 4.2, f @ f.T, 8.4, row=5)
    g = rng.normal(size=(6, 3)) + np.array([[2, 0, 0]] * 3 + [[0, 2, 0]] * 3)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    gm = g @ g.T
    np.fill_diagonal(gm, np.nan)
    matrix(ax, panels[3] - 4.2, gy - 4.2, gm, 8.4)
    notes = (
        "at each position i: the\nC-channel vectors,\n1 − cos(T[:, i], S[:, i])",
        "for each channel c: its\nvalues at all N positions,\n1 − cos(T[c, :], S[c, :])",
        "one image: N × N cosines\nof positions, A = T̂ᵀT̂;\nrow i of A_T vs A_S → e(i)",
        "one batch: B × B cosines\nof pooled image\ndescriptors (training only)",
    )
    for x, t in zip(panels, notes):
        ax.text(x, gy - 5.6, t, ha="center", va="top", fontsize=FONT - 2)
    # CRAM: features pulled to learnt centres
    cx = panels[4]
    pts = rng.normal(size=(14, 2)) * 0.9
    cents = np.array([[-1.6, 1.0], [1.5, 1.2], [0.2, -1.5]])
    pts = cents[np.arange(14) % 3] + pts * 0.7
    ax.scatter(cx + pts[:, 0] * 1.6, gy + pts[:, 1] * 1.3, s=9, c="#c8711f", zorder=4)
    ax.scatter(cx + cents[:, 0] * 1.6, gy + cents[:, 1] * 1.3, s=70, marker="*", c="#7b4fa8", zorder=5)
    ax.text(
        cx,
        gy - 5.6,
        "K = 16 centres c_k; soft weights a_ik;\nr_i = s_i − Σ_k a_ik c_k;\nout = s_i + g(r_i), g zero at start",
        ha="center",
        va="top",
        fontsize=FONT - 2,
    )
    # test time
    sy = 9.4
    ax.text(2.0, sy + 5.6, "at test time", ha="left", va="center", fontsize=FONT - 1, weight="bold")
    loc = box(ax, 11.5, sy + 1.8, 19.0, 3.4, "M_local: Σ_l Up(1 − cos), 3 stages", size=FONT - 2)
    struct = box(ax, 11.5, sy - 2.2, 19.0, 3.4, "M_struct: Σ_l Up(e), stages 2, 3", size=FONT - 2)
    norm = box(
        ax, 35.0, sy, 19.0, 6.4, "norm(M_local) + α·norm(M_struct)\nmean, std of training normals", size=FONT - 2
    )
    arrow(ax, loc, (norm[0] - norm[2], sy + 1.0))
    arrow(ax, struct, (norm[0] - norm[2], sy - 1.0))
    bl = box(ax, 53.0, sy, 10.0, 5.0, "blur σ = 4 px", size=FONT - 1.5)
    arrow(ax, norm, bl)
    a = thumb(ax, 63.5, sy, 5.2, blur(upsample(blob_map(16, seed=4), 48), 2.0))
    ax.text(a[0] + 3.2, sy - 3.2, "amap", ha="left", va="center", fontsize=FONT - 2)
    arrow(ax, bl, a)
    sc = box(ax, 76.0, sy, 12.0, 5.0, "score (B,)\n= max of amap", "out", size=FONT - 1.5)
    arrow(ax, a, sc)
    legend(ax, ("teacher", "student", "ours", "op", "out"), y=1.8)
    save(fig, "snl.png")


def main() -> None:
    draw_rd()
    draw_fd()
    draw_snl()
    draw_dual()


if __name__ == "__main__":
    main()
