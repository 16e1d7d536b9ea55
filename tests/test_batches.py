"""`adkit.batches.in_batches`: the one eval-mode batch loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adkit.batches import in_batches


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    net.train()
    return net


def test_batching_gives_the_whole_stack_in_eval_mode_and_gives_the_mode_back():
    net, x = _net(), torch.rand(7, 3, 8, 8)
    out = in_batches(net, x, batch_size=3, model=net)  # 7 = 3 + 3 + 1
    assert net.training  # its mode back
    net.eval()
    with torch.no_grad():
        whole = net(x)  # eval mode: no dropout, running BN statistics, so each image's output is its own
    assert torch.allclose(out, whole, atol=1e-6) and not out.requires_grad


def test_nested_outputs_keep_their_structure_order_and_dtype():
    x = torch.arange(10.0).reshape(5, 2)
    out = in_batches(lambda b: {"a": [b, b.sum(1).long()], "b": (b * 2,)}, x, batch_size=2)
    assert list(out) == ["a", "b"] and isinstance(out["a"], list) and isinstance(out["b"], tuple)
    assert torch.equal(out["a"][0], x) and torch.equal(out["b"][0], x * 2)
    assert out["a"][1].dtype == torch.long and torch.equal(out["a"][1], x.sum(1).long())


def test_the_mode_comes_back_when_the_function_fails():
    net = _net()

    def fail(_):
        assert not net.training
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        in_batches(fail, torch.rand(2, 3, 8, 8), model=net)
    assert net.training


def test_no_images_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        in_batches(lambda b: b, torch.empty(0, 3))
