"""Scale-out on torch's own engine: `torchrun` + `DistributedDataParallel` (gloo on CPU, nccl on GPUs).

    torchrun --standalone --nproc_per_node=2 -m adkit train --data mini --out runs/rd-ddp ...
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_endpoint=HOST:29500 -m adkit train ...

Nothing here is home-made distribution: torchrun starts the processes and sets RANK / WORLD_SIZE /
LOCAL_RANK; this module only reads them. Each step, every rank draws the same global batch from the
(seed, step) generator and takes its own contiguous share, so the global batch is the single-process one;
DDP averages the gradients, which for losses that are means over the batch equals the single-process
gradient. What differs from one process: BatchNorm statistics in training are per rank on CPU (SyncBatchNorm
is GPU-only in torch; on GPUs the students' BN layers are converted), dropout draws per rank, and SNL's
inter-affinity term only relates images within a rank's share. Rank 0 alone writes checkpoints and results.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


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
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
