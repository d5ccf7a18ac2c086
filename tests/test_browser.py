"""One real browser: JupyterLab on 127.0.0.1, Debian's chromium driven by Playwright.

The test installs what it needs (``apt-get install -y chromium`` when /usr/bin/chromium is
missing; Playwright never downloads a browser), serves a copy of the quickstart notebook,
runs all its cells, checks that the capability matrix and a power plot are drawn, edits
the config panel and sees the linked config change in a cell's output, and saves a
screenshot to ``test-artifacts/``. A second notebook is a user's first cells: a slow model
load whose clock ticks in the browser while its live plot draws, then a second cell that
reuses the model. It is skipped only when chromium cannot be installed.
"""

from __future__ import annotations

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
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{lab}/lab/tree/01-quickstart.ipynb")
            page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell")
            # wait for the kernel, then Run > Run All Cells
            page.wait_for_function(_KERNEL_IDLE, timeout=90_000)
            # Kernel > Restart Kernel and Run All Cells: runs every cell on a kernel known to be up
            page.locator("[data-command='notebook:restart-run-all']").first.click()
            page.locator(".jp-Dialog .jp-mod-accept").click()
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

            # power plots are drawn: the live one (widget) and the measured timeline after the run
            page.locator(".llem-run svg.llem-power-plot").last.wait_for()
            assert page.locator(".llem-run svg.llem-power-plot polyline").count() > 0
            timeline = page.locator(".llem-run-report svg.llem-power-plot")
            assert timeline.count() >= 1
            assert timeline.last.locator("rect.llem-phase").count() > 0

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
            browser.close()
    assert shot.exists() and shot.stat().st_size > 10_000
    assert (ARTIFACTS / "browser-live-power.png").exists()
    print(f"browser test: {time.monotonic() - t0:.1f} s in the browser; screenshot {shot}")


def _run_all(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell")
    page.wait_for_function(_KERNEL_IDLE, timeout=90_000)
    page.locator("[data-command='notebook:restart-run-all']").first.click()
    page.locator(".jp-Dialog .jp-mod-accept").click()


def _all_ran(page) -> bool:
    prompts = _prompts(page)
    return bool(prompts) and all(p.startswith("[") and p[1:-2].strip().isdigit() for p in prompts)


def test_a_slow_load_ticks_and_the_second_cell_reuses_the_model(lab):
    _ensure_chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            _run_all(page, f"{lab}/lab/tree/first-hour.ipynb")
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
            browser.close()
