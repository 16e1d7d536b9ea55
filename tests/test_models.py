"""Every registered model: shapes, frozen teacher, learning on a fixed batch, and behaviour on constant images."""

from __future__ import annotations

import pytest
import torch

from adkit import losses, models, scoring

NAMES = sorted(models.MODELS)


# what each model's loss and maps report: the one shape test of every model (SNL and the dual student add terms)
LOSS_TERMS = {
    "rd": {"rd"},
    "fd": {"fd"},
    "rd+snl": {"rd", "ch", "sp", "intra", "inter"},
    "fd+snl": {"fd", "sp", "intra", "inter"},
    "dual": {"local", "semantic"},
}  # FD's loss is the ch term
MAP_NAMES = {
    "rd": {"amap", "local"},
    "fd": {"amap", "local"},
    "rd+snl": {"amap", "local", "struct"},
    "fd+snl": {"amap", "local", "struct"},
    "dual": {"amap", "local"},
}


def test_every_model_is_covered():
    from adkit.config import MODEL_NAMES

    assert set(LOSS_TERMS) == set(MAP_NAMES) == set(NAMES)
    assert tuple(models.MODELS) == MODEL_NAMES  # the CLI's torch-free list of the registry's names


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_frozen_teacher(name, teacher):
    torch.manual_seed(0)
    model = models.create(name, teacher=teacher)
    x = torch.rand(2, 3, 64, 64)
    out = model(x)
    assert len(out["t_feats"]) == len(out["s_feats"])
    assert [t.shape for t in out["t_feats"]] == [s.shape for s in out["s_feats"]]
    lo = model.loss(out)
    assert set(lo) == {"loss"} | LOSS_TERMS[name]
    assert lo["loss"].ndim == 0 and torch.isfinite(lo["loss"])
    assert all(not v.requires_grad for k, v in lo.items() if k != "loss")  # the terms are reported, detached
    lo["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None for p in model.student_parameters())
    maps = model.maps(model(x))
    assert set(maps) == MAP_NAMES[name] and all(m.shape == (2, 1, 64, 64) for m in maps.values())
    # the maps that evaluate() also scores alone: SNL's two parts of its amap
    assert set(model.report_maps) == ({"local", "struct"} if "snl" in name else set())
    amap, score = model.predict(x)
    assert amap.shape == (2, 1, 64, 64) and score.shape == (2,)
    model.train()
    assert set(model(x).keys()) == set(out.keys())  # same return type in train and eval


@pytest.mark.parametrize("name", NAMES)
def test_a_few_steps_lower_the_loss(name, teacher):
    torch.manual_seed(0)
    model = models.create(name, teacher=teacher)
    x = torch.rand(4, 3, 64, 64)
    t_feats = model.teacher_features(x)
    opt = model.configure_optimizer()
    model.train()
    first = None
    for _ in range(12):
        loss = model.loss(model(x, t_feats))["loss"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert float(model.loss(model(x, t_feats))["loss"]) < first


def test_identical_features_give_zero_loss_and_zero_map():
    feats = [torch.randn(2, c, s, s) for c, s in ((8, 16), (16, 8), (32, 4))]
    assert float(losses.rd_loss(feats, feats)) == pytest.approx(0, abs=1e-6)
    assert float(losses.fd_loss(feats, feats)) == pytest.approx(0, abs=1e-6)
    maps = [losses.cosine_map(f, f) for f in feats]
    assert float(scoring.fuse_maps(maps, 32).abs().max()) < 1e-6
    other = [f + torch.randn_like(f) for f in feats]
    assert float(losses.rd_loss(feats, other)) > 0.01


def test_map_and_loss_forms_follow_methods():
    t = torch.randn(3, 8, 4, 4)
    s = torch.randn(3, 8, 4, 4)
    # RD's loss flattens the whole map, its map is per pixel: the two differ
    flat = float(losses.rd_loss([t], [s]))
    per_pixel = float(losses.cosine_map(t, s).mean())
    assert flat != pytest.approx(per_pixel)
    # STFPM: ‖T̂ − Ŝ‖² of unit vectors equals 2 − 2·cos (the official code has no ½)
    assert torch.allclose(losses.l2_map(t, s), 2 * losses.cosine_map(t, s), atol=1e-5)
    # RD's loss is invariant to rescaling each image's features
    assert float(losses.rd_loss([t * 3.0], [s])) == pytest.approx(flat, rel=1e-5)


def test_stfpm_loss_has_the_official_scale():
    """Parity with gdwang08/STFPM's `train_val`: Σ over stages of the mean over batch and positions of the squared
    distance of channel-normalised features, summed over channels — no ½, no division by the channel count."""
    torch.manual_seed(0)
    t = [torch.randn(2, 6, 8, 8), torch.randn(2, 10, 4, 4)]
    s = [torch.randn(2, 6, 8, 8), torch.randn(2, 10, 4, 4)]
    official = sum(
        ((a / a.norm(dim=1, keepdim=True) - b / b.norm(dim=1, keepdim=True)) ** 2).sum(1).mean() for a, b in zip(t, s)
    )
    assert float(losses.fd_loss(t, s)) == pytest.approx(float(official), rel=1e-5)
    # at every position: opposite vectors give 4, orthogonal ones 2, per stage
    e = torch.zeros(1, 2, 3, 3)
    e[:, 0] = 1
    f = torch.zeros(1, 2, 3, 3)
    f[:, 1] = 1
    assert float(losses.fd_loss([e], [-e])) == pytest.approx(4.0)
    assert float(losses.fd_loss([e, e], [f, f])) == pytest.approx(4.0)


def test_blur_preserves_constants_and_spreads_peaks():
    m = torch.full((1, 1, 32, 32), 2.0)
    assert torch.allclose(scoring.gaussian_blur(m, 4.0), m, atol=1e-5)
    p = torch.zeros(1, 1, 32, 32)
    p[0, 0, 16, 16] = 1
    b = scoring.gaussian_blur(p, 2.0)
    assert float(b.sum()) == pytest.approx(1.0, rel=1e-3) and float(b.max()) < 0.1


@pytest.mark.parametrize("shape,sigma", [((3, 1, 20, 13), 1.0), ((2, 1, 9, 9), 4.0), ((1, 1, 6, 11), 0.7)])
def test_blur_gradient_is_the_exact_adjoint_and_the_forward_is_unchanged(shape, sigma):
    # the blur's custom backward (two matrix products) against finite differences (float64, both axes, with
    # the reflect padding and a radius clipped by the map's size), and against autograd through the
    # convolutions in float32; with a gradient the forward gives the very same numbers as without
    from adkit import scoring

    torch.manual_seed(0)
    x = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: scoring.gaussian_blur(t, sigma), (x,))
    x32 = torch.rand(shape, requires_grad=True)
    g = torch.randn(shape)
    y = scoring.gaussian_blur(x32, sigma)
    (y * g).sum().backward()
    k, r = scoring._blur_kernel(sigma, shape[-2], shape[-1], x32)
    ref_x = x32.detach().clone().requires_grad_()
    y_ref = scoring._blur_conv(ref_x, k, r)  # plain autograd
    (y_ref * g).sum().backward()
    assert torch.equal(y, y_ref) and torch.equal(y.detach(), scoring.gaussian_blur(x32.detach(), sigma))
    assert torch.allclose(x32.grad, ref_x.grad, atol=1e-6)


@pytest.mark.parametrize("name", ["rd", "fd"])
def test_fitted_on_constant_images_scores_them_low_and_a_changed_one_higher(name, teacher):
    torch.manual_seed(0)
    model = models.create(name, teacher=teacher)
    x = torch.full((8, 3, 64, 64), 0.5) + 0.02 * torch.randn(8, 3, 64, 64)
    from adkit.loop import fit

    fit(model, x, iters=60, batch_size=8, progress=False)
    normal = x[:2].clone()
    changed = normal.clone()
    changed[:, :, 20:40, 20:40] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)
    _, s_normal = model.predict(normal)
    amap, s_changed = model.predict(changed)
    assert float(s_changed.min()) > 1.5 * float(s_normal.max())
    inside = amap[:, 0, 20:40, 20:40].mean()
    outside = amap[:, 0, :10, :10].mean()
    assert float(inside) > float(outside)


