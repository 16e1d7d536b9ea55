"""Test workers and their threads (loaded first, by every pytest process, for tests/ and notebooks/ alike).

`python -m pytest` runs in parallel (pytest-xdist, `-n auto --dist loadfile` in pyproject.toml): each test
file, and each notebook with all its cells, stays on one worker, in order. The workers share the notebooks'
trained runs through `data/runs`: a worker that needs a run another one is training waits for it
(`adkit.training.cached_run`), so every run is trained once whatever the order.

Each worker gets an equal share of the CPUs as its OpenMP threads, set before torch loads, and passes it on to
what it starts (notebook kernels, `adkit` subprocesses, JupyterLab): two workers × two threads on two cores
would spin against each other. `ADKIT_TEST_THREADS` chooses another count; `-n 0` runs in one process.

The browser test (every notebook in JupyterLab) also runs nbval's output check on what JupyterLab produced
(tests/nbcheck.py), so when it runs, nbval's own execution of the notebooks is deselected: one execution per
notebook. Without a browser (playwright and chromium), or with `pytest notebooks/`, nbval executes them.

Each notebook of the browser test is its own unit of work (`pytest_xdist_make_scheduler`), so that both
workers run notebooks; every other test file stays one unit. The longest chains go first, in the order
`FIRST` lists them (`pytest_collection_modifyitems`, with `--no-loadscope-reorder`); xdist hands the first
two units out one per worker, then tops each worker up to two pending units as it frees: notebook 1 (all 14
classes, the longest) then notebook 7 (it reuses notebook 1's run) on one worker; on the other notebook 4,
notebook 2 (it trains the four-class runs notebook 3 reuses), notebook 6, then notebook 5 (the dual student;
it reuses notebook 1's multi-class run, trained by then). The rest follows as the workers come free.
"""

from __future__ import annotations

import os
import sys

import pytest

MAX_WORKERS = 2  # a third lane mostly waits for the notebooks' shared runs; `-n N` asks for more


BROWSER = "tests/test_browser.py::test_notebook_runs_in_jupyterlab"
FIRST = (  # see the docstring: xdist hands out these units in this order, then the rest as collected
    f"{BROWSER}[01_cross_class_interference]",
    f"{BROWSER}[04_training_start_to_finish]",
    f"{BROWSER}[07_your_own_images]",
    f"{BROWSER}[02_probes]",
    f"{BROWSER}[06_semantic_anomalies_on_digits]",
    f"{BROWSER}[05_generalist_dual_student]",
    f"{BROWSER}[03_feature_spaces]",
    # without a browser, nbval's notebooks lead instead
    "notebooks/01_cross_class_interference.ipynb",
    "notebooks/04_training_start_to_finish.ipynb",
    "notebooks/07_your_own_images.ipynb",
    "notebooks/02_probes.ipynb",
    "notebooks/06_semantic_anomalies_on_digits.ipynb",
    "notebooks/05_generalist_dual_student.ipynb",
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


def _browser_available() -> bool:
    """What tests/test_browser.py needs to run rather than skip: playwright and an executable chromium."""
    import importlib.util

    chromium = os.environ.get("ADKIT_CHROMIUM", "/usr/bin/chromium")
    return importlib.util.find_spec("playwright") is not None and os.access(chromium, os.X_OK)


def _unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its notebook for the browser test, else its file."""
    return nodeid if nodeid.startswith(BROWSER + "[") else nodeid.split("::")[0]


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection: only a browser test that will run counts
def pytest_collection_modifyitems(session, config, items) -> None:
    if any(item.nodeid.startswith(BROWSER) for item in items) and _browser_available():
        executed_twice = [item for item in items if item.nodeid.split("::")[0].endswith(".ipynb")]
        if executed_twice:
            config.hook.pytest_deselected(items=executed_twice)
            items[:] = [item for item in items if item not in executed_twice]

    def rank(item) -> int:
        unit = _unit(item.nodeid)
        return FIRST.index(unit) if unit in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: each file keeps its order, the other files theirs


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent under `-p no:xdist`
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with each browser-test notebook a unit of its own (`_unit`)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class NotebookUnits(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return NotebookUnits(config, log)
