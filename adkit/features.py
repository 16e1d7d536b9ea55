"""Feature spaces of a teacher–student model, for looking at them: pooled image features, patch features,
and a 2-D UMAP embedding.

    feats = extract(model, images)                         # {"teacher": [...], "student": [...]}, per stage
    X = pooled_features(feats, "residual")                 # (N, D): one vector per image
    P = patch_features(feats, "student", stage=2, masks=masks)   # sampled positions, with their image and label
    xy = embed_umap(X, seed=0)                             # (N, 2)
    a = residual_patch_auroc(feats, masks, image_classes, stage=2)   # notebook 3's patch measure

Features are compared by direction (the distillation losses and maps are cosine-based), so every position's
feature vector is L2-normalised along channels first; the residual is `t̂ − ŝ`, the part of the teacher the
student does not reproduce — what the anomaly map measures.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .batches import concat, in_batches

KINDS = ("teacher", "student", "residual")


def extract(model, images: torch.Tensor, batch_size: int = 32) -> dict[str, list[torch.Tensor]]:
    """Teacher and student features `(N,C,h,w)` per stage (CPU, float32) of images `(N,3,H,W)` in [0, 1]."""

    def feats(x):
        out = model(x)
        return {
            "teacher": [t.float().cpu() for t in out["t_feats"]],
            "student": [s.float().cpu() for s in out["s_feats"]],
        }

    device = model.student_device
    return in_batches(feats, images, batch_size, device, model=model)


def stage_maps(feats: dict[str, list[torch.Tensor]], kind: str) -> list[torch.Tensor]:
    """Per-stage maps `(N,C,h,w)` of one kind, each position's vector unit-normalised along channels."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    t = [F.normalize(f, dim=1, eps=1e-8) for f in feats["teacher"]]
    s = [F.normalize(f, dim=1, eps=1e-8) for f in feats["student"]]
    if kind == "teacher":
        return t
    if kind == "student":
        return s
    return [a - b for a, b in zip(t, s, strict=True)]  # residual: t̂ − ŝ


def pooled_features(
    feats: dict[str, list[torch.Tensor]], kind: str = "student", stages: tuple[int, ...] | None = None
) -> np.ndarray:
    """One vector per image `(N, D)`: each stage's normalised map averaged over positions, scaled to unit
    length (so that stages weigh alike), then concatenated over `stages` (default: all)."""
    maps = stage_maps(feats, kind)
    stages = tuple(range(len(maps))) if stages is None else stages
    parts = [F.normalize(maps[k].mean(dim=(2, 3)), dim=1, eps=1e-8) for k in stages]
    return torch.cat(parts, dim=1).numpy()


def patch_features(
    feats: dict[str, list[torch.Tensor]],
    kind: str = "student",
    stage: int = 2,
    masks: np.ndarray | torch.Tensor | None = None,
    per_image: int = 16,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Feature vectors at `per_image` random positions of each image at one stage.

    Returns {"X": (M, C), "image": (M,) image index, "y", "x": grid position, "inside": (M,) whether the
    position lies in the defect mask (masks `(N,H,W)` resized to the grid; all False without masks)}.
    On images with a mask, half the positions (when there are enough) are drawn inside it, so that small
    defects are represented at all.
    """
    fmap = stage_maps(feats, kind)[stage]  # (N,C,h,w)
    n, c, h, w = fmap.shape
    if masks is not None:
        m = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
        m = m[:, None] if m.ndim == 3 else m
        inside_grid = F.interpolate(m, size=(h, w), mode="area")[:, 0] > 0.5  # (N,h,w)
    else:
        inside_grid = torch.zeros(n, h, w, dtype=torch.bool)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        flat_in = np.flatnonzero(inside_grid[i].numpy().ravel())
        flat_out = np.setdiff1d(np.arange(h * w), flat_in)
        k_in = min(len(flat_in), per_image // 2)
        pick = np.r_[
            rng.choice(flat_in, k_in, replace=False) if k_in else np.zeros(0, int),
            rng.choice(flat_out, min(len(flat_out), per_image - k_in), replace=False),
        ]
        rows.extend((i, int(p)) for p in pick)
    idx = np.array([r[0] for r in rows])
    pos = np.array([r[1] for r in rows])
    ys, xs = pos // w, pos % w
    X = fmap[idx, :, ys, xs].numpy()  # (M, C)
    inside = inside_grid[idx, ys, xs].numpy()
    return {"X": X, "image": idx, "y": ys, "x": xs, "inside": inside}


def residual_patch_auroc(
    feats: dict[str, list[torch.Tensor]],
    masks: np.ndarray | torch.Tensor,
    image_classes,
    stage: int = 2,
    per_image: int = 8,
    seed: int = 0,
) -> float:
    """How well the residual's length tells defect patches from normal ones: at the positions `patch_features`
    draws (`per_image` per image, `seed`), the AUROC of `‖t̂ − ŝ‖` with the mask as the label, within each class
    (`image_classes`: one name per image), averaged over the classes. Notebook 3 computes it by hand first."""
    from sklearn.metrics import roc_auc_score

    P = patch_features(feats, "residual", stage, masks, per_image, seed=seed)
    length, cls = np.linalg.norm(P["X"], axis=1), np.asarray(image_classes)[P["image"]]
    return float(np.mean([roc_auc_score(P["inside"][cls == c], length[cls == c]) for c in dict.fromkeys(cls)]))


def embed_umap(
    X: np.ndarray,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    n_epochs: int | None = 200,
) -> np.ndarray:
    """A 2-D UMAP embedding `(N, 2)` of the rows of `X`, deterministic for a seed (single-threaded)."""
    import warnings

    import umap  # imported here: its first use compiles numba code (tens of seconds)

    X = np.asarray(X, dtype=np.float32)
    n_neighbors = max(2, min(n_neighbors, len(X) - 1))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")  # a fixed random_state forces one thread
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=n_neighbors,
            min_dist=min_dist,
            metric=metric,
            random_state=seed,
            n_epochs=n_epochs,
        )
        return reducer.fit_transform(X).astype(np.float32)


def extract_run(models: dict, images: dict[str, torch.Tensor], batch_size: int = 32) -> dict[str, list[torch.Tensor]]:
    """`extract` over classes, each class's images through the model that scores it (its own one-class
    model, or the run's shared one); stages concatenated in the order of `images`."""
    from .runs import model_for

    parts = [extract(model_for(models, cls), x, batch_size) for cls, x in images.items()]
    return concat(parts)


@torch.no_grad()
def class_similarity(teacher, images: dict[str, torch.Tensor], batch_size: int = 32) -> tuple[list[str], np.ndarray]:
    """How alike the classes look to a frozen teacher, before any student is trained: each image becomes its
    pooled, normalised teacher features (`pooled_features`), each class the mean of its images' vectors, and
    the result is the cosine similarity of every pair of class means `(K, K)` (1 on the diagonal).

    `images`: class -> `(N,3,H,W)` in [0, 1] (e.g. a few training normals per class)."""
    device = next(iter(teacher.parameters())).device
    means = []
    for x in images.values():
        stages = in_batches(lambda b: [f.float().cpu() for f in teacher(b)], x, batch_size, device)
        pooled = torch.from_numpy(pooled_features({"teacher": stages, "student": stages}, "teacher"))
        means.append(F.normalize(pooled.mean(dim=0), dim=0))
    M = torch.stack(means)
    return list(images), (M @ M.T).numpy()
