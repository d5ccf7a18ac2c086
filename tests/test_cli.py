"""The `llem` command line, end to end on tiny-random-llama, including its error paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("click")
from click.testing import CliRunner

from llem.cli import cli, main, one_line, parse_sets

CONFIG = {"model": "tiny-random-llama", "num_prompts": 2, "repeats": 1, "sampling_interval_s": 0.02,
          "decoder": {"max_new_tokens": 6}}


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(CONFIG))
    return p


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One `llem run` (with its report), shared by the report tests."""
    tmp = tmp_path_factory.mktemp("cli-run")
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    res = CliRunner().invoke(cli, ["run", str(cfg), "--set", "pytorch.batch_size=2", "-o", str(tmp / "res"),
                                   "--report", str(tmp / "run.html")])
    assert res.exit_code == 0, res.output
    return tmp, res


def failed(res, code=1):
    """An error: the exit status, one `Error:` line, no traceback."""
    assert res.exit_code == code, res.output
    text = res.output
    assert "Traceback" not in text
    errors = [ln for ln in text.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, text
    return errors[0]


# ----------------------------------------------------------------------------- run
def test_run_saves_a_result_and_a_report(saved):
    tmp, res = saved
    files = list((tmp / "res").glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["config"]["pytorch"]["batch_size"] == 2 and len(data["runs"]) == 1
    assert f"Saved the result in {files[0]}" in res.stdout
    assert "llem result: tiny-random-llama on pytorch" in res.stdout
    assert (tmp / "run.html").stat().st_size > 10_000
    assert "measuring" in res.stderr  # the progress bar


def test_run_takes_the_field_options(runner, cfg_file, tmp_path):
    args = ["run", str(cfg_file), "-n", "3", "--batch-size", "2", "--prompts", "code", "--num-prompts", "3",
            "--meter", "estimate", "--dtype", "float32", "--set", "decoder.max_new_tokens=4", "-o",
            str(tmp_path), "-q"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    (saved_file,) = tmp_path.glob("*.json")
    data = json.loads(saved_file.read_text())
    assert data["config"]["decoder"]["max_new_tokens"] == 4  # --set wins over -n
    assert data["config"]["pytorch"]["batch_size"] == 2 and data["config"]["pytorch"]["dtype"] == "float32"
    assert data["config"]["prompts"] == "code" and data["config"]["meter"] == "estimate"
    assert len(data["runs"][0]["requests"]) == 3  # --num-prompts sizes --prompts' set
    line = failed(runner.invoke(cli, ["run", str(cfg_file), "-b", "vllm", "--batch-size", "4"]))
    assert "use pytorch.batch_size" in line
    res = runner.invoke(cli, ["run", str(cfg_file), "-r", "lots"])
    assert res.exit_code == 2 and "'lots' is not a valid integer" in res.output


def test_run_errors_are_one_line(runner, cfg_file, tmp_path):
    line = failed(runner.invoke(cli, ["run", str(tmp_path / "missing.yaml")]))
    assert "does not exist" in line
    line = failed(runner.invoke(cli, ["run", str(cfg_file), "--set", "repeatz=2"]))
    assert "Did you mean" in line and "experiment.repeats" in line
    line = failed(runner.invoke(cli, ["run", str(cfg_file), "--set", "decoder.temperature=9"]))
    assert "decoder.temperature" in line
    line = failed(runner.invoke(cli, ["run", str(cfg_file), "--set", "model=./no/such/model", "-q"]))
    assert "no/such/model" in line and "was not found" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert "not valid YAML" in failed(runner.invoke(cli, ["run", str(bad)]))
    # a malformed --set is a usage error (status 2)
    res = runner.invoke(cli, ["run", str(cfg_file), "--set", "repeats"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output and "Traceback" not in res.output


def test_debug_shows_the_exception(runner, tmp_path):
    res = runner.invoke(cli, ["--debug", "config", "validate", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 1 and type(res.exception).__name__ == "ConfigError"


# -------------------------------------------------------------------------- report
@pytest.mark.parametrize("suffix", ["html", "md", "json", "csv"])
def test_report_formats(saved, runner, suffix):
    tmp, _ = saved
    out = tmp / f"report.{suffix}"
    res = runner.invoke(cli, ["report", str(tmp / "res"), "-o", str(out), "--title", "T"])
    assert res.exit_code == 0, res.output
    assert f"Wrote {out} (1 result)" in res.stdout
    assert out.stat().st_size > 500


def test_report_skips_a_corrupt_file_in_a_folder(saved, runner, tmp_path):
    tmp, _ = saved
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = next((tmp / "res").glob("*.json"))
    (folder / good.name).write_text(good.read_text())
    (folder / "cut.json").write_text(good.read_text()[:200])
    res = runner.invoke(cli, ["report", str(folder), "-o", str(tmp_path / "r.json"), "--no-charts"])
    assert res.exit_code == 0, res.output
    assert "warning: skipped" in res.stderr and "cut.json" in res.stderr
    assert len(json.loads((tmp_path / "r.json").read_text())["results"]) == 1


def test_report_errors(saved, runner, tmp_path):
    tmp, _ = saved
    cut = tmp_path / "cut.json"
    cut.write_text('{"runs": [')
    assert "not valid JSON" in failed(runner.invoke(cli, ["report", str(cut), "-o", str(tmp_path / "r.html")]))
    assert "does not exist" in failed(runner.invoke(cli, ["report", str(tmp_path / "nope.json")]))
    (tmp_path / "empty").mkdir()
    assert "no results" in failed(runner.invoke(cli, ["report", str(tmp_path / "empty")]))
    line = failed(runner.invoke(cli, ["report", str(tmp / "res"), "-o", str(tmp_path / "r.docx")]))
    assert "Unknown report file type '.docx'" in line and ".html" in line
    line = failed(runner.invoke(cli, ["report", str(tmp / "res"), "-o", str(tmp_path / "r"), "-f", "jsn"]))
    assert "Did you mean 'json'" in line
    res = runner.invoke(cli, ["report"])
    assert res.exit_code == 2 and "Missing argument" in res.output


# -------------------------------------------------------------------------- matrix
def test_matrix(runner):
    res = runner.invoke(cli, ["matrix"])
    assert res.exit_code == 0
    assert res.stdout.startswith("| Capability | pytorch | vllm | tensorrt | Needs |")
    assert "FlashAttention-3" in res.stdout
    res = runner.invoke(cli, ["matrix", "-f", "html", "-b", "vllm"])
    assert res.exit_code == 0 and res.stdout.startswith("<table") and "pytorch" not in res.stdout
    assert "Did you mean 'vllm'" in failed(runner.invoke(cli, ["matrix", "-b", "vlm"]))


def test_matrix_for_a_machine_or_a_target(runner):
    from llem.machine import Machine, use_machine

    with use_machine(Machine.fake()):
        res = runner.invoke(cli, ["matrix", "--here"])
    assert res.exit_code == 0 and res.stdout.startswith("On this machine (CPU only) (tier cpu)")
    bf16 = next(line for line in res.stdout.splitlines() if line.startswith("| bfloat16 |"))
    assert "| yes" in bf16 and "not here" in bf16  # pytorch yes; vllm, tensorrt not on a CPU
    res = runner.invoke(cli, ["matrix", "--target", "T4"])
    assert res.exit_code == 0 and "On the target 'T4'" in res.stdout and "this GPU" not in res.stdout
    fa2 = next(line for line in res.stdout.splitlines() if line.startswith("| FlashAttention-2 |"))
    assert fa2.count("not here") == 3
    assert "unknown GPU" in failed(runner.invoke(cli, ["matrix", "--target", "Z9"]))


# -------------------------------------------------------------------------- config
def test_config_validate(runner, cfg_file, tmp_path):
    res = runner.invoke(cli, ["config", "validate", str(cfg_file)])
    assert res.exit_code == 0 and res.stdout.startswith(f"OK: {cfg_file} is a valid pytorch config")
    # a GPU-only setting on this CPU machine, then planned for an H100
    args = ["config", "validate", str(cfg_file), "--set", "pytorch.attn_implementation=flash_attention_2"]
    line = failed(runner.invoke(cli, args + ["--target", "cpu"]))
    assert "flash_attention_2" in line and "8.0" in line
    res = runner.invoke(cli, args + ["--target", "H100"])
    assert res.exit_code == 0 and "for H100" in res.stdout
    # a skipped setting is reported, not refused
    res = runner.invoke(cli, ["config", "validate", str(cfg_file), "--set", "pytorch.max_tokens_per_batch=512"])
    assert res.exit_code == 0 and "note: pytorch.max_tokens_per_batch will have no effect" in res.stdout
    line = failed(runner.invoke(cli, ["config", "validate", str(cfg_file), "--set", "pytorch.batch_size=-1"]))
    assert "pytorch.batch_size" in line
    assert "does not exist" in failed(runner.invoke(cli, ["config", "validate", str(tmp_path / "x.yaml")]))
    two_errors = tmp_path / "two.yaml"
    two_errors.write_text("backend: vllm\npytorch:\n  batch_size: 2\n")
    assert "\n" not in failed(runner.invoke(cli, ["config", "validate", str(two_errors)]))


def test_config_show(runner, cfg_file):
    res = runner.invoke(cli, ["config", "show"])
    assert res.exit_code == 0
    shown = yaml.safe_load(res.stdout)
    assert shown["model"] == "smollm2-135m" and "decoder" in shown and "max_input_tokens" in shown
    res = runner.invoke(cli, ["config", "show", str(cfg_file), "--only-set", "-f", "json",
                              "--set", "pytorch.batch_size=3"])
    data = json.loads(res.stdout)
    assert data["model"] == "tiny-random-llama" and data["pytorch"]["batch_size"] == 3


def test_parse_sets_reads_yaml_scalars():
    assert parse_sets(["a=1", "b=true", "c=x", "d=[1, 2]", "e=", "f=0.5"]) == {
        "a": 1, "b": True, "c": "x", "d": [1, 2], "e": None, "f": 0.5}


def test_one_line():
    assert one_line("Invalid configuration:\n- a\n- b") == "Invalid configuration: a; b"
    assert one_line("first\nsecond") == "first; second"


# -------------------------------------------------------------------------- doctor
def test_doctor(runner):
    res = runner.invoke(cli, ["doctor"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    for section in ("GPUs and tier", "Energy meters", "Backends", "Built-in models", "Optional packages"):
        assert section in out
    assert "tier of this machine:" in out
    assert "yes pytorch" in out
    assert "estimate" in out and "rapl" in out and "nvml" in out
    # a backend that is missing says why and how to install it
    for line in out.splitlines():
        if line.strip().startswith("no  vllm"):
            assert "pip install 'llem[vllm]'" in line or "NVIDIA GPU" in line


# -------------------------------------------------------------------- console script
def test_console_script_and_module_entry():
    res = subprocess.run([sys.executable, "-m", "llem.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("llem, version")
    script = Path(sys.executable).with_name("llem")
    if script.exists():
        res = subprocess.run([str(script), "config", "validate", "/nonexistent.yaml"], capture_output=True,
                             text=True)
        assert res.returncode == 1
        assert res.stderr.strip() == "Error: config file '/nonexistent.yaml' does not exist"


def test_main_takes_argv(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["matrix", "-b", "pytorch"])
    assert exc.value.code == 0
    assert "| Capability | pytorch | Needs |" in capsys.readouterr().out
