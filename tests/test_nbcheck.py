"""tests/nbcheck.py: nbval's comparison on outputs another runner produced (what tests/test_browser.py uses)."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbcheck import checked_cells, mismatches

REPO = Path(__file__).resolve().parents[1]
SANITIZE = REPO / "notebooks" / "sanitize.cfg"


def _notebook(checked_text: str, other_text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for source, text in (("# NBVAL_CHECK_OUTPUT\nprint(n)", checked_text), ("print(m)", other_text)):
        cell = nbformat.v4.new_code_cell(source, execution_count=1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells.append(cell)
    return nb


def test_every_stored_notebook_agrees_with_itself_and_its_checked_cells_are_counted(request):
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 7
    assert sum(checked_cells(nbformat.read(p, as_version=4)) for p in notebooks) >= 7  # each checks something
    for p in notebooks:
        nb = nbformat.read(p, as_version=4)
        assert mismatches(nb, copy.deepcopy(nb), SANITIZE, request.config) == [], p.name


def test_a_changed_checked_output_is_reported_an_unchecked_one_is_not(request):
    stored = _notebook("gap 5.7 points\n", "anything\n")
    assert mismatches(stored, _notebook("gap 5.7 points\n", "something else\n"), SANITIZE, request.config) == []
    problems = mismatches(stored, _notebook("gap 5.8 points\n", "anything\n"), SANITIZE, request.config)
    assert len(problems) == 1 and problems[0].startswith("code cell 0:") and "5.8" in problems[0]


def test_what_nbval_sanitizes_does_not_count_and_streams_are_merged(request):
    stored = _notebook("took 12.5 s at 0x7f00aa\n", "")
    run = _notebook("took 3 s at 0x1234\n", "")
    assert mismatches(stored, run, SANITIZE, request.config) == []  # durations and addresses sanitized
    split = copy.deepcopy(run)  # the same text in two stream outputs, as a kernel may send it
    split.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="took 3 s "),
        nbformat.v4.new_output("stream", name="stdout", text="at 0x1234\n"),
    ]
    assert mismatches(stored, split, SANITIZE, request.config) == []


def test_other_code_than_the_stored_is_reported(request):
    stored, run = _notebook("a\n", "b\n"), _notebook("a\n", "b\n")
    run.cells[1].source = "print(m + 1)"
    assert mismatches(stored, run, SANITIZE, request.config) == [
        "the executed notebook's code cells are not the stored ones"
    ]
