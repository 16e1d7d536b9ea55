"""What every course notebook must hold, read from the stored notebooks (no kernel, no browser).

The conventions (issue 13, items 5, 7, 8, 9):
- the first cell is a box with what you will learn, the prerequisites, the time cold/warm and the papers;
- at least two exercises: a markdown cell headed `### Exercise`, with an expected outcome and a solution
  collapsed in `<details><summary>Solution</summary> … </details>`;
- every cell the tests check (`# NBVAL_CHECK_OUTPUT`) is tagged `check` and collapsed in JupyterLab
  (`jupyter.source_hidden` and `jupyter.outputs_hidden`), so the learner does not read `True`/`False`;
- every stored picture is a PNG of at least 100 dpi (no JPEG thumbnails);
- every relative link in the prose points at a file of the repository.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BOX_LABELS = ("**You will learn**", "**Prerequisites**", "**Time**", "**Papers**")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def notebook(request) -> Path:
    return request.param


def test_there_are_seven_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


def test_opens_with_a_box(notebook):
    first = _cells(notebook)[0]
    assert first["cell_type"] == "markdown"
    missing = [label for label in BOX_LABELS if label not in _text(first)]
    assert not missing, f"{notebook.name}: the opening box lacks {missing}"
    assert re.search(r"cold", _text(first)) and re.search(r"warm", _text(first)), "time: cold and warm"


def test_has_two_exercises_with_collapsed_solutions(notebook):
    exercises = [
        _text(c)
        for c in _cells(notebook)
        if c["cell_type"] == "markdown" and _text(c).lstrip().startswith("### Exercise")
    ]
    assert len(exercises) >= 2, f"{notebook.name}: {len(exercises)} exercises"
    for ex in exercises:
        head = ex.strip().splitlines()[0]
        assert "**Expected outcome" in ex, f"{notebook.name}: {head!r} states no expected outcome"
        collapsed = re.search(r"<details>\s*<summary>\s*Solution", ex)
        assert collapsed, f"{notebook.name}: {head!r} has no collapsed solution"
        assert ex.count("<details>") == ex.count("</details>")
        solution = ex[ex.index("<details>") :]
        assert len(re.sub(r"<[^>]+>|\s", "", solution)) > 40, f"{notebook.name}: {head!r}: the solution is empty"


def test_checks_are_out_of_the_learners_view(notebook):
    checks = [c for c in _cells(notebook) if c["cell_type"] == "code" and "# NBVAL_CHECK_OUTPUT" in _text(c)]
    for c in checks:
        meta = c.get("metadata", {})
        assert "check" in meta.get("tags", []), f"{notebook.name}: a check cell is not tagged 'check'"
        jl = meta.get("jupyter", {})
        assert jl.get("source_hidden") and jl.get("outputs_hidden"), f"{notebook.name}: a check cell is visible"


def test_pictures_are_png_of_at_least_100_dpi(notebook):
    from base64 import b64decode

    from PIL import Image

    n = 0
    for c in _cells(notebook):
        for out in c.get("outputs", []):
            bundle = out.get("data", {})
            assert "image/jpeg" not in bundle, f"{notebook.name}: a JPEG output (store PNG)"
            if "image/png" in bundle:
                png = b64decode(bundle["image/png"])
                dpi = Image.open(io.BytesIO(png)).info.get("dpi", (0, 0))[0]
                assert dpi >= 99.5, f"{notebook.name}: a PNG of {dpi:.0f} dpi"
                n += 1
    assert n > 0, f"{notebook.name}: no stored figure"


def test_relative_links_resolve(notebook):
    for c in _cells(notebook):
        if c["cell_type"] != "markdown":
            continue
        for target in LINK.findall(_text(c)):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (notebook.parent / target).resolve().exists(), f"{notebook.name}: broken link {target}"
