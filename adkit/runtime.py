"""Threads, set before torch loads (importing `adkit` calls `configure`).

`OMP_NUM_THREADS` defaults to the CPUs this process may really use — its affinity mask, capped by a cgroup CPU
quota (a container given 2 CPUs on a 64-core host sees 64 in its mask, and 64 spinning threads on 2 CPUs
crawl). A value the user set is kept, and nothing changes once torch is loaded.

`GOMP_SPINCOUNT=1000` on a shared machine: an idle OpenMP thread (GNU libgomp, which torch's Linux wheels use)
spins 1000 times, then sleeps, instead of libgomp's 300,000. When another CPU-bound process shares the cores,
spinning threads fight for them. Measured on a quiet 2-core machine (`benchmarks/README.md`): next to another
CPU-bound torch process a training step took 35–58× its time alone with libgomp's default and 2.0–2.1× with 1000
spins. But alone the short spin is not free: notebook 1 from a cold cache took 340 s with it and 297 s without
(FD's many small parallel regions pay for every sleep and wake-up), so it is set only when the machine looks
shared — `ADKIT_SHARED=1`, or, without `ADKIT_SHARED`, a one-minute load average at import of at least the
number of usable CPUs plus one (a process that alone keeps every CPU busy makes a load of about the CPU count,
and the average lags a minute behind) — and never over a `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY` the user set.
`ADKIT_SHARED=0` turns it off.
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


SPINCOUNT = "1000"  # see the module's docstring


def configure() -> None:
    if "torch" in sys.modules:  # too late: OpenMP has read its settings
        return
    cpus = usable_cpus()
    os.environ.setdefault("OMP_NUM_THREADS", str(cpus))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    spin = spin_setting(os.environ, load, cpus)
    if spin is not None:
        os.environ["GOMP_SPINCOUNT"] = spin


def spin_setting(env, load: float, cpus: int) -> str | None:
    """The `GOMP_SPINCOUNT` to set, or None: the short spin on a shared machine, unless the user chose."""
    if "GOMP_SPINCOUNT" in env or "OMP_WAIT_POLICY" in env:
        return None
    shared = env.get("ADKIT_SHARED")
    if shared is not None:
        return SPINCOUNT if shared.strip() not in ("", "0") else None
    return SPINCOUNT if load >= cpus + 1 else None


def device_default():
    """The device a run uses when none is given: a CUDA GPU, else Apple's MPS, else the CPU (imports torch)."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
