"""Execute notebooks in place, keeping their outputs (the tests compare some of them), and strip what
should not be stored: widget state and widget views, timing metadata.

    OMP_NUM_THREADS=1 python notebooks/execute.py                  # all, in order
    OMP_NUM_THREADS=1 python notebooks/execute.py notebooks/02_probes.ipynb
    python notebooks/execute.py --cells 5 notebooks/01_cross_class_interference.ipynb   # + its 5 slowest cells
    python notebooks/execute.py --timeout 600                      # seconds one cell may run (default 300)

Each notebook runs with its own folder as the working directory, as under `pytest --nbval-lax`. The script
then checks what the stored copy must not hold (absolute paths, files over 2 MB) and prints each
notebook's wall time and size (on stdout, never into the notebook).
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
MAX_BYTES = 2_000_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
ABSOLUTE = re.compile(r"(?<![\w.])/(?:root|home|tmp|work|Users|usr|opt)/")


def clean(nb: nbformat.NotebookNode) -> None:
    """Drop widget state, widget views (progress bars, explorers: they show nothing without their state),
    and per-cell timing metadata."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Absolute paths and error outputs in a stored notebook."""
    out = []
    for i, cell in enumerate(nb.cells):
        if ABSOLUTE.search(cell.source):
            out.append(f"cell {i}: absolute path in the source")
        for o in cell.get("outputs", []):
            if o.output_type == "error":
                out.append(f"cell {i}: {o.ename}: {o.evalue}")
            text = o.get("text", "") + "".join(str(v) for k, v in o.get("data", {}).items() if k.startswith("text/"))
            if ABSOLUTE.search(text):
                out.append(f"cell {i}: absolute path in an output: {ABSOLUTE.search(text).group(0)}...")
    return out


def cell_seconds(nb: nbformat.NotebookNode) -> list[tuple[float, int, str]]:
    """(seconds, cell index, first source line) of every executed code cell, from nbclient's timing metadata."""
    out = []
    for i, cell in enumerate(nb.cells):
        t = cell.metadata.get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            a, b = (datetime.fromisoformat(t[k].replace("Z", "+00:00")) for k in ("iopub.execute_input", "shell.execute_reply"))
            out.append(((b - a).total_seconds(), i, (cell.source.splitlines() or [""])[0][:70]))
    return out


def execute(path: Path, timeout: int = 300, cells: int = 0) -> tuple[float, int, list[str]]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=cells > 0,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    for sec, i, first in sorted(cell_seconds(nb), reverse=True)[:cells]:
        print(f"  {path.name} cell {i}: {sec:.1f} s  {first}")
    clean(nb)
    nbformat.write(nb, path)
    size = path.stat().st_size
    issues = problems(nb) + ([f"{size} bytes, over {MAX_BYTES}"] if size > MAX_BYTES else [])
    return seconds, size, issues


def main(argv: list[str]) -> int:
    cells, timeout = 0, 300
    while argv[:1] in (["--cells"], ["--timeout"]):
        if argv[0] == "--cells":
            cells = int(argv[1])
        else:
            timeout = int(argv[1])
        argv = argv[2:]
    paths = [Path(p) for p in argv] or sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    failed = False
    for p in paths:
        seconds, size, issues = execute(p, timeout=timeout, cells=cells)
        print(f"{p.name}: {seconds:.0f} s, {size / 1e6:.2f} MB" + ("" if not issues else " — " + "; ".join(issues)))
        failed |= bool(issues)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
