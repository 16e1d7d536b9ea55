"""One formatting style and the lint rules of pyproject.toml, for the library, the tests and the benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["adkit", "tests", "benchmarks", "conftest.py"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    # ruff is one of the [dev] extras that the README's test command installs
    return subprocess.run([sys.executable, "-m", "ruff", *args, *PATHS], cwd=ROOT, capture_output=True, text=True)


def test_code_is_ruff_formatted():
    r = _ruff("format", "--check")
    assert r.returncode == 0, f"run `ruff format {' '.join(PATHS)}`:\n{r.stdout}{r.stderr}"


def test_code_passes_ruff_check():
    r = _ruff("check")
    assert r.returncode == 0, f"run `ruff check {' '.join(PATHS)}`:\n{r.stdout}{r.stderr}"
