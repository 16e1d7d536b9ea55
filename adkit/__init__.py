"""adkit: learn and analyse multi-class visual anomaly detection with teacher-student distillation.

Submodules: backbones, data, models, losses, metrics, train, evaluate, probes, features, viz, widgets.
"""

from .runtime import configure as _configure  # thread defaults, before torch loads

_configure()

from .config import VERSION as __version__  # noqa: E402, F401
