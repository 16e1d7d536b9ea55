"""Peak memory and step time of the teacher-feature cache on a synthetic class of N images.

    python benchmarks/cache_rss.py --compare           # 150 vs 1,500 images, budget 256 MB, spill and the old path
    python benchmarks/cache_rss.py --n 1500 --budget-mb 64 --overflow recompute   # one measurement

Each measurement runs in its own process (peak RSS is per process): it builds the cache for N PNG files
(written once to --data-dir, decoded by adkit.data.ImageDataset), then runs --steps training steps of RD on
efficientnet_lite0 (embedded weights) with batches drawn by seeded random indices. `--overflow legacy` is
the path the training loop had before the cache: every image read into one fp32 tensor, features by
the loop before the cache (fp32, `torch.cat`; `legacy_teacher_features` here). Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    kb = resource.getrusage(who).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def rss_now() -> dict:
    """Current resident memory by kind (Linux /proc/self/status), MB: anonymous, file-backed, shared memory."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                out[key] = round(int(val.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def write_class(folder: Path, n: int, size: int) -> Path:
    """n smooth-noise RGB PNGs (compressible like photos, not constant): written once, reused."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    out = folder / f"synthetic-{size}px"
    out.mkdir(parents=True, exist_ok=True)
    have = len(list(out.glob("*.png")))
    rng = np.random.default_rng(have)
    for i in range(have, n):
        arr = ndimage.gaussian_filter(rng.random((size, size, 3)), sigma=(3, 3, 0))
        arr = (255 * (arr - arr.min()) / (np.ptp(arr) + 1e-9)).astype(np.uint8)
        Image.fromarray(arr).save(out / f"{i:06d}.png")
    return out


def legacy_teacher_features(teacher, images, batch_size: int = 32) -> list:
    """How `train.fit` held teacher features before the cache: fp32, every image, joined by `torch.cat`."""
    import torch

    with torch.no_grad():
        chunks = [teacher(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return [torch.cat([c[s] for c in chunks]) for s in range(len(chunks[0]))]


def measure(a: argparse.Namespace) -> dict:
    import torch

    from adkit import backbones, data, models
    from adkit.featcache import FeatureCache
    from adkit.loop import batch_indices

    folder = Path(a.data_dir) / f"synthetic-{a.image_size}px"
    paths = sorted(folder.glob("*.png"))[: a.n]
    assert len(paths) == a.n, f"{folder}: {len(paths)} images, {a.n} asked (run with --compare to write them)"
    ds = data.ImageDataset([data.Record(path=str(p), label=0, cls="synthetic") for p in paths], a.image_size)
    torch.manual_seed(0)
    teacher = backbones.create(backbones.EMBEDDED)
    model = models.create("rd", teacher=teacher)
    opt = model.configure_optimizer()
    rss_start = peak_rss_mb()
    t0 = time.perf_counter()
    idx_batches = [batch_indices(a.n, a.batch_size, 0, s) for s in range(a.steps)]
    if a.overflow == "legacy":
        images = data.load_all(ds)["image"]
        t_feats = legacy_teacher_features(teacher, images)
        batches = ((images[i], [t[i] for t in t_feats]) for i in idx_batches)
        info = {"n_ram": a.n, "spill_mb": 0.0}
    else:
        cache = FeatureCache(
            teacher, ds, budget_mb=a.budget_mb, overflow=a.overflow, spill_dir=a.spill_dir, num_workers=a.workers
        )
        batches = cache.batches(idx_batches)
        info = {
            "n_ram": cache.n_ram,
            "spill_mb": round(cache.spill_bytes / 2**20, 1),
            "cache_ram_mb": round(cache.ram_bytes / 2**20, 1),
        }
    build_s = time.perf_counter() - t0
    rss_built, now_built = peak_rss_mb(), rss_now()
    fetch, step = [], []
    model.train()
    for _ in range(a.steps):
        t1 = time.perf_counter()
        x, t = next(batches)
        t2 = time.perf_counter()
        loss = model.loss(model(x, t))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        fetch.append(t2 - t1)
        step.append(time.perf_counter() - t1)
    return {
        "n": a.n,
        "overflow": a.overflow,
        "budget_mb": a.budget_mb,
        "image_size": a.image_size,
        "batch_size": a.batch_size,
        "steps": a.steps,
        "threads": torch.get_num_threads(),
        **info,
        "build_s": round(build_s, 2),
        "fetch_ms_median": round(1000 * statistics.median(fetch), 2),
        "step_ms_median": round(1000 * statistics.median(step), 1),
        "peak_rss_before_build_mb": round(rss_start, 1),
        "peak_rss_after_build_mb": round(rss_built, 1),
        "rss_after_build": now_built,
        "rss_after_steps": rss_now(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "children_peak_rss_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1),
    }


def compare(a: argparse.Namespace) -> None:
    write_class(Path(a.data_dir), max(a.sizes), a.image_size)
    rows = []
    for overflow in a.modes:
        for n in a.sizes:
            cmd = (
                [
                    sys.executable,
                    __file__,
                    "--n",
                    str(n),
                    "--overflow",
                    overflow,
                    "--budget-mb",
                    str(a.budget_mb),
                    "--steps",
                    str(a.steps),
                    "--batch-size",
                    str(a.batch_size),
                    "--image-size",
                    str(a.image_size),
                    "--data-dir",
                    a.data_dir,
                ]
                + (["--spill-dir", a.spill_dir] if a.spill_dir else [])
                + (["--workers", str(a.workers)] if a.workers is not None else [])
            )
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            print(out, flush=True)
            rows.append(json.loads(out))
    for overflow in a.modes:
        r = {row["n"]: row for row in rows if row["overflow"] == overflow}
        small, big = r[min(a.sizes)], r[max(a.sizes)]
        print(
            f"# {overflow}: peak RSS {big['peak_rss_mb']:.0f} MB for {big['n']} images vs "
            f"{small['peak_rss_mb']:.0f} MB for {small['n']}: x{big['peak_rss_mb'] / small['peak_rss_mb']:.2f}; "
            f"step {big['step_ms_median']:.0f} vs {small['step_ms_median']:.0f} ms, "
            f"fetch {big['fetch_ms_median']:.1f} vs {small['fetch_ms_median']:.1f} ms"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=150)
    p.add_argument("--overflow", default="spill", choices=["spill", "recompute", "legacy"])
    p.add_argument("--budget-mb", type=float, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--spill-dir", default=None)
    p.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "adkit-cache-rss"))
    p.add_argument("--compare", action="store_true", help="run every --modes x --sizes in its own process")
    p.add_argument("--sizes", type=int, nargs="+", default=[150, 1500])
    p.add_argument("--modes", nargs="+", default=["spill", "legacy"])
    a = p.parse_args()
    if a.compare:
        compare(a)
    else:
        print(json.dumps(measure(a)))


if __name__ == "__main__":
    main()
