"""Training runs: one-class (a model per class) or multi-class (one model, batches mixing classes).

    cfg = TrainConfig(data="mini", setting="multi-class", model="rd", iters=1000)
    run = train(cfg, "runs/rd-multi")              # a run folder; an interrupted one resumes
    run = cached_run(cfg)                          # the same, once per settings, under $ADKIT_DATA/runs

The orchestration around the loop: check every setting before a file is written (`preflight`), lay out and lock
the run folder, build each model and its feature cache, and hand them to `fit` (`adkit.loop`, the loop itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import torch

from . import backbones, checkpoint, data, distributed, models, runs
from .config import ALL, VERSION, TrainConfig, revision_entry
from .errors import UsageError
from .featcache import FeatureCache
from .loop import Checkpoints, fit
from .runtime import device_default

CHECKPOINT_FORMAT = checkpoint.FORMAT  # part of a cached run's key: a new format retrains


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
    records = data.run_records(cfg)
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
    cfg = _settings_for(out, cfg)
    records, teacher = preflight(cfg)
    device = distributed.init(device or (torch.device(cfg.device) if cfg.device else device_default()))
    teacher = teacher.to(device)
    classes = sorted({r.cls for r in records})
    todo = [name for name in runs.model_names(cfg, classes) if not _finished(out, cfg, name)]
    spill_dir = next(p for p in (out, *out.parents) if p.is_dir())  # beyond the budget, features spill beside the run
    feed = models.input_teacher(cfg.model, teacher, **model_options(cfg))  # what the feature cache stores

    def images_of(name: str) -> FeatureCache:
        recs = [r for r in records if name in (ALL, r.cls)]
        ds = data.ImageDataset(recs, cfg.image_size)
        return FeatureCache(feed, ds, budget_mb=cfg.cache_mb, spill_dir=spill_dir, device=device, progress=progress)

    first = images_of(todo[0]) if todo else None  # an unreadable image fails here, before anything is written
    main = distributed.is_main()  # under torchrun rank 0 alone writes (and holds the lock)
    with runs.RunLock(out) if main else contextlib.nullcontext():
        if main:
            runs.remove_temporary_files(out)
            if not (out / runs.SETTINGS_FILE).is_file():
                checkpoint.write_json(out / runs.SETTINGS_FILE, runs.settings_dict(cfg, classes))
        distributed.barrier()
        for name in todo:
            images, first = (first if first is not None else images_of(name)), None
            with images:
                _train_model(cfg, out, name, images, teacher, classes, progress)
    return out


def _settings_for(out: Path, cfg: TrainConfig) -> TrainConfig:
    """`cfg` as run folder `out` stores it (an explicit data root made absolute), checked against the folder: it
    must be a folder, and one that holds no run with other settings."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder — choose another --out")
    if cfg.root is not None and not Path(cfg.root).is_absolute():
        cfg = dataclasses.replace(cfg, root=str(Path(cfg.root).resolve()))
    if (out / runs.SETTINGS_FILE).is_file() and runs.read_settings(out)[0] != cfg:
        raise UsageError(
            f"{out / runs.SETTINGS_FILE}: this folder holds a run with other settings — use a new --out folder or "
            "delete it"
        )
    return cfg


def _finished(out: Path, cfg: TrainConfig, name: str) -> bool:
    """Whether model `name` of the run in `out` has finished training (its checkpoint checked against the run)."""
    ckpt = runs.checkpoint_path(out, name)
    info = checkpoint.read_info(ckpt) if ckpt.is_file() else {}
    if not info.get("done"):
        return False
    runs.check_checkpoint(ckpt, info, cfg, name)
    return True


def _train_model(
    cfg: TrainConfig, out: Path, name: str, images: FeatureCache, teacher, classes: list[str], progress: bool
) -> None:
    """Build model `name` of a run (seeded) and `fit` it on `images`, checkpointing into the run folder."""
    torch.manual_seed(cfg.seed)  # student initialisation
    model = build_model(cfg, teacher).to(images.device)
    identity = runs.checkpoint_identity(cfg, name)
    settings = dict(model.settings(), classes=[name] if name != ALL else classes, **identity)
    plan = Checkpoints(runs.checkpoint_path(out, name), settings, cfg.save_every, cfg.save_minutes)
    desc = f"{cfg.model} {name}"
    fit(model, images, cfg.iters, cfg.batch_size, cfg.seed, checkpoints=plan, progress=progress, desc=desc, amp=cfg.amp)


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
