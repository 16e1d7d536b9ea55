"""Records, samples and the image dataset every loader feeds.

A loader turns a folder into a list of `Record`s (cheap: paths and labels, no pixels). `ImageDataset`
reads a record into a `Sample` dict at a fixed square size: image `(3,H,W)` in [0, 1], mask `(1,H,W)`
in {0, 1}, label (0 good, 1 defect), class, defect type, path.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..config import IMAGE_SIZE

GOOD = "good"


class DataError(ValueError):
    """A dataset on disk is not what the loader expects; the message names the file and the fix."""


@dataclass(frozen=True)
class Record:
    """One image of a dataset: where it is, what it is. `array` holds in-memory images (CIFAR...)."""

    path: str
    label: int  # 0 good, 1 anomalous
    cls: str
    defect: str = GOOD
    mask_paths: tuple[str, ...] = ()
    array: np.ndarray | None = field(default=None, compare=False, repr=False)
    meta: tuple[tuple[str, str], ...] = ()


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else `$ADKIT_DATA`, else `./data`."""
    return Path(root or os.environ.get("ADKIT_DATA") or "data")


def _gray_to_uint8(im: Image.Image) -> np.ndarray:
    """16-bit and 32-bit grayscale scaled to 0..255 by their type's range (PIL's own conversion clips them,
    turning a 16-bit image white); float images are taken as 0..1."""
    arr = np.asarray(im)
    if im.mode == "F":
        scaled = np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0) * 255.0
    elif im.mode.startswith("I;16"):
        scaled = arr.astype(np.float64) / 257.0  # 65535 -> 255
    else:  # "I": 32-bit ints; PNGs of 16 bits open as "I" in some Pillow versions
        hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
        scaled = np.clip(arr.astype(np.float64), 0, hi) * (255.0 / hi)
    return np.round(scaled).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 `(H,W,3)`; grayscale (8, 16 bit), palette and RGBA are converted.
    Images over PIL's decompression-bomb limit are refused (`$ADKIT_MAX_IMAGE_PIXELS` raises it)."""
    limit = os.environ.get("ADKIT_MAX_IMAGE_PIXELS")
    if limit:
        Image.MAX_IMAGE_PIXELS = int(limit)
    try:
        with warnings.catch_warnings():  # the size is checked below; PIL's warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.width * im.height > (Image.MAX_IMAGE_PIXELS or float("inf")):
                raise Image.DecompressionBombError(f"{im.width}x{im.height} pixels")
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                return np.repeat(_gray_to_uint8(im)[..., None], 3, axis=2)
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError as err:
        raise DataError(
            f"{path}: image too large to read safely ({err}; limit {Image.MAX_IMAGE_PIXELS} "
            "pixels) — downscale it, or raise $ADKIT_MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err}); re-copy or remove the file") from None


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as a boolean `(H,W)` array: any non-zero pixel is defect."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: unreadable mask ({err})") from None
    return arr > 0


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to `size`×`size` (bilinear)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask to `size` (int or (h, w)); bilinear, then binarised at 0.5 (METHODS §0)."""
    h, w = (size, size) if isinstance(size, int) else size
    if mask.shape == (h, w):
        return mask
    im = Image.fromarray(mask.astype(np.float32))
    return np.asarray(im.resize((w, h), Image.BILINEAR)) > 0.5


def load_record(rec: Record, size: int, check_mask_size: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a record at `size`: RGB uint8 `(size,size,3)` and boolean mask `(size,size)`."""
    img = rec.array if rec.array is not None else read_image(rec.path)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    h, w = img.shape[:2]
    mask = np.zeros((h, w), bool)
    for mp in rec.mask_paths:
        m = read_mask(mp)
        if m.shape != (h, w):
            if check_mask_size:
                raise DataError(
                    f"{mp}: mask is {m.shape[1]}x{m.shape[0]} but its image {rec.path} is {w}x{h}; "
                    "masks must have the size of their image"
                )
            m = resize_mask(m, (h, w))
        mask |= m
    return resize_image(img, size), resize_mask(mask, size)


class ImageDataset(torch.utils.data.Dataset):
    """Records read at a fixed size; `__getitem__` returns a Sample dict of tensors and strings."""

    def __init__(self, records: list[Record], image_size: int = IMAGE_SIZE):
        self.records = list(records)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        img, mask = load_record(rec, self.image_size)
        return {
            # np.array copies: arrays from PIL are read-only and torch warns about them
            "image": torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255.0),  # (3,H,W)
            "mask": torch.from_numpy(mask)[None].float(),  # (1,H,W)
            "label": rec.label,
            "cls": rec.cls,
            "defect": rec.defect,
            "path": rec.path,
        }

    @property
    def classes(self) -> list[str]:
        return sorted({r.cls for r in self.records})


def stack(samples: list[dict]) -> dict:
    """Collate Sample dicts into a batch: tensors stacked, strings and ints as lists/tensors."""
    out = {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples]),
    }
    for k in ("cls", "defect", "path"):
        out[k] = [s[k] for s in samples]
    return out


def load_all(ds: ImageDataset, progress: bool = False, desc: str = "reading images") -> dict:
    """Read a whole dataset into one batch dict (small datasets: mini, fixtures, probes)."""
    from tqdm.auto import tqdm

    it = range(len(ds))
    if progress:
        it = tqdm(it, desc=desc, leave=False)
    return stack([ds[i] for i in it])
