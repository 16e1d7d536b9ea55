"""Teacher features of a training set within a byte budget: fp16, preallocated, spilled beyond the budget.

    cache = FeatureCache(teacher, data.ImageDataset(records, 128), budget_mb=default_budget_mb())
    x, t_feats = cache.batch(idx)                  # fp32 on the device, for any index tensor idx
    for x, t_feats in cache.batches(index_batches):  # the same, prefetched where images must be decoded
        ...

The first `n_ram` images (as many as fit in the budget) keep their features and their pixels in RAM, in
tensors allocated once at full size and filled in place. The rest either go to a file in `spill_dir`
(`overflow="spill"`, the default), or are not stored at all: their images are decoded again and the
teacher runs on them in the step (`overflow="recompute"`). On a loaded 2-core CPU at 128 px with
efficientnet_lite0, a batch of 16 from the spill file took 9 ms, recomputing it 620 ms (decode and teacher
forward; benchmarks/cache_rss.py).

The spill file is a flat array of records (`cache.record`: image, then each stage's fp16 features), the
layout `numpy.memmap(path, dtype=cache.record)` reads, but the cache reads it row by row with positioned
reads rather than through a memory map: mapped file pages count in the process's resident memory, and the
kernel maps whole page-cache folios around each row read (measured: ~16 MB mapped for one batch of 11
rows of 133 kB), so a mapped spill grew RSS past the budget as training touched it.

Precision: features are rounded to fp16 (11 significant bits, relative error <= 2^-11 ~ 4.9e-4; values
below ~6e-5 lose relative precision, below ~6e-8 become 0; over 65504 they would overflow, which is
checked). The student therefore learns targets that differ from the fp32 teacher by that rounding: a
cosine distance of order 1e-7 per feature vector, far below the distances anomaly maps are made of
(1e-2 and up), and evaluation still runs the teacher in fp32. Training is no longer bit-identical to the
fp32 path, and recomputed features are rounded the same way so that the budget never changes a run.
Images are kept as uint8 when they are exactly k/255 (decoded 8-bit files), which is lossless;
otherwise as fp16 (or what `image_dtype` says).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .runtime import share_cpus

OVERFLOW = ("spill", "recompute")
MB = 2**20

_NP_DTYPES = {torch.uint8: np.uint8, torch.float16: np.float16, torch.float32: np.float32}


# ---------------------------------------------------------------------------------------------------
# how much memory to use


def available_memory_bytes() -> int | None:
    """Memory this process could still take: MemAvailable (Linux), capped by a cgroup limit; else free pages."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            try:  # macOS has no count of free pages through sysconf: take the physical memory
                avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                return None
    try:  # a container's memory limit (cgroup v2) is often far below the machine's
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def default_budget_mb(fraction: float = 0.25, floor_mb: int = 64, ceiling_mb: int | None = None) -> int:
    """A cache budget: `fraction` of the memory available now, at least `floor_mb` (and at most `ceiling_mb`)."""
    avail = available_memory_bytes()
    mb = int(avail * fraction / MB) if avail else floor_mb
    mb = max(floor_mb, mb)
    return min(mb, ceiling_mb) if ceiling_mb else mb


# ---------------------------------------------------------------------------------------------------
# image sources


def _image_of(item) -> torch.Tensor:
    """The `(3,H,W)` image of a dataset item: the item itself, or its "image" entry (adkit.data Samples)."""
    return item["image"] if isinstance(item, dict) else item


class _Images(Dataset):
    """Images only, from a tensor `(N,3,H,W)` or a dataset of tensors / Sample dicts."""

    def __init__(self, source, indices: Sequence[int] | None = None):
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        j = self.indices[i] if self.indices is not None else i
        return _image_of(self.source[j])


