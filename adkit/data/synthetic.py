"""Validation sets made from training normals only: synthetic defects (and semantic anomalies) for choosing a
default (CRAM's form, a compactness weight, a calibration set) without looking at any test set.

    val = synthetic_defects(images, classes, seed=0)        # images (N,3,H,W) in [0, 1], one class name each
    val["image"], val["mask"], val["label"], val["defect"], val["cls"]

Every image is kept clean (label 0) and, for each defect family, gets one defective copy (label 1, its mask):
a paired design, so that a class's AUROC compares each normal with damaged versions of the same normals. The
families are generic and deliberately not mini's test defects (cut-paste of a photo, scratch, colour spot):

* "blob": an irregular region (an ellipse whose radius wobbles with the angle) filled with the pixels of
  another image of the set at another place, blended at α ∈ [0.6, 1] — foreign content, the kind of
  defect that multi-class training is said to let through (NSA, Schlüter et al., ECCV 2022, and DRAEM,
  Zavrtanik et al., ICCV 2021, paste within or across images in the same spirit; this is our variant);
* "blur": the same kind of region low-passed (a box blur of 5–9 px, twice): lost texture and edges;
* "tint": the region's colour multiplied by a random RGB gain in [0.5, 1.5] per channel, at least one channel
  changed by 0.25: a stain.

Regions cover roughly 1–6 % of the image. Which image gets which donor, region and parameters depends only on
`seed` and the image's index, so a validation set is reproducible. This is our construction for adkit's
ablations (docs/methods.md §8, "Validation data for choosing defaults"); nothing in the papers prescribes it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

FAMILIES = ("blob", "blur", "tint")


def region_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean `(h, w)` mask: an ellipse of random centre, radii 6–14 % of the side and rotation, its radius
    modulated by a few random harmonics of the angle so the outline is irregular."""
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(0.06, 0.14) * h, rng.uniform(0.06, 0.14) * w
    rot = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    u = (dx * math.cos(rot) + dy * math.sin(rot)) / rx
    v = (-dx * math.sin(rot) + dy * math.cos(rot)) / ry
    theta = np.arctan2(v, u)
    wobble = 1 + sum(rng.uniform(-0.15, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
    mask = np.hypot(u, v) <= wobble
    if mask.sum() < 4:  # a degenerate draw: at least a small square
        mask[int(cy) - 1 : int(cy) + 1, int(cx) - 1 : int(cx) + 1] = True
    return mask


def _box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    weight = torch.full((3, 1, k, k), 1.0 / (k * k), dtype=x.dtype)
    return F.conv2d(F.pad(x[None], (k // 2,) * 4, mode="replicate"), weight, groups=3)[0]


def damage(
    image: torch.Tensor, family: str, rng: np.random.Generator, donor: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One defective copy of `image` `(3,H,W)` in [0, 1] and its mask `(1,H,W)` (float 0/1)."""
    _, h, w = image.shape
    mask = torch.from_numpy(region_mask(h, w, rng))
    m = mask.to(image.dtype)[None]
    if family == "blob":
        if donor is None:
            raise ValueError("a blob needs a donor image")
        dy, dx = int(rng.integers(-h // 3, h // 3 + 1)), int(rng.integers(-w // 3, w // 3 + 1))
        content = torch.roll(donor, shifts=(dy, dx), dims=(1, 2))
        alpha = float(rng.uniform(0.6, 1.0))
        out = image * (1 - alpha * m) + content * alpha * m
    elif family == "blur":
        k = int(rng.choice([5, 7, 9]))
        out = image * (1 - m) + _box_blur(_box_blur(image, k), k) * m
    elif family == "tint":
        gain = rng.uniform(0.5, 1.5, size=3)
        j = int(rng.integers(3))
        if abs(gain[j] - 1) < 0.25:  # make sure the stain shows in at least one channel
            gain[j] = 1 + math.copysign(0.25 + rng.uniform(0, 0.25), gain[j] - 1 or 1.0)
        out = image * (1 - m) + (image * torch.tensor(gain, dtype=image.dtype)[:, None, None]).clamp(0, 1) * m
    else:
        raise ValueError(f"unknown defect family {family!r}: use one of {FAMILIES}")
    return out.clamp(0, 1), m


def defect_draws(n: int, seed: int = 0, families: tuple[str, ...] = FAMILIES):
    """`(family, i, donor, rng)` for each defective copy of a set of `n` normals, in `synthetic_defects`' order
    (family by family, image by image): copy i of family f draws from its own generator, seeded with
    `(seed, f, i)`, first its donor (any other image of the set), then what `damage` draws."""
    for f, family in enumerate(families):
        for i in range(n):
            rng = np.random.default_rng([seed, f, i])
            j = int(rng.integers(n - 1))
            yield family, i, j + (j >= i), rng


def synthetic_batches(images_at, n: int, seed: int = 0, families: tuple[str, ...] = FAMILIES, batch_size: int = 32):
    """`synthetic_defects`' images and labels, `batch_size` at a time, without holding the set: `images_at(idx)`
    returns normals `idx` (a sorted index tensor) of the `n` as `(len(idx),3,H,W)`. Yields `(images, labels)`;
    joined, they equal `synthetic_defects(all n normals, ...)["image"]` and `["label"]` exactly."""
    if n < 2:
        raise ValueError(f"need at least 2 images, got {n}")
    items = itertools.chain(((None, i, None, None) for i in range(n)), defect_draws(n, seed, families))
    while chunk := list(itertools.islice(items, batch_size)):
        need = sorted({i for _, i, _, _ in chunk} | {d for _, _, d, _ in chunk if d is not None})
        got = dict(zip(need, images_at(torch.tensor(need)), strict=True))
        xs = [got[i] if family is None else damage(got[i], family, rng, got[d])[0] for family, i, d, rng in chunk]
        yield torch.stack(xs), torch.tensor([int(family is not None) for family, *_ in chunk])


def synthetic_defects(
    images: torch.Tensor, classes: list[str], seed: int = 0, families: tuple[str, ...] = FAMILIES
) -> dict:
    """The validation set of `images` `(N,3,H,W)` (normals; `classes[i]` is image i's class): each image
    clean, then one defective copy per family. Returns {"image": (M,3,H,W), "mask": (M,1,H,W), "label": (M,)
    int64, "defect": [family or "good"] * M, "cls": [...] * M}; blob donors are other images of the set (any
    class), so cross-class content is among the defects."""
    n = len(images)
    if n < 2 or len(classes) != n:
        raise ValueError(f"need at least 2 images with one class name each, got {n} images, {len(classes)} names")
    out_img, out_mask, label, defect, cls = (
        [images],
        [torch.zeros(n, 1, *images.shape[-2:])],
        [0] * n,
        ["good"] * n,
        list(classes),
    )
    for family, i, donor, rng in defect_draws(n, seed, families):
        x, m = damage(images[i], family, rng, images[donor])
        out_img.append(x[None])
        out_mask.append(m[None])
        label.append(1)
        defect.append(family)
        cls.append(classes[i])
    return {
        "image": torch.cat(out_img),
        "mask": torch.cat(out_mask),
        "label": torch.tensor(label),
        "defect": defect,
        "cls": cls,
    }


def semantic_set(normals: torch.Tensor, anomalies: torch.Tensor, group: str = "semantic") -> dict:
    """A validation set of semantic anomalies, in `synthetic_defects`' form: `normals` `(N,3,H,W)` of the classes a
    model was trained on (label 0) against whole images of a class it never saw, `anomalies` `(M,3,H,W)` (label
    1, defect "unseen class", an all-zero mask: the whole image is the anomaly, there is no region to find). One
    group, so that one AUROC compares every normal with every foreign image. Made from training images only
    when the foreign class is a normal class held out of training (`benchmarks/dual_semantic_validation.py`);
    our construction, in the spirit of the leave-one-class-out protocol of semantic anomaly detection."""
    if len(normals) == 0 or len(anomalies) == 0:
        raise ValueError(f"need normals and anomalies, got {len(normals)} and {len(anomalies)}")
    if normals.shape[1:] != anomalies.shape[1:]:
        raise ValueError(f"normals {tuple(normals.shape[1:])} and anomalies {tuple(anomalies.shape[1:])} differ")
    n, m = len(normals), len(anomalies)
    return {
        "image": torch.cat([normals, anomalies]),
        "mask": torch.zeros(n + m, 1, *normals.shape[-2:]),
        "label": torch.tensor([0] * n + [1] * m),
        "defect": ["good"] * n + ["unseen class"] * m,
        "cls": [group] * (n + m),
    }


__all__ = [
    "FAMILIES",
    "damage",
    "defect_draws",
    "region_mask",
    "semantic_set",
    "synthetic_batches",
    "synthetic_defects",
]
