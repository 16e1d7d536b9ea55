"""One loop for running a function over a stack of images in batches, without gradients.

    feats = in_batches(lambda x: [f.float().cpu() for f in teacher(x)], images, 32, device)  # per stage (N,C,h,w)
    out = in_batches(fn, images, 32, device, model=model)  # `model` in eval mode meanwhile, its mode back after

`fn` may return a tensor or a list, tuple or dict of them (nested too); the batches' outputs are concatenated
along the first dimension in the same structure. What `fn` returns sets the dtype and device of the result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch


@contextlib.contextmanager
def evaluating(model: torch.nn.Module | None) -> Iterator[None]:
    """`model` in eval mode inside the block, in the mode it had before after it (None: nothing to switch)."""
    if model is None:
        yield
        return
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def concat(parts: list):
    """Outputs of the batches, in order, joined along the first dimension in the structure of the first one."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(concat(list(stage)) for stage in zip(*parts, strict=True))
    raise TypeError(f"cannot concatenate batch outputs of type {type(first).__name__}")


def windows(xs: torch.Tensor, t_feats: list[torch.Tensor] | None, batch_size: int):
    """`(xs[i : i + batch_size], its teacher features or None)` for i = 0, batch_size, ...: a stack in memory given
    as the batches a streaming consumer (a model's `calibrate_batches`) reads."""
    for i in range(0, len(xs), batch_size):
        yield xs[i : i + batch_size], None if t_feats is None else [t[i : i + batch_size] for t in t_feats]


@torch.no_grad()
def in_batches(
    fn: Callable[[torch.Tensor], object],
    images: torch.Tensor,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    model: torch.nn.Module | None = None,
):
    """`fn` on `images[i : i + batch_size]` (moved to `device`; None: left where they are) for every batch, without
    gradients and with `model` (if given) in eval mode; the outputs concatenated (`concat`)."""
    if len(images) == 0:
        raise ValueError("in_batches: no images")
    with evaluating(model):
        parts = [fn(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
    return concat(parts)


__all__ = ["concat", "evaluating", "in_batches", "windows"]
