"""`adkit bench`: training and inference images per second (median of timed steps after warm-up), peak memory.

Random teacher weights by default: speed does not depend on the values. Training steps include the
teacher forward (as when features are not cached); inference is `predict` (maps and scores).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import torch

from . import backbones, models
from .train import device_default


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(model: str = "rd", backbone: str = backbones.EMBEDDED, image_size: int = 128, batch_size: int = 16,
          steps: int = 10, warmup: int = 3, pretrained: bool = False, options: dict | None = None,
          device: torch.device | None = None) -> dict:
    device = device or device_default()
    torch.manual_seed(0)
    teacher = backbones.create(backbone, pretrained=pretrained).to(device)
    m = models.create(model, teacher=teacher, **(options or {})).to(device)
    opt = m.configure_optimizer()
    x = torch.rand(batch_size, 3, image_size, image_size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = _peak_rss_mb()

    def train_step():
        m.train()
        loss = m.loss(m(x))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer_step():
        m.predict(x)

    res = {"model": model, "backbone": backbone, "image_size": image_size, "batch_size": batch_size,
           "device": str(device), "threads": torch.get_num_threads(), "steps": steps, "warmup": warmup,
           "student_params_m": round(sum(p.numel() for p in m.student_parameters()) / 1e6, 3)}
    for name, fn in (("train", train_step), ("infer", infer_step)):
        times = []
        for i in range(warmup + steps):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        res[f"{name}_img_per_s"] = round(batch_size / med, 2)
        res[f"{name}_step_s"] = round(med, 4)
    res["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    res["rss_growth_mb"] = round(_peak_rss_mb() - rss0, 1)
    if device.type == "cuda":
        res["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        res["gpu"] = torch.cuda.get_device_name()
    return res


def format_bench(res: dict) -> str:
    lines = [f"{res['model']} on {res['backbone']}, {res['image_size']} px, batch {res['batch_size']}, "
             f"{res['device']} ({res['threads']} threads), student {res['student_params_m']} M params"]
    lines.append(f"  training : {res['train_img_per_s']:8.1f} img/s  ({res['train_step_s'] * 1000:.0f} ms/step)")
    lines.append(f"  inference: {res['infer_img_per_s']:8.1f} img/s  ({res['infer_step_s'] * 1000:.0f} ms/batch)")
    lines.append(f"  peak memory: {res['peak_rss_mb']:.0f} MB RSS" +
                 (f", {res['peak_gpu_mb']:.0f} MB GPU" if "peak_gpu_mb" in res else ""))
    return "\n".join(lines)
