"""adkit: learn and analyse multi-class visual anomaly detection with teacher-student distillation.

Submodules: backbones, data, models, losses, metrics, train, evaluate, probes, features, viz, widgets.
"""

__version__ = "0.1.0"
