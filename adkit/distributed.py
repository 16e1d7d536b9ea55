"""Scale-out on torch's own engine: `torchrun` + `DistributedDataParallel` (gloo on CPU, nccl on GPUs).

    torchrun --standalone --nproc_per_node=2 -m adkit train --data mini --out runs/rd-ddp ...
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_endpoint=HOST:29500 -m adkit train ...

Nothing here is home-made distribution: torchrun starts the processes and sets RANK / WORLD_SIZE /
LOCAL_RANK; this module only reads them. Each step, every rank draws the same global batch from the
(seed, step) generator and takes its own contiguous share, so the global batch is the single-process one;
DDP averages the gradients, which for losses that are means over the batch equals the single-process
gradient. BatchNorm in training mode normalises with statistics of the global batch: on GPUs through torch's
SyncBatchNorm; on CPUs, where torch has no SyncBatchNorm, `cpu_sync_batch_norm` all-reduces the per-channel
sums in the forward and backward of `F.batch_norm` (the same arithmetic as SyncBatchNorm, over gloo). What
still differs from one process: dropout draws per rank, and SNL's inter-affinity term only relates images
within a rank's share. Rank 0 alone writes checkpoints and results.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (no-op for one process); returns this rank's device."""
    if world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    if active():
        dist.barrier()


def share(idx: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch of indices (all shares have the same size)."""
    if not active():
        return idx
    n = dist.get_world_size()
    if len(idx) % n:
        raise ValueError(f"batch size {len(idx)} does not split evenly over {n} processes")
    return idx.chunk(n)[dist.get_rank()]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if `flag` is true on any rank (e.g. a stop signal), so that all ranks stop at the same step."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model as DDP sees it (the frozen teacher has no gradients, so only the student is synchronised);
    unchanged for one process."""
    if not active():
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True
    )


def broadcast_state(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (after a step whose in-place init was rank-local)."""
    if not active():
        return
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not name.startswith("teacher."):  # the frozen teacher is the same everywhere
                dist.broadcast(t.data, src=0)


def mean_row(row: dict[str, float], device: torch.device) -> dict[str, float]:
    """Per-step loss values averaged over ranks (the global batch's losses); unchanged for one process."""
    if not active():
        return row
    t = torch.tensor(list(row.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(row, (t / dist.get_world_size()).tolist()))


class _GlobalBatchNorm(torch.autograd.Function):
    """Batch norm of `x` (N,C,...) with the mean and variance of all ranks' batches together."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        dims = [0] + list(range(2, x.dim()))
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_tensor([x.numel() / x.shape[1]])])
        dist.all_reduce(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)  # biased, as batch norm normalises
        shape = [1, c] + [1] * (x.dim() - 2)
        invstd = torch.rsqrt(var + eps)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, weight, invstd, n)
        ctx.shape, ctx.dims = shape, dims
        y = xhat * weight.view(shape) + bias.view(shape) if weight is not None else xhat
        return y, mean, var * n / (n - 1).clamp_min(1)  # the unbiased variance for the running estimate

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        xhat, weight, invstd, n = ctx.saved_tensors
        shape, dims = ctx.shape, ctx.dims
        dw = (dy * xhat).sum(dims)
        db = dy.sum(dims)
        sums = torch.cat([db, dw])
        dist.all_reduce(sums)  # Σ dy and Σ dy·x̂ over the global batch
        c = dy.shape[1]
        w = weight.view(shape) if weight is not None else 1.0
        dx = (dy - (sums[:c] / n).view(shape) - xhat * (sums[c:] / n).view(shape)) * invstd.view(shape) * w
        return dx, (dw if weight is not None else None), (db if weight is not None else None), None


@contextlib.contextmanager
def cpu_sync_batch_norm():
    """While active (and inside a CPU process group), training-mode `F.batch_norm` calls use the statistics of
    the global batch; everything else (eval mode, the frozen teacher, GPUs) is left alone."""
    if not active():
        yield
        return
    original = F.batch_norm

    def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
        if not training or input.device.type != "cpu" or momentum is None:
            return original(input, running_mean, running_var, weight, bias, training, momentum, eps)
        y, mean, var = _GlobalBatchNorm.apply(input, weight, bias, eps)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                running_var.mul_(1 - momentum).add_(var.detach(), alpha=momentum)
        return y

    F.batch_norm = batch_norm
    try:
        yield
    finally:
        F.batch_norm = original
