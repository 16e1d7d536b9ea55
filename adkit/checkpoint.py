"""Checkpoints: tensors as safetensors, settings as JSON next to them; loading never unpickles code.

A checkpoint `<stem>.safetensors` holds the student's state dict and, for resumable training, the
optimizer state flattened into tensors (`optim/<param index>/<name>`) with its hyper-parameters as JSON
metadata. `<stem>.json` holds the settings needed to rebuild the model from the file alone.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same folder and `os.replace`, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


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


def save(path: str | os.PathLike, model_state: dict[str, torch.Tensor], settings: dict,
         optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write `<path>.safetensors` and `<path>.json` atomically (weights first, then the settings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    meta = {}
    if optimizer is not None:
        opt_tensors, meta["optim_groups"] = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path.with_suffix(".safetensors"))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_json(path.with_suffix(".json"), settings)


def load(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """Read a checkpoint: (model state dict, settings, optimizer state dict or None)."""
    path = Path(path)
    st = path.with_suffix(".safetensors")
    if not st.is_file():
        raise FileNotFoundError(f"{st}: checkpoint not found")
    tensors = load_file(str(st))
    from safetensors import safe_open

    with safe_open(str(st), "pt") as f:
        meta = f.metadata() or {}
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    optim = None
    if "optim_groups" in meta:
        optim = _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim/")},
                                     meta["optim_groups"])
    return model_state, read_json(path.with_suffix(".json")), optim
