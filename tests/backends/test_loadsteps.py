"""llem.backends.loadsteps: a load's steps reach the listener; library bars draw nothing, then come back."""

from __future__ import annotations

import io
import sys

import pytest

from llem.backends import loadsteps
from llem.backends.loadsteps import StepBar, library_bars_as_steps, library_bars_shown, reporting, step


def test_steps_reach_the_listener_only_inside_reporting():
    heard = []
    step("nobody listens")  # costs nothing, raises nothing
    with reporting(lambda text, done, total: heard.append((text, done, total))):
        step("reading the tokenizer")
        step("Loading weights", 3, 10)
    step("after")
    assert heard == [("reading the tokenizer", None, None), ("Loading weights", 3, 10)]


def test_a_listener_that_raises_is_dropped_not_the_load():
    calls = []

    def broken(text, done, total):
        calls.append(text)
        raise RuntimeError("display gone")

    with reporting(broken):
        step("one")
        step("two")
    assert calls == ["one"]


def test_a_step_bar_tells_its_count_and_draws_nothing(monkeypatch, capsys):
    monkeypatch.setattr(loadsteps, "BAR_REPORT_S", 0.0)
    heard = []
    with reporting(lambda text, done, total: heard.append((text, done, total))):
        items = list(StepBar(range(3), desc="Converting and de-quantizing GGUF tensors..."))
        with StepBar(total=2, desc="Loading weights") as bar:
            bar.update(2)
    assert items == [0, 1, 2]
    assert heard[0] == ("Converting and de-quantizing GGUF tensors", 0, 3)
    assert heard[3] == ("Converting and de-quantizing GGUF tensors", 3, 3)
    assert heard[-1] == ("Loading weights", 2, 2)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_a_step_bar_throttles_but_always_tells_its_end():
    heard = []
    with reporting(lambda text, done, total: heard.append(done)):
        for _ in StepBar(range(500), desc="many"):
            pass
    assert heard[0] == 0 and heard[-1] == 500 and len(heard) < 50


def test_transformers_bars_become_steps_and_come_back_after(capsys):
    hf_logging = pytest.importorskip("transformers.utils.logging")
    hub = pytest.importorskip("huggingface_hub.utils")
    assert hf_logging.is_progress_bar_enabled()
    heard = []
    with reporting(lambda text, done, total: heard.append((text, done, total))):
        with library_bars_as_steps():
            assert not hf_logging.is_progress_bar_enabled() and hub.are_progress_bars_disabled()
            for _ in hf_logging.tqdm(range(4), desc="Loading weights"):
                pass
    assert ("Loading weights", 4, 4) in heard
    assert hf_logging.is_progress_bar_enabled() and not hub.are_progress_bars_disabled()
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err


def test_the_gguf_converter_bar_is_a_step_during_the_block_only():
    pytest.importorskip("gguf")
    module = pytest.importorskip(loadsteps.GGUF_MODULE)
    drawn = module.tqdm
    heard = []
    with reporting(lambda text, done, total: heard.append((text, done, total))):
        with library_bars_as_steps():
            assert module.tqdm is StepBar
            for _ in module.tqdm(range(2), desc="Converting and de-quantizing GGUF tensors..."):
                pass
    assert module.tqdm is drawn
    assert heard[-1] == ("Converting and de-quantizing GGUF tensors", 2, 2)


def test_library_bars_shown_lets_them_draw():
    hf_logging = pytest.importorskip("transformers.utils.logging")
    with library_bars_shown(), library_bars_as_steps():
        assert hf_logging.is_progress_bar_enabled()
        buf = io.StringIO()
        for _ in hf_logging.tqdm(range(2), desc="Loading weights", file=buf):
            pass
    assert "Loading weights" in buf.getvalue()


def test_the_runner_hands_steps_only_to_callbacks_that_take_them():
    from llem.progress import reporters

    old, new = [], []
    report, tell = reporters(lambda stage, done, total: old.append((stage, done, total)))
    report("load", 0, 1)
    tell("load", 0, 1, "reading the weights")
    assert old == [("load", 0, 1)]

    def takes(stage, done, total, step=None):
        new.append((stage, done, total, step))

    report, tell = reporters(takes)
    tell("load", 0, 1, "Loading weights", 3, 9)
    tell("load", 0, 1, "setting up generation")
    assert new == [("load", 0, 1, "Loading weights 3/9"), ("load", 0, 1, "setting up generation")]
    assert sys.modules["llem.progress"].takes_step(takes)
