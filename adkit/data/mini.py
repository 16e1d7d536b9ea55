"""The embedded dataset "mini": photographs bundled with scikit-image turned into an MVTec AD-style set.

Textures are random crops, train from the left 60% of the photo and test from the disjoint right 40%.
Objects are crops of a few framings of one photo with jitter (position, scale, rotation, light, colour,
noise), so that they are not trivially alike. Test images carry four synthetic defects with masks
(`adkit.data.defects`): a patch of another class's photo (the SNL paper's cross-class probe), a patch of
elsewhere in the same photo (rotated, rescaled), a scratch and a colour spot. Nothing is downloaded.

    root = adkit.data.mini.build("data/mini")          # seconds; skipped when recipe.json matches
    ds = adkit.data.load("mini", split="test")          # builds under $ADKIT_DATA/mini if missing

Layout: `<root>/<class>/{train/good, test/<defect>, ground_truth/<defect>}/NNN[_mask].png`, plus
`recipe.json` (the recipe and its hash, written last) and `provenance.json` (where each image was cut).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from . import mvtec
from .core import GOOD, DataError, Record, data_root
from .defects import DEFECTS

RECIPE_VERSION = 1  # bump when the generator's code changes what it draws; stored sets then rebuild
TRAIN_FRAC = 0.6  # textures: train crops from x < 0.6·W, test crops from x ≥ 0.6·W
MIN_DIFF = 12.0  # a defect must change the pixels under its mask by this many grey levels on average


@dataclass(frozen=True)
class Source:
    """Where a class comes from: a `skimage.data` photo, its kind, and how it is cropped."""

    photo: str  # skimage.data function (bundled with the package; no download)
    kind: str  # "texture" | "object"
    side: float = 0.0  # textures: crop side in photo pixels
    # objects: framings (cy, cx, side), as fractions of photo height, width and shorter side
    framings: tuple[tuple[float, float, float], ...] = ()


SOURCES: dict[str, Source] = {
    # textures
    "brick": Source("brick", "texture", side=150),
    "grass": Source("grass", "texture", side=150),
    "gravel": Source("gravel", "texture", side=150),
    "tissue": Source("immunohistochemistry", "texture", side=170),
    "stars": Source("hubble_deep_field", "texture", side=256),
    "moon": Source("moon", "texture", side=170),
    # objects
    "cat": Source("chelsea", "object", framings=((0.55, 0.5, 0.9), (0.45, 0.38, 0.62), (0.45, 0.63, 0.62))),
    "coffee": Source("coffee", "object", framings=((0.5, 0.5, 0.95), (0.38, 0.5, 0.62), (0.58, 0.55, 0.72))),
    "astronaut": Source("astronaut", "object", framings=((0.3, 0.5, 0.55), (0.42, 0.45, 0.8), (0.24, 0.55, 0.42))),
    "cameraman": Source("camera", "object", framings=((0.35, 0.45, 0.6), (0.45, 0.5, 0.85), (0.3, 0.57, 0.45))),
    "motorcycle": Source(
        "stereo_motorcycle", "object", framings=((0.62, 0.45, 0.8), (0.62, 0.35, 0.6), (0.62, 0.6, 0.6))
    ),
    "coins": Source("coins", "object", framings=((0.5, 0.5, 0.9), (0.35, 0.33, 0.55), (0.62, 0.65, 0.55))),
    "rocket": Source("rocket", "object", framings=((0.6, 0.5, 0.8), (0.52, 0.5, 0.55))),
    "retina": Source("retina", "object", framings=((0.5, 0.5, 0.86), (0.5, 0.38, 0.55), (0.5, 0.62, 0.55))),
}
CLASSES: tuple[str, ...] = tuple(SOURCES)
KINDS: dict[str, str] = {c: s.kind for c, s in SOURCES.items()}
# Every class once, in the order the interference curve nests them (its 2, 4, 8 and 14 classes are prefixes):
# benchmarks/interference*.py, `adkit demo` and notebook 1 train them in this order.
INTERFERENCE_ORDER: tuple[str, ...] = (
    "brick",
    "cat",
    "grass",
    "cameraman",
    "gravel",
    "coffee",
    "tissue",
    "rocket",
    "stars",
    "moon",
    "astronaut",
    "motorcycle",
    "coins",
    "retina",
)
DEFECT_TYPES: tuple[str, ...] = ("cut_paste_cross", "cut_paste_same", "scratch", "color_spot")

# jitter ranges per kind: scale, rotation (deg), centre shift (fraction of side), brightness, gamma,
# per-channel gain, noise std (grey levels)
JITTER = {
    "texture": dict(
        scale=(0.9, 1.1), angle=3.0, shift=0.0, bright=(0.93, 1.07), gamma=(0.9, 1.1), gain=0.02, noise=2.0
    ),
    "object": dict(
        scale=(0.88, 1.12), angle=10.0, shift=0.06, bright=(0.8, 1.2), gamma=(0.8, 1.25), gain=0.06, noise=3.0
    ),
}


@dataclass(frozen=True)
class MiniRecipe:
    """Everything the set depends on; its hash decides whether a stored set is current."""

    seed: int = 0
    image_size: int = 128
    n_train: int = 60  # good training images per class
    n_test_good: int = 20
    n_test_per_defect: int = 5  # per defect type, 4 types
    classes: tuple[str, ...] = CLASSES
    version: int = RECIPE_VERSION

    def __post_init__(self):
        object.__setattr__(self, "classes", tuple(self.classes))  # lists from JSON hash like tuples


RECIPE = MiniRecipe()


def recipe_hash(recipe: MiniRecipe) -> str:
    blob = json.dumps(asdict(recipe), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _validate(recipe: MiniRecipe) -> None:
    unknown = [c for c in recipe.classes if c not in SOURCES]
    if unknown:
        raise ValueError(f"unknown mini class(es) {', '.join(unknown)}; choose from: {', '.join(CLASSES)}")
    if not recipe.classes:
        raise ValueError("a mini recipe needs at least one class")
    if recipe.version != RECIPE_VERSION:
        raise ValueError(f"this adkit builds mini recipe version {RECIPE_VERSION}, not {recipe.version}")
    if recipe.image_size < 16 or min(recipe.n_train, recipe.n_test_good, recipe.n_test_per_defect) < 0:
        raise ValueError(f"image_size must be >= 16 and counts >= 0: {recipe}")


# ---------------------------------------------------------------------------------------------------------
# source photos and views


@cache
def _photo(cls: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, SOURCES[cls].photo)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    img.flags.writeable = False
    return img


def source_image(cls: str) -> np.ndarray:
    """The full source photograph of a class, RGB uint8 `(H,W,3)` (a read-only array)."""
    if cls not in SOURCES:
        raise ValueError(f"unknown mini class {cls!r}; choose from: {', '.join(CLASSES)}")
    return _photo(cls)


@lru_cache(maxsize=64)
def _scaled(cls: str, k: float) -> Image.Image:
    """The photo resized by `k` (antialiased), so that views need only a mild resampling."""
    img = Image.fromarray(_photo(cls))
    if abs(k - 1) < 1e-3:
        return img
    return img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.LANCZOS)


def _render(cls: str, cy: float, cx: float, side: float, angle: float, size: int, side0: float) -> np.ndarray:
    """A `size`² view of the photo: square of `side` photo px centred on (cy, cx), rotated by `angle` deg.

    The photo is first resized by size/side0 (cached), so `side0` should be near `side`.
    """
    k = round(size / side0, 4)
    im = _scaled(cls, k)
    s = side * k / size  # input px per output px
    c = cy * k, cx * k
    t = np.deg2rad(angle)
    a, b, d, e = s * np.cos(t), -s * np.sin(t), s * np.sin(t), s * np.cos(t)
    # PIL's affine maps output (x, y) to input (a·x + b·y + c0, d·x + e·y + f0)
    c0 = c[1] - (a + b) * size / 2
    f0 = c[0] - (d + e) * size / 2
    out = im.transform((size, size), Image.Transform.AFFINE, (a, b, c0, d, e, f0), Image.Resampling.BILINEAR)
    return np.asarray(out)


def _place(
    region: tuple[float, float, float, float],
    side: float,
    angle: float,
    rng: np.random.Generator,
    centre: tuple[float, float] | None = None,
) -> tuple[float, float, float, list[float]]:
    """Centre and side of a rotated square whose bounding box lies inside `region` (y0, x0, y1, x1).

    With `centre` given it is moved (not resampled) just enough to fit. Returns (cy, cx, side, box).
    """
    y0, x0, y1, x1 = region
    f = abs(np.cos(np.deg2rad(angle))) + abs(np.sin(np.deg2rad(angle)))  # bounding box side / square side
    side = min(side, (y1 - y0) / f, (x1 - x0) / f)
    e = side * f / 2
    lo_y, hi_y = y0 + e, max(y0 + e, y1 - e)  # max(): equal up to rounding when the square fills the region
    lo_x, hi_x = x0 + e, max(x0 + e, x1 - e)
    if centre is None:
        cy, cx = float(rng.uniform(lo_y, hi_y)), float(rng.uniform(lo_x, hi_x))
    else:
        cy, cx = float(np.clip(centre[0], lo_y, hi_y)), float(np.clip(centre[1], lo_x, hi_x))
    return cy, cx, side, [round(cy - e, 2), round(cx - e, 2), round(cy + e, 2), round(cx + e, 2)]


def _region(cls: str, split: str) -> tuple[float, float, float, float]:
    H, W = _photo(cls).shape[:2]
    if SOURCES[cls].kind == "object" or split == "any":
        return 0.0, 0.0, float(H), float(W)
    xs = TRAIN_FRAC * W
    return (0.0, 0.0, float(H), xs) if split == "train" else (0.0, xs, float(H), float(W))


def _nominal_side(cls: str, framing: int = 0) -> float:
    src = SOURCES[cls]
    if src.kind == "texture":
        return src.side
    return src.framings[framing][2] * min(_photo(cls).shape[:2])


def _photometric(img: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    """Brightness, gamma, per-channel gain and Gaussian noise: `255·(x/255)^γ·b·g + n`."""
    levels = (np.arange(256, dtype=np.float32) / 255.0) ** p["gamma"] * 255.0 * p["bright"]
    lut = levels[:, None] * np.asarray(p["gain"], np.float32)[None]  # (256, 3): one curve per channel
    x = lut[img, np.arange(3)]  # (H,W,3)
    x += p["noise"] * rng.standard_normal(size=x.shape, dtype=np.float32)
    return np.rint(x.clip(0, 255)).astype(np.uint8)


def _jitter_params(kind: str, rng: np.random.Generator) -> dict:
    j = JITTER[kind]
    return {
        "bright": float(rng.uniform(*j["bright"])),
        "gamma": float(np.exp(rng.uniform(np.log(j["gamma"][0]), np.log(j["gamma"][1])))),
        "gain": [float(g) for g in rng.uniform(1 - j["gain"], 1 + j["gain"], size=3)],
        "noise": j["noise"],
    }


def sample_view(
    cls: str, rng: np.random.Generator, split: str = "test", image_size: int = 128, photometric: bool = True
) -> tuple[np.ndarray, dict]:
    """One normal image of a class, RGB uint8 `(S,S,3)`, and how it was cut (`box` in photo px y0,x0,y1,x1).

    Textures come from the split's part of the photo ("train" left 60%, "test" right 40%, "any").
    """
    src = SOURCES[cls]
    j = JITTER[src.kind]
    angle = float(rng.uniform(-j["angle"], j["angle"]))
    scale = float(rng.uniform(*j["scale"]))
    if src.kind == "texture":
        framing, side0 = -1, src.side
        cy, cx, side, box = _place(_region(cls, split), side0 * scale, angle, rng)
    else:
        framing = int(rng.integers(len(src.framings)))
        fy, fx, _ = src.framings[framing]
        H, W = _photo(cls).shape[:2]
        side0 = _nominal_side(cls, framing)
        shift = rng.uniform(-j["shift"], j["shift"], size=2) * side0
        cy, cx, side, box = _place(
            _region(cls, split), side0 * scale, angle, rng, centre=(fy * H + shift[0], fx * W + shift[1])
        )
    img = _render(cls, cy, cx, side, angle, image_size, side0)
    info = {"box": box, "angle": round(angle, 3), "framing": framing}
    if photometric:
        p = _jitter_params(src.kind, rng)
        img = _photometric(img, p, rng)
        info["photometric"] = p
    return img, info


def _same_photo_donor(cls: str, rng: np.random.Generator, image_size: int, p: dict) -> np.ndarray:
    """A view of elsewhere in the same photo, turned 45–135° and rescaled ×0.6–0.75 or ×1.4–1.8."""
    side0 = _nominal_side(cls, 0)
    angle = float(rng.choice([-1, 1]) * rng.uniform(45, 135))
    zoom = float(rng.uniform(0.6, 0.75) if rng.random() < 0.5 else rng.uniform(1.4, 1.8))
    cy, cx, side, _ = _place(_region(cls, "any"), side0 * zoom, angle, rng)
    return _photometric(_render(cls, cy, cx, side, angle, image_size, side0), p, rng)


# ---------------------------------------------------------------------------------------------------------
# generation


def _rng(seed: int, cls: str, part: str, i: int) -> np.random.Generator:
    """A generator per image from (seed, class, part, index): choosing classes or counts moves no image."""
    return np.random.default_rng([seed, zlib.crc32(cls.encode()), zlib.crc32(part.encode()), i])


def generate(cls: str, recipe: MiniRecipe = RECIPE):
    """Yield every image of one class as a dict: `file` (relative to the class folder), `image`, `mask`
    (None for good images), `clean` (the image before its defect), `split`, `defect`, and provenance."""
    S = recipe.image_size
    parts = [("train", GOOD, recipe.n_train), ("test", GOOD, recipe.n_test_good)]
    parts += [("test", d, recipe.n_test_per_defect) for d in DEFECT_TYPES]
    for split, defect, n in parts:
        for i in range(n):
            rng = _rng(recipe.seed, cls, f"{split}/{defect}", i)
            img, info = sample_view(cls, rng, split, S)
            item = {
                "file": f"{split}/{defect}/{i:03d}.png",
                "split": split,
                "defect": defect,
                "clean": img,
                "image": img,
                "mask": None,
                **info,
            }
            if defect != GOOD:
                item.update(_draw_defect(cls, defect, img, info, rng, S))
            yield item


def _draw_defect(
    cls: str,
    defect: str,
    img: np.ndarray,
    info: dict,
    rng: np.random.Generator,
    size: int,
    min_diff: float = MIN_DIFF,
    tries: int = 8,
) -> dict:
    """Draw `defect` on `img`, redrawing (up to `tries`) one that hardly changes the pixels (dark sky on
    dark sky): the first with mean |change| >= `min_diff` grey levels inside its mask, else the largest."""
    best = None
    for _ in range(tries):
        extra, source = {}, None
        if defect == "cut_paste_cross":
            others = [c for c in CLASSES if c != cls]  # the full registry, whatever the recipe selects
            extra["donor"] = others[int(rng.integers(len(others)))]
            source, _ = sample_view(extra["donor"], rng, "any", size)
        elif defect == "cut_paste_same":
            source = _same_photo_donor(cls, rng, size, info["photometric"])
        out, mask = DEFECTS[defect](img, rng, source)
        diff = float(np.abs(out[mask].astype(np.float32) - img[mask]).mean())
        if best is None or diff > best[0]:
            best = diff, {"image": out, "mask": mask, **extra}
        if diff >= min_diff:
            break
    return best[1]


def _save_png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path, compress_level=1)


def _write_class(root: Path, cls: str, recipe: MiniRecipe) -> dict:
    prov = {}
    for item in generate(cls, recipe):
        path = root / cls / item["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_png(path, item["image"])
        if item["mask"] is not None:
            mp = mvtec.mask_path(root, cls, item["defect"], path.stem)
            mp.parent.mkdir(parents=True, exist_ok=True)
            _save_png(mp, item["mask"].astype(np.uint8) * 255)
        prov[item["file"]] = {k: item[k] for k in ("box", "angle", "framing", "donor") if k in item}
    return prov


def read_recipe(root: str | Path) -> tuple[MiniRecipe | None, str | None]:
    """The recipe stored in `<root>/recipe.json` and its stored hash; (None, None) if absent or unreadable."""
    try:
        meta = json.loads((Path(root) / "recipe.json").read_text())
        return MiniRecipe(**meta["recipe"]), meta["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def is_current(root: str | Path, recipe: MiniRecipe = RECIPE) -> bool:
    """Whether `root` holds a complete set built from `recipe`."""
    stored, h = read_recipe(root)
    return stored is not None and h == recipe_hash(stored) == recipe_hash(recipe)


def build(root: str | Path, recipe: MiniRecipe = RECIPE, force: bool = False, progress: bool = True) -> Path:
    """Write the set under `root`, unless it already holds this recipe. Returns `root`.

    Writes into a temporary sibling folder and renames it into place, `recipe.json` last, so an
    interrupted build never leaves a set that looks complete.
    """
    from tqdm.auto import tqdm

    _validate(recipe)
    root = Path(root)
    if not force and is_current(root, recipe):
        return root
    if root.exists() and not (root / "recipe.json").is_file() and any(root.iterdir()):
        raise DataError(f"{root}: exists and is not a mini set (no recipe.json); choose another root or empty it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        # classes in 4 threads (even on 2 cores): resampling, PNG encoding and file writes release the GIL
        with ThreadPoolExecutor(min(len(recipe.classes), 4)) as pool:
            futures = {pool.submit(_write_class, tmp, cls, recipe): cls for cls in recipe.classes}
            try:
                done = {}
                for fut in tqdm(
                    as_completed(futures),
                    total=len(futures),
                    desc="building mini",
                    disable=not progress,
                    leave=False,
                ):
                    done[futures[fut]] = fut.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        prov = {cls: done[cls] for cls in recipe.classes}
        (tmp / "provenance.json").write_text(json.dumps(prov, separators=(",", ":")))
        meta = {
            "recipe": asdict(recipe),
            "hash": recipe_hash(recipe),
            "sources": {c: {"skimage": f"skimage.data.{SOURCES[c].photo}", "kind": KINDS[c]} for c in recipe.classes},
            "defects": list(DEFECT_TYPES),
        }
        (tmp / "recipe.json").write_text(json.dumps(meta, indent=1))
        _swap_into_place(tmp, root, recipe)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _swap_into_place(tmp: Path, root: Path, recipe: MiniRecipe) -> None:
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, old / root.name)
    try:
        os.rename(tmp, root)
    except OSError:
        if not is_current(root, recipe):  # another process put something else there meanwhile
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process built the same set first
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare(root: str | Path | None = None, progress: bool = True) -> Path:
    """Build the set under `root` (default `$ADKIT_DATA/mini`) if it is missing or made by older code.

    A set built with another recipe (other classes, sizes, seed) is kept; after a RECIPE_VERSION bump it
    is rebuilt with its own settings.
    """
    root = Path(root) if root else data_root() / "mini"
    stored, _ = read_recipe(root)
    recipe = RECIPE if stored is None else replace(stored, version=RECIPE_VERSION)
    try:
        _validate(recipe)
    except ValueError:  # e.g. a stored class that this version no longer has
        recipe = RECIPE
    return build(root, recipe, progress=progress)


def records(root: str | Path, split: str = "train", classes: list[str] | None = None) -> list[Record]:
    """Records of one split (the MVTec AD loader)."""
    return mvtec.records(root, split=split, classes=classes)


def check(root: str | Path, classes: list[str] | None = None, deep: bool = True) -> dict:
    """The MVTec AD check, plus whether recipe.json is present and intact."""
    out = mvtec.check(root, classes=classes, deep=deep)
    stored, h = read_recipe(root)
    if stored is None:
        out["problems"].append(
            f"{Path(root) / 'recipe.json'}: missing or unreadable; the set is not (fully) "
            "built: run adkit.data.mini.build(root)"
        )
    elif h != recipe_hash(stored):
        out["problems"].append(f"{Path(root) / 'recipe.json'}: hash does not match its recipe; rebuild the set")
    return out


__all__ = [
    "CLASSES",
    "KINDS",
    "SOURCES",
    "DEFECT_TYPES",
    "RECIPE",
    "RECIPE_VERSION",
    "MiniRecipe",
    "build",
    "prepare",
    "records",
    "check",
    "generate",
    "sample_view",
    "source_image",
    "read_recipe",
    "is_current",
    "recipe_hash",
]
