"""Soak test of resumable training: kill -9 `adkit train` at random moments, resume, compare with a clean run.

    OMP_NUM_THREADS=1 python benchmarks/soak_resume.py                       # every model, 10 kills each
    OMP_NUM_THREADS=1 python benchmarks/soak_resume.py --models rd,dual --kills 3 --seed 1

For each model type: train a reference run without interruption and evaluate it; then train the same settings
into another folder, killing the process with SIGKILL at `--kills` random moments (anywhere: start-up, a
training step, a checkpoint write), restarting it each time; let the last start finish, evaluate, and
compare the two final checkpoints (every weight, optimizer tensor and setting, bit for bit; only the
recorded training time may differ) and the two `adkit eval --json` outputs. They must be identical (all threads
fixed to one, so the arithmetic is the same). Exit code 0 when every model matched, 1 otherwise.
`tests/test_soak.py` runs a short version of this under pytest (marked slow), comparing the checkpoints only:
identical weights give identical evaluations, and each `adkit eval` process costs ~10 s of imports.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
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


def _adkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "adkit.cli", *args]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def train_args(model: str, root: Path, out: Path, iters: int) -> list[str]:
    return _adkit(
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
    r = subprocess.run(_adkit("eval", str(run), "--json"), capture_output=True, text=True, env=_env(), check=True)
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
    subprocess.run(train_args(model, root, ref, iters), env=_env(), check=True, capture_output=True)
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
            train_args(model, root, run, iters), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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
    final = subprocess.run(train_args(model, root, run, iters), env=_env(), capture_output=True, text=True)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    work = Path(a.work or tempfile.mkdtemp(prefix="adkit-soak-"))
    root = write_dataset(work / "data")
    ok = [soak(m, root, work, a.kills, rng, a.iters) for m in a.models.split(",")]
    print(f"{sum(ok)} of {len(ok)} models resumed to identical results ({work})")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
