"""SNL (our reconstruction): structural losses, CRAM, the two models, calibration and the ablation base."""

from __future__ import annotations

import pytest
import torch

from adkit import losses, models
from adkit.ablation import ABLATION
from adkit.loop import fit
from adkit.models.snl import SNL, CentralResidualAggregation, RDSNLConfig, kmeans


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, two threads made these tests up to 100× slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


PAIR_LOSSES = {
    "channel": losses.channel_loss,
    "spatial": losses.spatial_loss,
    "intra": losses.intra_affinity_loss,
    "inter": losses.inter_affinity_loss,
}


def _feats(seed: int = 0, shape=(3, 8, 6, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g)
    return t, t + 0.5 * torch.randn(*shape, generator=g)


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_structural_losses_zero_for_identical_positive_otherwise(name):
    fn = PAIR_LOSSES[name]
    t, s = _feats()
    assert float(fn(t, t)) == pytest.approx(0, abs=1e-6)
    assert float(fn(t, s)) > 1e-3


def test_invariances():
    t, s = _feats(1)
    g = torch.Generator().manual_seed(2)
    per_position = 0.1 + torch.rand(3, 1, 6, 6, generator=g)
    per_channel = 0.1 + torch.rand(3, 8, 1, 1, generator=g)
    per_image = 0.1 + torch.rand(3, 1, 1, 1, generator=g)
    for fn in (losses.channel_loss, losses.intra_affinity_loss):  # cosine along channels, per position
        assert float(fn(t, s * per_position)) == pytest.approx(float(fn(t, s)), rel=1e-5)
        assert float(fn(t * per_position, s)) == pytest.approx(float(fn(t, s)), rel=1e-5)
    sp = float(losses.spatial_loss(t, s))  # cosine over positions, per channel
    assert float(losses.spatial_loss(t, s * per_channel)) == pytest.approx(sp, rel=1e-5)
    inter = float(losses.inter_affinity_loss(t, s))  # cosine of pooled descriptors, per image
    assert float(losses.inter_affinity_loss(t, s * per_image)) == pytest.approx(inter, rel=1e-4)
    # ... and they measure different things: each is changed by the other's rescaling
    assert float(losses.spatial_loss(t, s * per_position)) != pytest.approx(sp, rel=1e-3)
    ch = float(losses.channel_loss(t, s))
    assert float(losses.channel_loss(t, s * per_channel)) != pytest.approx(ch, rel=1e-3)


def test_distance_shapes_and_batch_of_one():
    t, s = _feats(shape=(2, 8, 8, 6))
    assert losses.channel_distance(t, s).shape == (2, 1, 8, 6)
    assert losses.spatial_distance(t, s).shape == (2, 8)
    assert losses.intra_affinity_distance(t, s).shape == (2, 1, 8, 6)
    assert losses.intra_affinity_distance(t, s, pool=2).shape == (2, 1, 4, 3)
    assert float(losses.inter_affinity_loss(t[:1], s[:1])) == 0.0


def test_intra_affinity_memory_options():
    t, s = _feats(3, shape=(2, 8, 8, 8))  # N = 64
    full = losses.intra_affinity_distance(t, s)
    assert torch.equal(losses.intra_affinity_distance(t, s, max_positions=64), full)
    assert torch.equal(losses.intra_affinity_distance(t, s, max_positions=1000), full)
    a = losses.intra_affinity(t.bfloat16(), max_positions=16)  # keys: a strided 4×4 sub-grid
    assert a.dtype == torch.float32 and a.shape == (2, 64, 16)
    sub = losses.intra_affinity_distance(t, s, max_positions=16)  # still one value per position
    assert sub.shape == full.shape and float(sub.min()) > 0
    assert float(losses.intra_affinity_distance(t, t, max_positions=16).abs().max()) < 1e-5
    aff = losses.intra_affinity(t)  # normalised features: self-affinity 1
    assert torch.allclose(torch.diagonal(aff, dim1=1, dim2=2), torch.ones(2, 64), atol=1e-5)


@pytest.mark.parametrize("residual", [True, False])
def test_cram_is_the_identity_at_init(residual):
    torch.manual_seed(0)
    cram = CentralResidualAggregation(8, k=4, residual=residual)
    s = torch.randn(2, 8, 5, 5)
    out, r = cram(s)
    assert torch.allclose(out, s, atol=1e-5) and r.shape == s.shape
    cram.init_centres(s.permute(0, 2, 3, 1).flatten(0, 2))
    assert torch.allclose(cram(s)[0], s, atol=1e-5)
    assert bool(cram.initialised)


def test_kmeans_init_finds_the_cluster_means():
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[5.0, 0, 0, 0], [0, -5.0, 0, 0], [0, 0, 5.0, 5.0]])
    x = (means[:, None] + 0.1 * torch.randn(3, 200, 4, generator=g)).reshape(-1, 4)
    x = x[torch.randperm(len(x), generator=g)]
    assert torch.equal(kmeans(x, 3, seed=1), kmeans(x, 3, seed=1))  # deterministic
    cram = CentralResidualAggregation(4, k=3)
    cram.init_centres(x)
    c = cram.centres.detach()
    assert float(torch.cdist(means, c).min(1).values.max()) < 0.05
    # the assignment conv starts as the soft nearest-centre rule
    a = cram.assign(x.T.reshape(1, 4, -1, 1)).softmax(1)[0, :, :, 0].T  # (N,K)
    assert torch.equal(a.argmax(1), torch.cdist(x, c).argmin(1))


