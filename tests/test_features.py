"""`adkit.features.class_similarity`: how alike classes look to the frozen teacher."""

from __future__ import annotations

import numpy as np
import torch

from adkit import backbones
from adkit.features import class_similarity


def test_class_similarity_is_a_cosine_matrix_that_sees_copies_as_equal():
    torch.manual_seed(0)
    teacher = backbones.create("efficientnet_lite0", pretrained=False)
    a, b = torch.rand(5, 3, 32, 32), torch.rand(3, 3, 32, 32) * 0.2
    names, sim = class_similarity(teacher, {"a": a, "a again": a.clone(), "b": b}, batch_size=2)
    assert names == ["a", "a again", "b"] and sim.shape == (3, 3)
    assert np.allclose(sim, sim.T, atol=1e-6) and np.allclose(np.diag(sim), 1, atol=1e-5)
    assert sim[0, 1] > 1 - 1e-5  # the same images, batched the same way: the same class mean
    assert sim[0, 2] < sim[0, 1]  # other images look less alike
