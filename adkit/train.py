"""Training: one-class (a model per class) or multi-class (one model, batches mixing classes).

    cfg = TrainConfig(data="mini", setting="multi-class", model="rd", iters=1000)
    run = train(cfg, "runs/rd-multi")

The loop only calls the model API (`forward`, `loss`, `configure_optimizer`, `calibrate`). Teacher
features of the (un-augmented) training images are computed once and reused every step. Batches are
drawn from a generator seeded by (seed, step), so a resumed run draws exactly the batches an
uninterrupted one would. Checkpoints are written every `save_every` steps and at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import backbones, calibration, checkpoint, data, distributed, models, runs
from .config import ALL, SETTINGS, VERSION, TrainConfig, revision_entry  # noqa: F401  (re-exported: adkit.train.TrainConfig)
from .errors import AdkitError, SettingsError, UsageError
from .featcache import FeatureCache
from .runs import model_names
from .runtime import device_default  # noqa: F401  (re-exported: adkit.train.device_default)

CHECKPOINT_FORMAT = checkpoint.FORMAT  # part of a cached run's key: a new format retrains


class Interrupted(AdkitError):
    """Training stopped by SIGINT/SIGTERM after writing a checkpoint at the current step."""

    exit_code = 130


def protocol_configs(
    model: str, steps_per_class: int, classes: tuple[str, ...] | list[str], **settings
) -> dict[str, TrainConfig]:
    """The one-class and multi-class runs of one model at equal compute: `steps_per_class` steps for each
    class's own model, classes × that for the shared one. `settings` are the other `TrainConfig` fields."""
    classes = tuple(classes)
    return {
        "one-class": TrainConfig(classes=classes, setting="one-class", model=model, iters=steps_per_class, **settings),
        "multi-class": TrainConfig(
            classes=classes, setting="multi-class", model=model, iters=steps_per_class * len(classes), **settings
        ),
    }


def model_options(cfg: TrainConfig) -> dict:
    """The model's config options of a run: its `options`, and `lr` where given."""
    options = dict(cfg.options)
    if cfg.lr is not None:
        options["lr"] = cfg.lr
    return options


def build_model(cfg: TrainConfig, teacher: backbones.Teacher | None = None) -> models.ADModel:
    if teacher is None:
        teacher = backbones.create(cfg.backbone, weights=cfg.weights)
    return models.create(cfg.model, teacher=teacher, **model_options(cfg))


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, n, (batch_size,), generator=g)


class _StopSignals:
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

    def __enter__(self) -> _StopSignals:
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


IDENTITY_KEYS = ("name", "train", "model", "config")  # what a resumed checkpoint must share with its run