@pytest.mark.parametrize("name", ["rd+snl", "fd+snl"])
def test_cram_centres_start_from_the_first_training_batch(name, teacher):
    """Shapes, the frozen teacher and learning are tested for every model in test_models.py; here what SNL adds:
    one residual per stage, and the centres set by k-means on the first training batch only."""
    torch.manual_seed(0)
    model = models.create(name, teacher=teacher)
    x = torch.rand(4, 3, 64, 64)
    model.eval()
    model(x)
    assert not any(bool(c.initialised) for c in model.cram)  # evaluation never initialises
    model.train()
    out = model(x)
    assert len(out["residuals"]) == 3 and all(bool(c.initialised) for c in model.cram)
    centres = [c.centres.detach().clone() for c in model.cram]
    model(torch.rand(4, 3, 64, 64))  # a second batch does not re-seed them
    assert all(torch.equal(a, c.centres) for a, c in zip(centres, model.cram, strict=True))


def test_calibration_normalises_training_maps_and_survives_a_round_trip(teacher):
    torch.manual_seed(0)
    model = models.create("rd+snl", teacher=teacher)
    x = torch.rand(6, 3, 64, 64)
    fit(model, x, iters=2, batch_size=4, progress=False)  # calls model.calibrate on the training images
    buffers = {k: float(getattr(model, k)) for k in ("local_mean", "local_std", "struct_mean", "struct_std")}
    assert buffers["local_mean"] != 0 and buffers["local_std"] != 1
    assert buffers["struct_mean"] != 0 and buffers["struct_std"] != 1
    with torch.no_grad():
        local, struct = model.raw_maps(model(x))
    z = (local - model.local_mean) / model.local_std
    assert float(z.mean()) == pytest.approx(0, abs=1e-3) and float(z.std()) == pytest.approx(1, abs=1e-2)

    torch.manual_seed(1)
    fresh = models.create("rd+snl", teacher=teacher)
    fresh.load_state_dict(model.state_dict())
    assert {k: float(getattr(fresh, k)) for k in buffers} == buffers
    fresh.eval()
    assert torch.allclose(fresh.maps(fresh(x[:2]))["amap"], model.maps(model(x[:2]))["amap"], atol=1e-5)
    # a resumed run keeps its centres: no k-means again on its first training batch
    centres = fresh.cram[0].centres.detach().clone()
    fresh.train()
    fresh(x[:2])
    assert torch.equal(fresh.cram[0].centres.detach(), centres)


def test_all_switches_off_is_the_base_model(teacher):
    torch.manual_seed(0)
    rd = models.create("rd", teacher=teacher)
    torch.manual_seed(0)
    snl = models.create("rd+snl", teacher=teacher, **ABLATION["base"])
    extra = set(snl.student_state_dict()) - {f"base.{k}" for k in rd.student_state_dict()}
    assert extra == {"local_mean", "local_std", "struct_mean", "struct_std"}
    for k, v in rd.student_state_dict().items():
        assert torch.equal(v, snl.student_state_dict()[f"base.{k}"])
    x = torch.rand(2, 3, 64, 64)
    out = snl(x)
    assert torch.equal(snl.loss(out)["loss"], losses.rd_loss(out["t_feats"], out["s_feats"]))
    assert torch.equal(snl.loss(out)["loss"], rd.loss(rd(x))["loss"])
    rd.eval()
    snl.eval()
    # uncalibrated (μ = 0, σ = 1) and α = 0: the same map
    assert torch.allclose(snl.maps(snl(x))["amap"], rd.maps(rd(x))["amap"], atol=1e-6)


