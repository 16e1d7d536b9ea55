"""Threads, set before torch loads (importing `adkit` calls `configure`).

`OMP_NUM_THREADS` defaults to the CPUs this process may really use — its affinity mask, capped by a cgroup CPU
quota (a container given 2 CPUs on a 64-core host sees 64 in its mask, and 64 spinning threads on 2 CPUs
crawl). A value the user set is kept, and nothing changes once torch is loaded.

`GOMP_SPINCOUNT` defaults to 1000: an idle OpenMP thread (GNU libgomp, which torch's Linux wheels use) spins
1000 times, then sleeps. libgomp's own default spins 300,000 times, and when another CPU-bound process shares the
cores the spinning threads of both fight for them. Measured on a quiet 2-core machine
(`benchmarks/train_steps.py`, median RD step, `benchmarks/README.md`): next to another CPU-bound torch process,
libgomp's default made a step 35–58× slower than alone, 1000 spins 1.9–2.1× (PASSIVE, spin 0: 1.5–1.8×); alone,
1000 spins cost within the run-to-run noise (177–219 ms against 177–199 ms over four runs each), PASSIVE about a
fifth. A value the user set — `GOMP_SPINCOUNT`, or `OMP_WAIT_POLICY` — is kept.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path


def usable_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by the cgroup (v2 or v1) CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = None
    try:
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if q != "max":
            quota = int(q) / int(period)
    except (OSError, ValueError):
        try:
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            quota = q / period if q > 0 else None
        except (OSError, ValueError):
            pass
    if quota:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def configure() -> None:
    if "torch" in sys.modules:  # too late: OpenMP has read its settings
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(usable_cpus()))
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT


SPINCOUNT = "1000"  # see the module's docstring


def device_default():
    """The device a run uses when none is given: a CUDA GPU, else Apple's MPS, else the CPU (imports torch)."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
