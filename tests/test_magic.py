"""The magics on a real IPython InteractiveShell: load_ext, options, %config, errors, displays."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import subprocess
import sys
import textwrap
from html import escape

import pytest

pytest.importorskip("IPython")
from IPython.core.error import UsageError  # noqa: E402
from IPython.testing import globalipapp  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402

from llem.config import ExperimentConfig  # noqa: E402
from llem.magic import LlemMagics, parse_cell  # noqa: E402

TINY = "-m tiny-random-llama -n 4 -r 1 --meter estimate"


@pytest.fixture(scope="module")
def shell():
    ip = globalipapp.get_ipython()  # read at call time: after the first start, the shell's own
    ip.run_line_magic("load_ext", "llem")
    return ip


@pytest.fixture
def ip(shell):
    """The shell with LlemMagics' settings back at their defaults after each test."""
    yield shell
    m = magics(shell)
    for name in ("default_model", "default_backend", "default_meter"):
        setattr(m, name, None)
    m.defaults = {}
    m.live = "auto"
    m.show_text = 2
    m.save = False
    m.last = None
    shell.user_ns.pop("_llem_last", None)


def magics(ip) -> LlemMagics:
    found = [c for c in ip.configurables if isinstance(c, LlemMagics)]
    assert len(found) == 1
    return found[0]


def show(ip, line: str) -> ExperimentConfig:
    cfg = ip.run_line_magic("llem", f"config show {line}")
    assert isinstance(cfg, ExperimentConfig)
    return cfg


# ------------------------------------------------------------------------------ loading
def test_load_ext_registers_the_magics_and_the_configurable(ip):
    assert "llem" in ip.magics_manager.magics["line"]
    assert "llem" in ip.magics_manager.magics["cell"]
    assert isinstance(magics(ip), LlemMagics)


def test_reload_keeps_one_configurable(ip):
    ip.run_line_magic("reload_ext", "llem")
    ip.run_line_magic("reload_ext", "llem")
    assert isinstance(magics(ip), LlemMagics)


