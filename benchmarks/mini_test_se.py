"""How precise is one seed's mean image AUROC on mini's test split? (issue 14, item 2: "a standard error ≤ 1
point per seed"). For the seed-0 runs of notebooks 1 and 5 (multi-class RD and the dual student on brick, grass,
cat, cameraman; 128 px, 400 steps), the test images of each class are resampled with replacement, normals and
defects separately (a stratified bootstrap), and the mean over classes of the image AUROC is recomputed; the
standard deviation of those means is the standard error of the one-seed figure. Since that error shrinks like
1/√n, the last column is how many times mini's test images per class the target would take — if the new images
were independent, which mini's are not quite: each class's test crops are cut from one photograph (the textures
from the same 40 % of it), so more crops would shrink this bootstrap SE without adding independent evidence.

    ADKIT_DATA=data OMP_NUM_THREADS=2 python benchmarks/mini_test_se.py [--resamples 1000]

Reads the cached runs (trains them if `data/runs` lacks them); prints one line per model and writes nothing.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

CLASSES = ("brick", "grass", "cat", "cameraman")
TARGET = 1.0  # points of image AUROC


def bootstrap_se(preds: dict, key: str, resamples: int, seed: int = 0) -> tuple[float, float, int]:
    """(mean image AUROC, its bootstrap standard error, test images per class), both in points; `preds` is
    `evaluate(..., return_preds=True)`'s second value, `key` the score to rank by."""
    from adkit.metrics import image_auroc

    rng = np.random.default_rng(seed)
    per_class = []
    for cls in CLASSES:
        p = preds[cls]
        labels, scores = np.asarray(p["label"]), np.asarray(p[key], dtype=np.float64)
        per_class.append((scores[labels == 0], scores[labels == 1]))
    point = 100 * np.mean([image_auroc(np.r_[n, a], np.r_[np.zeros(len(n)), np.ones(len(a))]) for n, a in per_class])
    means = []
    for _ in range(resamples):
        aurocs = []
        for n, a in per_class:
            n_b, a_b = rng.choice(n, len(n)), rng.choice(a, len(a))
            aurocs.append(image_auroc(np.r_[n_b, a_b], np.r_[np.zeros(len(n_b)), np.ones(len(a_b))]))
        means.append(100 * np.mean(aurocs))
    n_images = len(per_class[0][0]) + len(per_class[0][1])
    return float(point), float(np.std(means, ddof=1)), n_images


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resamples", type=int, default=1000)
    a = ap.parse_args(argv)
    if a.resamples < 2:
        ap.error("--resamples must be at least 2")
    from adkit.evaluation import evaluate
    from adkit.training import cached_run, protocol_configs

    common = dict(data="mini", root=None, backbone="efficientnet_lite0", image_size=128, batch_size=8, seed=0)
    print(f"seed 0, {a.resamples} stratified bootstrap resamples of each class's test images; points of AUROC")
    for model, key in (("rd", "score"), ("dual", "score_noisy_or")):
        cfg = protocol_configs(model, 100, CLASSES, **common)["multi-class"]
        _, preds = evaluate(cached_run(cfg, progress=False), progress=False, save=False, return_preds=True)
        point, se, n = bootstrap_se(preds, key, a.resamples)
        print(
            f"{model:5s} mean image AUROC {point:.1f}, bootstrap SE {se:.2f} with {n} test images per class; "
            f"SE ≤ {TARGET:g} needs about {max(1.0, (se / TARGET) ** 2):.0f}× as many"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