def _stack(images: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.stack(images) if images else None


def _to_stored(x: torch.Tensor, dtype: torch.dtype, first: int) -> torch.Tensor:
    """Images `(B,3,H,W)` in [0, 1] as stored: uint8 only when that is lossless."""
    if dtype != torch.uint8:
        return x.to(dtype)
    u = x.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    if not torch.equal(u.float().div(255.0), x.float()):
        raise ValueError(
            f"images {first}..{first + len(x) - 1} are not 8-bit (k/255) values; pass "
            "image_dtype=torch.float16 or torch.float32 to keep them"
        )
    return u


def _from_stored(x: torch.Tensor) -> torch.Tensor:
    # the same arithmetic as adkit.data.ImageDataset, so uint8 round trips are bit-exact
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


# ---------------------------------------------------------------------------------------------------


class FeatureCache:
    """Images and fp16 teacher features of a training set; RAM use bounded by `budget_mb`.

    `images`: a tensor `(N,3,H,W)` or a dataset whose items are image tensors or Sample dicts.
    `overflow`: what happens to images beyond the budget, "spill" (a file in `spill_dir`, default the
    system's temporary folder) or "recompute" (decoded and run through the teacher in each step).
    """

    def __init__(
        self,
        teacher: torch.nn.Module,
        images,
        budget_mb: float | None = None,
        spill_dir: str | os.PathLike | None = None,
        overflow: str = "spill",
        device: torch.device | str | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        image_dtype: torch.dtype | None = None,
        progress: bool = False,
    ):
        if overflow not in OVERFLOW:
            raise ValueError(f"overflow must be one of {OVERFLOW}, got {overflow!r}")
        if image_dtype not in (None, *_NP_DTYPES):
            raise ValueError(f"image_dtype must be one of {list(_NP_DTYPES)}, got {image_dtype}")
        self.teacher, self.source, self.overflow = teacher, images, overflow
        self.device = torch.device(device) if device is not None else _device_of(teacher)
        self.budget_bytes = int((budget_mb if budget_mb is not None else default_budget_mb()) * MB)
        self.n = len(images)
        if self.n == 0:
            raise ValueError("FeatureCache: no images")
        if num_workers is None:  # decoding in a worker while the main process runs the teacher
            num_workers = 0 if isinstance(images, torch.Tensor) else min(4, max(1, (os.cpu_count() or 2) - 1))
        self.num_workers = num_workers
        self.spill_dir = Path(spill_dir) if spill_dir is not None else Path(tempfile.gettempdir())
        self._file, self.spill_path = None, None
        self._build(batch_size, image_dtype, progress)

    # -- sizes ------------------------------------------------------------------------------------------
    @property
    def per_image_bytes(self) -> int:
        """Bytes one image takes in the cache: its pixels and its fp16 features."""
        return int(np.prod(self.image_shape)) * self.image_dtype.itemsize + sum(
            int(np.prod(s)) * 2 for s in self.feature_shapes
        )

    @property
    def ram_bytes(self) -> int:
        """Bytes of the tensors held in RAM (all preallocated at construction)."""
        return self._images.nbytes + sum(t.nbytes for t in self._feats)

    @property
    def spill_bytes(self) -> int:
        return self.record.itemsize * self.n_spilled if self._file is not None else 0

    @property
    def n_spilled(self) -> int:
        return self.n - self.n_ram

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (
            f"FeatureCache({self.n} images, {self.n_ram} in RAM ({self.ram_bytes / MB:.1f} MB of "
            f"{self.budget_bytes / MB:.1f} MB), {self.n_spilled} {self.overflow}"
            + (f" ({self.spill_bytes / MB:.1f} MB in {self.spill_dir})" if self._file is not None else "")
            + ")"
        )

    # -- building ---------------------------------------------------------------------------------------
    def _build(self, batch_size: int, image_dtype: torch.dtype | None, progress: bool) -> None:
        from tqdm.auto import tqdm

        x0 = _image_of(self.source[0])[None]
        self._allocate(x0, self._teacher(x0), image_dtype)  # shapes from one image; all allocated here, once
        stop = self.n if self.overflow == "spill" else self.n_ram  # recompute: nothing stored past the budget
        loader = DataLoader(
            _Images(self.source, range(stop)),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers if stop > batch_size else 0,
            collate_fn=_stack,
        )
        start = 0
        # the bar is updated by hand: given the loader itself, tqdm.auto's bar calls iter() on it once more in
        # its constructor, which starts a second set of loader workers that decode batches nobody reads and,
        # in a Jupyter kernel, can hold the cell for the 5 s of their shutdown timeout
        with tqdm(total=len(loader), desc="teacher features", leave=False, disable=not progress) as bar:
            for x in loader:
                share_cpus()  # fewer threads while other processes keep the CPUs busy (adkit.runtime)
                x = x.cpu()  # a tensor source may live on the GPU; storage is in host memory
                t_feats, end = self._teacher(x), start + len(x)
                x_st = _to_stored(x, self.image_dtype, start)
                r = max(0, min(end, self.n_ram) - start)  # rows of this batch that stay in RAM
                if r > 0:
                    self._images[start : start + r] = x_st[:r]
                    for buf, t in zip(self._feats, t_feats, strict=True):
                        buf[start : start + r] = t[:r]
                if len(x) > r:  # the rest goes to the spill file, written in order
                    self._write_spill(x_st[r:], [t[r:] for t in t_feats])
                start = end
                bar.update()
        if self._file is not None:
            self._file.flush()

    @torch.no_grad()
    def _teacher(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [t.half() for t in self.teacher(x.to(self.device, torch.float32))]
        if not all(torch.isfinite(t).all() for t in feats):
            raise ValueError("teacher features overflow fp16 (|value| > 65504) or are not finite")
        return [t.cpu() for t in feats]

    def _allocate(self, x: torch.Tensor, t_feats: list[torch.Tensor], image_dtype: torch.dtype | None) -> None:
        self.image_shape = tuple(x.shape[1:])
        self.feature_shapes = [tuple(t.shape[1:]) for t in t_feats]
        if image_dtype is None:  # decided on the first image; a later one that is not 8-bit is an error
            exact = torch.equal(x.mul(255).round().div(255.0), x.float())
            image_dtype = torch.uint8 if exact else torch.float16
        self.image_dtype = image_dtype
        self.n_ram = int(min(self.n, self.budget_bytes // self.per_image_bytes))
        self._images = torch.empty((self.n_ram, *self.image_shape), dtype=image_dtype)
        self._feats = [torch.empty((self.n_ram, *s), dtype=torch.float16) for s in self.feature_shapes]
        self.record = np.dtype(
            [("image", _NP_DTYPES[image_dtype], self.image_shape)]
            + [(f"f{k}", np.float16, s) for k, s in enumerate(self.feature_shapes)],
            align=True,
        )
        if self.n_spilled and self.overflow == "spill":
            need = self.record.itemsize * self.n_spilled
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.spill_dir).free
            if free < need:
                raise OSError(
                    f"{self.spill_dir}: {need / MB:.0f} MB needed to spill teacher features, "
                    f"{free / MB:.0f} MB free; give another spill_dir or overflow='recompute'"
                )
            fd, path = tempfile.mkstemp(prefix="adkit-featcache-", suffix=".bin", dir=self.spill_dir)
            self.spill_path = Path(path)
            self._file = os.fdopen(fd, "w+b")
            if os.name == "posix":  # the open file stays usable; nothing is left behind after a crash
                os.unlink(path)

    def _write_spill(self, x_st: torch.Tensor, t_feats: list[torch.Tensor]) -> None:
        rows = np.empty(len(x_st), dtype=self.record)
        rows["image"] = x_st.numpy()
        for k, t in enumerate(t_feats):
            rows[f"f{k}"] = t.numpy()
        self._file.write(rows.tobytes())

    # -- reading ----------------------------------------------------------------------------------------
    def batch(self, idx) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`(images[idx], [t[idx] for t in t_feats])`, fp32 on the cache's device."""
        return self._assemble(torch.as_tensor(idx).cpu().long().reshape(-1), None)

    def batches(self, index_batches: Iterable) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        """`batch(idx)` for each index tensor, in order; images to recompute are decoded ahead by workers."""
        index_batches = (torch.as_tensor(i).cpu().long().reshape(-1) for i in index_batches)
        if self.overflow != "recompute" or self.n_spilled == 0 or self.num_workers == 0:
            for idx in index_batches:
                yield self._assemble(idx, None)
            return
        ahead, now = itertools.tee(index_batches)
        spilled = ([int(i) for i in idx if i >= self.n_ram] for idx in ahead)
        loader = DataLoader(
            _Images(self.source), batch_sampler=spilled, num_workers=self.num_workers, collate_fn=_stack
        )
        for idx, x_spilled in zip(now, loader, strict=True):
            yield self._assemble(idx, x_spilled)

    def _assemble(self, idx: torch.Tensor, x_spilled: torch.Tensor | None):
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise IndexError(f"index out of range for a cache of {self.n} images")
        in_ram = idx < self.n_ram
        if bool(in_ram.all()):  # the common case: one gather per tensor
            return (
                _from_stored(self._images[idx]).to(self.device),
                [buf[idx].float().to(self.device) for buf in self._feats],
            )
        x = torch.empty((len(idx), *self.image_shape))
        feats = [torch.empty((len(idx), *s)) for s in self.feature_shapes]
        r = in_ram.nonzero().squeeze(1)
        if len(r):
            x[r] = _from_stored(self._images[idx[r]])
            for out, buf in zip(feats, self._feats, strict=True):
                out[r] = buf[idx[r]].float()
        s = (~in_ram).nonzero().squeeze(1)
        if len(s) and self.overflow == "spill":
            rows = self._read_rows(idx[s].numpy() - self.n_ram)
            x[s] = _from_stored(torch.from_numpy(rows["image"]))
            for k, out in enumerate(feats):
                out[s] = torch.from_numpy(rows[f"f{k}"]).float()
        elif len(s):  # recompute: decode the images (unless prefetched) and run the teacher on them
            if x_spilled is None:
                x_spilled = torch.stack([_image_of(self.source[int(i)]) for i in idx[s]])
            x[s] = x_spilled.float()
            for out, t in zip(feats, self._teacher(x_spilled), strict=True):
                out[s] = t.float()  # rounded to fp16 like cached features: the budget never changes a run
        return x.to(self.device), [f.to(self.device) for f in feats]

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Records `rows` of the spill file, read into a fresh array (nothing of the file stays mapped)."""
        if self._file is None:
            raise RuntimeError("FeatureCache: closed; its spill file is gone")
        out = np.empty(len(rows), dtype=self.record)
        size, raw = self.record.itemsize, out.view(np.uint8)
        for j, row in enumerate(rows):
            self._file.seek(int(row) * size)
            if self._file.readinto(memoryview(raw[j * size : (j + 1) * size])) != size:
                raise OSError(f"{self.spill_path}: short read at record {row}")
        return out

    # -- end --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the spill file (RAM tensors go with the object)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            if os.name != "posix":
                Path(self.spill_path).unlink(missing_ok=True)

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def _device_of(module: torch.nn.Module) -> torch.device:
    for t in itertools.chain(module.parameters(), module.buffers()):
        return t.device
    return torch.device("cpu")