# Parameter counts of the official RD4AD modules (hq-deng/RD4AD, `resnet.py` BN_layer and `de_resnet.py`),
# counted by instantiating them: the OCBE's parameters on the path its forward uses (its unused conv4/bn4 left
# out), and the decoder's first three stages.
OFFICIAL_RD_PARAMS = {
    "resnet18": (11_680_000, 3_703_168),
    "resnet34": (16_400_640, 5_770_624),
    "wide_resnet50_2": (58_885_120, 24_917_504),
}


@pytest.mark.parametrize("backbone", sorted(OFFICIAL_RD_PARAMS))
def test_rd_parity_with_the_official_layout(backbone):
    """OCBE and decoder have exactly the official parameter counts: basic blocks (2; 2, 2, 2) for resnet18,
    (3; 3, 4, 6) for resnet34, bottlenecks (3; 3, 4, 6) at width ×2 for wide_resnet50_2; official init."""
    from adkit import backbones
    from adkit.models import rd

    torch.manual_seed(0)
    model = models.create("rd", teacher=backbones.create(backbone, pretrained=False))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(model.ocbe), count(model.decoder)) == OFFICIAL_RD_PARAMS[backbone]
    kind = rd.BasicBlock if backbone in ("resnet18", "resnet34") else rd.Bottleneck
    assert all(isinstance(b, kind) for stage in model.decoder.stages for b in stage)
    # kaiming-normal, fan-out: a 3×3 conv of the last decoder stage has std √(2 / (c_out·9))
    convs = [m for m in model.decoder.stages[-1].modules() if isinstance(m, torch.nn.Conv2d)]
    conv = next(m for m in convs if m.kernel_size == (3, 3))
    expected = (2 / (conv.out_channels * 9)) ** 0.5
    assert float(conv.weight.std()) == pytest.approx(expected, rel=0.1)
    bns = [m for m in model.ocbe.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bool((b.weight == 1).all() and (b.bias == 0).all()) for b in bns)


