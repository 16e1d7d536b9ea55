"""kill -9 at random moments during `adkit train`, resume, and get the uninterrupted run's results exactly
(a short run of benchmarks/soak_resume.py; the full soak is 10 kills per model and also compares `adkit eval`).
The final checkpoints are compared bit for bit (weights, optimizer state, settings), which fixes the evaluation;
running `adkit eval` on both would add two ~10 s processes per test."""

from __future__ import annotations

import random

import pytest
from soak import MODELS, checkpoint_differences, env, soak, train_args, write_dataset  # tests/soak.py


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_kill_nine_then_resume_gives_identical_results(tmp_path, model):
    root = write_dataset(tmp_path / "data")
    lines = []
    ok = soak(model, root, tmp_path, kills=3, rng=random.Random(model), iters=20, log=lines.append, evaluate_runs=False)
    assert ok, lines
    assert "final checkpoint identical" in lines[-1]


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_at_the_current_step_and_resumes_identically(tmp_path):
    import signal
    import subprocess
    import time

    from adkit import checkpoint, runs

    root = write_dataset(tmp_path / "data")
    ref, run = tmp_path / "ref", tmp_path / "run"
    iters = 300  # the signal lands a few steps after the first checkpoint (step 50): far from the end
    args = train_args("rd", root, run, iters=iters)
    args[args.index("--save-every") + 1] = "50"
    subprocess.run(train_args("rd", root, ref, iters=iters), env=env(), check=True, capture_output=True)
    p = subprocess.Popen(args, env=env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not runs.checkpoint_path(run, "all").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # in the training loop, between checkpoints
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert "interrupted at step" in err and "run the same command again" in err and "Traceback" not in err
    step = checkpoint.read_info(runs.checkpoint_path(run, "all"))["step"]
    assert 50 <= step < iters
    subprocess.run(args, env=env(), check=True, capture_output=True)
    assert checkpoint_differences(ref, run) == []


def test_checkpoint_comparison_sees_one_changed_bit_and_ignores_only_the_wall_time(tmp_path):
    import torch

    from adkit import checkpoint

    w = torch.linspace(-1, 1, 12).view(3, 4)
    info = {"step": 20, "done": True, "train_seconds": 4.2, "history": [{"loss": 0.5}]}
    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.ones(2, 4)).sum().backward()
    opt.step()

    def write(name, state, inf):
        (tmp_path / name / "models").mkdir(parents=True)
        checkpoint.save(tmp_path / name / "models" / "all.safetensors", state, inf, optimizer=opt)
        return tmp_path / name

    ref = write("ref", {"w": w}, info)
    slower = write("slower", {"w": w.clone()}, dict(info, train_seconds=9.9))
    assert checkpoint_differences(ref, slower) == []
    bumped = w.clone()
    bumped[1, 2] = torch.nextafter(bumped[1, 2], torch.tensor(2.0))  # one ulp
    assert checkpoint_differences(ref, write("ulp", {"w": bumped}, info)) == ["model_state/w"]
    assert checkpoint_differences(ref, write("half", {"w": w.half()}, info)) == ["model_state/w"]
    other = dict(info, history=[{"loss": 0.6}])
    assert checkpoint_differences(ref, write("hist", {"w": w}, other)) == ["info/history"]
    assert checkpoint_differences(ref, write("keys", {"v": w}, info)) == ["model_state: different keys"]
    opt.step()  # the optimizer's moments move on
    moved = checkpoint_differences(ref, write("opt", {"w": w}, info))
    assert moved and all(d.startswith("optimizer_state/state/") for d in moved), moved
