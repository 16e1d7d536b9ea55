"""`adkit bench`: images per second of training (with and without the feature cache), inference and the
teacher alone (median of timed steps after warm-up), and peak memory.

    res = bench("rd", image_size=128, batch_size=16)
    res["train_img_s_cached"], res["train_img_s_uncached"], res["infer_img_s"], res["infer_over_teacher"]

Training *cached* draws `(x, t_feats)` from a `featcache.FeatureCache` (the teacher does not run in the
step), as `loop.fit` does; *uncached* runs the teacher forward in every step. Inference is what `adkit eval`
runs, `evaluation.predict` (maps and image scores, inference mode, channels-last for CNNs on the CPU), timed
as a test set runs it: the weights switch memory layout once, then every batch runs in it. The teacher alone
is timed in both memory layouts (each switched once) and the faster counts. `infer_over_teacher` = teacher img/s /
inference img/s: how many times slower than the teacher alone inference is. `contended_ratio` = the cached
training step's time while one identical process trains beside it, over its time alone (a fair share of 2 CPUs
between two jobs is about 2; without `runtime.share_cpus` it was several times that). Random teacher weights by default:
speed does not depend on the values. `bench_vs_anomalib` runs anomalib's Reverse Distillation (its torch
model, no Lightning trainer) next to adkit's in the same process.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from . import backbones, evaluation, models
from .config import IMAGE_SIZE
from .featcache import FeatureCache
from .runtime import device_default, share_cpus, task_state


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_step_s(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _train_step(
    m: models.ADModel, opt: torch.optim.Optimizer, x: torch.Tensor, t_feats: list[torch.Tensor] | None
) -> None:
    m.train()
    loss = m.loss(m(x, t_feats))["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _timed_steps(
    m: models.ADModel,
    teacher: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    cache: FeatureCache,
    g: torch.Generator,
    batch_size: int,
) -> dict[str, contextlib.AbstractContextManager[Callable[[], object]]]:
    """The steps `bench` times, by name: the teacher in both memory layouts, inference, training without and
    with the feature cache (the cached one last, as the contended measurement repeats it). Each is a context
    that gives the step: the layout switches happen on entering and leaving it, outside the timed steps."""
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def teacher_step():
        with torch.inference_mode():
            teacher(x)

    @contextlib.contextmanager
    def teacher_cl() -> Iterator[Callable[[], object]]:
        teacher.to(memory_format=torch.channels_last)
        try:
            with torch.inference_mode():
                yield lambda: teacher(x_cl)
        finally:
            teacher.to(memory_format=torch.contiguous_format)

    @contextlib.contextmanager
    def infer() -> Iterator[Callable[[], object]]:
        m.eval()
        with evaluation.inference_form(m, x.device):
            yield lambda: evaluation.predict(m, x, batch_size=batch_size)

    def cached_step():
        share_cpus()  # as the training loop does at every step
        idx = torch.randint(0, len(cache), (batch_size,), generator=g)
        _train_step(m, opt, *cache.batch(idx))

    return {
        "teacher": contextlib.nullcontext(teacher_step),
        "teacher_cl": teacher_cl(),
        "infer": infer(),
        "train_uncached": contextlib.nullcontext(lambda: _train_step(m, opt, x, None)),
        "train_cached": contextlib.nullcontext(cached_step),
    }


def _time_steps(
    timed: dict[str, contextlib.AbstractContextManager[Callable[[], object]]],
    steps: int,
    warmup: int,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> dict[str, float]:
    """`{name}_img_s` and `{name}_step_s` (median of `steps` after `warmup`) for every step in `timed`."""
    res = {}
    for name, step in timed.items():
        if progress:
            print(
                f"bench: timing {name.replace('_', ' ')} ({warmup} + {steps} steps of {batch_size})",
                file=sys.stderr,
                flush=True,
            )
        with step as fn:
            step_s = _median_step_s(fn, steps, warmup, device)
        res[f"{name}_img_s"] = round(batch_size / step_s, 2)
        res[f"{name}_step_s"] = round(step_s, 4)
    return res


def _rename(res: dict) -> None:
    """In place: the names the CLI's --json promises, the faster teacher layout, `infer_over_teacher`."""
    res["train_img_s_cached"] = res.pop("train_cached_img_s")
    res["train_img_s_uncached"] = res.pop("train_uncached_img_s")
    res["teacher_img_s_contiguous"] = res["teacher_img_s"]
    res["teacher_img_s"] = max(res["teacher_img_s"], res.pop("teacher_cl_img_s"))  # the faster layout
    res["teacher_step_s"] = min(res["teacher_step_s"], res.pop("teacher_cl_step_s"))
    res["infer_over_teacher"] = round(res["teacher_img_s"] / res["infer_img_s"], 3)
    # older names (tests/test_cli.py, README): training meant the teacher-in-the-step kind
    res["train_img_per_s"], res["infer_img_per_s"] = res["train_img_s_uncached"], res["infer_img_s"]


