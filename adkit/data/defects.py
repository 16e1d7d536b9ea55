"""Synthetic defects with pixel masks, drawn on RGB uint8 `(H,W,3)` images.

Each defect returns `(image, mask)`: a new uint8 image and a boolean `(H,W)` mask. Pixels outside the
mask are never changed, and the mask is exactly the region that was drawn on. All randomness comes
from the `rng` argument, so a seed gives the same defect. Pure numpy; the embedded "mini" set and the
probes share these.

    img, mask = cut_paste(target, source, rng)     # a patch of `source` (another class: the SNL probe)
    img, mask = DEFECTS["scratch"](img, rng)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Box = tuple[int, int, int, int]  # (y, x, h, w)


def _check_rgb(img: np.ndarray, name: str = "image") -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"{name} must be RGB uint8 (H,W,3), got {img.dtype} {img.shape}")
    return img


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def random_box(
    shape: tuple[int, int],
    rng: np.random.Generator,
    size_frac: tuple[float, float] = (0.1, 0.25),
    aspect: tuple[float, float] = (0.5, 2.0),
) -> Box:
    """A random box `(y, x, h, w)` inside `shape`; its side √(h·w) is `size_frac` × the shorter image side."""
    H, W = shape
    side = rng.uniform(*size_frac) * min(H, W)
    ratio = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1])))  # h / w, log-uniform
    h = int(np.clip(round(side * np.sqrt(ratio)), 2, H))
    w = int(np.clip(round(side / np.sqrt(ratio)), 2, W))
    y = int(rng.integers(0, H - h + 1))
    x = int(rng.integers(0, W - w + 1))
    return y, x, h, w


def ellipse_mask(h: int, w: int) -> np.ndarray:
    """Boolean `(h,w)` ellipse inscribed in an h×w box."""
    yy = (np.arange(h) + 0.5 - h / 2) / (h / 2)
    xx = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    return yy[:, None] ** 2 + xx[None, :] ** 2 <= 1.0


def cut_paste(
    target: np.ndarray,
    source: np.ndarray,
    rng: np.random.Generator,
    size_frac: tuple[float, float] = (0.1, 0.25),
    box: Box | None = None,
    src_yx: tuple[int, int] | None = None,
    shape: str = "rect",
) -> tuple[np.ndarray, np.ndarray]:
    """Paste a patch cut from `source` (any RGB image, e.g. another class) onto `target`.

    `box=(y, x, h, w)` places it (default: random, side `size_frac` of the image); `src_yx` is the
    patch's top-left corner in `source` (default: random). `shape` "rect" or "ellipse". Mask = pasted pixels.
    """
    target = _check_rgb(target, "target")
    source = _check_rgb(source, "source")
    y, x, h, w = box if box is not None else random_box(target.shape[:2], rng, size_frac)
    if not (0 <= y and 0 <= x and h > 0 and w > 0 and y + h <= target.shape[0] and x + w <= target.shape[1]):
        raise ValueError(f"box {(y, x, h, w)} is not inside the {target.shape[0]}x{target.shape[1]} target")
    sh, sw = source.shape[:2]
    if sh < h or sw < w:  # tile a small source so that any patch fits
        source = np.tile(source, (-(-h // sh), -(-w // sw), 1))
        sh, sw = source.shape[:2]
    sy, sx = src_yx if src_yx is not None else (int(rng.integers(0, sh - h + 1)), int(rng.integers(0, sw - w + 1)))
    patch = source[sy : sy + h, sx : sx + w]
    if patch.shape[:2] != (h, w):
        raise ValueError(f"src_yx {(sy, sx)} leaves no {h}x{w} patch inside the {sh}x{sw} source")
    if shape == "rect":
        region = np.ones((h, w), bool)
    elif shape == "ellipse":
        region = ellipse_mask(h, w)
    else:
        raise ValueError(f"shape must be 'rect' or 'ellipse', got {shape!r}")
    out = target.copy()
    mask = np.zeros(target.shape[:2], bool)
    mask[y : y + h, x : x + w] = region
    out[mask] = patch[region]
    return out, mask


def _bezier(points: np.ndarray, n: int) -> np.ndarray:
    """`n` points `(n,2)` along the Bézier curve with control `points` (de Casteljau)."""
    t = np.linspace(0.0, 1.0, n)[:, None, None]
    p = np.broadcast_to(points[None], (n, *points.shape)).astype(float)
    while p.shape[1] > 1:
        p = (1 - t) * p[:, :-1] + t * p[:, 1:]
    return p[:, 0]


def _polyline_distance(shape: tuple[int, int], pts: np.ndarray, pad: float) -> tuple[np.ndarray, tuple]:
    """Distance to the polyline `pts` (y, x) from each pixel centre near it; returns (dist, slices)."""
    H, W = shape
    y0, x0 = np.maximum(np.floor(pts.min(0) - pad), 0).astype(int)
    y1, x1 = np.minimum(np.ceil(pts.max(0) + pad) + 1, [H, W]).astype(int)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    q = np.stack([yy.ravel() + 0.5, xx.ravel() + 0.5], 1)  # pixel centres (N,2)
    a, b = pts[:-1], pts[1:]  # segments (S,2)
    ab = b - a
    dist = np.full(len(q), np.inf)
    for s in range(0, len(a), 32):  # chunks keep memory at N×32
        aa, dd = a[s : s + 32], ab[s : s + 32]
        t = ((q[:, None] - aa[None]) * dd[None]).sum(-1) / np.maximum((dd**2).sum(-1), 1e-12)[None]
        proj = aa[None] + np.clip(t, 0, 1)[..., None] * dd[None]
        dist = np.minimum(dist, np.sqrt(((q[:, None] - proj) ** 2).sum(-1)).min(1))
    return dist.reshape(yy.shape), (slice(y0, y1), slice(x0, x1))


def scratch(
    img: np.ndarray,
    rng: np.random.Generator,
    width: float | None = None,
    length_frac: tuple[float, float] = (0.3, 0.6),
) -> tuple[np.ndarray, np.ndarray]:
    """A thin curved line (cubic Bézier, `width` px, default ~2.5% of the side), darker or lighter."""
    img = _check_rgb(img)
    H, W = img.shape[:2]
    side = min(H, W)
    width = width if width is not None else max(1.5, rng.uniform(0.018, 0.035) * side)
    length = rng.uniform(*length_frac) * side
    angle = rng.uniform(0, np.pi)
    d = np.array([np.sin(angle), np.cos(angle)]) * length
    normal = np.array([d[1], -d[0]]) / length
    margin = 0.1 * side
    centre = np.array([rng.uniform(margin, H - margin), rng.uniform(margin, W - margin)])
    start, end = centre - d / 2, centre + d / 2
    bend = rng.uniform(-0.35, 0.35, size=2) * length  # how far the two inner control points leave the chord
    ctrl = np.stack([start, start + d / 3 + bend[0] * normal, start + 2 * d / 3 + bend[1] * normal, end])
    pts = _bezier(ctrl, max(16, int(length)))
    pts = np.clip(pts, 0, [H - 1e-3, W - 1e-3])
    dist, sl = _polyline_distance((H, W), pts, width)
    mask = np.zeros((H, W), bool)
    mask[sl] = dist <= width / 2
    if not mask.any():  # a curve thinner than a pixel: keep the nearest pixels
        mask[sl] = dist <= dist.min()
    # dark or light: random, but towards the side with contrast (a dark scratch on black is invisible)
    lum = img[mask].mean()
    dark = rng.random() < 0.5 if 70 < lum < 185 else lum >= 185
    colour = np.array([20.0, 20.0, 20.0]) if dark else np.array([235.0, 235.0, 235.0])
    colour = colour + rng.uniform(-15, 15, size=3)  # a slight tint
    alpha = rng.uniform(0.5, 0.85)
    out = img.copy()
    out[mask] = _to_uint8((1 - alpha) * img[mask] + alpha * colour)
    return out, mask


def blob_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    size_frac: tuple[float, float] = (0.12, 0.28),
    centre: tuple[float, float] | None = None,
) -> np.ndarray:
    """An irregular blob: an ellipse whose radius wobbles with angle (a few random harmonics)."""
    H, W = shape
    side = min(H, W)
    ry, rx = rng.uniform(*size_frac, size=2) * side / 2
    cy, cx = centre if centre is not None else (rng.uniform(ry, H - ry), rng.uniform(rx, W - rx))
    theta0 = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    dy, dx = yy - cy, xx - cx
    u = (dy * np.cos(theta0) - dx * np.sin(theta0)) / ry
    v = (dy * np.sin(theta0) + dx * np.cos(theta0)) / rx
    r, phi = np.hypot(u, v), np.arctan2(u, v)
    # r(φ) = 1 + Σ_k a_k cos(kφ + φ_k), k = 2..5: a lumpy outline
    edge = np.ones_like(phi)
    for k in range(2, 6):
        edge += rng.uniform(0.03, 0.18) / (k - 1) ** 0.5 * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    mask = r <= edge
    if not mask.any():
        mask[int(np.clip(cy, 0, H - 1)), int(np.clip(cx, 0, W - 1))] = True
    return mask


def color_spot(
    img: np.ndarray,
    rng: np.random.Generator,
    size_frac: tuple[float, float] = (0.1, 0.24),
    strength: tuple[float, float] = (0.3, 0.55),
) -> tuple[np.ndarray, np.ndarray]:
    """An irregular blob tinted towards a random saturated colour (a stain); texture shows through."""
    img = _check_rgb(img)
    mask = blob_mask(img.shape[:2], rng, size_frac)
    hue = rng.uniform(0, 1)
    # a saturated colour from the hue: three cosines 120° apart, mapped to [30, 225]
    colour = 127.5 + 97.5 * np.cos(2 * np.pi * (hue - np.array([0.0, 1 / 3, 2 / 3])))
    alpha = rng.uniform(*strength)
    out = img.copy()
    out[mask] = _to_uint8((1 - alpha) * img[mask] + alpha * colour)
    return out, mask


def mixup(a: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    """`lam·a + (1−lam)·b`, rounded to uint8 (the mixup probe blends two classes' images)."""
    a, b = _check_rgb(a, "a"), _check_rgb(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"mixup needs images of one shape, got {a.shape} and {b.shape}")
    return _to_uint8(lam * a.astype(np.float32) + (1 - lam) * b.astype(np.float32))


def _cut_paste_defect(img: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None):
    if source is None:
        raise ValueError("cut-paste needs a source image to cut the patch from")
    return cut_paste(img, source, rng, (0.12, 0.28), shape="ellipse" if rng.random() < 0.3 else "rect")


def _scratch_defect(img: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None):
    return scratch(img, rng)


def _color_spot_defect(img: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None):
    return color_spot(img, rng)


# name -> fn(img, rng, source=None) -> (image, mask). The two cut-paste defects differ only in the source
# the caller passes: an image of another class ("cross", the SNL probe) or of the same photo ("same").
DEFECTS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "cut_paste_cross": _cut_paste_defect,
    "cut_paste_same": _cut_paste_defect,
    "scratch": _scratch_defect,
    "color_spot": _color_spot_defect,
}
NEEDS_SOURCE = frozenset({"cut_paste_cross", "cut_paste_same"})
