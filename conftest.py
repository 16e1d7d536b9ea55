"""Test workers and their threads (loaded first, by every pytest process, for tests/ and notebooks/ alike).

`python -m pytest` runs in parallel (pytest-xdist, `-n auto --dist loadfile` in pyproject.toml): each test
file, and each notebook with all its cells, stays on one worker, in order. The workers share the notebooks'
trained runs through `data/runs`: a worker that needs a run another one is training waits for it
(`adkit.training.cached_run`), so every run is trained once whatever the order.

Each worker gets an equal share of the CPUs as its OpenMP threads, set before torch loads, and passes it on to
what it starts (notebook kernels, `adkit` subprocesses, JupyterLab): two workers × two threads on two cores
would spin against each other. `ADKIT_TEST_THREADS` chooses another count; `-n 0` runs in one process.

The longest chains go first (`pytest_collection_modifyitems`, with `--no-loadscope-reorder`): the browser test
(every notebook in JupyterLab) on one worker; on the other notebook 4 (it trains in front of you, needing no
other notebook's runs), then notebook 5 (the dual student on mini: its own run, and it shares RD's with
notebook 1); notebooks 7 (it only reuses notebook 1's run) and 6 (the dual student and RD on digits, shared with
no other notebook) are queued next. The rest follows as the workers come free.
"""

from __future__ import annotations

import os
import sys

MAX_WORKERS = 2  # a third lane mostly waits for the notebooks' shared runs; `-n N` asks for more


FIRST = (  # see the docstring: xdist hands out these files in this order, then the rest as collected
    "tests/test_browser.py",
    "notebooks/04_training_start_to_finish.ipynb",
    "notebooks/05_generalist_dual_student.ipynb",
    "notebooks/07_your_own_images.ipynb",
    "notebooks/06_semantic_anomalies_on_digits.ipynb",
)


def _usable_cpus() -> int:
    from adkit.runtime import usable_cpus  # importing adkit sets nothing that torch has read yet

    return usable_cpus()


def pytest_xdist_auto_num_workers(config) -> int:
    return max(1, min(MAX_WORKERS, _usable_cpus()))


if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "torch" not in sys.modules:
    _share = os.environ.get("ADKIT_TEST_THREADS") or str(
        max(1, _usable_cpus() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    )
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _share


def pytest_collection_modifyitems(session, config, items) -> None:
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return FIRST.index(path) if path in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: each file keeps its order, the other files theirs
