"""Training: one-class (a model per class) or multi-class (one model, batches mixing classes).

    cfg = TrainConfig(data="mini", setting="multi-class", model="rd", iters=1000)
    run = train(cfg, "runs/rd-multi")

The loop only calls the model API (`forward`, `loss`, `configure_optimizer`, `calibrate`). Teacher
features of the (un-augmented) training images are computed once and reused every step. Batches are
drawn from a generator seeded by (seed, step), so a resumed run draws exactly the batches an
uninterrupted one would. Checkpoints are written every `save_every` steps and at the end.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import backbones, checkpoint, data, models

SETTINGS = ("one-class", "multi-class")
ALL = "all"  # the model name of a multi-class run


@dataclass(frozen=True)
class TrainConfig:
    data: str = "mini"
    root: str | None = None
    classes: tuple[str, ...] | None = None  # None: every class of the dataset
    setting: str = "multi-class"
    model: str = "rd"
    backbone: str = backbones.EMBEDDED
    weights: str | None = None
    image_size: int = 128
    iters: int = 1000  # steps per model: per class in one-class, in total in multi-class
    batch_size: int = 16
    lr: float | None = None  # None: the model's paper default
    seed: int = 0
    options: dict = field(default_factory=dict)  # model options (its config dataclass fields)
    save_every: int = 200

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if self.iters < 1 or self.batch_size < 1:
            raise ValueError("iters and batch_size must be positive")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes) if self.classes else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["classes"] = tuple(d["classes"]) if d.get("classes") else None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def protocol_configs(model: str, steps_per_class: int, classes: tuple[str, ...] | list[str],
                     **settings) -> dict[str, TrainConfig]:
    """The one-class and multi-class runs of one model at equal compute: `steps_per_class` steps for each
    class's own model, classes × that for the shared one. `settings` are the other `TrainConfig` fields."""
    classes = tuple(classes)
    return {"one-class": TrainConfig(classes=classes, setting="one-class", model=model, iters=steps_per_class,
                                     **settings),
            "multi-class": TrainConfig(classes=classes, setting="multi-class", model=model,
                                       iters=steps_per_class * len(classes), **settings)}


def device_default() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build_model(cfg: TrainConfig, teacher: backbones.Teacher | None = None) -> models.ADModel:
    options = dict(cfg.options)
    if cfg.lr is not None:
        options["lr"] = cfg.lr
    if teacher is None:
        teacher = backbones.create(cfg.backbone, weights=cfg.weights)
    return models.create(cfg.model, teacher=teacher, **options)


