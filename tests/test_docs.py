"""The written docs, read as files (no rendering): links that lead somewhere, and prose without a lab log.

- Every relative link or image in the top-level pages, `docs/*.md` and `benchmarks/README.md` names a file or
  folder of the repository, and a `#fragment` into a Markdown file names one of its headings. A page that does
  not exist yet is skipped as a whole; a link to a file that does not exist fails.
- The pages a learner reads (docs/methods.md, docs/glossary.md, README.md) carry no lab-log markers: dates,
  commit hashes, "revision N", thread counts, machine states, clock times. Provenance belongs in
  benchmarks/README.md and docs/results/, history in CHANGELOG.md. (Notebook prose is checked in
  tests/test_notebook_content.py.)
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [
    "README.md",
    "CONTRIBUTING.md",
    "CHANGELOG.md",
    *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md")),
    "benchmarks/README.md",
]

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
INLINE_LINK = re.compile(r"\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
HTML_ATTR = re.compile(r"<(?:a|img|source)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.I)


def _page(name: str) -> Path:
    path = REPO / name
    if not path.exists():
        pytest.skip(f"{name} does not exist (yet)")
    return path


def _blank(m: re.Match) -> str:
    """A match replaced by spaces, its newlines kept (so that line numbers stay right)."""
    return re.sub(r"[^\n]", " ", m.group(0))


def _prose(text: str) -> str:
    """The text with fenced code blocks and HTML comments blanked out."""
    return COMMENT.sub(_blank, FENCE.sub(_blank, text))


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every inline link or image, reference definition and HTML href/src, outside code."""
    prose = CODE_SPAN.sub(_blank, _prose(text))
    found = []
    for pattern in (INLINE_LINK, REFERENCE_DEF, HTML_ATTR):
        for m in pattern.finditer(prose):
            target = m.group(1).strip("<>").strip()
            found.append((prose.count("\n", 0, m.start(1)) + 1, target))
    return sorted(found)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every `#fragment` a Markdown file answers to: its headings' slugs (repeats numbered -1, -2, ...) and
    explicit HTML anchors."""
    text = _prose(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set(HTML_ANCHOR.findall(text))
    for m in HEADING.finditer(text):
        s = slug(m.group(2))
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    return out


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """'file:line: (target) what is wrong' for each relative link of a page that leads nowhere."""
    problems = []
    for line, target in links(path.read_text(encoding="utf-8")):
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue  # a web address, mailto:, … — not checked offline
        file_part, _, fragment = target.partition("#")
        file_part = unquote(file_part.partition("?")[0])
        if file_part:
            base = root if file_part.startswith("/") else path.parent
            dest = (base / file_part.lstrip("/")).resolve()
        else:
            dest = path
        where = f"{path.relative_to(root)}:{line}: ({target})"
        if not dest.is_relative_to(root):
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where} names a missing file")
        elif fragment and dest.suffix == ".md" and unquote(fragment).lower() not in anchors(dest):
            problems.append(f"{where} names no heading of {dest.relative_to(root)}")
    return problems


@pytest.mark.parametrize("name", PAGES)
def test_relative_links_resolve(name):
    problems = broken_links(_page(name))
    assert not problems, "broken links:\n" + "\n".join(problems)


# -- lab-log markers ----------------------------------------------------------------------------------------
MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
SHORT_MONTHS = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec"
NUMBER_WORDS = "one|two|three|four|five|six|seven|eight|single"
MARKERS = {
    "an ISO date": r"\b20\d\d-\d\d-\d\d\b",
    "a month-name date": rf"\b(?:(?:{MONTHS})(?:\s+\d{{1,2}},?)?|(?:{SHORT_MONTHS})\.?)\s+20\d\d\b",
    "a day-month date": rf"\b\d{{1,2}}\s+(?:{MONTHS})\s+20\d\d\b",
    "a commit hash in backticks": r"`(?=[0-9a-f]*\d)[0-9a-f]{7,40}`",
    "a commit hash": r"\bcommits?\s+`?[0-9a-f]{7,40}\b",
    "a revision number": r"\brevisions?\s+\d",
    "a machine state": r"\bquiet\s+machine",
    "a clock time": r"\b\d\d:\d\d\b",
    "a timing tool": r"\b(?:/usr/bin/)?time -v\b|\bwarm-?up 0\b",
    "a thread count": rf"\b(?:\d+|{NUMBER_WORDS})[\s-]+threads?\b",
}
MARKER_RE = {what: re.compile(rx, re.I) for what, rx in MARKERS.items()}


def lab_log_markers(text: str) -> list[str]:
    """'line N: what (match)' for each marker in the text outside fenced code blocks."""
    prose = _prose(text)
    hits = []
    for what, rx in MARKER_RE.items():
        for m in rx.finditer(prose):
            hits.append((prose.count("\n", 0, m.start()) + 1, f"{what} ({m.group(0)!r})"))
    return [f"line {n}: {what}" for n, what in sorted(hits)]


@pytest.mark.parametrize(
    "name",
    [
        "docs/methods.md",
        "docs/glossary.md",
        "README.md",
    ],
)
def test_no_lab_log_markers(name):
    hits = lab_log_markers(_page(name).read_text(encoding="utf-8"))
    assert not hits, (
        f"{name} reads like a lab log; move provenance to benchmarks/README.md, history to CHANGELOG.md:\n"
        + ("\n".join(hits))
    )


def test_methods_shows_a_figure_of_each_method():
    text = _page("docs/methods.md").read_text(encoding="utf-8")
    targets = {t for _, t in links(text)}
    missing = [
        f for f in ("figures/rd.png", "figures/fd.png", "figures/snl.png", "figures/dual.png") if f not in targets
    ]
    assert not missing, f"docs/methods.md does not show {missing}"


# -- the checkers themselves ------------------------------------------------------------------------------------
def test_the_marker_check_catches_each_kind_and_spares_plain_prose():
    log = (
        "Measured on 2026-12-02 at 14:05, December 2026, on a quiet machine (time -v) with 2 threads, "
        "one thread, at commit 747012e, `a1b2c3d`, training revision 5."
    )
    found = " ".join(lab_log_markers(log))
    for what in MARKERS:
        if what != "a day-month date":
            assert what in found, what
    assert "a day-month date" in " ".join(lab_log_markers("on 2 December 2026"))
    plain = (
        "The teacher has 3 stages at strides 4, 8, 16; `decoder_blocks` (3, 4, 6); 95% intervals over seeds 0–2; "
        "`rd+snl`; a `(B,1,H,W)` map; `cafe` and `deadbeef`; the threads of a DataLoader; may 20 images."
    )
    assert lab_log_markers(plain) == []
    assert lab_log_markers("```\ngit log 747012e at 14:05\n```\n") == []


def test_the_link_check_reads_links_and_headings_like_github():
    text = (
        'See [a](docs/x.md#part-one), ![fig](figures/a.png "title"), [web](https://example.org), '
        '`[not](a link)` and <img src="b.png">.\n\n[ref]: <c d.md>\n```\n[x](inside/code.md)\n```\n'
    )
    assert sorted(t for _, t in links(text)) == [
        "b.png",
        "c d.md",
        "docs/x.md#part-one",
        "figures/a.png",
        "https://example.org",
    ]
    assert slug("2. Reverse Distillation (RD)") == "2-reverse-distillation-rd"
    assert slug("E–D student (local branch)") == "ed-student-local-branch"
    assert slug("The `amap` and [CRAM](x.md)") == "the-amap-and-cram"


def test_the_link_check_fails_a_missing_file_or_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("# Part one\n\n## Part one\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/x.md#part-one) [ok](docs/x.md#part-one-1) [ok](docs/) [ok](#top)\n"
        "[gone](docs/METHODS.md) [no heading](docs/x.md#part-two) ![no image](figures/rd.png) [out](../x.md)\n"
        "# Top\n",
        encoding="utf-8",
    )
    problems = broken_links(page, root=tmp_path)
    assert sorted(p.split(" (")[1].split(")")[0] for p in problems) == [
        "../x.md",
        "docs/METHODS.md",
        "docs/x.md#part-two",
        "figures/rd.png",
    ], problems
