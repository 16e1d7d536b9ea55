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
import time
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
    if "OMP_NUM_THREADS" not in os.environ:  # marked as ours, so that `share_cpus` may change it (a user's it keeps)
        os.environ["OMP_NUM_THREADS"] = os.environ["ADKIT_OMP_DEFAULT"] = str(cpus)
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


# -- sharing the CPUs while a loop runs ------------------------------------------------------------------------
#
# Jobs started together all see an idle machine at import, so the load test above cannot help them. While a loop
# runs, `share_cpus()` (called at every training step, evaluation batch and batch of the feature cache's teacher
# pass) watches how many threads of OTHER processes are runnable (/proc/stat's procs_running minus this process's
# running threads; the median over at least a second and 5 samples) and sets torch's thread count to the CPUs they
# leave free, at least 1: two jobs on 2 CPUs run one thread each instead of four threads spinning against each
# other. Either way a change needs two periods in a row that call for it: fewer threads after two busy ones (a
# moment's activity, such as a notebook's client drawing an output, is not a neighbour, and a run that changed its
# thread count for it would not reproduce), back to the start after two quiet ones. Off with
# ADKIT_SHARED=0, or when the user set OMP_NUM_THREADS (their choice is kept), and where /proc is missing. A
# different thread count sums floating-point numbers in another order: runs on a busy machine can differ in the
# last bits from runs alone, as runs with other thread counts do.

_PROC_STAT = Path("/proc/stat")


def task_state(stat: Path) -> str:
    """The state letter of a process or thread from its /proc stat file ("R" runnable, "S" sleeping, "Z" ...);
    the name before it may hold spaces and parentheses, so it is read after the last ")"."""
    text = stat.read_text()
    return text[text.rindex(")") + 2]


def _running_threads(proc: Path) -> tuple[int, list[str]]:
    """Runnable threads of the process at `proc` (/proc/<pid>) and its child processes' pids."""
    running, children = 0, []
    for task in (proc / "task").iterdir():
        running += task_state(task / "stat") == "R"
        try:
            children += (task / "children").read_text().split()
        except OSError:  # a kernel without /proc/<pid>/task/<tid>/children: the children count as others
            pass
    return running, children


def _others_running() -> int | None:
    """Runnable threads of other processes right now (None where /proc is not readable). This process's own
    child processes (a data loader's workers) are not others: a job does not make way for itself, or its thread
    count would change with how busy its loader happens to be, and with it the last bits of its results."""
    try:
        total = next(
            int(line.split()[1]) for line in _PROC_STAT.read_text().splitlines() if line.startswith("procs_running")
        )
        mine, children = _running_threads(Path("/proc/self"))
    except (OSError, StopIteration, ValueError):
        return None
    for pid in children:
        try:
            mine += _running_threads(Path("/proc") / pid)[0]
        except (OSError, ValueError):  # it ended while being read
            pass
    return max(0, total - mine)


class CpuSharing:
    """The thread count a loop should run with, decided from what other processes run (see above)."""

    def __init__(self, period: float = 1.0, quiet_periods: int = 2, min_samples: int = 5, busy_periods: int = 2):
        self.period, self.quiet_periods, self.min_samples = period, quiet_periods, min_samples
        self.busy_periods = busy_periods
        self.enabled: bool | None = None  # decided at the first call (torch must be loaded)
        self.start_threads = self.threads = self.cpus = 1
        self.samples: list[int] = []
        self.last = 0.0
        self.quiet = self.busy = 0
        self.changes = 0  # how often the count changed (for tests and benchmarks)

    def _setup(self) -> None:
        import torch

        env = os.environ
        self.start_threads = self.threads = torch.get_num_threads()
        self.cpus = usable_cpus()
        user_set = env.get("OMP_NUM_THREADS") != env.get("ADKIT_OMP_DEFAULT")
        off = env.get("ADKIT_SHARED", "").strip() == "0"
        self.enabled = not (off or user_set or self.start_threads <= 1 or _others_running() is None)
        self.last = time.monotonic()  # the first decision comes after a whole period of samples

    def __call__(self) -> int:
        """Sample; about once a `period` (and `min_samples` samples), adjust torch's threads. Returns the thread
        count in force."""
        if self.enabled is None:
            self._setup()
        if not self.enabled:
            return self.threads
        now = time.monotonic()
        others = _others_running()
        if others is not None:
            self.samples.append(others)
        if now - self.last < self.period or len(self.samples) < self.min_samples:
            return self.threads
        others = sorted(self.samples)[len(self.samples) // 2]
        self.samples.clear()
        self.last = now
        free = max(1, min(self.start_threads, self.cpus - others))
        self.quiet = self.quiet + 1 if free > self.threads else 0
        self.busy = self.busy + 1 if free < self.threads else 0
        if (free < self.threads and self.busy >= self.busy_periods) or (
            free > self.threads and self.quiet >= self.quiet_periods
        ):
            self._set(free)
        return self.threads

    def _set(self, n: int) -> None:
        import torch

        torch.set_num_threads(n)
        self.threads, self.quiet, self.busy = n, 0, 0
        self.changes += 1

    def restore(self) -> None:
        """Back to the starting thread count (e.g. at the end of a loop)."""
        if self.enabled and self.threads != self.start_threads:
            self._set(self.start_threads)


share_cpus = CpuSharing()
