"""Time training steps of RD (embedded teacher, 128 px, batch 16, cached features): the median step in ms.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_steps.py --steps 40
    python benchmarks/train_steps.py --hog        # a CPU-bound torch process to share the machine with

Used to measure how a training step slows down when another torch process runs on the same cores, with
OpenMP's ACTIVE (spinning) or PASSIVE (sleeping) wait policy (numbers in benchmarks/README.md). The policy is
read when torch loads: set it in the process's environment.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def hog() -> None:
    import torch

    x = torch.randn(768, 768)
    while True:
        x = torch.tanh(x @ x)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--hog", action="store_true")
    a = ap.parse_args()
    if a.hog:
        hog()
    import torch

    from adkit import backbones, models

    torch.manual_seed(0)
    teacher = backbones.create(backbones.EMBEDDED, pretrained=False)
    model = models.create("rd", teacher=teacher)
    opt = model.configure_optimizer()
    x = torch.rand(16, 3, 128, 128)
    with torch.no_grad():
        t_feats = teacher(x)
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = model.loss(model(x, t_feats))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    print(f"median step {1000 * statistics.median(times):.1f} ms, threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
