"""The bounded teacher-feature cache: fp16 values, the same batches on every path, the budget kept."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import save

from adkit import data, featcache
from adkit.featcache import FeatureCache

SIZE = 32
N = 40


def _images(n: int = N, seed: int = 0) -> torch.Tensor:
    """8-bit images as adkit.data decodes them: uint8 / 255 in fp32."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8).float().div(255.0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return _images()


@pytest.fixture(scope="module")
def fp32_feats(teacher, images) -> list[torch.Tensor]:
    return teacher(images)


def _budget_for(cache_like: FeatureCache, n_images: int) -> float:
    """A budget in MB that holds exactly `n_images` images."""
    return (n_images * cache_like.per_image_bytes + 1) / featcache.MB


def _held_bytes(obj) -> int:
    """Bytes of every tensor and array the cache object holds (the caller's own `source` excluded)."""
    total = 0
    for name, v in vars(obj).items():
        if name == "source":
            continue
        for item in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(item, torch.Tensor):
                total += item.nbytes
            elif isinstance(item, np.ndarray):
                total += item.nbytes
    return total


def _assert_fp16_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32 and g.shape == w.shape
        # fp16 keeps 11 significant bits: relative error <= 2^-11 (2^-10 between two roundings), plus the
        # teacher's fp32 noise when it ran on other batches: accumulation error, relative to the tensor's scale
        torch.testing.assert_close(g, w, rtol=2**-10, atol=1e-5 * float(w.abs().max()))


def test_in_budget_values_are_the_teachers_within_fp16(teacher, images, fp32_feats):
    with FeatureCache(teacher, images, budget_mb=100, batch_size=16) as cache:
        assert cache.n_ram == N and cache.n_spilled == 0 and cache.spill_bytes == 0
        assert cache.image_dtype == torch.uint8  # 8-bit images are kept losslessly in a quarter of the bytes
        assert all(t.dtype == torch.float16 for t in cache._feats)
        idx = torch.tensor([5, 0, 39, 5, 17])
        x, t_feats = cache.batch(idx)
        assert torch.equal(x, images[idx])  # bit-exact round trip through uint8
        _assert_fp16_close(t_feats, [t[idx] for t in fp32_feats])
        # and fp16 really is what is stored: the values are fp16-representable
        assert all(torch.equal(t, t.half().float()) for t in t_feats)


def test_spilled_and_recomputed_batches_equal_in_ram_batches(teacher, images, tmp_path):
    g = torch.Generator().manual_seed(1)
    index_batches = [torch.randint(0, N, (8,), generator=g) for _ in range(6)]
    with FeatureCache(teacher, images, budget_mb=100, batch_size=16) as ram:
        want = [ram.batch(i) for i in index_batches]
        budget = _budget_for(ram, 10)
    with FeatureCache(teacher, images, budget_mb=budget, spill_dir=tmp_path, batch_size=16) as sp:
        assert sp.n_ram == 10 and sp.n_spilled == N - 10
        for (x, f), (x_w, f_w) in zip(sp.batches(index_batches), want, strict=True):
            # the same teacher batches wrote both: identical, not merely close
            assert torch.equal(x, x_w) and all(torch.equal(a, b) for a, b in zip(f, f_w, strict=True))
    with FeatureCache(teacher, images, budget_mb=budget, overflow="recompute", batch_size=16) as rc:
        assert rc.n_ram == 10 and rc.spill_bytes == 0
        for (x, f), (x_w, f_w) in zip(rc.batches(index_batches), want, strict=True):
            assert torch.equal(x, x_w)
            _assert_fp16_close(f, f_w)  # the teacher ran on other batches: fp32 noise, then fp16 rounding


