"""Every notebook in JupyterLab, in a real browser: headless Chromium driven by Playwright.

JupyterLab runs on a copy of notebooks/ (outputs cleared) in a temporary folder, so neither autosave nor
checkpoints touch the repository; the kernel is this interpreter and finds the cached runs through
$ADKIT_DATA (the repository's data/). For each notebook: Run > Run All Cells, wait for the kernel to
go idle, then check that no cell failed, that the cells nbval checks show their stored outputs (nbval's own
comparison on the saved run, tests/nbcheck.py), every ipywidget rendered, moving a control of each explorer
redraws it, and every plotly figure drew its SVG. A full-page screenshot per notebook lands in
test-artifacts/browser/.

When this test runs, nbval does not execute the notebooks a second time (conftest.py deselects them): one
execution per notebook serves both checks. `pytest notebooks/`, or a machine without a browser, runs nbval.
Each notebook is its own unit of work for pytest-xdist (conftest.py), so two workers run notebooks side by
side, each worker with its own JupyterLab and browser.

Under CI (CI=true) a missing chromium or playwright fails the test; elsewhere it skips. Playwright never
downloads a browser here: it launches the system chromium (ADKIT_CHROMIUM, default /usr/bin/chromium).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbcheck import mismatches

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = REPO / "test-artifacts" / "browser"
SANITIZE = REPO / "notebooks" / "sanitize.cfg"  # nbval's (pyproject.toml: --nbval-sanitize-with)
CHROMIUM = os.environ.get("ADKIT_CHROMIUM", "/usr/bin/chromium")
# no GPU, no sandbox (root in CI), and nothing that calls home: the network is closed in CI
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
RUN_TIMEOUT = float(os.environ.get("ADKIT_BROWSER_TIMEOUT", 1800))  # s per notebook; cold on 2 cores: ≤ 5 min
# s one cell may run (the same limit as nbval's --nbval-cell-timeout in pyproject.toml): a stalled cell fails in
# minutes, not at CI's limit
CELL_TIMEOUT = float(os.environ.get("ADKIT_CELL_TIMEOUT", 600))
# a cell still marked running this long after its kernel went idle never got its reply: fail at once
IDLE_BUT_BUSY = 60.0
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
EXPLORERS = ("probe_explorer", "test_set_browser", "threshold_explorer")  # adkit.widgets: controls + a figure
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
# JupyterLab user settings for the run: no autosave, every cell attached to the DOM, no news prompt
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # the saved copy lists the live widget models: a view of a closed one (a finished tqdm bar) is empty
    "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
}


def _require_browser() -> None:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium, or set ADKIT_CHROMIUM)")
    if missing:
        msg = "the browser test needs " + " and ".join(missing)
        if IN_CI:
            pytest.fail(msg + " (CI=true: this test must run)", pytrace=False)
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Lab:
    """A JupyterLab server on a loopback port, serving `root`, with its REST API at hand."""

    def __init__(self, root: Path, state: Path):
        self.root, self.token, self.port = root, secrets.token_hex(16), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = state / "settings"
        for plugin, values in LAB_SETTINGS.items():
            f = settings / f"{plugin}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(values))
        # the notebooks' kernelspec `python3`, pinned to the interpreter running pytest
        spec = state / "jupyter" / "kernels" / "python3"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                }
            )
        )
        env = {
            **os.environ,
            "JUPYTER_PATH": str(state / "jupyter"),
            "JUPYTER_CONFIG_DIR": str(state / "config"),
            "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
            "ADKIT_DATA": os.environ.get("ADKIT_DATA") or str(REPO / "data"),
        }
        env.pop("MPLBACKEND", None)  # CI sets Agg; a kernel shows figures inline, as for a user
        self.log = (state / "jupyter-lab.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.root_dir={root}",
                "--ServerApp.terminals_enabled=False",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",
            ]
            + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),  # CI runs as root
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log_text()}")
            try:
                self.api("status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jupyter lab did not answer in 180 s:\n{self.log_text()}") from None
                time.sleep(0.5)

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-4000:]

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(
            f"{self.url}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def kernel_of(self, path: str) -> dict | None:
        return next((s["kernel"] for s in self.api("sessions") if s["path"] == path), None)

    def close(self) -> None:
        for s in self.api("sessions"):
            self.api(f"sessions/{s['id']}", "DELETE")
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def repo_notebooks():
    """The repository's notebooks, unchanged by the test (checked at the end)."""
    before = {p: _digest(p) for p in NOTEBOOKS}
    yield NOTEBOOKS
    changed = [p.name for p in NOTEBOOKS if _digest(p) != before[p]]
    assert not changed, f"the browser test changed the stored notebooks: {changed}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, repo_notebooks):
    _require_browser()
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    for p in repo_notebooks:  # same layout (notebooks/ one level down), stored outputs cleared
        nb = nbformat.read(p, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, root / "notebooks" / p.name)
    # what the notebooks read and link beside them: docs/ (notebook 1 draws docs/results/interference.json)
    shutil.copytree(REPO / "docs", root / "docs")
    server = Lab(root, tmp_path_factory.mktemp("lab-state"))
    argv = server.api("kernelspecs")["kernelspecs"]["python3"]["spec"]["argv"]
    assert argv[0] == sys.executable, f"the python3 kernel runs {argv[0]}, pytest runs {sys.executable}"
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _prompts(page) -> list[str]:
    return page.eval_on_selector_all(
        ".jp-Notebook .jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())"
    )


