"""Time `metrics.summarize` (image + pixel AUROC, AP, F1-max, AUPRO) on a realistic evaluation set.

    python benchmarks/metrics_speed.py                       # this checkout's adkit.metrics
    git show 8247c78:adkit/metrics.py > /tmp/metrics_old.py  # an older version, for comparison
    python benchmarks/metrics_speed.py --module /tmp/metrics_old.py

Default set: 80 maps of 128x128 (float32, smooth like a blurred anomaly map), 40 of them with 1-3
rectangular defects. Prints the median wall time of `--repeat` calls after one warm-up, and the values
(so two versions can be checked to agree).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time

import numpy as np
from scipy import ndimage


def problem(n: int = 80, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n // 2, n):
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, size - 8, 2)
            h, w = rng.integers(4, size // 4, 2)
            masks[i, r : r + h, c : c + w] = 1
    noise = ndimage.gaussian_filter(rng.random((n, size, size)), sigma=(0, 4, 4))
    amaps = (noise + 0.05 * ndimage.gaussian_filter(masks.astype(float), sigma=(0, 2, 2))).astype(np.float32)
    labels = masks.reshape(n, -1).max(1)
    scores = amaps.reshape(n, -1).max(1)
    return scores, labels, amaps, masks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--module", help="path of a metrics.py to time instead of adkit.metrics")
    p.add_argument("--n", type=int, default=80)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    if a.module:
        spec = importlib.util.spec_from_file_location("metrics_under_test", a.module)
        metrics = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(metrics)
    else:
        from adkit import metrics
    scores, labels, amaps, masks = problem(a.n, a.size)
    res = metrics.summarize(scores, labels, amaps, masks)  # warm-up
    times = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        res = metrics.summarize(scores, labels, amaps, masks)
        times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "module": a.module or "adkit.metrics",
                "n": a.n,
                "size": a.size,
                "repeat": a.repeat,
                "median_s": round(statistics.median(times), 4),
                "min_s": round(min(times), 4),
                "values": res,
            }
        )
    )


if __name__ == "__main__":
    main()
