"""Sharing the CPUs with other processes while a loop runs (`adkit.runtime.share_cpus`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adkit import runtime


@pytest.fixture
def sharing(monkeypatch):
    """A CpuSharing on 4 CPUs starting at 4 threads, deciding at every call, with the other processes' runnable
    threads scripted by the test; torch's thread count restored afterwards."""
    before = torch.get_num_threads()
    others = {"n": 0}
    monkeypatch.setattr(runtime, "_others_running", lambda: others["n"])
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv("ADKIT_OMP_DEFAULT", "4")
    monkeypatch.delenv("ADKIT_SHARED", raising=False)
    torch.set_num_threads(4)
    s = runtime.CpuSharing(period=0.0, quiet_periods=2, min_samples=1, busy_periods=2)
    yield s, others
    torch.set_num_threads(before)


def test_threads_follow_the_cpus_other_processes_leave_free(sharing):
    s, others = sharing
    assert s() == 4  # alone: every CPU
    others["n"] = 3  # three busy threads elsewhere: one CPU left
    assert s() == 4  # not yet: one busy period is a moment's activity (a notebook's client drawing an output)
    others["n"] = 0
    assert s() == 4  # and it passed: the count stays
    others["n"] = 3
    assert s() == 4
    assert s() == 1 and torch.get_num_threads() == 1  # two busy periods in a row
    others["n"] = 2
    assert s() == 1  # more room, but not yet for two quiet periods in a row
    assert s() == 2 and torch.get_num_threads() == 2
    others["n"] = 9  # oversubscribed: never below one thread
    assert [s(), s()] == [2, 1]
    others["n"] = 0
    assert [s() for _ in range(3)] == [1, 4, 4]  # back to the start, never above it
    s.restore()
    assert torch.get_num_threads() == 4


def test_a_user_thread_count_and_adkit_shared_0_are_left_alone(sharing, monkeypatch):
    s, others = sharing
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # set by the user, not by adkit's default
    others["n"] = 3
    assert s() == 4 and torch.get_num_threads() == 4 and not s.enabled
    t = runtime.CpuSharing(period=0.0, min_samples=1)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv("ADKIT_SHARED", "0")
    assert t() == 4 and not t.enabled


def test_bench_reports_the_contended_ratio():
    """`adkit bench` times the cached training step beside an identical process and reports the ratio."""
    from adkit import bench

    res = bench.bench("rd", image_size=32, batch_size=2, steps=2, warmup=1)
    assert res["contended_ratio"] > 0 and res["train_cached_contended_step_s"] > 0
    assert res["contended_ratio"] == pytest.approx(
        res["train_cached_contended_step_s"] / res["train_cached_step_s"], rel=0.05
    )
    assert "beside an identical training process" in bench.format_bench(res)
    assert "contended_ratio" not in bench.bench("rd", image_size=32, batch_size=2, steps=1, warmup=0, contended=False)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
def test_a_busy_child_process_is_this_jobs_own_and_not_counted_as_another(tmp_path, monkeypatch):
    """A data loader's workers are this job's own: the thread count must not follow how busy they happen to be
    (it made runs on a quiet machine differ from each other). Other processes' threads still count: a machine
    with `procs_running` at 50 leaves 50 minus this process's and its children's runnable threads."""
    spin = "import time\nt = time.time()\nwhile time.time() - t < 4: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)
        running, children = runtime._running_threads(Path("/proc/self"))
        assert str(child.pid) in children and running >= 1  # this thread, at least
        assert runtime._running_threads(Path(f"/proc/{child.pid}"))[0] == 1  # spinning: always runnable
        stat = tmp_path / "stat"
        stat.write_text("cpu  1 2 3 4\nprocs_running 50\nprocs_blocked 0\n")
        monkeypatch.setattr(runtime, "_PROC_STAT", stat)
        assert runtime._others_running() <= 50 - 2  # this thread and the child's, at least, are not others
    finally:
        child.kill()
        child.wait()