def _run_all(page, lab: Lab, path: str) -> None:
    """Run > Run All Cells, then wait until no cell is queued or running and the kernel has stayed idle."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
        ".some(e => e.textContent.includes('*') || /\\d/.test(e.textContent))",
        timeout=60_000,
    )
    start = time.monotonic()
    deadline, quiet = start + RUN_TIMEOUT, 0
    last, changed, idle_since = None, start, None
    while quiet < 3:
        now = time.monotonic()
        if now > deadline:
            pytest.fail(f"{path}: still running after {RUN_TIMEOUT:.0f} s; prompts {_prompts(page)}")
        time.sleep(2)
        prompts = _prompts(page)
        running = [i for i, p in enumerate(prompts) if "*" in p]
        state = (lab.kernel_of(path) or {}).get("execution_state")
        if prompts != last:
            last, changed = prompts, now
        if running and now - changed > CELL_TIMEOUT:
            pytest.fail(f"{path}: code cell {running[0]} ran over {CELL_TIMEOUT:.0f} s (ADKIT_CELL_TIMEOUT)")
        idle_since = (idle_since or now) if running and state == "idle" else None
        if idle_since is not None and now - idle_since > IDLE_BUT_BUSY:
            pytest.fail(
                f"{path}: code cell {running[0]} still waits for its reply {IDLE_BUT_BUSY:.0f} s after "
                "the kernel went idle (a lost execute_reply)"
            )
        busy = bool(running) or state != "idle"
        quiet = 0 if busy else quiet + 1


def _saved(page, root: Path, path: str) -> nbformat.NotebookNode:
    """Save the notebook from the browser (Ctrl+S) and read what JupyterLab wrote."""
    file = root / path
    mtime = file.stat().st_mtime_ns
    page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 60
    while file.stat().st_mtime_ns == mtime:
        assert time.monotonic() < deadline, f"{path}: Ctrl+S did not save the notebook"
        time.sleep(0.5)
    time.sleep(1)
    return nbformat.read(file, as_version=4)


def _move_controls(page, view, where: str) -> None:
    """Move a slider (arrow key on its handle) and change a dropdown of one widget view; after each, the
    widget's figure (the image in its Output) must be redrawn."""
    figure = view.locator(".widget-output img").first
    figure.wait_for(timeout=120_000)
    moves = []
    slider = view.locator(".widget-slider .noUi-handle").first
    if slider.count():
        moves.append(("slider", lambda: (slider.focus(), page.keyboard.press("ArrowRight"))))
    select = view.locator(".widget-dropdown select").first
    if select.count():

        def pick():
            options = select.locator("option").all_text_contents()
            current = select.input_value()
            select.select_option(next(o for o in options if o != current))

        moves.append(("dropdown", pick))
    assert moves, f"{where}: an explorer without a slider or dropdown"
    for name, move in moves:
        before = figure.get_attribute("src")
        move()
        deadline = time.monotonic() + 120
        while True:
            img = view.locator(".widget-output img").first
            if img.count() and img.get_attribute("src") not in (None, before):
                break
            assert time.monotonic() < deadline, f"{where}: moving the {name} did not redraw the figure"
            time.sleep(0.5)