def test_ablation_is_cumulative_and_ends_at_the_defaults():
    assert list(ABLATION) == ["base", "+spatial-channel", "+intra", "+inter", "+cram"]
    switches = ("use_ch", "use_sp", "use_intra", "use_inter", "use_cram")
    on = [sum(opts[k] for k in switches) for opts in ABLATION.values()]
    assert on == sorted(on) and on[0] == 0 and on[-1] == 5
    assert models.make_config("rd+snl", **ABLATION["+cram"]) == RDSNLConfig()
    with pytest.raises(ValueError, match="intra_stages"):
        models.create("rd+snl", pretrained=False, intra_stages=(3,))


def test_fitted_on_constant_images_scores_them_low_and_a_changed_one_higher(teacher):
    torch.manual_seed(0)
    model = models.create("rd+snl", teacher=teacher)
    x = torch.full((8, 3, 64, 64), 0.5) + 0.02 * torch.randn(8, 3, 64, 64)
    fit(model, x, iters=60, batch_size=8, progress=False)
    normal = x[:2].clone()
    changed = normal.clone()
    changed[:, :, 20:40, 20:40] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)
    _, s_normal = model.predict(normal)
    amap, s_changed = model.predict(changed)
    assert float(s_changed.min()) > float(s_normal.max()) + 3  # maps are in training-normal std units
    with torch.no_grad():
        maps = model.maps(model(changed))
    for key in ("amap", "local", "struct"):
        inside, outside = maps[key][:, 0, 20:40, 20:40].mean(), maps[key][:, 0, :10, :10].mean()
        assert float(inside) > float(outside), key


def test_snl_wraps_its_base_model_and_loads_checkpoints_written_before_the_wrapper(teacher):
    torch.manual_seed(0)
    model = models.create("rd+snl", teacher=teacher)
    assert isinstance(model, SNL) and isinstance(model.base, models.ReverseDistillation)
    assert model.teacher is model.base.teacher and model.name == "rd+snl"
    assert not any("teacher" in k for k in model.student_state_dict())
    # the optimiser trains the base student and the CRAMs, nothing else
    params = {id(p) for g in model.configure_optimizer().param_groups for p in g["params"]}
    assert params == {id(p) for p in model.base.student_parameters()} | {id(p) for p in model.cram.parameters()}
    # an rd+snl checkpoint of adkit <= 0.1.0 named RD's parts without "base."
    old = {k.removeprefix("base."): v.clone() + 1 for k, v in model.student_state_dict().items()}
    assert any(k.startswith("ocbe.") for k in old)
    torch.manual_seed(1)
    fresh = models.create("rd+snl", teacher=teacher)
    missing, unexpected = fresh.load_state_dict(old, strict=False)
    assert unexpected == [] and all(k.startswith("base.teacher.") for k in missing)
    assert all(torch.equal(fresh.student_state_dict()[k], v + 1) for k, v in model.student_state_dict().items())


def test_fd_snl_does_not_add_the_channel_term_twice(teacher):
    """FD's loss per position is ‖T̂ − Ŝ‖² = 2·(1 − cos): the channel-wise term itself, with weight 2."""
    torch.manual_seed(0)
    fd = models.create("fd+snl", teacher=teacher, use_sp=False, use_intra=False, use_inter=False, use_cram=False)
    out = fd(torch.rand(2, 3, 64, 64))
    pairs = list(zip(out["t_feats"], out["s_feats"], strict=True))
    base = losses.fd_loss(out["t_feats"], out["s_feats"])
    assert torch.allclose(base, 2 * sum(losses.channel_loss(t, s) for t, s in pairs), atol=1e-5)
    lo = fd.loss(out)
    assert "ch" not in lo and torch.allclose(lo["loss"], base)
    rd = models.create("rd+snl", teacher=teacher, use_sp=False, use_intra=False, use_inter=False, use_cram=False)
    assert "ch" in rd.loss(rd(torch.rand(2, 3, 64, 64)))  # RD's loss is another one: the term is added