@torch.no_grad()
def teacher_features(teacher: backbones.Teacher, images: torch.Tensor, batch_size: int = 32,
                     device: torch.device | None = None, progress: bool = False) -> list[torch.Tensor]:
    """Teacher features of a stack of images, computed in batches, kept on `device`."""
    device = device or images.device
    chunks = []
    it = range(0, len(images), batch_size)
    for i in tqdm(it, desc="teacher features", leave=False, disable=not progress):
        chunks.append(teacher(images[i:i + batch_size].to(device)))
    return [torch.cat([c[s] for c in chunks]) for s in range(len(chunks[0]))]


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, n, (batch_size,), generator=g)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices `(fit, calibrate)` of `n` training images: a seeded random `fraction` of them (at least one
    image, never all) is kept out of training for calibration."""
    if not 0 < fraction < 1 or n < 2:
        raise ValueError(f"calibration holdout must be in (0, 1) and leave images to train on and to calibrate "
                         f"with; got {fraction} of {n} images")
    n_cal = min(n - 1, max(1, round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_cal:].sort().values, perm[:n_cal].sort().values


def fit(model: models.ADModel, images: torch.Tensor, iters: int, batch_size: int = 16, seed: int = 0,
        ckpt: Path | None = None, settings: dict | None = None, save_every: int = 200, progress: bool = True,
        desc: str = "training", history: list | None = None, callback=None) -> list[dict]:
    """Train `model` on normal `images` (N,3,H,W) for `iters` steps; resume from `ckpt` if it has a partial run.

    A fraction `model.calibration_holdout` of the images is kept out of training and passed to
    `model.calibrate` at the end (all of them when it is 0).

    Returns the loss history (one dict per step). `callback(step, losses)` is called after each step.
    """
    device = next(model.student_parameters().__iter__()).device
    torch.manual_seed(seed)
    opt = model.configure_optimizer()
    start, history = 0, list(history or [])
    if ckpt is not None and ckpt.with_suffix(".json").is_file():
        state, saved, opt_state = checkpoint.load(ckpt)
        model.load_state_dict(state, strict=False)
        start = saved.get("step", 0)
        history = saved.get("history", [])
        if opt_state is not None and start < iters:
            opt.load_state_dict(opt_state)
    if start >= iters:
        return history
    t_feats = teacher_features(model.teacher, images, device=device, progress=progress)
    images = images.to(device)
    cal_images, cal_feats = images, t_feats
    if model.calibration_holdout > 0:
        fit_idx, cal_idx = holdout_split(len(images), model.calibration_holdout, seed)
        cal_images, cal_feats = images[cal_idx], [t[cal_idx] for t in t_feats]
        images, t_feats = images[fit_idx], [t[fit_idx] for t in t_feats]
    model.train()
    # redrawn at most once a second: in a notebook every redraw is a few widget messages, and a flood of
    # them can outrun a test runner's output timeout (nbval waits 5 s for a cell's last message)
    bar = tqdm(range(start, iters), desc=desc, initial=start, total=iters, disable=not progress, mininterval=1.0)
    for step in bar:
        idx = _batch_indices(len(images), batch_size, seed, step).to(device)
        out = model(images[idx], [t[idx] for t in t_feats])
        losses = model.loss(out)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        row = {k: float(v.detach()) for k, v in losses.items()}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        if callback is not None:
            callback(step, row)
        done = step + 1
        if ckpt is not None and (done % save_every == 0 or done == iters):
            if done == iters:
                model.eval()
                model.calibrate(cal_images, cal_feats)
            info = dict(settings or {}, step=done, done=done == iters, history=history)
            checkpoint.save(ckpt, model.student_state_dict(), info, opt if done < iters else None)
    if ckpt is None:
        model.eval()
        model.calibrate(cal_images, cal_feats)
    model.eval()
    return history


def model_names(cfg: TrainConfig, classes: list[str]) -> list[str]:
    return list(classes) if cfg.setting == "one-class" else [ALL]


def train(cfg: TrainConfig, out_dir: str | Path, progress: bool = True, device: torch.device | None = None) -> Path:
    """Train every model of a run into `out_dir`; an interrupted run picks up where it stopped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings_path = out / "settings.json"
    if settings_path.is_file():
        old = TrainConfig.from_dict(checkpoint.read_json(settings_path)["train"])
        if old != cfg:
            raise ValueError(f"{settings_path}: this folder holds a run with other settings; "
                             "use a new --out folder or delete it")
    device = device or device_default()
    records = data.load_records(cfg.data, cfg.root, "train", list(cfg.classes) if cfg.classes else None)
    classes = sorted({r.cls for r in records})
    checkpoint.write_json(settings_path, {"train": cfg.to_dict(), "classes": classes, "adkit": _version()})
    teacher = backbones.create(cfg.backbone, weights=cfg.weights).to(device)
    for name in model_names(cfg, classes):
        ckpt = out / "models" / name
        if ckpt.with_suffix(".json").is_file() and checkpoint.read_json(ckpt.with_suffix(".json")).get("done"):
            continue
        recs = [r for r in records if name in (ALL, r.cls)]
        images = data.load_all(data.ImageDataset(recs, cfg.image_size), progress=progress)["image"]
        torch.manual_seed(cfg.seed)  # student initialisation
        model = build_model(cfg, teacher).to(device)
        settings = dict(model.settings(), name=name, classes=sorted({r.cls for r in recs}), train=cfg.to_dict())
        t0 = time.perf_counter()
        fit(model, images, cfg.iters, cfg.batch_size, cfg.seed, ckpt, settings, cfg.save_every, progress,
            desc=f"{cfg.model} {name}")
        info = checkpoint.read_json(ckpt.with_suffix(".json"))
        info["train_seconds"] = info.get("train_seconds", 0) + time.perf_counter() - t0
        checkpoint.write_json(ckpt.with_suffix(".json"), info)
    return out


def _version() -> str:
    from . import __version__

    return __version__


def load_run(run_dir: str | Path, device: torch.device | None = None) -> tuple[TrainConfig, dict[str, models.ADModel]]:
    """A trained run: its config and `{model name: model}` (class names, or "all" for multi-class)."""
    run = Path(run_dir)
    sp = run / "settings.json"
    if not sp.is_file():
        raise FileNotFoundError(f"{sp}: not a run folder (train one with `adkit train --out {run}`)")
    meta = checkpoint.read_json(sp)
    cfg = TrainConfig.from_dict(meta["train"])
    device = device or device_default()
    teacher = backbones.create(cfg.backbone, weights=cfg.weights).to(device)
    out = {}
    for name in model_names(cfg, meta["classes"]):
        path = run / "models" / name
        state, info, _ = checkpoint.load(path)
        if not info.get("done"):
            raise RuntimeError(f"{path}.json: training stopped at step {info.get('step')}; "
                               f"resume it with `adkit train` and the same settings")
        model = models.create(info["model"], teacher=teacher, **info["config"]).to(device)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise RuntimeError(f"{path}.safetensors does not fit model {info['model']}: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
        out[name] = model.eval()
    return cfg, out


def history(run_dir: str | Path) -> dict[str, list[dict]]:
    """Loss history per model of a run."""
    run = Path(run_dir)
    return {p.stem: json.loads(p.read_text()).get("history", []) for p in sorted((run / "models").glob("*.json"))}


def run_key(cfg: TrainConfig) -> str:
    """A short hash of every setting of a run (and the adkit version): the cache key of `cached_run`."""
    import hashlib

    blob = json.dumps({"train": cfg.to_dict(), "adkit": _version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached_run(cfg: TrainConfig, cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Train `cfg` once and reuse it: the run lives in `<cache>/<model>-<setting>-<key>`, key = hash of all settings.

    A cached run is exactly what `train(cfg, ...)` writes (same code, same seed), so notebooks can share
    trained models; an interrupted one is resumed. Default cache: `$ADKIT_DATA/runs`.
    """
    cache = Path(cache_dir) if cache_dir else data.data_root() / "runs"
    run = cache / f"{cfg.model.replace('+', '_')}-{cfg.setting}-{run_key(cfg)}"
    return train(cfg, run, progress=progress)
