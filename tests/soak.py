"""Resumable training under `kill -9`: the machinery of tests/test_soak.py and of the long soak that
benchmarks/soak_resume.py runs from the command line.

    root = write_dataset(tmp / "data")                       # two classes in MVTec AD layout
    ok = soak("rd", root, tmp, kills=3, rng=random.Random(0), iters=20)   # killed, resumed, compared
    checkpoint_differences(ref_run, resumed_run)             # [] when the final checkpoints are bit-identical

Every `adkit` process runs with one thread (`env()`), so the arithmetic of a resumed run is the same as an
uninterrupted one's.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

MODELS = ("rd", "fd", "rd+snl", "fd+snl", "dual")


def write_dataset(root: Path, size: int = 32, n_train: int = 10, n_test: int = 4) -> Path:
    """Two classes in MVTec AD layout: noisy textures; defects are bright squares with masks."""
    rng = np.random.default_rng(0)

    def img(c: int, defect: bool) -> np.ndarray:
        a = (40 + 60 * c + rng.integers(0, 30, (size, size, 3))).astype(np.uint8)
        if defect:
            a[8:16, 8:16] = 250
        return a

    for c, cls in enumerate(("alpha", "beta")):
        for split, defect, n in (("train", "good", n_train), ("test", "good", n_test), ("test", "spot", n_test)):
            folder = root / cls / split / defect
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(img(c, defect != "good")).save(folder / f"{i:03d}.png")
                if defect != "good":
                    m = np.zeros((size, size), np.uint8)
                    m[8:16, 8:16] = 255
                    (root / cls / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(m).save(root / cls / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


def adkit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "adkit.cli", *args]


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def train_args(model: str, root: Path, out: Path, iters: int) -> list[str]:
    return adkit_command(
        "train",
        "--data",
        "mvtec",
        "--root",
        str(root),
        "--model",
        model,
        "--setting",
        "multi-class",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--iters",
        str(iters),
        "--save-every",
        "5",
        "--seed",
        "7",
        "--quiet",
        "--out",
        str(out),
    )


def _steps_done(run: Path) -> int:
    s = _step(run / "models" / "all.safetensors")
    return 0 if s == "-" else int(s)


def _step(ckpt: Path) -> str:
    if not ckpt.is_file():
        return "-"
    from adkit import checkpoint

    return str(checkpoint.read_info(ckpt)["step"])


def evaluate(run: Path) -> dict:
    r = subprocess.run(adkit_command("eval", str(run), "--json"), capture_output=True, text=True, env=env(), check=True)
    res = json.loads(r.stdout)
    res["settings"].pop("run", None)  # the folder's name differs, nothing else may
    return res


def checkpoint_differences(a: Path, b: Path) -> list[str]:
    """What differs between two runs' final checkpoints `models/all.safetensors`: every tensor (weights, optimizer
    and RNG states) must be bit-identical and every setting equal; only `train_seconds` (wall time) may differ."""
    import torch

    from adkit import checkpoint

    def flat(tree, prefix: str) -> dict:  # nested dicts/lists (the optimizer state) -> {"a/b/0": leaf}
        if isinstance(tree, dict):
            return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}/{key}").items()}
        if isinstance(tree, (list, tuple)):
            return {k: v for i, sub in enumerate(tree) for k, v in flat(sub, f"{prefix}/{i}").items()}
        return {prefix: tree}

    def same(u, v) -> bool:
        if torch.is_tensor(u) or torch.is_tensor(v):
            return torch.is_tensor(u) and torch.is_tensor(v) and u.dtype == v.dtype and torch.equal(u, v)
        return u == v

    x, y = (checkpoint.load(r / "models" / "all.safetensors") for r in (a, b))
    diffs = []
    for part in ("model_state", "optimizer_state", "rng"):
        ta, tb = flat(getattr(x, part) or {}, part), flat(getattr(y, part) or {}, part)
        if sorted(ta) != sorted(tb):
            diffs.append(f"{part}: different keys")
            continue
        diffs += [k for k in ta if not same(ta[k], tb[k])]
    ia, ib = (dict(c.info, train_seconds=None) for c in (x, y))
    diffs += [f"info/{k}" for k in sorted(set(ia) | set(ib)) if ia.get(k) != ib.get(k)]
    return diffs


def soak(
    model: str,
    root: Path,
    work: Path,
    kills: int,
    rng: random.Random,
    iters: int = 200,
    log=print,
    evaluate_runs: bool = True,
) -> bool:
    ref, run = work / f"{model}-ref", work / f"{model}-soak"
    t0 = time.monotonic()
    subprocess.run(train_args(model, root, ref, iters), env=env(), check=True, capture_output=True)
    span = time.monotonic() - t0
    want = evaluate(ref) if evaluate_runs else None
    from adkit import checkpoint

    step_s = checkpoint.read_info(ref / "models" / "all.safetensors")["train_seconds"] / iters
    # the moments, planned up front so that they spread over the whole run: a fifth of them anywhere in
    # start-up (None), the others a random time (up to 5 steps) after the checkpoint of a chosen step was
    # written, so they land in training steps and in checkpoint writes
    n_startup = max(1, kills // 5)
    plan = sorted(rng.sample(range(1, iters - 5), kills - n_startup))
    for _ in range(n_startup):
        plan.insert(rng.randint(0, len(plan)), None)
    killed, steps = 0, []
    for target in plan:
        p = subprocess.Popen(
            train_args(model, root, run, iters), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + rng.uniform(0.05, 0.4) * span if target is None else None
        extra = rng.uniform(0.0, 5 * step_s)
        while p.poll() is None:
            if deadline is None and _steps_done(run) >= target:
                deadline = time.monotonic() + extra
            if deadline is not None and time.monotonic() >= deadline:
                p.send_signal(signal.SIGKILL)
                p.wait()
                killed += 1
                steps.append(_step(run / "models" / "all.safetensors"))
                break
            time.sleep(0.02)
        if p.returncode == 0:  # it finished before its moment: nothing is left to interrupt
            break
    final = subprocess.run(train_args(model, root, run, iters), env=env(), capture_output=True, text=True)
    if final.returncode != 0:
        log(f"{model}: the last start failed: {final.stderr.strip()}")
        return False
    diffs = checkpoint_differences(ref, run)
    verdict = "identical" if not diffs else f"DIFFERENT ({', '.join(diffs[:5])}{', …' if len(diffs) > 5 else ''})"
    same = not diffs
    if evaluate_runs:
        got = evaluate(run)
        same = same and got == want
        verdict += (
            f"; final eval {'identical' if got == want else 'DIFFERENT'} (image AUROC "
            f"{got['mean']['image_auroc']:.4f} vs {want['mean']['image_auroc']:.4f})"
        )
    log(
        f"{model}: killed {killed} times (checkpoint at step {', '.join(map(str, steps))} of {iters} after each "
        f"kill; '-' = none yet), reference run {span:.1f} s; final checkpoint {verdict}"
    )
    return same