def test_budget_is_respected_and_no_bytes_beyond_it(teacher, images, tmp_path):
    with FeatureCache(teacher, images[:1], budget_mb=1) as one:
        per_image = one.per_image_bytes
    c0, c1, c2 = teacher.channels
    assert per_image == 3 * SIZE * SIZE + 2 * (c0 * (SIZE // 4) ** 2 + c1 * (SIZE // 8) ** 2 + c2 * (SIZE // 16) ** 2)
    for budget_images, overflow in ((7, "spill"), (7, "recompute"), (0, "spill"), (N + 5, "spill")):
        budget_mb = (budget_images * per_image + 100) / featcache.MB
        with FeatureCache(teacher, images, budget_mb=budget_mb, spill_dir=tmp_path, overflow=overflow) as cache:
            n_ram = min(N, budget_images)
            assert cache.n_ram == n_ram
            assert cache.ram_bytes == _held_bytes(cache) == n_ram * per_image <= budget_mb * featcache.MB
            spilled = N - n_ram if overflow == "spill" else 0
            assert cache.record.itemsize - per_image in (0, 1)  # a record is padded to 2-byte alignment at most
            assert cache.spill_bytes == spilled * cache.record.itemsize
            if spilled:
                assert os.fstat(cache._file.fileno()).st_size == cache.spill_bytes


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_spill_file_is_never_mapped_into_memory(teacher, images, tmp_path):
    """Mapped file pages would count in RSS beyond the budget: the spill is read with positioned reads."""
    with FeatureCache(teacher, images, budget_mb=0, spill_dir=tmp_path) as cache:
        x, _ = cache.batch(torch.arange(N).flip(0))
        assert torch.equal(x, images.flip(0))
        assert "adkit-featcache-" not in Path("/proc/self/maps").read_text()
        # the layout is the one numpy.memmap reads
        fd = os.dup(cache._file.fileno())
        with os.fdopen(fd, "rb") as f:
            mm = np.memmap(f, dtype=cache.record, mode="r", shape=(N,))
            assert np.array_equal(mm["image"][3], (images[3] * 255).round().to(torch.uint8).numpy())
            del mm


def test_memmap_file_lives_in_the_given_folder(teacher, images, tmp_path):
    spill = tmp_path / "spill"
    with FeatureCache(teacher, images, budget_mb=0, spill_dir=spill) as cache:
        assert cache.n_ram == 0 and cache.spill_path.parent == spill
        fd = cache._file.fileno()
        if os.name == "posix":  # unlinked at once (nothing left behind by a crash), still open in that folder
            assert not cache.spill_path.exists()
            proc = Path(f"/proc/self/fd/{fd}")
            if proc.exists():
                assert os.readlink(proc).startswith(str(spill / "adkit-featcache-"))
        else:
            assert cache.spill_path.exists()
        x, _ = cache.batch(torch.arange(N))
        assert torch.equal(x, images)
    assert list(spill.iterdir()) == []


def test_dataset_source_with_workers_and_sample_dicts(teacher, tmp_path):
    """adkit.data.ImageDataset items (Sample dicts), decoded by DataLoader workers in the recompute path."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(12):
        path = save(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), tmp_path / f"{i:03d}.png")
        records.append(data.Record(path=str(path), label=0, cls="synthetic"))
    ds = data.ImageDataset(records, SIZE)
    want = data.load_all(ds)["image"]
    with FeatureCache(teacher, ds, budget_mb=0, overflow="recompute", num_workers=1, batch_size=4) as cache:
        assert cache.n_ram == 0
        idx = [torch.tensor([3, 11, 0]), torch.tensor([7]), torch.tensor([11, 11])]
        for i, (x, t_feats) in zip(idx, cache.batches(idx), strict=True):
            assert torch.equal(x, want[i])
            _assert_fp16_close(t_feats, [t.half().float() for t in teacher(want[i])])


@pytest.mark.parametrize("progress", [True, False])
def test_building_starts_the_loaders_workers_once(teacher, tmp_path, monkeypatch, progress):
    """One pass of the loader, one set of workers: a progress bar given the loader itself (tqdm.auto) calls
    iter() on it in its constructor, a second set of workers that decode for nothing and, in a Jupyter kernel,
    held the cell for their 5 s shutdown timeout."""
    rng = np.random.default_rng(0)
    records = [
        data.Record(
            path=str(save(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), tmp_path / f"{i}.png")),
            label=0,
            cls="synthetic",
        )
        for i in range(12)
    ]
    iterators = []
    original = torch.utils.data.DataLoader.__iter__

    def counted(loader):
        iterators.append(loader.num_workers)
        return original(loader)

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", counted)
    with FeatureCache(teacher, data.ImageDataset(records, SIZE), num_workers=1, batch_size=4, progress=progress):
        pass
    assert iterators == [1]


def test_float_images_are_not_quantised(teacher):
    x = torch.rand(6, 3, SIZE, SIZE)  # not k/255
    with FeatureCache(teacher, x, budget_mb=10) as cache:
        assert cache.image_dtype == torch.float16
        got, _ = cache.batch(torch.arange(6))
        torch.testing.assert_close(got, x, rtol=2**-11, atol=0)
    mixed = torch.cat([_images(4), x[:4]])  # starts 8-bit, then is not: refused rather than rounded
    with pytest.raises(ValueError, match="not 8-bit"):
        FeatureCache(teacher, mixed, budget_mb=10, batch_size=4)
    with FeatureCache(teacher, mixed, budget_mb=10, image_dtype=torch.float32) as cache:
        assert torch.equal(cache.batch(torch.arange(8))[0], mixed)


def test_bad_arguments(teacher, images):
    with pytest.raises(ValueError, match="overflow"):
        FeatureCache(teacher, images, overflow="swap")
    with pytest.raises(IndexError):
        FeatureCache(teacher, images[:4], budget_mb=10).batch(torch.tensor([4]))
    with pytest.raises(ValueError, match="no images"):
        FeatureCache(teacher, images[:0])


def test_default_budget_follows_available_memory(monkeypatch):
    monkeypatch.setattr(featcache, "available_memory_bytes", lambda: 8 * 2**30)
    assert featcache.default_budget_mb() == 2048
    assert featcache.default_budget_mb(fraction=0.5, ceiling_mb=1000) == 1000
    monkeypatch.setattr(featcache, "available_memory_bytes", lambda: None)
    assert featcache.default_budget_mb(floor_mb=64) == 64
    monkeypatch.undo()
    real = featcache.available_memory_bytes()
    assert real is None or real > 0