def fit(
    model: models.ADModel,
    images: torch.Tensor,
    iters: int,
    batch_size: int = 16,
    seed: int = 0,
    ckpt: Path | None = None,
    settings: dict | None = None,
    save_every: int = 200,
    progress: bool = True,
    desc: str = "training",
    history: list | None = None,
    callback=None,
    save_minutes: float | None = None,
    amp: str = "off",
    cache_mb: float | None = None,
    spill_dir: str | Path | None = None,
) -> list[dict]:
    """Train `model` on normal `images` (N,3,H,W) for `iters` steps; resume from `ckpt` if it has a partial run.

    A model that calibrates (`model.calibration`) may keep a fraction of the images out of training; they
    calibrate it at the end (`adkit.calibration`). With `ckpt`, a checkpoint (weights, optimizer,
    RNG states, `settings`, step) is written every `save_every` steps, every `save_minutes` minutes, on
    SIGINT/SIGTERM (then `Interrupted` is raised) and at the end; a resumed run ends with the same weights as
    an uninterrupted one. Returns the loss history (one dict per step); `callback(step, losses)` after each.

    `images` is a tensor, a dataset of images or a `FeatureCache`: teacher features are computed once, kept as
    fp16 within `cache_mb` (default: a quarter of the free memory) and spilled to a file in `spill_dir` beyond
    it (`adkit.featcache`), so memory does not grow with the dataset.

    Under torchrun (`adkit.distributed`) each rank trains on its share of every global batch through DDP and
    rank 0 alone writes; `amp="bf16"` runs the forward and loss under bf16 autocast.
    """
    device = next(model.student_parameters().__iter__()).device
    torch.manual_seed(seed)
    opt = model.configure_optimizer()
    start, history, seconds = 0, list(history or []), 0.0
    settings = json.loads(json.dumps(settings or {}))  # as stored: tuples become lists
    if ckpt is not None and Path(ckpt).is_file():
        ck = checkpoint.load(ckpt)
        mismatch = [k for k in IDENTITY_KEYS if k in settings and ck.info.get(k) != settings[k]]
        if mismatch:
            raise SettingsError(
                f"{ckpt}: this checkpoint was written with other {', '.join(mismatch)} — delete "
                "it to retrain this model, or resume with the settings that wrote it"
            )
        runs.load_student_state(model, ck.model_state, Path(ckpt))
        start, history = int(ck.info.get("step", 0)), list(ck.info.get("history", []))
        seconds = float(ck.info.get("train_seconds", 0.0))
        if ck.optimizer_state is not None and start < iters:
            opt.load_state_dict(ck.optimizer_state)
        checkpoint.set_rng_state(ck.rng)
    if start >= iters:
        return history
    cache = (
        images
        if isinstance(images, FeatureCache)
        else FeatureCache(
            model.teacher, images, budget_mb=cache_mb, spill_dir=spill_dir, device=device, progress=progress
        )
    )
    fit_idx, cal_idx = calibration.split(model, len(cache), seed, say=start == 0 and distributed.is_main())

    def calibrate() -> None:
        calibration.calibrate(model, cache, fit_idx, cal_idx, seed)

    t0 = last_save = time.monotonic()

    def save(done: int) -> None:
        nonlocal last_save
        if done == iters:
            calibrate()
        if distributed.is_main():
            info = dict(
                settings, step=done, done=done == iters, history=history, train_seconds=seconds + time.monotonic() - t0
            )
            checkpoint.save(
                ckpt, model.student_state_dict(), info, opt if done < iters else None, checkpoint.rng_state()
            )
        last_save = time.monotonic()

    model.train()
    # channels-last on the CPU where a model asks for it (`ADModel.train_channels_last`); the layout is given
    # back when training ends, so checkpoints, evaluation and the caller see the model as it was
    layout = torch.channels_last if device.type == "cpu" and model.train_channels_last else None
    if layout is not None:
        model.to(memory_format=layout)
    net = distributed.wrap(model, device)  # the model itself for one process
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")
    # redrawn at most once a second: in a notebook every redraw is a few widget messages, and a flood of
    # them can outrun a test runner's output timeout (nbval waits 5 s for a cell's last message)
    bar = tqdm(
        range(start, iters),
        desc=desc,
        initial=start,
        total=iters,
        mininterval=1.0,
        disable=not progress or not distributed.is_main(),
    )
    # the images of each step: the (seed, step) batch over the training part, this rank's share of it
    index_batches = (
        fit_idx[distributed.share(_batch_indices(len(fit_idx), batch_size, seed, step))] for step in range(start, iters)
    )
    owned = contextlib.closing(cache) if cache is not images else contextlib.nullcontext()  # ours: spill file goes
    with owned, _StopSignals(ckpt is not None) as stop, distributed.cpu_sync_batch_norm(), _layout_back(model, layout):
        for step, (x, t_feats) in zip(bar, cache.batches(index_batches)):
            if layout is not None:
                x = x.contiguous(memory_format=layout)
            with autocast:
                out = net(x, t_feats)
                losses = model.loss(out)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            if step == start and distributed.active():
                distributed.broadcast_state(model)  # e.g. CRAM's k-means init saw only this rank's share
            row = distributed.mean_row({k: float(v.detach()) for k, v in losses.items()}, device)
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
            if callback is not None:
                callback(step, row)
            done = step + 1
            if ckpt is None:
                continue
            stopping = distributed.any_rank(stop.received is not None, device)
            due = done % save_every == 0 or done == iters
            if save_minutes is not None and time.monotonic() - last_save >= 60 * save_minutes:
                due = True
            if due or stopping:
                save(done)
            if stopping and done < iters:
                bar.close()
                distributed.barrier()  # rank 0 has written the checkpoint
                raise Interrupted(
                    f"{ckpt}: {desc} interrupted at step {done} of {iters}, checkpoint written — "
                    "run the same command again to resume"
                )
        distributed.barrier()
        if ckpt is None:
            calibrate()
    model.eval()
    return history


