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
identical weights give identical evaluations, and each `adkit eval` process costs ~10 s of imports. Both use
the machinery in tests/soak.py; this script is its command line.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the soak itself: tests/soak.py
from soak import MODELS, soak, write_dataset  # noqa: E402


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
