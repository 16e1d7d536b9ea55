"""What every course notebook must hold, read from the stored notebooks (no kernel, no browser).

The conventions (issue 13, items 5, 7, 8, 9):
- the first cell is a box with what you will learn, the prerequisites, the time cold/warm and the papers;
- at least two exercises: a markdown cell headed `### Exercise`, with an expected outcome and a solution
  collapsed in `<details><summary>Solution</summary> … </details>`;
- every cell the tests check (`# NBVAL_CHECK_OUTPUT`) is tagged `check` and collapsed in JupyterLab
  (`jupyter.source_hidden` and `jupyter.outputs_hidden`), so the learner does not read `True`/`False`;
- every stored picture is a PNG of at least 100 dpi (no JPEG thumbnails);
- every relative link in the prose points at a file of the repository;
- it ends with three short questions, each with a collapsed answer (issue 26, item 7);
- every decimal number in its prose comes from a printed output of a cell above it, from a results file it
  names (`docs/results/*.json`), or from a short list of the method's constants (issue 26, items 2 and 4).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
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


# -- three questions at the end ---------------------------------------------------------------------------------
QUESTION = re.compile(r"^\s*(\d+)\.\s+\S", re.M)
ANSWER = re.compile(r"<details>\s*<summary>\s*Answer\s*</summary>(.*?)</details>", re.S)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_ends_with_three_questions_with_collapsed_answers(path):
    last = _cells(path)[-1]
    text = _text(last)
    assert last["cell_type"] == "markdown" and text.lstrip().startswith("### Questions"), (
        f"{path.name}: the last cell is not a `### Questions` cell"
    )
    outside = re.sub(r"<details>.*?</details>", "", text, flags=re.S)
    numbers = [int(n) for n in QUESTION.findall(outside)]
    assert numbers == [1, 2, 3], f"{path.name}: questions numbered {numbers}, expected 1, 2, 3"
    answers = ANSWER.findall(text)
    assert len(answers) == 3 and text.count("<details>") == 3, f"{path.name}: {len(answers)} collapsed answers"
    for k, answer in enumerate(answers, 1):
        assert len(re.sub(r"<[^>]+>|\s", "", answer)) > 20, f"{path.name}: the answer to question {k} is empty"
    # each answer follows its own question: question k, then answer k, then question k + 1
    starts = [m.start() for m in QUESTION.finditer(text) if not _inside_details(text, m.start())]
    opens = [m.start() for m in ANSWER.finditer(text)]
    assert all(q < a for q, a in zip(starts, opens)) and all(a < q for a, q in zip(opens, starts[1:])), (
        f"{path.name}: each question must be followed by its answer"
    )


def _inside_details(text: str, at: int) -> bool:
    return text.rfind("<details>", 0, at) > text.rfind("</details>", 0, at)


# -- numbers in the prose ---------------------------------------------------------------------------------------
RESULTS = REPO / "docs" / "results"
DETAILS = re.compile(r"<details>.*?</details>", re.S)  # exercise solutions and answers: what the reader computes
FENCE = re.compile(r"```.*?```", re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
IDENTIFIER = re.compile(r"\b(?:arXiv|doi)[:\s]\s*\S+", re.I)  # arXiv:2201.10703 is not a measurement
HTML_TAG = re.compile(r"<[^>]+>")
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?!\d)")
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
RESULTS_FILE = re.compile(r"([\w-]+\.json)\b")
# a fraction printed as 0.806 may be quoted in points as 80.6 (and a percentage as a fraction)
SCALES = np.array([1.0, 100.0, 0.01])

# Decimal constants of the method or of a notebook's settings that its prose may state without a cell printing
# them. Keep it short: a measured value never belongs here.
CONSTANTS = {
    "01": {"0.5": "chance level of an AUROC"},
    "02": {
        "0.1", "0.3", "0.5", "0.9",  # blend weights λ of the mixup probe (LAMBDAS; SHOW_LAMBDA = 0.3)
        "1.0",  # the AUROC of a perfect ranking (0.5: chance)
    },
    "03": {},
    "04": {
        "0.005", "0.5", "0.999",  # Adam's learning rate and betas, RD's official settings
        "0.3",  # the false-positive rate up to which AUPRO integrates
    },
    "05": {"0.5"},  # calibration puts a high quantile of normal scores at p = 0.5
    "06": {
        "0.1", "0.25", "0.5",  # the weights w that exercise 2 sweeps (0.5 is also p = 0.5 of the calibration)
    },
    "07": {},
}  # fmt: skip


def prose_numbers(markdown: str) -> list[str]:
    """The decimal numbers a markdown cell states, outside collapsed blocks, code, link targets, arXiv/doi ids."""
    text = DETAILS.sub(" ", markdown)
    for pattern in (FENCE, CODE_SPAN, IDENTIFIER, HTML_TAG):
        text = pattern.sub(" ", text)
    text = LINK_TARGET.sub("]", text)
    return DECIMAL.findall(text)


def output_text(cell: dict) -> str:
    """Everything a code cell printed or displayed as text (streams, text/plain, text/markdown, ...)."""
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append("".join(out["text"]))
        for kind, value in out.get("data", {}).items():
            if kind.startswith("text/"):
                parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def json_numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [x for child in children for x in json_numbers(child)]


def supported(quote: str, values: np.ndarray) -> bool:
    """Whether `quote` (e.g. "80.6") equals one of `values`, or 100× or 1/100× one, rounded to its decimals."""
    if not len(values):
        return False
    decimals = len(quote.partition(".")[2])
    scaled = (np.abs(values)[:, None] * SCALES[None, :]).ravel()
    return bool(np.any(np.abs(scaled - float(quote)) <= 0.5 * 10.0**-decimals + 1e-9))


def unsupported_numbers(cells: list[dict], constants=frozenset(), results: Path = RESULTS) -> list[str]:
    """'cell i: number' for each decimal number in a markdown cell that no code cell above printed, no results
    file the notebook names holds, and that is not one of `constants`.

    Only the results files the notebook names (in the code that reads them, or a link) count: all of
    docs/results together hold well over a thousand values, among which two of five random one-decimal numbers
    between 40 and 100 turn up by chance."""
    named = {m for c in cells for m in RESULTS_FILE.findall(_text(c)) if (results / m).is_file()}
    pool = [x for name in sorted(named) for x in json_numbers(json.loads((results / name).read_text("utf-8")))]
    problems = []
    for i, c in enumerate(cells):
        if c["cell_type"] == "code":
            pool.extend(float(x) for x in NUMBER.findall(output_text(c)))
        elif c["cell_type"] == "markdown":
            values = np.array(pool, dtype=float)
            unsupported = [q for q in prose_numbers(_text(c)) if q not in constants and not supported(q, values)]
            problems += [f"cell {i}: {q}" for q in unsupported]
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_prose_quotes_only_numbers_it_shows(path):
    problems = unsupported_numbers(_cells(path), set(CONSTANTS[path.name[:2]]))
    assert not problems, (
        f"{path.name}: numbers in the prose that no cell above prints and no results file it reads holds "
        "(print them from docs/results/*.json in a cell above, or drop them):\n" + "\n".join(problems)
    )


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "source": [text]}


def _printed(text: str) -> dict:
    return {"cell_type": "code", "source": ["..."], "outputs": [{"output_type": "stream", "text": [text]}]}


def test_the_number_check_catches_a_run_quoted_from_another_notebook(tmp_path):
    """Notebook 4's old mismatch: it called its run notebook 1's and quoted that run's 80.6 / 86.3 / 61.0 while
    its own table printed 78.2 / 86.6 / 61.9."""
    table = _printed("mean                    78.2         86.6         61.9\n")
    quoting_another_run = [table, _md("This is notebook 1's run: image AUROC 80.6, pixel AUROC 86.3, AUPRO 61.0.")]
    assert unsupported_numbers(quoting_another_run, results=tmp_path) == [
        "cell 1: 80.6",
        "cell 1: 86.3",
        "cell 1: 61.0",
    ]
    assert (
        unsupported_numbers([table, _md("This run: 78.2 / 86.6 / 61.9 (0.782 as a fraction).")], results=tmp_path) == []
    )
    # a number quoted before the cell that prints it is not supported by it
    assert unsupported_numbers([_md("Expect 78.2."), table], results=tmp_path) == ["cell 0: 78.2"]


def test_the_number_check_reads_results_files_and_skips_what_is_not_prose(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"gap": {"mean": 0.0712, "ci_low": 0.035}}))
    reads = {"cell_type": "code", "source": ['json.loads(Path("study.json").read_text())'], "outputs": []}
    quote = _md("The gap is +7.1 points [+3.5, …] (0.071).")
    assert unsupported_numbers([reads, quote], results=tmp_path) == []
    assert unsupported_numbers([quote], results=tmp_path) == ["cell 0: 7.1", "cell 0: 3.5", "cell 0: 0.071"]
    not_prose = _md(
        "See [arXiv:2201.10703](https://arxiv.org/abs/2201.10703), `lr=0.005` and\n```\nx = 1.5\n```\n"
        "<details><summary>Solution</summary>\n\nIt prints 0.74.\n</details>"
    )
    assert unsupported_numbers([not_prose], results=tmp_path) == []
    assert unsupported_numbers([_md("Chance is 0.5.")], {"0.5"}, results=tmp_path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_prose_has_no_lab_log_markers(path):
    """Dates, commit hashes, "revision N", thread counts, machine states, clock times: the checker of the docs."""
    docs = pytest.importorskip("test_docs")
    hits = [
        f"cell {i}: {hit}"
        for i, c in enumerate(_cells(path))
        if c["cell_type"] == "markdown"
        for hit in docs.lab_log_markers(_text(c))
    ]
    assert not hits, f"{path.name} reads like a lab log:\n" + "\n".join(hits)
