"""adkit: learn and analyse multi-class visual anomaly detection with teacher-student distillation.

    import adkit

    configs = adkit.protocol_configs("rd", 400, ["brick", "cat", "grass"])   # one-class and multi-class
    run = adkit.cached_run(configs["multi-class"])                          # trained once, then reused
    cfg, models_by_name = adkit.load_run(run)
    res = adkit.evaluate(run)                                               # per class, per defect, the mean

The names below load on first use, so `import adkit` stays quick and loads no torch; the thread settings are
made first (`adkit.runtime`), before anything can load it. Modules: analysis, backbones, calibration, cases,
data, evaluation, features, losses, metrics, models, probes, report, runs, scoring, tables, training, viz,
widgets.
"""

from .runtime import configure as _configure  # thread defaults, before torch loads

_configure()

import importlib  # noqa: E402

from .config import VERSION as __version__  # noqa: E402, F401

# what a notebook uses, by the module that defines it
_EXPORTS = {
    "ALL": "config",
    "TrainConfig": "config",
    "build_model": "training",
    "cached_run": "training",
    "protocol_configs": "training",
    "run_key": "training",
    "train": "training",
    "fit": "loop",
    "history": "runs",
    "load_run": "runs",
    "model_for": "runs",
    "evaluate": "evaluation",
    "predict_classes": "evaluation",
    "score_sets": "evaluation",
    "dual_ablation": "ablation",
    "dual_markdown": "ablation",
    "summarize": "report",
    "format_difference": "report",
    "comparison_table": "tables",
    "results_table": "tables",
}
_MODULES = (
    "analysis",
    "backbones",
    "calibration",
    "cases",
    "data",
    "evaluation",
    "features",
    "losses",
    "metrics",
    "models",
    "probes",
    "report",
    "runs",
    "scoring",
    "tables",
    "training",
    "viz",
    "widgets",
)

__all__ = ["__version__", *_EXPORTS, *_MODULES]


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'adkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
