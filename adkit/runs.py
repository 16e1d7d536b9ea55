"""Run folders: what `adkit train` writes and every other command reads.

    <run>/settings.json                  {"train": TrainConfig, "classes": [...], "adkit": version}
    <run>/models/<name>.safetensors      one checkpoint per model (a class, or "all" for multi-class)
    <run>/eval.json                      the last `adkit eval` results
    <run>/.lock                          held while a process trains into the run

Everything read from a run folder is checked before use: settings against `TrainConfig`'s schema, class
names against path tricks, each checkpoint against the run it sits in (name, settings, model) — a file that
does not belong is refused by name. Model names map to file names injectively (`checkpoint.file_stem`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from . import checkpoint
from .config import ALL, VERSION, TrainConfig, check_class_name, revision_entry
from .errors import RunLocked, SettingsError, UsageError

SETTINGS_FILE = "settings.json"
RESULTS_FILE = "eval.json"
LOCK_FILE = ".lock"
LOCK_TRIES = 10  # RunLock: attempts 50 ms apart before a run counts as taken


def model_names(cfg: TrainConfig, classes: list[str]) -> list[str]:
    """The models of a run: one per class (one-class), or one named "all" (multi-class)."""
    return list(classes) if cfg.setting == "one-class" else [ALL]


def checkpoint_path(run: str | Path, name: str) -> Path:
    """`<run>/models/<escaped name>.safetensors`; the escaping keeps every name inside `models/`."""
    folder = Path(run) / "models"
    path = folder / (checkpoint.file_stem(name) + checkpoint.SUFFIX)
    if path.parent != folder:  # cannot happen with file_stem; checked so that it never silently can
        raise SettingsError(f"{folder}: model name {name!r} does not map to a file inside the run")
    return path


def settings_dict(cfg: TrainConfig, classes: list[str]) -> dict:
    return {"train": cfg.to_dict(), "classes": list(classes), "adkit": VERSION}


def read_settings(run: str | Path) -> tuple[TrainConfig, list[str]]:
    """A run's training settings and classes, validated (types, known keys, known models and datasets)."""
    run = Path(run)
    path = run / SETTINGS_FILE
    if not path.is_file():
        raise UsageError(f"{path}: not a run folder — train one with `adkit train --out {run}`")
    meta = checkpoint.read_json(path)
    if not isinstance(meta, dict) or set(meta) - {"train", "classes", "adkit"} or "train" not in meta:
        raise SettingsError(
            f"{path}: not adkit run settings (expected the keys train, classes, adkit) — re-create the run"
        )
    cfg = TrainConfig.from_dict(meta["train"], str(path))
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes:
        raise SettingsError(f"{path}: 'classes' must be a non-empty list — re-create the run")
    classes = [check_class_name(c, str(path)) for c in classes]
    if len(set(classes)) != len(classes):
        raise SettingsError(f"{path}: a class is listed twice — re-create the run")
    return cfg, classes


def check_classes(run: str | Path, wanted: list[str] | None, trained: list[str]) -> None:
    """Refuse classes a run never trained on: its models know nothing of them."""
    unknown = [c for c in wanted or [] if c not in trained]
    if unknown:
        raise UsageError(
            f"{Path(run) / SETTINGS_FILE}: the run was trained on {', '.join(trained)}, not on "
            f"{', '.join(unknown)} — choose among its classes or train a run that has them"
        )


# -- lock ----------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a run folder for the life of a training process (released by the OS if it dies).
    The lock file says who holds it; a second trainer is refused with that information."""

    def __init__(self, run: str | Path):
        self.path = Path(run) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; run without one
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # a process in `wait_while_locked` holds a shared lock for an instant when it is let through: retry for
        # half a second before calling the run taken (a trainer holds it for minutes)
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt < LOCK_TRIES - 1:
                    time.sleep(0.05)
        else:
            try:
                holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
            finally:
                os.close(fd)
            raise RunLocked(
                f"{self.path.parent}: in use by {holder} — wait for it to finish, or train into another --out folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(
            fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
        )
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def wait_while_locked(run: str | Path, say=None) -> bool:
    """Block while another process trains into `run` (holds its lock); True if it had to wait.

    `say(line)` is told once who holds it. Used by `cached_run`, so that two notebooks (or two test workers)
    that need the same run train it once: the second waits, then loads what the first wrote. Ctrl-C stops
    the wait. Without advisory locks (Windows) it returns at once."""
    try:
        import fcntl
    except ImportError:
        return False
    path = Path(run) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: it only tests that no trainer holds it
            return False
        except OSError:
            pass
        if say is not None:
            holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
            say(f"{Path(run)}: being trained by {holder} — waiting for it to finish, then loading it")
        fcntl.flock(fd, fcntl.LOCK_SH)  # returns when the trainer's exclusive lock is gone
        return True
    finally:
        os.close(fd)  # releases the shared lock


def remove_temporary_files(run: str | Path) -> None:
    """Delete the temporary files a killed writer left (`.<name>.<random>.tmp`); call it holding the lock."""
    for folder in (Path(run), Path(run) / "models"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)


# -- models --------------------------------------------------------------------------------------------
def checkpoint_identity(cfg: TrainConfig, name: str) -> dict:
    """What a checkpoint must agree on with its run: the model name, every setting that shapes it, and the
    model's training revision (`config.MODEL_REVISIONS`; absent while it is 1, so older runs keep their identity)."""
    return {"name": name, "train": cfg.to_dict(results_only=True), **revision_entry(cfg.model)}


