"""torchrun with two CPU processes (gloo) against one process: the same gradient, a working run, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from fixtures import write_mvtec

from adkit import checkpoint, runs

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

GRADIENT_CHECK = textwrap.dedent("""
    import copy, json, sys
    import torch
    from adkit import backbones, distributed, models
    device = distributed.init(torch.device("cpu"))
    torch.manual_seed(0)  # the same random teacher on both ranks
    teacher = backbones.create("efficientnet_lite0", pretrained=False).double()
    torch.manual_seed(1)
    model = models.create(sys.argv[1], teacher=teacher).double().train()
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(3)).double()
    ref = copy.deepcopy(model)                       # one process, the whole batch
    ref.loss(ref(x))["loss"].backward()
    net = distributed.wrap(model, device)             # this rank's share through DDP + global batch norm
    with distributed.cpu_sync_batch_norm():
        model.loss(net(x[distributed.share(torch.arange(8))]))["loss"].backward()
    err = max(((p.grad - q.grad).abs().max() / q.grad.abs().max().clamp_min(1e-30)).item()
              for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters())
              if q.grad is not None and q.grad.abs().max() > 1e-12)
    bn = max((a - b).abs().max().item() for (n, a), (_, b) in zip(model.named_buffers(), ref.named_buffers())
             if "running" in n)
    with open(f"{sys.argv[2]}/rank{distributed.rank()}.json", "w") as f:  # one file each: stdout interleaves
        json.dump({"rank": distributed.rank(), "grad_err": err, "bn_err": bn}, f)
""")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["rd", "fd"])
def test_two_processes_compute_the_one_process_gradient(tmp_path, model):
    """In float64 (so that summation order does not hide a real difference), each rank's averaged gradient and
    the BatchNorm running statistics equal those of one process on the whole batch."""
    script = tmp_path / "grad.py"
    script.write_text(GRADIENT_CHECK)
    r = subprocess.run(
        TORCHRUN + [str(script), model, str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=600
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(row["rank"] for row in rows) == [0, 1]
    for row in rows:
        assert row["grad_err"] < 1e-9 and row["bn_err"] < 1e-12, row


@pytest.mark.slow
def test_torchrun_resumes_a_run_trains_and_rank_zero_writes(tmp_path, monkeypatch):
    import torch

    import adkit.training as T
    from adkit.config import TrainConfig
    from adkit.training import train

    root = tmp_path / "data"
    write_mvtec(root, classes=("bottle", "cable"), n_train=8)
    torch.set_num_threads(1)  # as the torchrun processes (OMP_NUM_THREADS=1): the same arithmetic
    cfg = TrainConfig(data="mvtec", root=str(root), model="rd", image_size=32, batch_size=8, iters=12, save_every=4)
    one = train(cfg, tmp_path / "one", progress=False)
    real_fit = T.fit

    def stop_after_step_five(*args, **kwargs):
        def stop(step, row):
            if step == 5:
                raise KeyboardInterrupt

        return real_fit(*args, **dict(kwargs, callback=stop))

    monkeypatch.setattr(T, "fit", stop_after_step_five)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "two", progress=False)
    ck = runs.checkpoint_path(tmp_path / "two", "all")
    assert checkpoint.read_info(ck)["step"] == 4
    args = [
        "-m",
        "adkit",
        "train",
        "--data",
        "mvtec",
        "--root",
        str(root),
        "--model",
        "rd",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--iters",
        "12",
        "--save-every",
        "4",
        "--quiet",
        "--out",
        str(tmp_path / "two"),
    ]
    two = subprocess.run(TORCHRUN + args, env=ENV, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr.count("trained rd") == 1  # rank 0 alone reports (and writes)
    info = checkpoint.read_info(ck)
    assert info["done"] and info["step"] == 12 and len(info["history"]) == 12
    assert sorted(p.name for p in (tmp_path / "two" / "models").iterdir()) == ["all.safetensors"]
    a = checkpoint.read_info(runs.checkpoint_path(one, "all"))["history"]
    b = info["history"]
    assert [r["loss"] for r in a[:4]] == [r["loss"] for r in b[:4]]  # one process on both sides
    # the first two-process step starts from the same weights and optimizer state and sees the same global
    # batch; its loss, the mean over both ranks' shares, is the one-process loss up to float32 rounding
    assert abs(a[4]["loss"] - b[4]["loss"]) < 1e-4 * abs(a[4]["loss"])
    ev = subprocess.run(
        [sys.executable, "-m", "adkit", "eval", str(tmp_path / "two"), "--json"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ev.returncode == 0 and json.loads(ev.stdout)["mean"]["image_auroc"] is not None


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, mvtec_root, monkeypatch, capsys):
    from adkit.cli import main

    monkeypatch.setenv("WORLD_SIZE", "3")
    code = main(
        [
            "train",
            "--data",
            "mvtec",
            "--root",
            str(mvtec_root),
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--iters",
            "2",
            "--quiet",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2 and "--batch-size 8" in capsys.readouterr().err and not (tmp_path / "r").exists()