@contextlib.contextmanager
def _layout_back(model, layout):
    """Give `model` back in the contiguous layout when the block ends (also on an exception or a stop)."""
    try:
        yield
    finally:
        if layout is not None:
            model.to(memory_format=torch.contiguous_format)


def image_size_multiple(teacher: backbones.Teacher) -> int:
    """Input sizes a model on `teacher` accepts are multiples of this: the ViT patch size, or twice the CNN
    teacher's deepest stride (RD's bottleneck halves the stride-16 map once more)."""
    return teacher.strides[-1] if teacher.kind == "vit" else 2 * max(teacher.strides)


def preflight(cfg: TrainConfig) -> tuple[list[data.Record], backbones.Teacher]:
    """Everything that can be wrong with a run's settings, checked before a file is written: data, teacher and
    weights, model and options, image size (with one forward pass of a throwaway model)."""
    if not isinstance(cfg.options, dict):
        raise UsageError("--opt: model options must be key=value pairs")
    try:
        models.make_config(cfg.model, **model_options(cfg))
    except (ValueError, TypeError) as err:
        raise UsageError(f"--opt: {err}") from None
    if cfg.batch_size % distributed.world_size():
        raise UsageError(
            f"--batch-size {cfg.batch_size}: must split evenly over the {distributed.world_size()} "
            "processes torchrun started — use a multiple of --nproc_per_node × --nnodes"
        )
    records = data.load_records(cfg.data, cfg.root, "train", list(cfg.classes) if cfg.classes else None)
    if not records:
        raise UsageError(f"--data {cfg.data}: no training images for classes {list(cfg.classes or [])}")
    try:
        teacher = backbones.create(cfg.backbone, weights=cfg.weights)
    except (RuntimeError, ValueError) as err:
        if isinstance(err, backbones.BackboneUnavailable):
            raise
        raise UsageError(
            f"--backbone {cfg.backbone!r}: not a timm model this adkit can use ({err}) — "
            f"e.g. {backbones.EMBEDDED} (embedded) or {', '.join(list(backbones.KNOWN)[1:])}"
        ) from None
    m = image_size_multiple(teacher)
    if cfg.image_size % m:
        raise UsageError(
            f"--image-size {cfg.image_size}: must be a multiple of {m} for --model {cfg.model} on "
            f"{cfg.backbone} — e.g. {', '.join(str(m * k) for k in range(max(1, 64 // m), 64 // m + 4))}"
        )
    try:  # what a model checks against its teacher (e.g. the dual student's split or global token)
        probe = build_model(cfg, teacher).eval()
    except ValueError as err:
        raise UsageError(f"--opt: {err}") from None
    with torch.no_grad():
        probe.maps(probe(torch.zeros(1, 3, cfg.image_size, cfg.image_size)))
    return records, teacher