def _screenshot(page, name: str) -> None:
    """The whole notebook in one picture: the viewport grows to the notebook's height."""
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('.jp-WindowedPanel-outer')].map(e => e.scrollHeight), 900)"
    )
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 200, 30000)})
    page.evaluate("() => document.querySelectorAll('.jp-WindowedPanel-outer').forEach(e => { e.scrollTop = 0; })")
    page.wait_for_timeout(1500)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab(notebook: Path, lab: Lab, browser, request):
    path = f"notebooks/{notebook.name}"
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    try:
        page.goto(f"{lab.url}/lab/workspaces/{notebook.stem}/tree/{path}?token={lab.token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        deadline = time.monotonic() + 120
        while (lab.kernel_of(path) or {}).get("execution_state") != "idle":
            assert time.monotonic() < deadline, f"{path}: no idle kernel after 120 s\n{lab.log_text()}"
            time.sleep(1)
        _run_all(page, lab, path)
        nb = _saved(page, lab.root, path)
        code = [c for c in nb.cells if c.cell_type == "code"]

        # no error output; every code cell ran (Run All stops at the first error)
        errors = [
            f"cell {i}: {o.ename}: {o.evalue}"
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code"
            for o in c.outputs
            if o.output_type == "error"
        ]
        assert not errors, f"{path}: " + "; ".join(errors)
        not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
        assert not not_run, f"{path}: cells {not_run} did not run"
        tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
        assert tracebacks.count() == 0, f"{path}: a traceback is shown: {tracebacks.first.inner_text()[:800]}"

        # nbval's check on this run: the cells it checks show the stored outputs (tests/nbcheck.py)
        problems = mismatches(nbformat.read(notebook, as_version=4), nb, SANITIZE, request.config)
        assert not problems, f"{path}: " + "\n".join(problems)

        # outputs in the page, cell by cell, in the order of the saved file's outputs
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        assert cells.count() == len(code), f"{path}: {len(code)} code cells, {cells.count()} shown"

        def shown(i: int):
            nodes = cells.nth(i).locator(".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output")
            assert nodes.count() == len(code[i].outputs), f"{path}: code cell {i} shows {nodes.count()} outputs"
            return nodes

        # every widget view rendered: the widget's DOM is there, not "Loading widget..." or an error; the view
        # of a model the kernel closed (tqdm's leave=False bars) is removed, so it must be empty
        live = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
        calls = re.compile(r"widgets\.(" + "|".join(EXPLORERS) + r")\(")
        explorers = []
        for i, c in enumerate(code):
            for k, o in enumerate(c.outputs):
                if WIDGET_MIME not in o.get("data", {}):
                    continue
                node, model = shown(i).nth(k), o.data[WIDGET_MIME]["model_id"]
                text = node.inner_text()
                where = f"{path} code cell {i} output {k}"
                assert "Loading widget" not in text and "Error displaying widget" not in text, f"{where}: {text[:300]}"
                if model in live:
                    assert node.locator(".jupyter-widgets").count() > 0, f"{where}: no widget drawn"
                else:
                    assert not text.strip(), f"{where}: a closed widget still shows {text[:200]}"
                if o.output_type == "execute_result" and calls.search(c.source):
                    assert model in live, f"{where}: the explorer's widget is closed"
                    explorers.append((node, where))
        expected = sum(1 for c in code if calls.search(c.source))
        assert len(explorers) == expected, f"{path}: {expected} explorer cells, {len(explorers)} explorers shown"

        # each explorer reacts to its controls
        for node, where in explorers:
            node.scroll_into_view_if_needed()
            _move_controls(page, node, where)

        # every plotly figure: jupyterlab-plotly first shows the bundle's PNG and draws the live figure when
        # the pointer enters it; then an svg .main-svg with traces inside .js-plotly-plot
        for i, c in enumerate(code):
            for k, o in enumerate(c.outputs):
                if PLOTLY_MIME not in o.get("data", {}):
                    continue
                where, node = f"{path} code cell {i} output {k}", shown(i).nth(k)
                img = node.locator("img.plot-img")
                if img.count() and img.is_visible():
                    assert (img.get_attribute("src") or "").startswith("data:image/png;base64,iVBOR"), where
                    img.scroll_into_view_if_needed()
                    box = img.bounding_box()
                    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                svg = node.locator("svg.main-svg")  # the output node itself becomes the .js-plotly-plot
                try:
                    svg.first.wait_for(state="visible", timeout=60_000)
                except Exception:
                    pytest.fail(f"{where}: no plotly figure drawn; the output holds {node.inner_html()[:200]}")
                assert node.evaluate("n => n.matches('.js-plotly-plot') || !!n.querySelector('.js-plotly-plot')"), where
                assert svg.locator("g.trace path").count() > 0, f"{where}: the plotly figure drew no trace"

        dialogs = page.locator(".jp-Dialog")
        assert dialogs.count() == 0, f"{path}: a dialog is open: {dialogs.first.inner_text()[:300]}"
        _screenshot(page, notebook.stem)
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{notebook.stem}-failed.png"), full_page=True)
        except Exception as e:  # a crashed page: the test's own error says more
            print(f"no screenshot of {path}: {e}")
        if page_errors:
            print(f"page errors in {path}:", *page_errors[:10], sep="\n  ")
        raise
    finally:
        page.close()
        for s in lab.api("sessions"):
            if s["path"] == path:
                lab.api(f"sessions/{s['id']}", "DELETE")  # the next notebook gets the memory