def test_rd_on_the_embedded_teacher_keeps_its_own_layout_and_torch_init(teacher):
    """EfficientNet teachers: bottleneck blocks and PyTorch's default conv init (kaiming-uniform, a=√5, fan-in:
    std = 1/√(3·fan_in)), unless asked for the official init."""
    from adkit.models import rd

    torch.manual_seed(0)
    model = models.create("rd", teacher=teacher)
    assert all(isinstance(b, rd.Bottleneck) for stage in model.decoder.stages for b in stage)
    conv = model.ocbe.embed[0].mid[0]
    fan_in = conv.in_channels * 9
    assert float(conv.weight.std()) == pytest.approx((1 / (3 * fan_in)) ** 0.5, rel=0.1)
    official = models.create("rd", teacher=teacher, init="official", block="basic")
    conv = official.ocbe.embed[0].second[0]
    assert float(conv.weight.std()) == pytest.approx((2 / (conv.out_channels * 9)) ** 0.5, rel=0.1)
    with pytest.raises(ValueError, match="block"):
        models.create("rd", teacher=teacher, block="dense")


def test_unknown_option_is_an_error(teacher):
    with pytest.raises(ValueError, match="no option"):
        models.create("rd", teacher=teacher, not_an_option=1)
    with pytest.raises(ValueError, match="unknown model"):
        models.create("nope", teacher=teacher)


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_predict_channels_last_one_forward_same_maps(name, teacher, monkeypatch):
    """`evaluation.predict` runs CNN models channels-last on the CPU, with the student's batch norms folded, and
    in one forward pass per batch (the dual student's scores come from the same pass): maps and scores equal
    those of the plain model up to float rounding, every score equal to the model's own `predict`, and the model
    is given back as it was: the same modules, the same weights bit for bit, the plain layout."""
    from contextlib import contextmanager

    from adkit import evaluation

    torch.manual_seed(0)
    model = models.create(name, teacher=teacher).eval()
    if hasattr(model, "calibrate"):
        model.calibrate(torch.rand(4, 3, 64, 64))
    teacher_modules = set(model.teacher.modules())  # the teacher is shared by the tests of this file: left as is
    for m in model.modules():  # the student's norms made to do something, so that folding them is seen
        if isinstance(m, torch.nn.BatchNorm2d) and m not in teacher_modules:
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(5, 3, 64, 64)
    modules = list(model.modules())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    fast = evaluation.predict(model, x, batch_size=2)
    assert len(calls) == 3  # ceil(5 / 2) batches, one forward each
    hook.remove()
    assert all(p.is_contiguous() for p in model.parameters())  # layout given back
    assert list(model.modules()) == modules  # the folded copies swapped back out
    same = (torch.allclose(v, state[k], rtol=0, atol=0, equal_nan=True) for k, v in model.state_dict().items())
    assert all(same)  # bit for bit (NaN where the dual student keeps no calibration choice)

    @contextmanager
    def plain(model, device):
        yield False

    monkeypatch.setattr(evaluation, "inference_form", plain)
    slow = evaluation.predict(model, x, batch_size=2)
    assert set(fast) == set(slow)
    for k in fast:
        assert fast[k].shape == slow[k].shape
        assert abs(fast[k] - slow[k]).max() <= 1e-4 * (1 + abs(slow[k]).max()), k
    amap, score = model.predict(x)
    assert torch.allclose(torch.from_numpy(slow["score"]), score, atol=1e-5)
    model.train()
    model.loss(model(x))["loss"].backward()  # the model can still be trained (no inference-mode parameters)
