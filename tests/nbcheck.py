"""nbval's output check, applied to a notebook some other runner executed (JupyterLab, in tests/test_browser.py).

nbval executes a notebook in its own kernel and compares each checked cell's outputs with the stored ones. The
browser test already executes every notebook, in JupyterLab; executing each a second time under nbval only to
compare outputs doubles the test command's longest part. `mismatches` runs nbval's own comparison
(`IPyNbCell.compare_outputs`, with its sanitizing and its report) on the outputs JupyterLab saved: the same
cells (nbval's markers and tags, under `--nbval-lax` as pyproject.toml sets it: only the cells marked
`# NBVAL_CHECK_OUTPUT`), the same sanitize file, the same keys skipped.

    problems = mismatches(stored_nb, executed_nb, "notebooks/sanitize.cfg", request.config)
    assert not problems, "\n".join(problems)
"""

from __future__ import annotations

import copy
from collections import OrderedDict, defaultdict
from pathlib import Path
from types import SimpleNamespace

import nbformat
from nbval import plugin as nbval

# what nbval leaves out of the comparison (`IPyNbFile.__init__`, nbval 0.11), with images skipped as it does
# without --nbdime
SKIP_COMPARE = (
    "metadata",
    "traceback",
    "prompt_number",
    "output_type",
    "name",
    "execution_count",
    "application/vnd.jupyter.widget-view+json",
    "image/png",
    "image/jpeg",
)
SUPPORTED = {"check", "skip"}  # nbval's cell options this check implements; others fail loudly


class _Cell:
    """The part of nbval's cell item that compares outputs: its methods, bound to this object."""

    compare_outputs = nbval.IPyNbCell.compare_outputs
    sanitize = nbval.IPyNbCell.sanitize
    format_output_compare = nbval.IPyNbCell.format_output_compare
    colors = nbval.nocolors

    def __init__(self, config, patterns: OrderedDict):
        self.config, self.ihook = config, config.hook  # nbval reports a difference through pytest's assertrepr
        self.parent = SimpleNamespace(sanitize_patterns=patterns, skip_compare=SKIP_COMPARE)
        self.comparison_traceback: list[str] = []


def options(cell, lax: bool = True) -> dict:
    """nbval's options of one code cell: its comment markers over its metadata tags; `check` off under lax."""
    found = defaultdict(bool, nbval.find_metadata_tags(cell.metadata))
    found.update(dict(nbval.find_comment_markers(cell.source)))
    found.setdefault("check", not lax)
    unsupported = {k for k, v in found.items() if v} - SUPPORTED
    if unsupported:
        raise NotImplementedError(f"nbval options {sorted(unsupported)} are not checked on a JupyterLab run")
    return found


def mismatches(stored: nbformat.NotebookNode, executed: nbformat.NotebookNode, sanitize_file, config) -> list[str]:
    """For every checked code cell whose stored outputs differ from the executed ones (after nbval's sanitizing
    and stream merging), nbval's report of the difference; [] when they agree."""
    patterns = OrderedDict(nbval.get_sanitize_patterns(Path(sanitize_file).read_text()))
    ref_cells = [c for c in stored.cells if c.cell_type == "code"]
    run_cells = [c for c in executed.cells if c.cell_type == "code"]
    if [c.source for c in ref_cells] != [c.source for c in run_cells]:
        return ["the executed notebook's code cells are not the stored ones"]
    problems = []
    for i, (ref, run) in enumerate(zip(ref_cells, run_cells)):
        opts = options(ref)
        if not opts["check"] or opts["skip"] or ref.execution_count is None:
            continue
        cell = _Cell(config, patterns)
        test_outs = nbval.coalesce_streams(copy.deepcopy(run.outputs))
        ref_outs = nbval.coalesce_streams(copy.deepcopy(ref.outputs))
        if not cell.compare_outputs(test_outs, ref_outs):
            problems.append(
                f"code cell {i}: outputs differ from the stored ones\n" + "\n".join(cell.comparison_traceback)
            )
    return problems


def checked_cells(nb: nbformat.NotebookNode) -> int:
    """How many code cells nbval checks in `nb` (under --nbval-lax)."""
    return sum(1 for c in nb.cells if c.cell_type == "code" and options(c)["check"] and not options(c)["skip"])
