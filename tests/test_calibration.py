"""The calibration after training (`adkit.calibration`): which normals train and which calibrate, and the choice
between held-out and fitted normals on validation data made from held-out ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adkit import calibration, models
from adkit.data.synthetic import synthetic_batches, synthetic_defects
from adkit.loop import fit
from adkit.metrics import image_auroc
from adkit.models.base import ADModel, Calibration


class TwoStatistics(ADModel):
    """A model whose score adds two image statistics, each scaled by its spread on the calibration normals: one
    that defects move (the largest deviation from the image's own mean) and a nuisance (the image's brightness).
    Calibrated on normals whose brightness hardly varies, the nuisance swamps the defect statistic."""

    name = "two-statistics"
    calibration = Calibration(holdout=0.5, choose=True)

    def __init__(self):
        super().__init__(teacher=None, config=None)
        self.anchor = nn.Parameter(torch.zeros(()))  # `image_scores` finds the device through a parameter
        self.register_buffer("centre", torch.zeros(2))
        self.register_buffer("spread", torch.ones(2))
        self.choice = None

    @staticmethod
    def statistics(x: torch.Tensor) -> torch.Tensor:
        deviation = (x - x.mean((1, 2, 3), keepdim=True)).abs().amax((1, 2, 3))
        return torch.stack([deviation, x.mean((1, 2, 3))], 1)  # (B,2)

    def forward(self, x, t_feats=None):
        return {"x": x}

    def maps(self, out):
        return {"amap": out["x"].new_zeros(len(out["x"]), 1, *out["x"].shape[-2:])}

    def scores(self, out, maps=None):
        return {"score": ((self.statistics(out["x"]) - self.centre).abs() / self.spread).sum(1)}

    def calibrate(self, xs, t_feats=None, choice=None):
        s = self.statistics(xs)
        self.centre.copy_(s.mean(0))
        self.spread.copy_(s.std(0).clamp_min(1e-6))
        self.choice = choice


def flat_images(levels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One grey level per image, plus a little noise: `(N,3,32,32)`."""
    return (levels.view(-1, 1, 1, 1) + 0.01 * torch.randn(len(levels), 3, 32, 32, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_normals_from_a_shifted_distribution_are_chosen(seed):
    """The held-out normals (and so the validation data) vary in brightness, the fitted ones do not: calibrating on
    the fitted ones makes brightness the score, so the choice must pick the held-out ones, by a clear margin."""
    g = torch.Generator().manual_seed(seed)
    held = flat_images(0.2 + 0.6 * torch.rand(16, generator=g), g)
    fitted = flat_images(torch.full((16,), 0.5), g)
    model = TwoStatistics()
    choice = calibration.choose(model, held, None, fitted, None)
    assert choice.chosen == "held-out" and choice.auroc["held-out"] > choice.auroc["fitted"] + 0.15
    assert model.choice == choice  # the model keeps what the choice saw
    expected = TwoStatistics()
    expected.calibrate(held[0::2])  # the winner: every other held-out normal, from the first
    assert torch.equal(model.spread, expected.spread) and torch.equal(model.centre, expected.centre)


def test_a_tie_keeps_the_fitted_normals():
    g = torch.Generator().manual_seed(0)
    held = flat_images(0.2 + 0.6 * torch.rand(8, generator=g), g)
    fitted = held[0::2].clone()  # the same normals as the held-out candidate: the same calibration
    choice = calibration.choose(TwoStatistics(), held, None, fitted, None)
    assert choice.auroc["fitted"] == choice.auroc["held-out"] and choice.chosen == "fitted"


def test_a_choice_needs_four_held_out_normals():
    g = torch.Generator().manual_seed(0)
    x = flat_images(torch.rand(3, generator=g), g)
    with pytest.raises(ValueError, match="at least 4 held-out normals"):
        calibration.choose(TwoStatistics(), x, None, x, None)


@pytest.mark.parametrize("batch_size", [5, 32])
def test_validation_batches_are_the_whole_validation_set_a_batch_at_a_time(batch_size):
    g = torch.Generator().manual_seed(0)
    normals = torch.rand(12, 3, 24, 24, generator=g)
    asked = []

    def images_at(idx):
        asked.append(len(idx))
        return normals[idx]

    whole = synthetic_defects(normals, ["c"] * len(normals), seed=0)
    parts = list(synthetic_batches(images_at, len(normals), seed=0, batch_size=batch_size))
    assert all(len(x) <= batch_size for x, _ in parts)
    assert torch.equal(torch.cat([x for x, _ in parts]), whole["image"])
    assert torch.equal(torch.cat([y for _, y in parts]), whole["label"])
    assert max(asked) <= min(2 * batch_size, len(normals))  # a batch's normals and its donors, never the set


class Counting(calibration.Stack):
    """A `Stack` that records how many rows each read asked for."""

    def __init__(self, images, feats=None):
        super().__init__(images, feats)
        self.reads = []

    def batch(self, idx):
        self.reads.append(len(idx))
        return super().batch(idx)


def test_the_choice_reads_a_batch_at_a_time_and_is_the_whole_set_computation(teacher):
    """The dual student's choice from sources read 32 rows at a time (targets and donors of a validation batch: at
    most 64) gives the AUROCs and the calibration of the computation on whole tensors, bit for bit: calibrate on
    each candidate, score all synthetic defects of the other held-out half, keep the better candidate."""
    torch.manual_seed(0)
    model = models.create("dual", teacher=teacher).eval()
    g = torch.Generator().manual_seed(1)
    held, fitted = torch.rand(90, 3, 32, 32, generator=g), torch.rand(70, 3, 32, 32, generator=g)
    held_src, fitted_src = Counting(held), Counting(fitted)
    choice = calibration.choose_among(model, held_src, torch.arange(90), fitted_src, torch.arange(70))
    assert max(held_src.reads + fitted_src.reads) <= 2 * calibration.BATCH < 90

    reference = models.create("dual", teacher=teacher).eval()
    reference.load_state_dict(model.state_dict())
    val = synthetic_defects(held[1::2], ["val"] * 45, seed=0)
    auroc = {}
    for name, normals in {"fitted": fitted[:45], "held-out": held[0::2]}.items():
        reference.calibrate(normals)
        score = reference.image_scores(val["image"])["score"]
        auroc[name] = image_auroc(score.double().numpy(), val["label"].numpy())
    assert choice.auroc == auroc
    reference.calibrate({"fitted": fitted[:45], "held-out": held[0::2]}[choice.chosen], choice=choice)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_split_holds_out_what_the_model_asks_for(teacher, capsys):
    rd = models.create("rd", teacher=teacher)  # no calibration: every image trains
    assert [len(i) for i in calibration.split(rd, 10, 0)] == [10, 10]
    choosing = TwoStatistics()  # half held out, and at least 4 of them for the choice
    fit_idx, cal_idx = calibration.split(choosing, 10, 0)
    assert (len(fit_idx), len(cal_idx)) == (5, 5) and not set(fit_idx.tolist()) & set(cal_idx.tolist())
    assert [len(i) for i in calibration.split(choosing, 6, 0, say=True)] == [6, 6]  # 3 held out: too few
    assert "too few to keep 4 of them out" in capsys.readouterr().err


def test_fit_chooses_among_held_out_normals_it_never_trained_on_and_as_many_trained_ones(teacher, monkeypatch):
    """The dual student's default: 40 % of 12 normals held out (5); the choice gets those and 5 trained ones."""
    torch.manual_seed(0)
    model = models.create("dual", teacher=teacher)
    n = 12
    x = torch.rand(n, 3, 32, 32)
    x[:, 0, 0, 0] = torch.arange(n) / n  # a tag per image

    def tags(images: torch.Tensor) -> list[int]:
        return [round(float(v) * n) for v in images[:, 0, 0, 0]]

    trained, seen = set(), {}
    real_forward, real_choose = model.forward, calibration.choose_among

    def forward(xb, t_feats=None):
        if model.training:
            trained.update(tags(xb))
        return real_forward(xb, t_feats)

    def choose_among(m, held_src, held_idx, fitted_src, fitted_idx):
        seen.update(held=tags(held_src.batch(held_idx)[0]), fitted=tags(fitted_src.batch(fitted_idx)[0]))
        return real_choose(m, held_src, held_idx, fitted_src, fitted_idx)

    model.forward = forward
    monkeypatch.setattr(calibration, "choose_among", choose_among)
    fit(model, x, iters=12, batch_size=4, seed=1, progress=False)
    assert len(seen["held"]) == len(seen["fitted"]) == 5
    assert not set(seen["held"]) & trained and set(seen["fitted"]) <= trained
    assert model.calibration_chosen in ("fitted", "held-out") and bool(torch.isfinite(model.calib_val_auroc).all())


def test_too_few_normals_to_hold_out_for_the_choice_train_on_all_and_say_so(teacher, capsys):
    """With 8 normals the dual student's 40 % is 3, too few for its choice: fit trains on all 8, calibrates on
    them, records no choice, and says so."""
    torch.manual_seed(0)
    model = models.create("dual", teacher=teacher)
    x = torch.rand(8, 3, 32, 32)
    calibrated, real = [], model.calibrate_batches

    def calibrate_batches(batches, choice=None):
        batches = list(batches)
        calibrated.append(sum(len(xs) for xs, _ in batches))
        real(batches, choice)

    model.calibrate_batches = calibrate_batches
    fit(model, x, iters=2, batch_size=4, progress=False)
    assert calibrated == [8] and model.calibration_chosen is None
    assert "too few to keep 4 of them out" in capsys.readouterr().err
    assert calibration.min_held(models.create("dual", teacher=teacher, calib_choice=None)) == 1