def check_checkpoint(path: Path, info: dict, cfg: TrainConfig, name: str) -> None:
    """Refuse a checkpoint that belongs to another model or run."""
    want = checkpoint_identity(cfg, name)
    have = {k: info.get(k) for k in want}
    if have != want:
        diff = sorted(k for k in want["train"] if (have.get("train") or {}).get(k) != want["train"][k])
        what = f"model {have['name']!r}" if have["name"] != name else f"other settings ({', '.join(diff)})"
        if have["name"] == name and not diff and have.get("revision") != want.get("revision"):
            was, now = have.get("revision") or 1, want.get("revision") or 1
            what = f"an older version of {cfg.model}'s training (revision {was}, now {now})"
        raise SettingsError(
            f"{path}: this checkpoint belongs to {what}, not to model {name!r} of this run — "
            "delete it to retrain that model, or use the run it came from"
        )


def load_model(run: str | Path, cfg: TrainConfig, name: str, teacher, device=None, done: bool = True):
    """One trained model of a run, checked against the run and loaded strictly."""
    from . import models

    path = checkpoint_path(run, name)
    ck = checkpoint.load(path)
    check_checkpoint(path, ck.info, cfg, name)
    if done and not ck.info.get("done"):
        raise SettingsError(
            f"{path}: training stopped at step {ck.info.get('step')} — resume it with "
            "`adkit train` and the same settings"
        )
    if ck.info.get("model") != cfg.model or not isinstance(ck.info.get("config"), dict):
        raise SettingsError(
            f"{path}: checkpoint of model {ck.info.get('model')!r}, the run trains {cfg.model!r} — delete it to retrain"
        )
    try:
        model = models.create(cfg.model, teacher=teacher, **ck.info["config"])
    except (TypeError, ValueError) as err:
        raise SettingsError(
            f"{path}: its model options do not fit {cfg.model} ({err}) — delete it to retrain"
        ) from None
    load_student_state(model, ck.model_state, path)
    if device is not None:
        model = model.to(device)
    return model.eval()


def load_student_state(model, state: dict, path: Path) -> None:
    """Load a student's weights strictly: a missing or extra tensor is an error naming the file."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    from .models.base import is_teacher_key

    missing = [k for k in missing if not is_teacher_key(k)]
    if missing or unexpected:
        raise SettingsError(
            f"{path}: does not fit model {model.name} (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}) — delete it to retrain, or use the adkit version that wrote it"
        )


def model_for(models: dict, cls: str):
    """The model that scores class `cls` in a run's `{name: model}` (what `load_run` returns): the class's own
    (one-class) or the shared one (multi-class)."""
    if cls in models:
        return models[cls]
    if ALL in models:
        return models[ALL]
    raise KeyError(f"no model for class {cls!r}; the run has {sorted(models)}")


def load_run(run_dir: str | Path, device=None):
    """A trained run: its config and `{model name: model}` (class names, or "all" for multi-class)."""
    from . import backbones
    from .runtime import device_default

    cfg, classes = read_settings(run_dir)
    device = device or device_default()
    teacher = backbones.create(cfg.backbone, weights=cfg.weights).to(device)
    return cfg, {name: load_model(run_dir, cfg, name, teacher, device) for name in model_names(cfg, classes)}


def history(run_dir: str | Path) -> dict[str, list[dict]]:
    """Loss history per model of a run (read from the checkpoints' metadata)."""
    cfg, classes = read_settings(run_dir)
    out = {}
    for name in model_names(cfg, classes):
        path = checkpoint_path(run_dir, name)
        if path.is_file():
            out[name] = checkpoint.read_info(path).get("history", [])
    return out


def write_results(run: str | Path, res: dict, name: str = RESULTS_FILE) -> Path:
    """Results as JSON, atomically: a failure (a full disk) leaves the previous file intact."""
    path = Path(run) / name
    checkpoint.atomic_write_text(path, json.dumps(res, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path
