"""The result tables of README.md and docs/results.md are what docs/results/*.json renders to
(`benchmarks/render.py`), so a table can never drift from its data; and the README stays a short page."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def render():
    spec = importlib.util.spec_from_file_location("render", REPO / "benchmarks" / "render.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render", mod)
    spec.loader.exec_module(mod)
    return mod


def test_committed_pages_equal_what_their_json_renders_to(render, capsys):
    code = render.main(["--check"])
    assert code == 0, f"run `python benchmarks/render.py` and commit the pages:\n{capsys.readouterr().out}"


def test_a_changed_number_is_put_back(render):
    readme = REPO / "README.md"
    text = readme.read_text(encoding="utf-8")
    row = re.search(r"^\| 14 \| [\d.]+ \|", text, re.M)
    assert row, "the README's interference table has a 14-class row"
    drifted = text.replace(row.group(0), "| 14 | 99.9 |")
    assert drifted != text and render.render_text(drifted, readme) == text


def test_every_results_file_the_pages_quote_is_rendered(render):
    quoted = set()
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        quoted |= set(re.findall(r"results/(\w+)\.json", page.read_text(encoding="utf-8")))
    missing = sorted(quoted - render.rendered_sources())
    assert not missing, f"quoted but rendered by no block of benchmarks/render.py: {missing}"
    for stem in render.rendered_sources():
        assert (REPO / "docs" / "results" / f"{stem}.json").is_file(), stem


def test_pages_hold_generated_blocks_and_refuse_unknown_or_unclosed_ones(render):
    for page in render.PAGES:
        assert "<!-- begin: results/" in (REPO / page).read_text(encoding="utf-8"), page
    readme = REPO / "README.md"
    with pytest.raises(KeyError, match="no block named 'results/nothing'"):
        render.render_text("<!-- begin: results/nothing -->\n<!-- end -->\n", readme)
    with pytest.raises(ValueError, match="without its"):
        render.render_text("<!-- begin: course -->\nno end\n", readme)


def test_a_difference_whose_interval_contains_zero_is_marked(render):
    assert render.interval({"mean": 1.1, "ci_low": -0.6, "ci_high": 2.7, "n": 3}, diff=True) == "+1.1 [-0.6, +2.7] n.s."
    assert (
        render.interval({"mean": 0.071, "ci_low": 0.035, "ci_high": 0.107, "n": 3}, 100, True) == "+7.1 [+3.5, +10.7]"
    )
    assert render.interval({"mean": 0.5, "ci_low": None, "ci_high": None, "n": 1}) == "0.5 (no interval)"
    with pytest.raises(ValueError, match="holds '\\|'"):
        render.table(["a"], [["x | y"]])


def test_the_figure_is_drawn_small_and_shown_near_the_top(render, tmp_path):
    png = render.draw_figure(tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 100_000
    head = (REPO / "README.md").read_text(encoding="utf-8").splitlines()[:20]
    assert any("docs/figures/interference_curve.png" in line for line in head)
    assert (REPO / "docs" / "figures" / "interference_curve.png").is_file()


def test_readme_is_a_short_page_with_the_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "pip install . && adkit demo" in text
    assert 'pip install ".[dev]" && python -m pytest' in text
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in text
    assert "jupyter lab notebooks/" in text
    assert "METHODS.md" not in text
