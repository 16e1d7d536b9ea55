"""adkit: learn and analyse multi-class visual anomaly detection with teacher-student distillation.

Submodules: backbones, data, models, losses, metrics, train, evaluate, probes, features, viz, widgets.
"""

__version__ = "0.1.0"

from .runtime import configure as _configure  # noqa: E402  (thread defaults, before torch loads)

_configure()
