"""One real browser: JupyterLab on 127.0.0.1, Debian's chromium driven by Playwright.

The test installs what it needs (``apt-get install -y chromium`` when /usr/bin/chromium is
missing; Playwright never downloads a browser), serves a copy of the quickstart notebook,
runs all its cells, checks that the capability matrix and a power plot are drawn, edits
the config panel and sees the linked config change in a cell's output, and saves a
screenshot to ``test-artifacts/``. A second test switches JupyterLab to its dark theme,
opens a saved notebook as someone else would (untrusted) and checks that its plots are
drawn, then runs the live widgets and checks that their text contrasts with what is
behind it. A third notebook is a user's first cells: a slow model
load whose clock ticks in the browser while its live plot draws, then a second cell that
reuses the model. They are skipped only when chromium cannot be installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_ALL_TIMEOUT_S = 480
#: The Lab server's folder, per server URL (the fixture serves one).
_ROOTS: dict[str, Path] = {}


def _ensure_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    why = "apt-get is not available"
    if shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
        if sudo is None:
            why = "not root and no sudo"
        else:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
                proc = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=900)
                if proc.returncode != 0:
                    why = f"{' '.join(cmd)} failed: {proc.stderr.strip()[-300:]}"
                    break
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium could not be installed ({why})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 (empty token) serving a copy of the quickstart."""
    pytest.importorskip("jupyterlab")
    nbformat = pytest.importorskip("nbformat")
    root = tmp_path_factory.mktemp("lab")
    # a copy without stored outputs, so "every cell has an execution count" means "ran here"
    nb = nbformat.read(ROOT / "notebooks" / "01-quickstart.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, root / "01-quickstart.ipynb")
    # a saved notebook with its outputs, as a new user gets it: not signed here, so untrusted
    shutil.copy(ROOT / "notebooks" / "02-tuning.ipynb", root / "saved-02-tuning.ipynb")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in _DARK_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "dark.ipynb")
    first = nbformat.v4.new_notebook()
    first.cells = [nbformat.v4.new_code_cell(src) for src in FIRST_HOUR]
    first.metadata["kernelspec"] = nb.metadata.get("kernelspec", {"name": "python3", "display_name": "Python 3"})
    nbformat.write(first, root / "first-hour.ipynb")
    # every cell in the DOM (no windowing), no news toast
    settings = root / ".settings"
    for plugin, values in {
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        f = settings / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "JUPYTER_RUNTIME_DIR": str(root / ".runtime"), "JUPYTERLAB_SETTINGS_DIR": str(root / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces")}
    log = open(root / "lab.log", "w")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
           "--ServerApp.password=", f"--ServerApp.root_dir={root}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _ROOTS[url] = root
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" + (root / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


_KERNEL_IDLE = """() => {
  const bar = document.querySelector('.jp-StatusBar-Widget, #jp-main-statusbar');
  return bar !== null && /\\| Idle/.test(bar.textContent);
}"""

_PRINTED = """() => {
  for (const cell of document.querySelectorAll('.jp-CodeCell')) {
    const src = cell.querySelector('.jp-InputArea');
    if (src && src.textContent.includes('print(cfg.to_yaml())')) {
      const out = cell.querySelector('.jp-OutputArea');
      const t = out ? out.textContent : '';
      return t.includes('profile: publication') && t.includes('max_new_tokens: 24');
    }
  }
  return false;
}"""


@contextlib.contextmanager
def _browser_page(sync_api):
    """A chromium page (1400 x 1000, 60 s timeouts); the browser closes after."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            browser.close()


def _restart_run_all(page, url: str) -> None:
    """Open the notebook at ``url``, wait for its kernel, then Kernel > Restart and Run All."""
    page.goto(url)
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell")
    page.wait_for_function(_KERNEL_IDLE, timeout=90_000)
    # runs every cell on a kernel known to be up (the button of the notebook shown)
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) [data-command='notebook:restart-run-all']").first.click()
    page.locator(".jp-Dialog .jp-mod-accept").click()


#: A user's first cells. The first makes the model load take SLOW_LOAD_S longer (a stand-in
#: for a 40 s load of a real model), so the browser can watch the clock tick through it.
SLOW_LOAD_S = 5
FIRST_HOUR = [
    "%load_ext llem\n"
    "import time\n"
    "from llem.backends.pytorch import PyTorchBackend\n"
    "_real_load, _loads = PyTorchBackend.load, []\n"
    "def _slow_load(self, cfg):\n"
    "    _loads.append(cfg.model)\n"
    f"    time.sleep({SLOW_LOAD_S})\n"
    "    return _real_load(self, cfg)\n"
    "PyTorchBackend.load = _slow_load",
    "%%llem -m tiny-random-llama -n 4 -r 1 --meter estimate --set experiment.sampling_interval_s=0.05\n"
    "Hello there",
    "%%llem -m tiny-random-llama -n 6 -r 1 --meter estimate\nWhat is 2 + 2?",
    "print(f'models loaded: {len(_loads)}')",
]

_LOAD_STATE = """() => {
  const run = document.querySelector('.llem-run');
  if (!run) return null;
  return {status: run.querySelector('.widget-html-content').textContent,
          lines: run.querySelectorAll('svg.llem-power-plot polyline').length};
}"""


def _prompts(page) -> list[str]:
    return page.eval_on_selector_all(".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")


def test_quickstart_in_jupyterlab(lab):
    _ensure_chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "browser-quickstart.png"
    t0 = time.monotonic()
    with _browser_page(sync_api) as page:
        try:
            _restart_run_all(page, f"{lab}/lab/tree/01-quickstart.ipynb")
            deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
            while True:
                prompts = _prompts(page)
                done = prompts and all(p.startswith("[") and p[1:-2].strip().isdigit() for p in prompts)
                if done:
                    break
                assert time.monotonic() < deadline, f"cells did not finish: {prompts}"
                time.sleep(1)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                  has_text="Error")
            assert errors.count() == 0, errors.first.inner_text()

            # the capability matrix widget is drawn, from the table
            matrix = page.locator(".llem-capability-matrix table.llem-matrix")
            matrix.first.wait_for()
            assert matrix.first.locator("tr").count() > 10
            assert "Prefix caching" in matrix.first.inner_text()

            # power plots are drawn: the live one (widget) and the measured timeline after the run,
            # an image output of its own (so it stays in the saved notebook) with its phases shaded
            page.locator(".llem-run svg.llem-power-plot").last.wait_for()
            assert page.locator(".llem-run svg.llem-power-plot polyline").count() > 0
            timelines = page.evaluate(_SVG_IMAGES)
            assert any("llem-power-plot" in t and "llem-phase" in t for t in timelines), timelines[:1]

            # edit the config panel; the linked config shows the change
            panel = page.locator(".llem-config-panel").first
            panel.scroll_into_view_if_needed()
            profile = panel.locator(".widget-dropdown", has=page.locator("label", has_text="profile"))
            profile.locator("select").select_option(label="publication")
            panel.locator(".lm-TabBar-tab", has_text="decoder").click()
            tokens = panel.locator(".widget-text", has=page.locator("label", has_text="max_new_tokens"))
            tokens.locator("input").fill("24")
            tokens.locator("input").press("Enter")
            # a gated option is refused with its reason next to the form
            panel.locator(".lm-TabBar-tab", has_text="pytorch").click()
            attn = panel.locator(".widget-dropdown", has=page.locator("label", has_text="attn_implementation"))
            attn.locator("select").select_option(label="flash_attention_2 (needs 8.0+)")
            page.wait_for_function(
                "() => document.querySelector('.llem-error') && "
                "document.querySelector('.llem-error').textContent.includes('NVIDIA GPU')")
            print_cell = page.locator(".jp-CodeCell", has_text="print(cfg.to_yaml())")
            print_cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            page.wait_for_function(_PRINTED, timeout=30_000)
            text = print_cell.locator(".jp-OutputArea").first.inner_text()
            assert "profile: publication" in text and "max_new_tokens: 24" in text
            assert "flash_attention_2" not in text  # refused, so not in the config
            page.locator(".llem-run").last.screenshot(path=str(ARTIFACTS / "browser-live-power.png"))
            matrix.first.screenshot(path=str(ARTIFACTS / "browser-matrix.png"))
            panel.locator(".lm-TabBar").first.scroll_into_view_if_needed()
        finally:
            page.screenshot(path=str(shot), full_page=False)
    assert shot.exists() and shot.stat().st_size > 10_000
    assert (ARTIFACTS / "browser-live-power.png").exists()
    print(f"browser test: {time.monotonic() - t0:.1f} s in the browser; screenshot {shot}")


# ---------------------------------------------------------------- dark theme, saved notebook
#: Cells of a notebook that shows every live face llem has, quickly (tiny model, no run).
_DARK_CELLS = [
    "%load_ext llem",
    "%llem matrix",
    "from llem.widgets import PowerPlot\n"
    "plot = PowerPlot(title='live power')\n"
    "plot.mark('prefill', 0.0); plot.mark('decode', 0.5)\n"
    "for i in range(20):\n    plot.add('cpu', 1.0 + (i % 5) / 4, i / 10)\n"
    "plot.t_end = 2.0  # the samples' own clock, not the seconds since the plot was made\n"
    "plot.redraw()\nplot",
    "from llem.config import ExperimentConfig\nfrom llem.widgets import ConfigPanel\n"
    "ConfigPanel(ExperimentConfig(model='tiny-random-llama'), prompts=['Hello!'])",
]

#: The SVG documents drawn as images on the page (JupyterLab draws image/svg+xml as <img>).
_SVG_IMAGES = """() => Array.from(document.querySelectorAll('.jp-RenderedSVG img'))
  .map(img => decodeURIComponent(img.src.replace(/^data:image\\/svg\\+xml,/, '')))"""

#: Contrast (WCAG ratio) of text against what is behind it, for the elements a selector finds.
_CONTRAST = """([selector, backdrop]) => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).slice(0, 4).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const behind = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length && (c.length < 4 || c[3] > 0.5)) return c;
    }
    return rgb(getComputedStyle(document.body).backgroundColor);
  };
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    const isSvg = el instanceof SVGElement;
    const fg = rgb(isSvg ? getComputedStyle(el).fill : getComputedStyle(el).color);
    let bg;
    if (isSvg) {
      const rect = el.ownerSVGElement.querySelector(backdrop);
      bg = rgb(getComputedStyle(rect).fill);
    } else {
      bg = behind(el);
    }
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    out.push({text: el.textContent.slice(0, 40), ratio: (a + 0.05) / (b + 0.05)});
  }
  return out;
}"""


def test_dark_theme_and_a_saved_notebook(lab):
    _ensure_chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    theme = _ROOTS[lab] / ".settings" / "@jupyterlab/apputils-extension/themes.jupyterlab-settings"
    theme.parent.mkdir(parents=True, exist_ok=True)
    theme.write_text(json.dumps({"theme": "JupyterLab Dark"}))
    with _browser_page(sync_api) as page:
        try:
            # a saved notebook, opened untrusted: its plots are drawn (the PNG beside each SVG),
            # not stripped and not "Cannot display an untrusted SVG"
            # a workspace of its own: only this notebook is open in it
            page.goto(f"{lab}/lab/workspaces/saved/tree/saved-02-tuning.ipynb")
            page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell")
            page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
            image = page.locator(".jp-OutputArea-output[data-mime-type='image/png'] img").first
            image.wait_for()
            image.scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=image.element_handle())
            assert page.get_by_text("Cannot display an untrusted SVG").count() == 0
            image.screenshot(path=str(ARTIFACTS / "browser-saved-plot-dark.png"))

            # the live faces in the dark theme: every text reads against what is behind it
            _restart_run_all(page, f"{lab}/lab/workspaces/dark/tree/dark.ipynb")
            page.locator(".llem-config-panel").first.wait_for(timeout=180_000)
            page.locator(".llem-capability-matrix table.llem-matrix").first.wait_for()
            page.locator(".llem-power svg.llem-power-plot").first.wait_for()
            for selector, backdrop, least in (
                (".llem-matrix td, .llem-matrix th", "", 4.5),
                (".llem-power svg.llem-power-plot text", "rect.llem-background", 3.0),
                (".llem-config-panel .llem-prompts div", "", 4.5),
            ):
                found = page.evaluate(_CONTRAST, [selector, backdrop])
                assert found, f"nothing found for {selector}"
                worst = min(found, key=lambda x: x["ratio"])
                assert worst["ratio"] >= least, f"{selector}: {worst}"
            page.locator(".llem-capability-matrix").first.screenshot(path=str(ARTIFACTS / "browser-matrix-dark.png"))
            page.locator(".llem-power").first.screenshot(path=str(ARTIFACTS / "browser-power-dark.png"))
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser-dark.png"), full_page=False)
            theme.unlink(missing_ok=True)


def _all_ran(page) -> bool:
    prompts = _prompts(page)
    return bool(prompts) and all(p.startswith("[") and p[1:-2].strip().isdigit() for p in prompts)


def test_a_slow_load_ticks_and_the_second_cell_reuses_the_model(lab):
    _ensure_chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with _browser_page(sync_api) as page:
        try:
            _restart_run_all(page, f"{lab}/lab/workspaces/first/tree/first-hour.ipynb")
            loading: set[str] = set()
            drawn_while_loading = False
            deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
            while not _all_ran(page):
                state = page.evaluate(_LOAD_STATE)
                if state and "loading the model" in state["status"]:
                    loading.add(state["status"])
                    drawn_while_loading = drawn_while_loading or state["lines"] > 0
                assert time.monotonic() < deadline, f"cells did not finish: {_prompts(page)}"
                time.sleep(0.25)
            # the clock moved while the load reported nothing: one status per tick
            assert len(loading) >= 3, loading
            assert drawn_while_loading, "the live plot drew no power line during the load"
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                  has_text="Error")
            assert errors.count() == 0, errors.first.inner_text()
            second = page.locator(".jp-CodeCell", has_text="What is 2 + 2?")
            report = second.locator(".llem-run-report")
            report.wait_for()
            assert "Model reused from the previous cell" in report.inner_text()
            assert "done in" in second.locator(".llem-run .widget-html-content").first.inner_text()
            count = page.locator(".jp-CodeCell", has_text="print(f'models loaded").locator(".jp-OutputArea")
            assert "models loaded: 1" in count.inner_text()  # the second cell loaded nothing
            second.screenshot(path=str(ARTIFACTS / "browser-reused-cell.png"))
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser-first-hour.png"), full_page=False)
