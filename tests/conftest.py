"""Shared fixtures: small CPU-only teachers and datasets written into temporary folders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # `from fixtures import ...`

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def teacher():
    """The embedded teacher with its real weights (shared: creating it takes a few seconds)."""
    from adkit import backbones

    return backbones.create(backbones.EMBEDDED)


@pytest.fixture()
def mvtec_root(tmp_path):
    from fixtures import write_mvtec

    root = tmp_path / "mvtec"
    write_mvtec(root, classes=("bottle", "cable"), n_train=4, defects={"crack": 2, "scratch": 1})
    return root