def train(cfg: TrainConfig, out_dir: str | Path, progress: bool = True, device: torch.device | None = None) -> Path:
    """Train every model of a run into `out_dir`; an interrupted run picks up where it stopped.

    All settings are checked before anything is written (a bad argument leaves `out_dir` untouched); an explicit
    data root is stored absolute; the folder is locked while training."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder — choose another --out")
    if cfg.root is not None and not Path(cfg.root).is_absolute():
        cfg = dataclasses.replace(cfg, root=str(Path(cfg.root).resolve()))
    settings_path = out / runs.SETTINGS_FILE
    if settings_path.is_file():
        old, _ = runs.read_settings(out)
        if old != cfg:
            raise UsageError(
                f"{settings_path}: this folder holds a run with other settings — use a new --out folder or delete it"
            )
    records, teacher = preflight(cfg)
    device = distributed.init(device or (torch.device(cfg.device) if cfg.device else device_default()))
    teacher = teacher.to(device)
    feed = models.input_teacher(cfg.model, teacher, **model_options(cfg))  # what the feature cache stores
    classes = sorted({r.cls for r in records})

    existing = out
    while not existing.is_dir():  # features beyond the budget spill beside the run (the file is unlinked at once)
        existing = existing.parent

    def images_of(name: str) -> FeatureCache:
        """The model's training images and their teacher features, within the memory budget."""
        recs = [r for r in records if name in (ALL, r.cls)]
        return FeatureCache(
            feed,
            data.ImageDataset(recs, cfg.image_size),
            budget_mb=cfg.cache_mb,
            spill_dir=existing,
            device=device,
            progress=progress,
        )

    def finished(name: str) -> bool:
        ckpt = runs.checkpoint_path(out, name)
        info = checkpoint.read_info(ckpt) if ckpt.is_file() else {}
        if not info.get("done"):
            return False
        runs.check_checkpoint(ckpt, info, cfg, name)
        return True

    todo = [name for name in model_names(cfg, classes) if not finished(name)]
    # an unreadable image fails here, before anything is written
    first = images_of(todo[0]) if todo else None
    main = distributed.is_main()  # under torchrun rank 0 alone writes (and holds the lock)
    with runs.RunLock(out) if main else contextlib.nullcontext():
        if main:
            runs.remove_temporary_files(out)
            if not settings_path.is_file():
                checkpoint.write_json(settings_path, runs.settings_dict(cfg, classes))
        distributed.barrier()
        for name in todo:
            ckpt = runs.checkpoint_path(out, name)
            images, first = (first if first is not None else images_of(name)), None
            torch.manual_seed(cfg.seed)  # student initialisation
            model = build_model(cfg, teacher).to(device)
            settings = dict(
                model.settings(), classes=[name] if name != ALL else classes, **runs.checkpoint_identity(cfg, name)
            )
            with images:
                fit(
                    model,
                    images,
                    cfg.iters,
                    cfg.batch_size,
                    cfg.seed,
                    ckpt,
                    settings,
                    cfg.save_every,
                    progress,
                    desc=f"{cfg.model} {name}",
                    save_minutes=cfg.save_minutes,
                    amp=cfg.amp,
                )
    return out


def run_key(cfg: TrainConfig) -> str:
    """A short hash of every setting of a run (and the adkit version): the cache key of `cached_run`."""
    import hashlib

    key = {"train": cfg.to_dict(results_only=True), "adkit": VERSION, "format": CHECKPOINT_FORMAT}
    blob = json.dumps({**key, **revision_entry(cfg.model)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached_run(cfg: TrainConfig, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Train `cfg` once and reuse it: the run lives in `<cache>/<model>-<setting>-<key>`, key = hash of all settings.

    A cached run is exactly what `train(cfg, ...)` writes (same code, same seed), so notebooks can share
    trained models; an interrupted one is resumed. While another process trains the same run (a second
    notebook, a parallel test worker) this waits for it and then loads its result instead of failing.
    Default cache: `$ADKIT_DATA/runs`.
    """
    cache = Path(cache_dir) if cache_dir else data.data_root() / "runs"
    run = cache / f"{cfg.model.replace('+', '_')}-{cfg.setting}-{run_key(cfg)}"

    def say(line: str) -> None:
        if progress:
            print(line, file=sys.stderr, flush=True)

    while True:
        runs.wait_while_locked(run, say)
        try:
            return train(cfg, run, progress=progress)
        except runs.RunLocked:  # another process took the lock between the wait and `train`: wait again
            continue


# the run folder's readers, kept under their old names here (notebooks import them from adkit.train)
load_run, history = runs.load_run, runs.history
