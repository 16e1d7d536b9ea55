"""The library's shape, read from its source with `ast` (nothing is imported): no import cycle among adkit's
modules, counting imports inside functions; models import only from the layers below them; no long functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "adkit"
MAX_LINES = 80  # a function's lines, `def` to its last line, docstring included

# argument-parser tables: one `add_argument` after another, long by nature
EXEMPT = {"adkit.cli:build_parser"}
# what a model file may import from adkit: the layers below models (a model knows no run, split or validation set)
MODEL_IMPORTS = {"adkit.backbones", "adkit.batches", "adkit.config", "adkit.errors", "adkit.losses", "adkit.scoring"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The adkit modules `name` imports anywhere in its file (inside functions too); `from a import b` counts as
    importing `a.b` where that is a module, else `a`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for a in node.names:
                found.add(f"{source}.{a.name}" if f"{source}.{a.name}" in known else source)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle `[a, b, ..., a]` of the directed graph, or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("import os\n\ndef f():\n    from . import b\n")
    assert imports("pkg.a", a, {"pkg.a", "pkg.b"}) == {"pkg.b"}
    assert find_cycle({"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}) == [
        "pkg.a",
        "pkg.b",
        "pkg.c",
        "pkg.a",
    ]
    assert find_cycle({"pkg.a": {"pkg.b"}, "pkg.b": set()}) is None


def test_no_import_cycle_among_adkit_modules():
    edges = graph()
    assert len(edges) > 30 and "adkit.training" in edges["adkit.ablation"]  # the graph was read
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_inside_adkit_imports_its_front_door():
    """`import adkit` is for users: a module that imported the package itself would tie into every export."""
    users = sorted(name for name, deps in graph().items() if "adkit" in deps)
    assert users == []


def test_models_import_only_from_the_layers_below_them():
    for name, deps in graph().items():
        if name.startswith("adkit.models"):
            above = {d for d in deps if not d.startswith("adkit.models")} - MODEL_IMPORTS
            assert not above, f"{name} imports {sorted(above)}"


def long_functions() -> dict[str, int]:
    out = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    out[f"{name}:{node.name}"] = lines
    return out


def test_fit_is_the_loop_alone():
    """Resume, the checkpoint schedule, stop signals and the calibration live beside it (`adkit.loop`)."""
    tree = ast.parse((ROOT / "loop.py").read_text())
    fit = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "fit")
    assert fit.end_lineno - fit.lineno + 1 <= 60


def test_no_function_is_longer_than_80_lines():
    found = long_functions()
    new = {k: n for k, n in found.items() if k not in EXEMPT}
    assert not new, f"functions over {MAX_LINES} lines (split them): {new}"


FRONT_DOOR = """
import os, sys
import adkit
assert "torch" not in sys.modules, "import adkit loaded torch"
threads = os.environ["OMP_NUM_THREADS"]  # set by adkit, before torch
unresolved = [n for n in adkit.__all__ if getattr(adkit, n, None) is None]
assert not unresolved, unresolved
from adkit import ablation, config, loop, runs, training
assert (adkit.fit, adkit.load_run, adkit.cached_run) == (loop.fit, runs.load_run, training.cached_run)
assert adkit.TrainConfig is config.TrainConfig and adkit.dual_markdown is ablation.dual_markdown
import torch
assert torch.get_num_threads() == int(threads), (torch.get_num_threads(), threads)
"""


def test_the_front_door_sets_threads_first_and_exposes_the_notebook_api():
    """`import adkit` loads no torch (the CLI's help stays instant) and sets the thread count before anything
    can; every name it lists resolves, to the same object as in its module."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", FRONT_DOOR], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def _notebook_code(path: Path) -> str:
    import json

    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_notebooks_import_adkit_through_its_front_door_only():
    """Every notebook imports adkit one way, `from adkit import ...`, and only names the front door lists."""
    import adkit

    notebooks = sorted((ROOT.parent / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 7
    for nb in notebooks:
        tree = ast.parse(_notebook_code(nb).replace("\n%", "\n#").replace("\n!", "\n#"))
        found = 0
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("adkit") for a in node.names), (
                    f"{nb.name}: import {node.names[0].name}"
                )
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adkit"):
                assert node.module == "adkit", f"{nb.name}: from {node.module} import ... (use `from adkit import`)"
                missing = [a.name for a in node.names if a.name not in adkit.__all__]
                assert not missing, f"{nb.name}: {missing} are not in adkit.__all__"
                found += 1
        assert found, f"{nb.name} never imports adkit"


def test_no_re_export_is_left_for_old_imports():
    """A name imported into a module only so that old code can import it from there is an alias: none remain
    (ruff's unused-import rule, F401, is what such a line has to silence)."""
    aliases = [
        f"{path.relative_to(ROOT.parent)}:{i}"
        for path in sorted(ROOT.rglob("*.py"))
        if path.name != "__init__.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if "noqa: F401" in line
    ]
    assert aliases == []