def test_load_ext_is_cheap_in_a_fresh_process():
    code = textwrap.dedent("""
        import json, sys, time
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        t0 = time.perf_counter()
        shell.run_line_magic("load_ext", "llem")
        dt = time.perf_counter() - t0
        heavy = [m for m in ("torch", "transformers", "altair", "matplotlib", "ipywidgets", "pandas")
                 if m in sys.modules]
        print(json.dumps({"dt": dt, "heavy": heavy}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["heavy"] == []
    assert data["dt"] < 1.0  # the benchmark holds the 0.3 s target; this only catches a regression


# ------------------------------------------------------------------------------ %config
def test_config_sets_traits(ip):
    ip.run_line_magic("config", 'LlemMagics.default_model = "tiny-random-llama"')
    ip.run_line_magic("config", 'LlemMagics.default_backend = "pytorch"')
    ip.run_line_magic("config", 'LlemMagics.defaults = {"decoder.max_new_tokens": 16, "repeats": 2}')
    m = magics(ip)
    assert m.default_model == "tiny-random-llama" and m.default_backend == "pytorch"
    cfg = show(ip, "")
    assert cfg.model == "tiny-random-llama"
    assert cfg.decoder.max_new_tokens == 16 and cfg.repeats == 2


def test_config_shows_help(ip):
    with capture_output() as c:
        ip.run_line_magic("config", "LlemMagics")
    for name in ("default_model", "default_backend", "defaults", "live", "show_text"):
        assert name in c.stdout
    with capture_output() as c:
        ip.run_line_magic("config", "")
    assert "LlemMagics" in c.stdout


def test_config_errors_are_logged_and_change_nothing(ip, caplog):
    with caplog.at_level(logging.ERROR):
        ip.run_line_magic("config", 'LlemMagics.default_backend = "foo"')
    assert "default_backend" in caplog.text and "foo" in caplog.text
    assert magics(ip).default_backend is None
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        ip.run_line_magic("config", 'LlemMagics.defaults = {"decoder.temprature": 0.5}')
    assert "Did you mean" in caplog.text and "'decoder.temperature'" in caplog.text
    assert magics(ip).defaults == {}


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize(("line", "path", "value"), [
    ("--model tiny-random-llama", "experiment.model", "tiny-random-llama"),
    ("-m tiny-random-llama", "experiment.model", "tiny-random-llama"),
    ("--backend vllm", "experiment.backend", "vllm"),
    ("-n 7", "decoder.max_new_tokens", 7),
    ("--max-new-tokens 9", "decoder.max_new_tokens", 9),
    ("--batch-size 4", "pytorch.batch_size", 4),
    ("-r 5", "experiment.repeats", 5),
    ("--repeats 2", "experiment.repeats", 2),
    ("--dtype float16", "pytorch.dtype", "float16"),
    ("--backend vllm --dtype float16", "vllm.dtype", "float16"),
    ("--meter estimate", "experiment.meter", "estimate"),
    ("--preset creative", "decoder.preset", "creative"),
    ("--profile publication", "experiment.profile", "publication"),
    ("--prompts code", "experiment.prompts", "code"),
    ("--num-prompts 3", "experiment.num_prompts", 3),
    ("--target H100", "experiment.target_gpu", "H100"),
    ("--set decoder.temperature=0.7", "decoder.temperature", 0.7),
    ("--set pytorch.use_cache=false", "pytorch.use_cache", False),
    ("--set 'experiment.passthrough={generate: {foo: 1}}'", "experiment.passthrough", {"generate": {"foo": 1}}),
    ("-s decoder.top_k=5 decoder.top_p=0.9", "decoder.top_p", 0.9),
    ("--set repeats=4", "experiment.repeats", 4),
    ("--set decoder.max_tokens=11", "decoder.max_new_tokens", 11),  # an alias, noted
])
def test_each_option_sets_its_field(ip, line, path, value):
    cfg = show(ip, line)
    assert cfg.get(path) == value


def test_set_unset_and_notes_for_old_names(ip):
    cfg = show(ip, "--set decoder.seed=3 --set decoder.temperature=unset")
    assert cfg.decoder.seed == 3 and cfg.decoder.temperature is None
    cfg = show(ip, "--set decoder.max_tokens=11")
    assert any("max_tokens" in n for n in cfg.notes)


def test_layers_defaults_file_cell_options_set(ip, tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("model: tiny-random-llama\nrepeats: 4\ndecoder:\n  temperature: 0.2\n  top_k: 10\n")
    magics(ip).defaults = {"decoder.top_p": 0.5, "experiment.repeats": 9, "vllm.max_num_seqs": 3}
    args = _args(f"--config {f} -r 2 --set decoder.top_k=20")
    cfg = magics(ip).build_config(args, {"decoder.temperature": 0.4}, ["p1", "p2"])
    assert cfg.decoder.top_p == 0.5  # default
    assert cfg.repeats == 2  # option over file over default
    assert cfg.decoder.temperature == 0.4  # cell over file
    assert cfg.decoder.top_k == 20  # --set over file
    assert cfg.prompts == ["p1", "p2"]
    assert cfg.backend == "pytorch"  # the vllm default did not apply to a pytorch run


def _args(line: str):
    from llem.magic import _cell_parser

    return _cell_parser().parse_argstring(line)


def test_config_from_a_variable(ip):
    ip.user_ns["base_cfg"] = ExperimentConfig(model="tiny-random-llama", repeats=7)
    ip.user_ns["base_dict"] = {"model": "tiny-random-llama", "decoder": {"top_k": 3}}
    assert show(ip, "--config base_cfg").repeats == 7
    assert show(ip, "base_dict").decoder.top_k == 3
    ip.user_ns["not_a_cfg"] = 42
    with pytest.raises(UsageError, match="holds a int"):
        show(ip, "-c not_a_cfg")


def test_parse_cell():
    assert parse_cell("") == ({}, None)
    assert parse_cell("Hello\n\n# a comment\nWhat is 2 + 2?\n") == ({}, ["Hello", "What is 2 + 2?"])
    # a prompt with a colon is a prompt, not YAML
    assert parse_cell("Translate: hello") == ({}, ["Translate: hello"])
    keys, prompts = parse_cell("prompts:\n  - one\n  - two\ndecoder:\n  temperature: 0.3\nrepeats: 2\n")
    assert prompts is None
    assert keys == {"experiment.prompts": ["one", "two"], "decoder.temperature": 0.3, "experiment.repeats": 2}
    keys, _ = parse_cell("pytorch.batch_size: 2\nprompts: code")
    assert keys == {"pytorch.batch_size": 2, "experiment.prompts": "code"}


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(("line", "cell", "expected"), [
    ("--repeats lots", "hi", "invalid int value"),
    ("--no-such-option", "hi", "unrecognized arguments"),
    ("-b foo", "hi", "one of 'pytorch', 'vllm', 'tensorrt'"),
    ("--set decoder.temperature=5", "hi", "Fix:"),
    ("--set decoder.temprature=0.5", "hi", "'decoder.temperature'"),
    ("--set nonsense", "hi", "SECTION.FIELD=VALUE"),
    ("--set 'decoder.top_k=3", "hi", "check the quotes"),
    ("-b vllm --batch-size 4", "hi", "use pytorch.batch_size"),
    ("--set pytorch.load_in_4bit=true pytorch.load_in_8bit=true", "hi", "4-bit or in 8-bit"),
    ("--target T4 --dtype bfloat16", "hi", "float16"),
    ("-c /no/such/file.yaml", "hi", "not found"),
    ("-m tiny-random-llama -b vllm", "hi", "pip install 'llem[vllm]'"),
    ("-m tiny-random-llama -b tensorrt", "hi", "pip install 'llem[tensorrt]'"),
    ("-m ./no-such-model -n 2 -r 1", "hi", "was not found"),
])
def test_errors_are_short_usage_errors(ip, line, cell, expected):
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("llem", line, cell)
    assert expected in str(info.value)
    assert "Traceback" not in str(info.value)


def test_an_error_in_a_cell_shows_no_traceback(ip):
    with capture_output() as c:
        ip.run_cell("%%llem -b foo\nhi\n")
    assert "UsageError" in c.stderr and "one of 'pytorch'" in c.stderr
    assert "Traceback" not in c.stderr and "Traceback" not in c.stdout


@pytest.mark.parametrize(("line", "expected"), [
    ("frobnicate", "Unknown %llem command"),
    ("matirx", "Did you mean 'matrix'"),
    ("matrix --target Z9000", "unknown GPU"),
    ("matrix -b nope", "Unknown backend 'nope'"),
    ("config", "the following arguments are required"),
    ("config launch", "invalid choice"),
    ("last", "No llem result yet"),
])
def test_line_form_errors(ip, line, expected):
    with pytest.raises(UsageError, match=expected):
        ip.run_line_magic("llem", line)


# ------------------------------------------------------------------------------ runs and displays
def test_cell_run_stores_the_result_and_displays_text_and_timeline(ip):
    from llem.results import Result

    with capture_output() as c:
        r = ip.run_cell_magic("llem", f"{TINY} -o res", "Hello there\nWhat is 2 + 2?\n")
    assert isinstance(r, Result)
    assert ip.user_ns["res"] is r and ip.user_ns["_llem_last"] is r
    assert ip.run_line_magic("llem", "last") is r
    assert r.model == "tiny-random-llama" and len(r.runs) == 1
    assert [q.prompt for q in r.requests] == ["Hello there", "What is 2 + 2?"]
    assert r.config["decoder"]["max_new_tokens"] == 4
    report, timeline = c.outputs  # the text, then the timeline; the Result is the cell's value
    assert "> Hello there" in report.data["text/plain"]
    assert "<svg" not in report.data["text/html"]  # SVG in HTML is stripped from a saved notebook
    # the timeline is an image output of its own, so a saved notebook still draws it
    assert "power timeline" in timeline.data["text/plain"]
    svg = timeline.data["image/svg+xml"]
    assert "llem-power-plot" in svg and "prefill" in svg and "decode" in svg
    if importlib.util.find_spec("vl_convert"):  # a PNG beside it, for an untrusted notebook
        assert base64.b64decode(timeline.data["image/png"]).startswith(b"\x89PNG")
        assert timeline.metadata["image/png"]["width"] == 640
    # the cell's value: the Result's own rich display
    data, _ = ip.display_formatter.format(r)
    assert data["text/plain"].startswith("llem result: tiny-random-llama")
    assert "llem-result" in data["text/html"] and "ESTIMATED" in data["text/plain"]


def test_run_cell_value_is_the_result(ip):
    with capture_output() as c:
        ip.run_cell(f"%%llem {TINY}\nHello\n")
    assert "llem result: tiny-random-llama" in c.stdout  # the displayhook's Out[...]
    assert ip.user_ns["_llem_last"].requests[0].prompt == "Hello"


def test_yaml_cell(ip):
    cell = "prompts:\n  - one\n  - two\n  - three\ndecoder:\n  max_new_tokens: 3\npytorch:\n  batch_size: 3\n"
    with capture_output():
        r = ip.run_cell_magic("llem", "-m tiny-random-llama -r 1 --meter estimate -q", cell)
    assert r is None
    last = ip.user_ns["_llem_last"]
    assert len(last.requests) == 3 and last.config["pytorch"]["batch_size"] == 3
    assert last.runs[0].num_batches == 1


def test_quiet_shows_nothing(ip):
    with capture_output() as c:
        r = ip.run_cell_magic("llem", f"{TINY} -q -o quiet_res", "Hi")
    assert r is None and c.outputs == [] and c.stdout == ""
    assert ip.user_ns["quiet_res"].model == "tiny-random-llama"


def test_show_text_and_timeline_settings(ip):
    m = magics(ip)
    m.show_text = 0
    m.timeline = False
    try:
        with capture_output() as c:
            ip.run_cell_magic("llem", TINY, "Hi")
        assert c.outputs == []
    finally:
        m.timeline = True


def test_live_widget_follows_the_run(ip, monkeypatch):
    pytest.importorskip("ipywidgets")

    made = []
    real = LlemMagics._live_view

    def spy(self, cfg):
        view = real(self, cfg)
        made.append(view)
        return view

    monkeypatch.setattr(LlemMagics, "_live_view", spy)
    magics(ip).live = "widget"
    prompts = "\n".join(f"Tell me about the number {i}." for i in range(4))
    with capture_output() as c:
        ip.run_cell_magic("llem", "-m tiny-random-llama -n 16 -r 2 --meter estimate "
                          "--set experiment.sampling_interval_s=0.01", prompts)
    views = [o for o in c.outputs if "application/vnd.jupyter.widget-view+json" in o.data]
    assert len(views) == 2  # the view, then an update of the same display once done
    assert views[0].data["text/plain"].startswith("tiny-random-llama on pytorch: starting")
    # a saved notebook keeps the finished view's text, not a stale "starting"
    assert views[1].update and views[1].transient == views[0].transient  # the same display id
    assert views[1].data["text/plain"].startswith("tiny-random-llama on pytorch: done in")
    (view,) = made
    assert view.state.startswith("done") and view.bar.bar_style == "success"
    stages = [name for _, name in view.plot.marks]
    assert stages[:2] == ["load", "warmup"] and "run 2/2" in stages
    assert view.plot.series, "no live power sample reached the plot"


def test_interrupted_run_keeps_the_partial_result(ip, monkeypatch):
    import llem
    from llem.errors import RunInterrupted

    partial = object()

    def interrupted(*a, **k):
        raise RunInterrupted("Run interrupted during run 1/3.", partial=partial)

    monkeypatch.setattr(llem, "run", interrupted)
    with pytest.raises(UsageError, match="partial result is in `%llem last` and 'part'"):
        ip.run_cell_magic("llem", f"{TINY} -o part", "Hi")
    assert ip.user_ns["part"] is partial and ip.run_line_magic("llem", "last") is partial


def test_library_progress_bars_hidden_during_a_run_only(ip, monkeypatch):
    hf_logging = pytest.importorskip("transformers.utils.logging")
    import llem

    seen = []
    real = llem.run

    def spy(cfg, *a, **k):
        seen.append(hf_logging.is_progress_bar_enabled())
        return real(cfg, *a, **k)

    monkeypatch.setattr(llem, "run", spy)
    assert hf_logging.is_progress_bar_enabled()
    with capture_output():
        ip.run_cell_magic("llem", f"{TINY} -q", "Hi")
    assert seen == [False] and hf_logging.is_progress_bar_enabled()
    magics(ip).quiet_libraries = False
    try:
        with capture_output():
            ip.run_cell_magic("llem", f"{TINY} -q", "Hi")
    finally:
        magics(ip).quiet_libraries = True
    assert seen == [False, True]


def test_save_setting_writes_the_result(ip, tmp_path):
    magics(ip).save = True
    with capture_output():
        r = ip.run_cell_magic("llem", f"{TINY} --set experiment.output_dir={tmp_path}", "Hi")
    (saved,) = tmp_path.glob("*.json")
    assert json.loads(saved.read_text())["id"] == r.id


# ------------------------------------------------------------------------------ line forms
def test_help(ip):
    with capture_output() as c:
        ip.run_line_magic("llem", "")
    assert "%llem matrix" in c.stdout and "%llem doctor" in c.stdout


def test_matrix(ip):
    pytest.importorskip("ipywidgets")
    from llem.widgets import CapabilityMatrix

    m = ip.run_line_magic("llem", "matrix --target A100 -b pytorch -b vllm")
    assert isinstance(m, CapabilityMatrix)
    assert m.backends == ("pytorch", "vllm") and m.cc == 8.0
    data, _ = ip.display_formatter.format(m)
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"].startswith("Capability matrix (tier ampere")


def test_matrix_markdown(ip):
    t = ip.run_line_magic("llem", "matrix --markdown --target T4")
    data, _ = ip.display_formatter.format(t)
    assert data["text/markdown"].startswith("**Capability matrix (tier volta")
    assert "<table class=\"llem-matrix\"" in data["text/html"]
    assert escape("not on the target 'T4'") in data["text/html"]
    assert "not on this GPU" not in data["text/html"]


def test_config_show_is_yaml(ip):
    cfg = show(ip, "-m tiny-random-llama --preset deterministic")
    data, _ = ip.display_formatter.format(cfg)
    assert data["text/plain"].startswith("ExperimentConfig\nmodel: tiny-random-llama")
    assert "preset: deterministic" in data["text/plain"]


def test_config_validate(ip):
    ok = ip.run_line_magic("llem", "config validate -m tiny-random-llama --target H100 "
                           "--set pytorch.attn_implementation=flash_attention_3")
    data, _ = ip.display_formatter.format(ok)
    assert data["text/plain"].startswith("valid: tiny-random-llama on pytorch can run on target 'H100'")
    assert "llem-valid" in data["text/html"]
    with pytest.raises(UsageError, match="cannot run on this machine|Fix"):
        ip.run_line_magic("llem", "config validate --set pytorch.attn_implementation=flash_attention_2")


def test_config_panel(ip):
    pytest.importorskip("ipywidgets")
    from llem.widgets import ConfigPanel

    panel = ip.run_line_magic("llem", "config panel -m tiny-random-llama --target T4")
    assert isinstance(panel, ConfigPanel) and panel.config.model == "tiny-random-llama"
    assert ip.run_line_magic("llem", "panel --target A100").config.target_gpu == "A100"


def test_doctor(ip):
    report = ip.run_line_magic("llem", "doctor")
    data, _ = ip.display_formatter.format(report)
    assert "llem energy doctor" in data["text/plain"]