def bench(
    model: str = "rd",
    backbone: str = backbones.EMBEDDED,
    image_size: int = IMAGE_SIZE,
    batch_size: int = 16,
    steps: int = 10,
    warmup: int = 3,
    pretrained: bool = False,
    options: dict | None = None,
    device: torch.device | None = None,
    cache_images: int | None = None,
    progress: bool = False,
    contended: bool = True,
) -> dict:
    """Throughput and memory of one model; `cache_images` images (default 4 batches) fill the feature cache.
    With `progress`, one status line per timed phase on stderr; with `contended` (CPU only), also the cached
    training step beside an identical process (`contended_ratio`)."""
    device = device or device_default()
    torch.manual_seed(0)
    teacher = backbones.create(backbone, pretrained=pretrained).to(device)
    m = models.create(model, teacher=teacher, **(options or {})).to(device)
    opt = m.configure_optimizer()
    g = torch.Generator().manual_seed(0)
    n_cache = cache_images or 4 * batch_size
    # 8-bit images, as decoded files are: the cache keeps them as uint8
    pool = torch.randint(0, 256, (n_cache, 3, image_size, image_size), generator=g, dtype=torch.uint8).float() / 255
    x = pool[:batch_size].to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = _peak_rss_mb()
    cache = FeatureCache(teacher, pool, budget_mb=1024, device=device, batch_size=batch_size)
    timed = _timed_steps(m, teacher, opt, x, cache, g, batch_size)
    res = {
        "model": model,
        "backbone": backbone,
        "image_size": image_size,
        "batch_size": batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "steps": steps,
        "warmup": warmup,
        "student_params_m": round(sum(p.numel() for p in m.student_parameters()) / 1e6, 3),
    }
    res.update(_time_steps(timed, steps, warmup, batch_size, device, progress))
    if contended and device.type == "cpu":
        if progress:
            print("bench: timing train cached beside an identical process", file=sys.stderr, flush=True)
        with _neighbour(model, backbone, image_size, batch_size, options, pretrained), timed["train_cached"] as fn:
            busy_s = _median_step_s(fn, steps, warmup, device)
        share_cpus.restore()
        res["train_cached_contended_step_s"] = round(busy_s, 4)
        res["contended_ratio"] = round(busy_s / res["train_cached_step_s"], 2)
    cache.close()
    _rename(res)
    res["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    res["rss_growth_mb"] = round(_peak_rss_mb() - rss0, 1)
    if device.type == "cuda":
        res["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        res["gpu"] = torch.cuda.get_device_name()
    return res


class _neighbour:
    """An identical training loop in another process for as long as the `with` block lasts (it imports adkit, so
    it follows the same thread policy as any adkit job). Waits until it trains before entering.

    It is started through a shell that exits at once, so that it is not this process's child: `share_cpus`
    takes a job's own children (its data loader's workers) for part of the job, and another job is not."""

    def __init__(self, model, backbone, image_size, batch_size, options, pretrained=False):
        self.args = [model, backbone, image_size, batch_size, options or {}, pretrained]

    def __enter__(self):
        import json
        import subprocess

        code = "import json, sys; from adkit.bench import neighbour_loop; neighbour_loop(*json.loads(sys.argv[1]))"
        argv = [sys.executable, "-c", code, json.dumps(self.args)]
        self.shell = subprocess.Popen(["sh", "-c", '"$@" & echo $!', "sh", *argv], stdout=subprocess.PIPE, text=True)
        self.pid = int(self.shell.stdout.readline())
        self.shell.wait()
        if self.shell.stdout.readline() != "training\n":  # its model is built and its first steps ran
            self.__exit__()
            raise RuntimeError("bench: the neighbour process for the contended measurement did not start training")
        return self

    def __exit__(self, *exc):
        import signal

        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while _state(self.pid) not in ("Z", "X"):
            time.sleep(0.05)  # gone (its new parent reaps it)
        self.shell.stdout.close()


def _state(pid: int) -> str:
    try:
        return task_state(Path(f"/proc/{pid}/stat"))
    except OSError:  # reaped
        return "X"


def neighbour_loop(
    model: str, backbone: str, image_size: int, batch_size: int, options: dict, pretrained: bool = False
) -> None:
    """Train with cached teacher features until killed (`bench`'s contended measurement)."""
    torch.manual_seed(1)
    teacher = backbones.create(backbone, pretrained=pretrained)
    m = models.create(model, teacher=teacher, **options)
    opt = m.configure_optimizer()
    pool = torch.rand(4 * batch_size, 3, image_size, image_size)
    cache = FeatureCache(teacher, pool, budget_mb=1024, device=torch.device("cpu"), batch_size=batch_size)
    g = torch.Generator().manual_seed(1)
    for i in range(1_000_000):
        share_cpus()
        _train_step(m, opt, *cache.batch(torch.randint(0, len(pool), (batch_size,), generator=g)))
        if i == 2:
            print("training", flush=True)


def format_bench(res: dict) -> str:
    lines = [
        f"{res['model']} on {res['backbone']}, {res['image_size']} px, batch {res['batch_size']}, "
        f"{res['device']} ({res['threads']} threads), student {res['student_params_m']} M params",
        f"  {'':34s} {'img/s':>8s} {'ms/batch':>9s}",
    ]
    for label, rate, step in (
        ("teacher forward alone", "teacher_img_s", "teacher_step_s"),
        ("training, cached teacher features", "train_img_s_cached", "train_cached_step_s"),
        ("training, teacher in the step", "train_img_s_uncached", "train_uncached_step_s"),
        ("inference (predict)", "infer_img_s", "infer_step_s"),
    ):
        lines.append(f"  {label:34s} {res[rate]:8.1f} {res[step] * 1000:9.0f}")
    lines.append(f"  inference is {res['infer_over_teacher']:.2f}x slower than the teacher alone")
    if "contended_ratio" in res:
        lines.append(
            f"  beside an identical training process a cached step takes {res['contended_ratio']:.2f}x its time alone"
        )
    lines.append(
        f"  peak memory: {res['peak_rss_mb']:.0f} MB RSS"
        + (f", {res['peak_gpu_mb']:.0f} MB GPU" if "peak_gpu_mb" in res else "")
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# side by side with anomalib


ANOMALIB_MISSING = (
    "anomalib is not installed; it is not a dependency of adkit. Install it next to adkit "
    "(e.g. in a separate virtual environment made with --system-site-packages): pip install anomalib"
)


def bench_vs_anomalib(
    backbone: str = "resnet18",
    image_size: int = IMAGE_SIZE,
    batch_size: int = 16,
    steps: int = 10,
    warmup: int = 3,
    device: torch.device | None = None,
) -> dict:
    """adkit's RD and anomalib's ReverseDistillationModel on the same backbone, image size and batch, in this
    process; random weights for both. Raises ImportError (message `ANOMALIB_MISSING`) without anomalib.

    anomalib's RD supports ResNet backbones only (its decoder mirrors them), hence `resnet18` by default.
    """
    try:
        import anomalib
        from anomalib.models.image.reverse_distillation.loss import ReverseDistillationLoss
        from anomalib.models.image.reverse_distillation.torch_model import ReverseDistillationModel
    except ImportError as err:
        raise ImportError(ANOMALIB_MISSING) from err
    device = device or device_default()
    ours = bench("rd", backbone, image_size, batch_size, steps, warmup, device=device, contended=False)

    torch.manual_seed(0)
    theirs = ReverseDistillationModel(
        backbone, (image_size, image_size), ["layer1", "layer2", "layer3"], "multiply", pre_trained=False
    ).to(device)
    # the optimiser of anomalib's Lightning module (configure_optimizers)
    opt = torch.optim.Adam(
        list(theirs.decoder.parameters()) + list(theirs.bottleneck.parameters()), lr=0.005, betas=(0.5, 0.99)
    )
    loss_fn = ReverseDistillationLoss()
    mean = torch.tensor(backbones.IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbones.IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = torch.rand(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)

    def train_step():  # what anomalib's training_step does, less the Lightning machinery
        theirs.train()
        loss = loss_fn(*theirs((x - mean) / std))  # its pre-processor normalises; adkit's teacher does too
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer_step():
        theirs.eval()
        with torch.inference_mode():
            theirs((x - mean) / std)

    res = {
        "backbone": backbone,
        "image_size": image_size,
        "batch_size": batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "anomalib_version": anomalib.__version__,
        "adkit": ours,
    }
    for name, fn in (("train", train_step), ("infer", infer_step)):
        res[f"anomalib_{name}_img_s"] = round(batch_size / _median_step_s(fn, steps, warmup, device), 2)
    res["anomalib_student_params_m"] = round(sum(p.numel() for p in opt.param_groups[0]["params"]) / 1e6, 3)
    # > 1: adkit is faster. anomalib's encoder always runs in its training step (no feature cache)
    res["train_ratio_cached"] = round(ours["train_img_s_cached"] / res["anomalib_train_img_s"], 3)
    res["train_ratio_uncached"] = round(ours["train_img_s_uncached"] / res["anomalib_train_img_s"], 3)
    res["infer_ratio"] = round(ours["infer_img_s"] / res["anomalib_infer_img_s"], 3)
    return res


def format_vs_anomalib(res: dict) -> str:
    a = res["adkit"]
    return "\n".join(
        [
            f"Reverse Distillation on {res['backbone']}, {res['image_size']} px, batch {res['batch_size']}, "
            f"{res['device']} ({res['threads']} threads), anomalib {res['anomalib_version']}; random weights",
            f"  {'':44s} {'adkit':>8s} {'anomalib':>9s} {'adkit/anomalib':>15s}",
            f"  {'training, adkit with cached teacher features':44s} {a['train_img_s_cached']:8.1f} "
            f"{res['anomalib_train_img_s']:9.1f} {res['train_ratio_cached']:15.2f}",
            f"  {'training, both run the teacher in the step':44s} {a['train_img_s_uncached']:8.1f} "
            f"{res['anomalib_train_img_s']:9.1f} {res['train_ratio_uncached']:15.2f}",
            f"  {'inference (maps and scores)':44s} {a['infer_img_s']:8.1f} {res['anomalib_infer_img_s']:9.1f} "
            f"{res['infer_ratio']:15.2f}",
            f"  student parameters (M): adkit {a['student_params_m']}, anomalib {res['anomalib_student_params_m']}",
            "  img/s; ratios > 1 mean adkit is faster. anomalib has no feature cache: its encoder runs every step.",
            "  Both students follow RD4AD's official layout (basic blocks for resnet18/34, bottleneck blocks for",
            "  deeper ResNets); the parameter counts above say how close they are.",
        ]
    )
