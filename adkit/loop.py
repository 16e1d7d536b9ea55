"""The training loop: `fit` trains one model on normal images and knows nothing model-specific.

    history = fit(model, images, 1000, batch_size=16, seed=0)                       # in memory
    history = fit(model, images, 1000, checkpoints=Checkpoints(path, settings))     # resumable

It calls only the model API (`forward`, `loss`, `configure_optimizer`; `calibrate` through `adkit.calibration`).
Teacher features of the (un-augmented) training images are computed once and reused every step
(`adkit.featcache`). Batches are drawn from a generator seeded by (seed, step), so a resumed run draws exactly the
batches an uninterrupted one would. The pieces beside the loop: `resume` picks a partial run up from its
checkpoint, `Checkpoints` says where and when checkpoints are written, `StopSignals` turns SIGINT/SIGTERM into a
clean stop, `train_step` is one optimiser step.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import calibration, checkpoint, distributed, runs
from .config import TrainConfig
from .errors import AdkitError, SettingsError
from .featcache import FeatureCache
from .models.base import ADModel
from .runtime import share_cpus

IDENTITY_KEYS = ("name", "train", "model", "config")  # what a resumed checkpoint must share with its run


class Interrupted(AdkitError):
    """Training stopped by SIGINT/SIGTERM after writing a checkpoint at the current step."""

    exit_code = 130


@dataclass(frozen=True)
class Checkpoints:
    """Where and when `fit` writes checkpoints (weights, optimizer and RNG states, `settings`, step, loss history):
    every `every` steps, every `minutes` minutes, at the end, and on SIGINT/SIGTERM. `settings` are stored as
    JSON stores them; a checkpoint found at `path` resumes the run if it shares their `IDENTITY_KEYS`."""

    path: Path
    settings: dict = field(default_factory=dict)
    every: int = TrainConfig.save_every
    minutes: float | None = TrainConfig.save_minutes

    def __post_init__(self):
        object.__setattr__(self, "settings", json.loads(json.dumps(self.settings)))  # tuples become lists


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The indices into `n` images of step `step`'s batch: a function of (seed, step) alone."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, n, (batch_size,), generator=g)


def fit(
    model: ADModel,
    images: torch.Tensor | Dataset | FeatureCache,
    iters: int,
    batch_size: int = TrainConfig.batch_size,
    seed: int = TrainConfig.seed,
    *,
    checkpoints: Checkpoints | None = None,
    progress: bool = True,
    desc: str = "training",
    callback=None,
    amp: str = TrainConfig.amp,
    cache_mb: float | None = TrainConfig.cache_mb,
    spill_dir: str | Path | None = None,
) -> list[dict]:
    """Train `model` on normal `images` (N,3,H,W) for `iters` steps and calibrate it (`adkit.calibration`);
    returns the loss history (one dict per step), `callback(step, losses)` after each step. With `checkpoints`
    a partial run is resumed and ends with the same weights as an uninterrupted one. `images` may be a dataset or
    a `FeatureCache`; teacher features are kept as fp16 within `cache_mb` (default: a quarter of the free memory)
    and spilled to a file in `spill_dir` beyond it. Under torchrun each rank trains on its share of every batch
    (DDP) and rank 0 alone writes; `amp="bf16"` runs the forward and loss under bf16 autocast."""
    device = model.student_device
    torch.manual_seed(seed)
    opt = model.configure_optimizer()
    start, history, seconds = resume(model, opt, checkpoints, iters)
    if start >= iters:
        return history
    cache = images if isinstance(images, FeatureCache) else _feature_cache(model, images, cache_mb, spill_dir, progress)
    fit_idx, cal_idx = calibration.split(model, len(cache), seed, say=start == 0 and distributed.is_main())
    finish = functools.partial(calibration.calibrate, model, cache, fit_idx, cal_idx, seed)
    writer = _Writer(checkpoints, model, opt, history, iters, seconds, finish, desc) if checkpoints else None
    model.train()
    bar = _progress_bar(start, iters, desc, progress)
    # the images of each step: the (seed, step) batch over the training part, this rank's share of it
    steps = range(start, iters)
    batches = cache.batches(fit_idx[distributed.share(batch_indices(len(fit_idx), batch_size, seed, s))] for s in steps)
    owned = contextlib.closing(cache) if cache is not images else contextlib.nullcontext()  # ours: spill file goes
    with owned, writer or contextlib.nullcontext(), _training_layout(model, device) as layout:
        net = distributed.wrap(model, device)  # the model itself for one process
        with distributed.cpu_sync_batch_norm(), contextlib.closing(bar):
            for step, batch in zip(bar, batches):
                share_cpus()  # fewer threads while other processes keep the CPUs busy (adkit.runtime)
                row = train_step(net, model, opt, batch, device, layout, amp, first=step == start)
                history.append(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
                if callback is not None:
                    callback(step, row)
                if writer is not None:
                    writer.after_step(step + 1)
        share_cpus.restore()
        distributed.barrier()
        if writer is None:
            finish()
    model.eval()
    return history


def train_step(net, model: ADModel, opt, batch, device, layout, amp: str, first: bool = False) -> dict[str, float]:
    """One optimiser step on `batch` (images, teacher features: this rank's share); the losses as floats, averaged
    over ranks. `net` is the model or its DDP wrapper; `first`: the first step of this process."""
    x, t_feats = batch
    if layout is not None:
        x = x.contiguous(memory_format=layout)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
        out = net(x, t_feats)
        losses = model.loss(out)
    opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    opt.step()
    if first and distributed.active():
        distributed.broadcast_state(model)  # e.g. CRAM's k-means init saw only this rank's share
    return distributed.mean_row({k: float(v.detach()) for k, v in losses.items()}, device)


def resume(model: ADModel, opt, checkpoints: Checkpoints | None, iters: int) -> tuple[int, list[dict], float]:
    """The step, loss history and training seconds a run goes on from: the partial (or finished) run's in
    `checkpoints.path`, whose weights, optimizer and RNG states are loaded, or `(0, [], 0.0)`. A checkpoint
    written with other settings is refused."""
    if checkpoints is None or not Path(checkpoints.path).is_file():
        return 0, [], 0.0
    path, settings = Path(checkpoints.path), checkpoints.settings
    ck = checkpoint.load(path)
    mismatch = [k for k in IDENTITY_KEYS if k in settings and ck.info.get(k) != settings[k]]
    if mismatch:
        raise SettingsError(
            f"{path}: this checkpoint was written with other {', '.join(mismatch)} — delete "
            "it to retrain this model, or resume with the settings that wrote it"
        )
    runs.load_student_state(model, ck.model_state, path)
    start = int(ck.info.get("step", 0))
    if ck.optimizer_state is not None and start < iters:
        opt.load_state_dict(ck.optimizer_state)
    checkpoint.set_rng_state(ck.rng)
    return start, list(ck.info.get("history", [])), float(ck.info.get("train_seconds", 0.0))


class _Writer:
    """Writes `Checkpoints` while `fit` trains: when due (`due`), and at once when a stop signal reached any rank
    (then `Interrupted`). The last one comes after `finish` (the calibration), so the finished file holds it.
    While active (a context manager), SIGINT/SIGTERM are `StopSignals`."""

    def __init__(self, plan: Checkpoints, model, opt, history: list, iters: int, seconds: float, finish, desc: str):
        self.plan, self.model, self.opt, self.history, self.iters = plan, model, opt, history, iters
        self.seconds, self.finish, self.desc = seconds, finish, desc
        self.device = model.student_device
        self.stop = StopSignals(True)
        self.t0 = self.last = time.monotonic()

    def __enter__(self) -> _Writer:
        self.stop.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.__exit__(*exc)

    def due(self, done: int) -> bool:
        late = self.plan.minutes is not None and time.monotonic() - self.last >= 60 * self.plan.minutes
        return done % self.plan.every == 0 or done == self.iters or late

    def after_step(self, done: int) -> None:
        stopping = distributed.any_rank(self.stop.received is not None, self.device)
        if stopping or self.due(done):
            self.save(done)
        if stopping and done < self.iters:
            distributed.barrier()  # rank 0 has written the checkpoint
            raise Interrupted(
                f"{self.plan.path}: {self.desc} interrupted at step {done} of {self.iters}, checkpoint written — "
                "run the same command again to resume"
            )

    def save(self, done: int) -> None:
        end = done == self.iters
        if end:
            self.finish()
        if distributed.is_main():
            seconds = self.seconds + time.monotonic() - self.t0
            info = dict(self.plan.settings, step=done, done=end, history=self.history, train_seconds=seconds)
            state = self.model.student_state_dict()
            checkpoint.save(self.plan.path, state, info, None if end else self.opt, checkpoint.rng_state())
        self.last = time.monotonic()


class StopSignals:
    """While training with checkpoints: SIGINT/SIGTERM set a flag the loop reads after each step (so the
    step in progress completes and its state is consistent); a second signal stops at once."""

    def __init__(self, active: bool):
        self.active = active and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame):
        if self.received is not None:  # second signal: give up on the clean stop
            self.__exit__()
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopSignals:
        if self.active:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):  # not settable here (e.g. an embedded interpreter)
                    pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _feature_cache(model: ADModel, images, budget_mb: float | None, spill_dir, progress: bool) -> FeatureCache:
    """The teacher features of `images` (computed once, fp16 within `budget_mb`, spilled beyond it), on the
    model's device."""
    device = model.student_device
    return FeatureCache(model.teacher, images, budget_mb, spill_dir, device=device, progress=progress)


def _progress_bar(start: int, iters: int, desc: str, progress: bool):
    # redrawn at most once a second: in a notebook every redraw is a few widget messages, and a flood of
    # them can outrun a test runner's output timeout (nbval waits 5 s for a cell's last message)
    return tqdm(
        range(start, iters),
        desc=desc,
        initial=start,
        total=iters,
        mininterval=1.0,
        disable=not progress or not distributed.is_main(),
    )


@contextlib.contextmanager
def _training_layout(model: ADModel, device: torch.device):
    """Channels-last on the CPU where a model asks for it (`ADModel.train_channels_last`), yielded (else None);
    the contiguous layout is given back when the block ends (also on an exception or a stop), so checkpoints,
    evaluation and the caller see the model as it was."""
    layout = torch.channels_last if device.type == "cpu" and model.train_channels_last else None
    if layout is not None:
        model.to(memory_format=layout)
    try:
        yield layout
    finally:
        if layout is not None:
            model.to(memory_format=torch.contiguous_format)


__all__ = ["Checkpoints", "Interrupted", "StopSignals", "batch_indices", "fit", "resume", "train_step"]
