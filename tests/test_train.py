"""Training, checkpoints and evaluation on a tiny MVTec-layout fixture."""

from __future__ import annotations

import pytest
import torch

from adkit import checkpoint
from adkit.config import TrainConfig
from adkit.errors import SettingsError
from adkit.evaluation import evaluate
from adkit.runs import load_run
from adkit.training import train


def _cfg(root, **kw):
    base = dict(
        data="mvtec",
        root=str(root),
        setting="multi-class",
        model="rd",
        image_size=32,
        iters=6,
        batch_size=4,
        save_every=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_multi_class_run_trains_evaluates_and_reloads(tmp_path, mvtec_root):
    run = train(_cfg(mvtec_root), tmp_path / "run", progress=False)
    files = sorted(p.name for p in (run / "models").iterdir())
    assert files == ["all.safetensors"]  # one file per model: weights, optimizer, RNG and settings together
    info = checkpoint.read_info(run / "models" / "all.safetensors")
    assert info["done"] and info["step"] == 6 and len(info["history"]) == 6
    res = evaluate(run, progress=False)
    assert set(res["classes"]) == {"bottle", "cable"}
    assert set(res["defects"]) == {"crack", "scratch"}
    for k in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= res["mean"][k] <= 1.0
    assert (run / "eval.json").is_file()
    cfg, models_by_name = load_run(run)
    assert cfg.iters == 6 and list(models_by_name) == ["all"]


def test_one_class_run_has_a_model_per_class(tmp_path, mvtec_root):
    run = train(_cfg(mvtec_root, setting="one-class", iters=3), tmp_path / "run", progress=False)
    assert sorted(p.stem for p in (run / "models").glob("*.safetensors")) == ["bottle", "cable"]
    res = evaluate(run, progress=False)
    assert res["classes"]["bottle"]["n_defect"] == 3 and res["classes"]["bottle"]["n_good"] == 2


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, mvtec_root, monkeypatch):
    cfg = _cfg(mvtec_root, iters=6, save_every=3)
    straight = train(cfg, tmp_path / "a", progress=False)

    import adkit.training as T

    real_fit = T.fit

    def interrupted(*args, **kwargs):
        def stop(step, row):
            if step == 4:  # after the checkpoint at step 3
                raise KeyboardInterrupt

        kwargs["callback"] = stop
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(T, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", progress=False)
    partial = checkpoint.read_info(tmp_path / "b" / "models" / "all.safetensors")
    assert partial["step"] == 3 and not partial["done"]
    monkeypatch.setattr(T, "fit", real_fit)
    train(cfg, tmp_path / "b", progress=False)
    a = checkpoint.load(straight / "models" / "all.safetensors").model_state
    ck = checkpoint.load(tmp_path / "b" / "models" / "all.safetensors")
    b, info = ck.model_state, ck.info
    assert info["done"] and len(info["history"]) == 6
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_unfinished_run_cannot_be_evaluated_and_other_settings_are_refused(tmp_path, mvtec_root, monkeypatch):
    cfg = _cfg(mvtec_root)
    import adkit.training as T

    real_fit = T.fit

    def stop_early(*args, **kwargs):
        kwargs["callback"] = lambda step, row: (_ for _ in ()).throw(KeyboardInterrupt) if step == 3 else None
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(T, "fit", stop_early)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", progress=False)
    with pytest.raises(SettingsError, match="resume"):
        load_run(tmp_path / "r")
    with pytest.raises(ValueError, match="other settings"):
        train(_cfg(mvtec_root, iters=7), tmp_path / "r", progress=False)


def test_checkpoint_is_one_safetensors_file_and_round_trips(tmp_path, teacher):
    from adkit import models

    model = models.create("rd", teacher=teacher)
    opt = model.configure_optimizer()
    loss = model.loss(model(torch.rand(2, 3, 32, 32)))["loss"]
    loss.backward()
    opt.step()
    checkpoint.save(
        tmp_path / "m.safetensors", model.student_state_dict(), {"model": "rd"}, opt, checkpoint.rng_state()
    )
    assert (tmp_path / "m.safetensors").read_bytes()[:8] != b"\x80\x02\x8a\x0a"  # not a pickle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary file left
    ck = checkpoint.load(tmp_path / "m.safetensors")
    state, settings, opt_state = ck.model_state, ck.info, ck.optimizer_state
    assert settings == {"model": "rd"} and torch.equal(ck.rng["rng/torch_cpu"], torch.get_rng_state())
    assert all(torch.equal(state[k], v) for k, v in model.student_state_dict().items())
    opt2 = models.create("rd", teacher=teacher).configure_optimizer()
    opt2.load_state_dict(opt_state)
    assert opt2.state_dict()["param_groups"][0]["lr"] == opt.state_dict()["param_groups"][0]["lr"]


def test_a_model_revision_retires_old_checkpoints_and_cache_keys(tmp_path, mvtec_root, monkeypatch):
    """FD's loss lost its ½ (revision 2): a run trained by the old code is refused by name, and `cached_run`
    looks for its runs under a new key, so an old cached run is never taken for a new one."""
    from adkit import config
    from adkit.training import run_key

    cfg = _cfg(mvtec_root, model="fd", iters=2, save_every=1)
    new_key, now = run_key(cfg), config.MODEL_REVISIONS["fd"]
    assert now >= 2
    monkeypatch.setitem(config.MODEL_REVISIONS, "fd", 1)  # the old code
    old_key = run_key(cfg)
    train(cfg, tmp_path / "r", progress=False)
    monkeypatch.setitem(config.MODEL_REVISIONS, "fd", now)
    assert new_key == run_key(cfg) != old_key
    assert run_key(_cfg(mvtec_root)) == run_key(_cfg(mvtec_root))  # rd: revision 1, no entry in its key
    with pytest.raises(SettingsError, match=rf"older version of fd's training \(revision 1, now {now}\)"):
        load_run(tmp_path / "r")


@pytest.mark.parametrize("name", ["fd", "rd", "dual"])
def test_fit_trains_in_the_layout_the_model_asks_for_and_gives_it_back(teacher, name):
    """FD and the dual student train channels-last on the CPU (`train_channels_last`), RD in the plain layout;
    either way the model comes out of `fit` contiguous, also when training stops with an exception."""
    from adkit import models
    from adkit.loop import fit

    model = models.create(name, teacher=teacher)
    seen = []

    def look(step, row):
        # a weight whose two layouts differ (1×1 and depthwise kernels have the same strides in both)
        w = next(p for p in model.student_parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
        seen.append(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous())
        if step == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        fit(model, torch.rand(6, 3, 32, 32), iters=5, batch_size=2, progress=False, callback=look)
    assert seen == [model.train_channels_last] * 3 and seen[0] == (name in ("fd", "dual"))
    assert all(p.is_contiguous() for p in model.student_parameters())


def test_checkpoints_follow_their_schedule_and_a_stop_signal_writes_one_at_once(tmp_path, teacher, monkeypatch):
    """Every `every` steps and at the end; with `minutes=0` after every step; SIGINT during a step lets the step
    finish, writes a checkpoint and raises `Interrupted`, and the same call again finishes the run."""
    import os
    import signal

    from adkit import models
    from adkit.loop import Checkpoints, Interrupted, fit

    written, real_save = [], checkpoint.save

    def save(path, state, info, *rest):
        written.append(info["step"])
        real_save(path, state, info, *rest)

    monkeypatch.setattr(checkpoint, "save", save)
    handler = signal.getsignal(signal.SIGINT)
    x = torch.rand(4, 3, 32, 32)

    def run(plan, callback=None):
        torch.manual_seed(0)
        return fit(models.create("rd", teacher=teacher), x, 7, 2, checkpoints=plan, progress=False, callback=callback)

    run(Checkpoints(tmp_path / "a.safetensors", every=3, minutes=None))
    assert written == [3, 6, 7]
    written.clear()
    run(Checkpoints(tmp_path / "b.safetensors", every=100, minutes=0))
    assert written == [1, 2, 3, 4, 5, 6, 7]
    written.clear()
    plan = Checkpoints(tmp_path / "c.safetensors", every=100, minutes=None)

    def interrupt(step, row):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted, match="interrupted at step 4 of 7"):
        run(plan, interrupt)
    assert written == [4] and signal.getsignal(signal.SIGINT) is handler  # the handler is given back
    assert len(run(plan)) == 7 and written == [4, 7]  # resumed at step 4


def test_settings_read_back_are_what_was_written_and_a_wrong_type_is_refused():
    """`TrainConfig.from_dict` takes the JSON types from the dataclass's own annotations."""
    import json

    cfg = TrainConfig(
        root="/data/x",
        classes=("a", "b"),
        weights="/w.safetensors",
        lr=0.01,
        options={"k": 1},
        device="cpu",
        cache_mb=64,
        save_minutes=2,
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig.from_dict({"lr": 1, "cache_mb": 0}).lr == 1  # an int where a float is asked for
    for key, bad in (("iters", 6.0), ("iters", True), ("classes", "a,b"), ("lr", "0.1"), ("root", 3), ("options", [])):
        with pytest.raises(SettingsError, match=f"setting '{key}' has the wrong type"):
            TrainConfig.from_dict({key: bad}, source="s.json")
