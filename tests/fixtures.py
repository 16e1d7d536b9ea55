"""Tiny datasets written in each format's exact on-disk layout (idea: anomalib's tests/helpers/data.py).

Every writer returns what it wrote, `{class: {split: {defect: n}}}` (the semantic sets: per true class
`{split: {class: n}}`). Images are SIZE px, dark and noisy; a defect image has a bright square at BOX,
exactly where its mask is set, so tests can check that masks line up with their images.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
BOX = (slice(8, 16), slice(16, 24))  # rows 8..15, columns 16..23
DARK, BRIGHT = 60, 250


def image(defect: bool = False, seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A dark noisy RGB uint8 image; bright at BOX when `defect`."""
    arr = DARK + np.random.default_rng(seed).integers(0, 20, (size, size, 3))
    if defect:
        arr[BOX] = BRIGHT
    return arr.astype(np.uint8)


def mask(box: tuple[slice, slice] = BOX, value: int = 255, size: int = SIZE) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[box] = value
    return m


def save(arr: np.ndarray, path: Path, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    (im.convert(mode) if mode else im).save(path)
    return path


def _add(counts: dict, cls: str, split: str, defect: str, n: int) -> None:
    if n:
        d = counts.setdefault(cls, {}).setdefault(split, {})
        d[defect] = d.get(defect, 0) + n


def write_mvtec(
    root: Path,
    classes=("bottle", "cable"),
    n_train: int = 3,
    defects=None,
    n_good_test: int = 2,
    mode: str | None = None,
) -> dict:
    """MVTec AD: <class>/train/good, <class>/test/<defect>, <class>/ground_truth/<defect>/<stem>_mask.png."""
    defects = {"crack": 2, "scratch": 1} if defects is None else defects
    counts: dict = {}
    for cls in classes:
        for i in range(n_train):
            save(image(seed=i), root / cls / "train" / "good" / f"{i:03d}.png", mode)
        for i in range(n_good_test):
            save(image(seed=100 + i), root / cls / "test" / "good" / f"{i:03d}.png", mode)
        for defect, n in defects.items():
            for i in range(n):
                save(image(True, seed=200 + i), root / cls / "test" / defect / f"{i:03d}.png", mode)
                save(mask(), root / cls / "ground_truth" / defect / f"{i:03d}_mask.png")
        _add(counts, cls, "train", "good", n_train)
        _add(counts, cls, "test", "good", n_good_test)
        for defect, n in defects.items():
            _add(counts, cls, "test", defect, n)
    return counts


def write_visa(
    root: Path,
    classes=("candle", "pcb1"),
    n_train: int = 3,
    n_test_good: int = 2,
    n_anomaly: int = 2,
    mask_value: int = 1,
) -> dict:
    """VisA raw layout and split_csv/1cls.csv; masks hold `mask_value` (VisA's are small non-zero values)."""
    rows, counts = ["object,split,label,image,mask"], {}
    for cls in classes:
        for i in range(n_train + n_test_good):
            rel = f"{cls}/Data/Images/Normal/{i:04d}.JPG"
            save(image(seed=i), root / rel)
            rows.append(f"{cls},{'train' if i < n_train else 'test'},normal,{rel},")
        for i in range(n_anomaly):
            rel, mrel = f"{cls}/Data/Images/Anomaly/{i:03d}.JPG", f"{cls}/Data/Masks/Anomaly/{i:03d}.png"
            save(image(True, seed=50 + i), root / rel, "RGB")
            save(mask(value=mask_value), root / mrel)
            rows.append(f"{cls},test,anomaly,{rel},{mrel}")
        _add(counts, cls, "train", "good", n_train)
        _add(counts, cls, "test", "good", n_test_good)
        _add(counts, cls, "test", "anomaly", n_anomaly)
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return counts


def write_loco(
    root: Path,
    classes=("juice_bottle",),
    n_train: int = 2,
    n_val: int = 1,
    n_good_test: int = 1,
    anomalies=None,
    n_masks: int = 2,
) -> dict:
    """MVTec LOCO AD; each anomaly has `n_masks` files 000.png, 001.png... whose union is BOX."""
    anomalies = {"logical_anomalies": 1, "structural_anomalies": 2} if anomalies is None else anomalies
    counts: dict = {}
    cols = np.array_split(np.arange(BOX[1].start, BOX[1].stop), n_masks)
    for cls in classes:
        for split, n in (("train", n_train), ("validation", n_val)):
            for i in range(n):
                save(image(seed=i), root / cls / split / "good" / f"{i:03d}.png")
            _add(counts, cls, split, "good", n)
        for i in range(n_good_test):
            save(image(seed=10 + i), root / cls / "test" / "good" / f"{i:03d}.png")
        _add(counts, cls, "test", "good", n_good_test)
        for defect, n in anomalies.items():
            for i in range(n):
                save(image(True, seed=20 + i), root / cls / "test" / defect / f"{i:03d}.png")
                for k, c in enumerate(cols):  # region k: the k-th vertical strip of BOX
                    save(
                        mask((BOX[0], slice(c[0], c[-1] + 1))),
                        root / cls / "ground_truth" / defect / f"{i:03d}" / f"{k:03d}.png",
                    )
            _add(counts, cls, "test", defect, n)
    return counts


def write_realiad(
    root: Path,
    classes=("audiojack",),
    resolution: int = 256,
    views=("C1", "C2"),
    n_ok_train: int = 2,
    n_ok_test: int = 1,
    ng=None,
) -> dict:
    """Real-IAD: realiad_<res>/<class>/{OK,NG/<code>}/S<id>/<class>_<id>_..._C<v>_<time>.jpg, masks as .png,
    split files in realiad_jsons/realiad_jsons (all views) and realiad_jsons_sv (first view only)."""
    ng = {"AK": 1, "QS": 1} if ng is None else ng
    counts: dict = {}
    for cls in classes:
        split_items: dict = {"train": [], "test": []}
        sample = 0
        groups = [("train", "OK", n_ok_train), ("test", "OK", n_ok_test)] + [("test", c, n) for c, n in ng.items()]
        for split, code, n in groups:
            for _ in range(n):
                sample += 1
                folder = f"OK/S{sample:04d}" if code == "OK" else f"NG/{code}/S{sample:04d}"
                for view in views:
                    stem = f"{cls}_{sample:04d}_{'OK' if code == 'OK' else 'NG_' + code}_{view}_20230922104327"
                    item = {
                        "category": cls,
                        "anomaly_class": code,
                        "image_path": f"{folder}/{stem}.jpg",
                        "mask_path": None if code == "OK" else f"{folder}/{stem}.png",
                    }
                    save(
                        image(code != "OK", seed=sample),
                        root / f"realiad_{resolution}" / cls / item["image_path"],
                    )
                    if code != "OK":
                        save(mask(), root / f"realiad_{resolution}" / cls / item["mask_path"])
                    split_items[split].append(item)
                _add(counts, cls, split, "good" if code == "OK" else code.lower(), len(views))
        for sub, keep in (("realiad_jsons", views), ("realiad_jsons_sv", views[:1])):
            data = {
                "meta": {"prefix": cls, "normal_class": "OK"},
                **{
                    s: [it for it in items if any(f"_{v}_" in it["image_path"] for v in keep)]
                    for s, items in split_items.items()
                },
            }
            path = root / "realiad_jsons" / sub / f"{cls}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data))
    return counts


def cifar_image(label: int, i: int) -> np.ndarray:
    """CIFAR row `(3072,)` in CHW order: red = label*10, green = i, blue = 200."""
    chw = np.stack([np.full((32, 32), label * 10), np.full((32, 32), i), np.full((32, 32), 200)])
    return chw.astype(np.uint8).reshape(-1)


def _pickle(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # as the official files (Python 2 cPickle)


def write_cifar10(root: Path, n_train: int = 2, n_test: int = 1) -> dict:
    """cifar-10-batches-py: five data batches (train images spread over them), test_batch, batches.meta."""
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    folder = root / "cifar-10-batches-py"
    train = [(y, i) for y in range(10) for i in range(n_train)]
    for b in range(5):
        part = train[b::5]
        _pickle(
            {
                b"data": np.array([cifar_image(y, i) for y, i in part], np.uint8).reshape(-1, 3072),
                b"labels": [y for y, _ in part],
            },
            folder / f"data_batch_{b + 1}",
        )
    test = [(y, i) for y in range(10) for i in range(n_test)]
    _pickle(
        {b"data": np.array([cifar_image(y, i) for y, i in test], np.uint8), b"labels": [y for y, _ in test]},
        folder / "test_batch",
    )
    _pickle({b"label_names": [n.encode() for n in names]}, folder / "batches.meta")
    return {n: {"train": n_train, "test": n_test} for n in names}


def write_cifar100(root: Path, n_train: int = 1, n_test: int = 1) -> dict:
    """cifar-100-python/{train,test,meta}; fine class f belongs to coarse class f % 20 (a fixture mapping)."""
    folder = root / "cifar-100-python"
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [f for f in range(100) for _ in range(n)]
        _pickle(
            {
                b"data": np.array([cifar_image(f % 20, f) for f in fine], np.uint8),
                b"fine_labels": fine,
                b"coarse_labels": [f % 20 for f in fine],
            },
            folder / split,
        )
    _pickle(
        {
            b"fine_label_names": [f"fine{f}".encode() for f in range(100)],
            b"coarse_label_names": [f"coarse{c}".encode() for c in range(20)],
        },
        folder / "meta",
    )
    return {c: {"train": 5 * n_train, "test": 5 * n_test} for c in range(20)}


def idx_bytes(arr: np.ndarray) -> bytes:
    """An array of uint8 in IDX format: magic 0x0000 08 <ndim>, big-endian dims, data."""
    return struct.pack(f">I{arr.ndim}I", 0x800 + arr.ndim, *arr.shape) + arr.astype(np.uint8).tobytes()


def write_fashion_mnist(root: Path, n_train: int = 2, n_test: int = 1, gz: bool = True) -> dict:
    """The four Fashion-MNIST IDX files; image of class y, index i: all pixels y*20 + i."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.repeat(np.arange(10), n).astype(np.uint8)
        x = (y[:, None, None] * 20 + np.tile(np.arange(n), 10)[:, None, None] + np.zeros((1, 28, 28))).astype(np.uint8)
        for name, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
            else:
                (root / name).write_bytes(idx_bytes(arr))
    return {y: {"train": n_train, "test": n_test} for y in range(10)}
