"""Checkpoints: one safetensors file per model, written atomically; loading never unpickles anything.

A checkpoint `<name>.safetensors` holds, as tensors, the student's state dict (`model/...`), for resumable
training the optimizer state (`optim/<param index>/<name>`) and the random-number generator states
(`rng/...`); its metadata holds the format tag, the settings and step (`info`, JSON) and the optimizer's
hyper-parameters. One file is one unit: it is written to a temporary file, fsynced and renamed, so a kill at
any moment leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import SettingsError, with_path

FORMAT = "adkit-checkpoint/2"
SUFFIX = ".safetensors"


# -- atomic files ---------------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, fsync it and rename it over `path`; on any
    failure (disk full, kill) `path` keeps its previous content and no temporary file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not err.filename:
            err.filename = str(path)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (see `atomic_write`): readers never see half a file."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike):
    """A JSON file; a damaged or non-UTF-8 one is a `SettingsError` that names it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SettingsError(f"{path}: not valid JSON ({err}) — restore the file or re-create the run") from None


# -- names ---------------------------------------------------------------------------------------------
_SAFE = re.compile(r"[A-Za-z0-9_\-]")


def file_stem(name: str) -> str:
    """A file name for a model name, injective over names: every character outside [A-Za-z0-9_-] is
    percent-encoded (`part.v1` -> `part%2Ev1`), so no two classes share a checkpoint and no name leaves its
    folder."""
    return "".join(c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in name)


# -- random-number generators ---------------------------------------------------------------------------
def rng_state() -> dict[str, torch.Tensor]:
    """Every generator a training step may draw from (dropout, random init): torch's CPU and CUDA ones.
    Batches are drawn from generators seeded by (seed, step) and need no state."""
    out = {"rng/torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng/cuda/{i}"] = s
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    if "rng/torch_cpu" in tensors:
        torch.set_rng_state(tensors["rng/torch_cpu"])
    cuda = sorted((int(k.rsplit("/", 1)[1]), v) for k, v in tensors.items() if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([v for _, v in cuda][: torch.cuda.device_count()])


# -- optimizer state as tensors -------------------------------------------------------------------------
def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim/{pid}/{name}"] = t.detach().cpu().contiguous()
    return tensors, json.dumps(sd["param_groups"])


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups_json: str) -> dict:
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        _, pid, name = key.split("/", 2)
        state.setdefault(int(pid), {})[name] = t
    return {"state": state, "param_groups": json.loads(groups_json)}


# -- save / load ---------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    model_state: dict[str, torch.Tensor]
    info: dict  # settings, step, done, history, ...
    optimizer_state: dict | None
    rng: dict[str, torch.Tensor]


def save(
    path: str | os.PathLike,
    model_state: dict[str, torch.Tensor],
    info: dict,
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write one checkpoint file atomically: weights, optimizer and RNG states as tensors, `info` as metadata."""
    from safetensors.torch import save_file

    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    meta = {"format": FORMAT, "info": json.dumps(info, sort_keys=True)}
    if optimizer is not None:
        opt_tensors, meta["optim_groups"] = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (rng or {}).items()})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _header(path: Path) -> dict:
    from safetensors import safe_open

    if not path.is_file():
        raise SettingsError(f"{path}: checkpoint not found — train the run (again) with `adkit train`")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # SafetensorError and friends: a damaged or foreign file
        raise SettingsError(
            f"{path}: not a readable safetensors checkpoint ({err}) — delete it and resume "
            "with `adkit train` to retrain this model"
        ) from None
    if meta.get("format") != FORMAT:
        raise SettingsError(
            f"{path}: not an adkit checkpoint of format {FORMAT} (found "
            f"{meta.get('format', 'none')!r}) — retrain the run with this adkit version"
        )
    return meta


def read_info(path: str | os.PathLike) -> dict:
    """The settings and progress stored in a checkpoint (reads only the file's header)."""
    path = Path(path)
    try:
        info = json.loads(_header(path)["info"])
    except (KeyError, json.JSONDecodeError) as err:
        raise SettingsError(f"{path}: checkpoint metadata damaged ({err}) — delete it and retrain") from None
    if not isinstance(info, dict):
        raise SettingsError(f"{path}: checkpoint metadata is not an object — delete it and retrain")
    return info


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by `save`; anything else is refused by name."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = _header(path)
    info = read_info(path)
    try:
        tensors = load_file(str(path))
    except Exception as err:
        raise with_path(SettingsError(f"{path}: damaged checkpoint ({err}) — delete it and retrain"), path) from None
    model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    optim = None
    if "optim_groups" in meta:
        optim = _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim/")}, meta["optim_groups"])
    return Checkpoint(model_state, info, optim, {k: v for k, v in tensors.items() if k.startswith("rng/")})
