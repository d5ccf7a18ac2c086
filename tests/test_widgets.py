"""Widgets in plain pytest: controls against the table, tier gating, two-way links, Run."""

from __future__ import annotations

import importlib.util
import threading

import pytest

pytest.importorskip("ipywidgets")
import ipywidgets as w  # noqa: E402

from llem import spec  # noqa: E402
from llem.config import ExperimentConfig  # noqa: E402
from llem.energy.measurement import Sample  # noqa: E402
from llem.spec.model import BACKENDS, Gate, Param  # noqa: E402
from llem.widgets import CapabilityMatrix, ConfigPanel, PowerPlot, RunView, control_kind, power_svg  # noqa: E402
from llem.widgets.controls import UNSET, RowControl, parse_text  # noqa: E402
from llem.widgets.panel import PANEL_SECTIONS  # noqa: E402

TARGETS = ("cpu", "T4", "A100", "H100")


def tiny_config(**kw):
    cfg = ExperimentConfig(model="tiny-random-llama", repeats=1, meter="estimate", **kw)
    cfg.decoder.max_new_tokens = 4
    return cfg


@pytest.fixture(scope="module")
def panels():
    """One panel per backend, gated for an H100 (every backend is possible there)."""
    return {b: ConfigPanel(ExperimentConfig(model="tiny-random-llama", backend=b), target="H100") for b in BACKENDS}


# ----------------------------------------------------------------------------- controls match the table
WIDGET_FOR_KIND = {
    ("dropdown", None): w.Dropdown,
    ("checkbox", None): w.Checkbox,
    ("slider", "int"): w.IntSlider,
    ("slider", "float"): w.FloatSlider,
    ("text", None): w.Text,
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_control_per_table_row_of_the_backend(panels, backend):
    panel = panels[backend]
    sections = [backend if s == "backend" else s for s in PANEL_SECTIONS]
    expected = {p.path for s in sections for p in spec.params(s, backend)}
    assert set(panel.controls) == expected
    others = [b for b in BACKENDS if b != backend]
    assert not [p for p in panel.controls if p.split(".")[0] in others]
    assert list(panel.tabs.titles) == [s for s in sections if spec.params(s, backend)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_control_types_bounds_options_and_tooltips_follow_the_rows(panels, backend):
    for path, rc in panels[backend].controls.items():
        row = spec.param(path)
        kind = control_kind(row)
        cls = WIDGET_FOR_KIND[(kind, row.type if kind == "slider" else None)]
        assert type(rc.widget) is cls, path
        assert rc.widget.description.startswith(row.name)
        assert row.help in rc.widget.tooltip, path
        if row.unit:
            assert f"Unit: {row.unit}" in rc.widget.tooltip, path
        if kind == "dropdown":
            values = [v for _, v in rc.widget.options]
            assert values == ([UNSET] if row.allow_none else []) + list(row.choices), path
        if kind == "slider":
            assert rc.widget.max == row.max, path
            assert rc.widget.min == row.min or (row.min_exclusive and rc.widget.min > row.min), path
            assert (rc.reset is not None) == row.allow_none, path


def test_control_kind_rule():
    assert control_kind(spec.param("decoder.temperature")) == "slider"
    assert control_kind(spec.param("pytorch.batch_size")) == "slider"
    assert control_kind(spec.param("pytorch.dtype")) == "dropdown"
    assert control_kind(spec.param("pytorch.torch_compile")) == "checkbox"
    assert control_kind(spec.param("experiment.model")) == "text"
    assert control_kind(spec.param("decoder.top_k")) == "text"  # bounded on one side only
    # a slider that cannot be aimed becomes text: 1..1048576 tokens, 0.001..10 s
    assert control_kind(spec.param("decoder.max_new_tokens")) == "text"
    assert control_kind(spec.param("experiment.sampling_interval_s")) == "text"


def test_parse_text():
    assert parse_text(spec.param("decoder.top_k"), " 40 ") == 40
    assert parse_text(spec.param("decoder.top_k"), "") is None
    assert parse_text(spec.param("experiment.passthrough"), "{load: {x: 1}}") == {"load": {"x": 1}}
    assert parse_text(spec.param("experiment.prompts"), "[a, b]") == ["a", "b"]
    with pytest.raises(ValueError, match="decoder.top_k"):
        parse_text(spec.param("decoder.top_k"), "many")


# ----------------------------------------------------------------------------- tier gating
def _label(rc, value):
    return next(label for label, v in rc.widget.options if v == value)


@pytest.mark.parametrize("target", TARGETS)
def test_gated_options_per_tier(target):
    panel = ConfigPanel(ExperimentConfig(model="tiny-random-llama"), target=target)
    cc = spec.parse_target(target)
    attn = panel.controls["pytorch.attn_implementation"]
    dtype = panel.controls["pytorch.dtype"]
    backend = panel.controls["experiment.backend"]
    fa2 = cc is not None and cc >= 8.0
    fa3 = cc is not None and cc >= 9.0
    bf16 = cc is None or cc >= 8.0  # CPUs run bfloat16 in software; CUDA needs Ampere
    assert (_label(attn, "flash_attention_2") == "flash_attention_2") is fa2
    assert (_label(attn, "flash_attention_3") == "flash_attention_3") is fa3
    assert (_label(dtype, "bfloat16") == "bfloat16") is bf16
    assert _label(attn, "sdpa") == "sdpa" and _label(attn, "eager") == "eager"
    if not fa3:
        assert _label(attn, "flash_attention_3") == "flash_attention_3 (needs 9.0+)"
        assert "flash_attention_3" in attn.gated
        assert "Hopper" in attn.widget.tooltip  # the reason is in the tooltip
    if not fa2:
        assert _label(attn, "flash_attention_2") == "flash_attention_2 (needs 8.0+)"
    if not bf16:
        assert _label(dtype, "bfloat16") == "bfloat16 (needs 8.0+)"
        assert "float16" in dtype.gated["bfloat16"]  # the fix: use float16
    # a backend without a CPU build is gated on the cpu tier only
    assert (_label(backend, "tensorrt") == "tensorrt (needs an NVIDIA GPU)") is (cc is None)
    assert panel.tier_text().startswith(f"tier {spec.tier_for(cc).name}")


@pytest.mark.parametrize("target", TARGETS)
def test_choosing_a_gated_option_is_refused_with_the_reason(target):
    cfg = ExperimentConfig(model="tiny-random-llama")
    panel = ConfigPanel(cfg, target=target)
    attn = panel.controls["pytorch.attn_implementation"]
    attn.widget.value = "flash_attention_3"
    if target == "H100":
        assert cfg.pytorch.attn_implementation == "flash_attention_3"
        assert panel.error.value == ""
    else:
        assert cfg.pytorch.attn_implementation is None
        assert attn.widget.value is UNSET  # the control went back
        assert "refused" in panel.last_error and "9.0+" in panel.last_error
        assert "9.0+" in panel.error.value


def test_gated_option_refused_against_this_machine_without_a_target(monkeypatch):
    from llem.widgets import controls

    monkeypatch.setattr(controls, "machine_cc", lambda refresh=False: None)
    monkeypatch.setattr("llem.widgets.panel.machine_cc", lambda refresh=False: None)
    cfg = ExperimentConfig(model="tiny-random-llama")  # no target: the machine (cpu) decides
    panel = ConfigPanel(cfg)
    assert "this machine" in panel.tier_text()
    panel.controls["pytorch.attn_implementation"].widget.value = "flash_attention_2"
    assert cfg.pytorch.attn_implementation is None
    assert "NVIDIA GPU" in panel.last_error
    panel.controls["experiment.backend"].widget.value = "tensorrt"
    assert cfg.backend == "pytorch" and "target_gpu" in panel.last_error


@pytest.mark.parametrize(("target", "disabled"), [("cpu", True), ("T4", True), ("A100", True), ("H100", False)])
def test_a_gated_row_is_disabled_with_the_reason_as_tooltip(target, disabled):
    row = Param("hopper_only", "pytorch", "bool", "A made-up Hopper feature.", backends=("pytorch",),
                gate=Gate(min_cc=9.0, reason="it uses Hopper instructions", alternative="leave it off"))
    edits = []
    rc = RowControl(row, "pytorch", lambda c, v: edits.append(v))
    rc.gate(spec.parse_target(target))
    assert rc.widget.disabled is disabled
    if disabled:
        assert rc.widget.tooltip.startswith("Disabled: ")
        assert "9.0+" in rc.widget.tooltip and "leave it off" in rc.widget.tooltip
    else:
        assert "Disabled" not in rc.widget.tooltip


def test_target_change_in_the_config_regates_the_form():
    cfg = ExperimentConfig(model="tiny-random-llama", target_gpu="T4")
    panel = ConfigPanel(cfg)
    attn = panel.controls["pytorch.attn_implementation"]
    assert "flash_attention_3" in attn.gated
    cfg.target_gpu = "H100"
    assert attn.gated == {}
    assert _label(attn, "flash_attention_3") == "flash_attention_3"
    assert "hopper" in panel.title.value


# ----------------------------------------------------------------------------- two-way linking
def test_config_to_controls():
    cfg = ExperimentConfig(model="tiny-random-llama")
    panel = ConfigPanel(cfg, target="H100")
    cfg.decoder.temperature = 0.3
    assert panel.controls["decoder.temperature"].widget.value == pytest.approx(0.3)
    cfg.update({"pytorch.dtype": "float16", "pytorch.batch_size": 8, "decoder.top_k": 20})
    assert panel.controls["pytorch.dtype"].widget.value == "float16"
    assert panel.controls["pytorch.batch_size"].widget.value == 8
    assert panel.controls["decoder.top_k"].widget.value == "20"
    cfg.pytorch.torch_compile = True
    assert panel.controls["pytorch.torch_compile"].widget.value is True
    cfg.decoder.temperature = None
    assert panel.controls["decoder.temperature"].widget.description.endswith("(unset)")
    cfg.model = "smollm2-135m"
    assert panel.controls["experiment.model"].widget.value == "smollm2-135m"


def test_controls_to_config_through_the_front_end_protocol():
    cfg = ExperimentConfig(model="tiny-random-llama")
    panel = ConfigPanel(cfg, target="H100")
    c = panel.controls
    # what the browser sends: value for sliders, checkboxes and text, index for dropdowns
    c["decoder.temperature"].widget.set_state({"value": 0.7})
    assert cfg.decoder.temperature == pytest.approx(0.7)
    c["pytorch.batch_size"].widget.set_state({"value": 4})
    assert cfg.pytorch.batch_size == 4
    dd = c["pytorch.dtype"].widget
    dd.set_state({"index": [v for _, v in dd.options].index("float16")})
    assert cfg.pytorch.dtype == "float16"
    dd.set_state({"index": 0})  # (unset)
    assert cfg.pytorch.dtype is None
    c["decoder.top_k"].widget.set_state({"value": "40"})
    assert cfg.decoder.top_k == 40
    c["decoder.top_k"].widget.set_state({"value": ""})
    assert cfg.decoder.top_k is None
    c["experiment.passthrough"].widget.set_state({"value": '{"generate": {"foo": 1}}'})
    assert cfg.passthrough == {"generate": {"foo": 1}}
    c["pytorch.torch_compile"].widget.set_state({"value": True})
    assert cfg.pytorch.torch_compile is True
    c["pytorch.torch_compile"].widget.set_state({"value": False})
    assert cfg.pytorch.torch_compile is None  # back to unset: the library default is off
    c["pytorch.use_cache"].widget.set_state({"value": False})
    assert cfg.pytorch.use_cache is False  # the library default is on: off is a choice
    c["decoder.temperature"].reset.click()
    assert cfg.decoder.temperature is None
    c["decoder.preset"].widget.value = "creative"
    assert cfg.decoder.preset == "creative"
    assert panel.error.value == ""


def test_refused_edits_show_the_error_and_revert_never_raise():
    cfg = ExperimentConfig(model="tiny-random-llama")
    panel = ConfigPanel(cfg, target="H100")
    c = panel.controls
    c["pytorch.load_in_4bit"].widget.value = True
    assert cfg.pytorch.load_in_4bit is True
    c["pytorch.load_in_8bit"].widget.set_state({"value": True})  # cross-field rule
    assert cfg.pytorch.load_in_8bit is None
    assert c["pytorch.load_in_8bit"].widget.value is False
    assert "4-bit or in 8-bit" in panel.last_error and "Fix" in panel.last_error
    assert "4-bit or in 8-bit" in panel.error.value
    # text that does not parse
    c["decoder.top_k"].widget.set_state({"value": "lots"})
    assert cfg.decoder.top_k is None and c["decoder.top_k"].widget.value == ""
    assert "decoder.top_k" in panel.last_error
    # out of bounds typed into a text box
    c["decoder.max_new_tokens"].widget.set_state({"value": "0"})
    assert cfg.decoder.max_new_tokens == 128 and c["decoder.max_new_tokens"].widget.value == "128"
    assert "max_new_tokens" in panel.last_error
    # an unknown target GPU
    c["experiment.target_gpu"].widget.set_state({"value": "Z9000"})
    assert cfg.target_gpu == "H100" and "unknown GPU" in panel.last_error
    # the next good edit clears the message
    c["decoder.top_k"].widget.set_state({"value": "5"})
    assert panel.error.value == "" and cfg.decoder.top_k == 5


def test_backend_switch_rebuilds_the_backend_section():
    cfg = ExperimentConfig(model="tiny-random-llama")
    panel = ConfigPanel(cfg, target="H100")
    # a decoder field the table gives pytorch but not vllm, and one vllm has but pytorch not
    only_pt = next(p for p in spec.params("decoder", "pytorch") if "vllm" not in p.backends)
    only_vl = next(p for p in spec.params("decoder", "vllm") if "pytorch" not in p.backends)
    assert only_vl.path not in panel.controls
    cfg.update({only_pt.path: 1 if only_pt.type != "bool" else True})
    dd = panel.controls["experiment.backend"].widget
    dd.set_state({"index": [v for _, v in dd.options].index("vllm")})
    assert cfg.backend == "vllm"
    assert "vllm.gpu_memory_utilization" in panel.controls
    assert not any(p.startswith("pytorch.") for p in panel.controls)
    assert only_pt.path not in panel.controls
    assert only_vl.path in panel.controls
    assert "vllm" in panel.tabs.titles
    assert only_pt.name in panel.notes.value  # the config noted the reset
    # and back, from code
    cfg.backend = "pytorch"
    assert "pytorch.batch_size" in panel.controls and "vllm.max_num_seqs" not in panel.controls


def test_closed_panel_stops_following_the_config():
    cfg = ExperimentConfig(model="tiny-random-llama")
    panel = ConfigPanel(cfg, target="H100")
    slider = panel.controls["decoder.temperature"].widget
    panel.close()
    cfg.decoder.temperature = 0.9  # no error from a closed panel, and no update
    assert panel.controls == {} and slider.value != pytest.approx(0.9)


def test_a_refused_update_in_code_leaves_the_form_on_the_config_values():
    cfg = ExperimentConfig(model="tiny-random-llama")
    panel = ConfigPanel(cfg, target="H100")
    with pytest.raises(ValueError):
        cfg.update({"pytorch.load_in_4bit": True, "pytorch.load_in_8bit": True})
    assert cfg.pytorch.load_in_4bit is None
    assert panel.controls["pytorch.load_in_4bit"].widget.value is False


def test_panel_text_fallback():
    cfg = ExperimentConfig(model="tiny-random-llama")
    panel = ConfigPanel(cfg, target="A100")
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    text = bundle["text/plain"]
    assert text.startswith("ConfigPanel (tier ampere") and "model: tiny-random-llama" in text


# ----------------------------------------------------------------------------- run button
def test_run_button_produces_a_result():
    from llem.results import Result

    cfg = tiny_config()
    panel = ConfigPanel(cfg, prompts=["Hello", "What is 2 + 2?"])
    panel.run_button.click()
    assert isinstance(panel.result, Result)
    assert panel.result.model == "tiny-random-llama" and len(panel.result.runs) == 1
    assert panel.results == [panel.result]
    (out,) = panel.output.outputs
    assert out["output_type"] == "display_data"
    assert "llem result" in out["data"]["text/plain"]
    assert "llem-result" in out["data"]["text/html"]
    (view,) = panel.live.children
    assert isinstance(view, RunView) and view.state.startswith("done")
    assert view.bar.bar_style == "success"
    assert not panel.run_button.disabled


def test_run_button_failure_is_shown_not_raised():
    cfg = tiny_config()
    cfg.model = "./no-such-model"
    panel = ConfigPanel(cfg, prompts=["Hello"])
    panel.run_button.click()
    assert panel.result is None
    (out,) = panel.output.outputs
    assert "no-such-model" in out["data"]["text/plain"]
    (view,) = panel.live.children
    assert view.state.startswith("failed") and view.bar.bar_style == "danger"
    assert not panel.run_button.disabled


# ----------------------------------------------------------------------------- capability matrix
def test_capability_matrix_rows_filter_tier_and_text():
    m = CapabilityMatrix(target="H100")
    html_text = m.table.value
    for row in spec.capability_matrix_rows():
        assert row["display"] in html_text
    assert html_text.count("<tr") == len(spec.CAPABILITIES) + 1
    assert "opacity" not in html_text  # an H100 runs everything
    assert "title='" in html_text  # notes on hover
    m.target.value = "cpu"
    assert "opacity" in m.table.value and "not on the target" in m.table.value
    assert "not on this GPU" not in m.table.value
    bf16 = m.table.value[m.table.value.index(">bfloat16<"):].split("</tr>")[0]
    assert ">yes" in bf16 and ">not here" in bf16  # pytorch runs it on a CPU; vllm/tensorrt not here
    assert "cpu" in m.tier_label.value
    m.filters["vllm"].value = False
    assert m.backends == ("pytorch", "tensorrt")
    assert ">vllm<" not in m.table.value and ">tensorrt<" in m.table.value
    text = m._repr_mimebundle_()["text/plain"]
    assert text.startswith("Capability matrix (tier cpu") and "| Capability | pytorch | tensorrt |" in text
    for b in BACKENDS:
        m.filters[b].value = False
    assert "Choose at least one backend" in m.table.value


def test_capability_matrix_unknown_target():
    with pytest.raises(ValueError, match="unknown GPU"):
        CapabilityMatrix(target="Z9000")


# ----------------------------------------------------------------------------- live power plot
def test_power_plot_draws_samples_and_phases():
    plot = PowerPlot(title="live power", redraw_s=0.0)
    plot.mark("warmup", 0.0)
    plot.add_sample(Sample(t_s=0.0, device="cpu", power_w=5.0, energy_j=0.0))
    plot.add_sample({"device": "ram", "power_w": 1.5})
    plot.add_sample((0.1, "cpu", 7.0, 1.0, None))
    plot.mark("run 1/1")
    plot.add("cpu", None)  # an unknown reading is kept out of the line
    plot.finish()
    svg = plot.value
    assert svg.startswith('<svg class="llem-power-plot"')
    assert svg.count('class="llem-power-line"') == 2
    assert svg.count('class="llem-phase"') == 2
    assert "warmup" in svg and "run 1/1" in svg
    text = plot._repr_mimebundle_()["text/plain"]
    assert "4 samples" in text and "cpu" in text and "warmup > run 1/1" in text


def test_power_plot_accepts_samples_from_another_thread():
    plot = PowerPlot(redraw_s=0.0)

    def feed(dev):
        for i in range(200):
            plot.add(dev, float(i))

    threads = [threading.Thread(target=feed, args=(d,)) for d in ("gpu:0", "cpu")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {d: len(s) for d, s in plot.series.items()} == {"gpu:0": 200, "cpu": 200}


def test_power_plot_thins_long_runs():
    plot = PowerPlot(redraw_s=60.0, max_points=100)
    for i in range(1000):
        plot.add("cpu", 1.0, t_s=i)
    pts = plot.series["cpu"]
    assert len(pts) <= 100 and pts[0][0] == 0 and pts[-1][0] == 999


def test_power_plot_shows_a_measurement_with_phases():
    from llem.testing import replay_measurement

    m = replay_measurement("h100-decode")
    plot = PowerPlot()
    plot.show_measurement(m, title="replayed")
    assert "replayed" in plot.value and 'class="llem-phase"' in plot.value
    assert "prefill" in plot.value and "decode" in plot.value
    assert set(plot.series) == set(m.device_names)


def test_power_svg_thins_long_series():
    series = {"cpu": [(float(i), 1.0 + i % 7) for i in range(5000)]}
    svg = power_svg(series, max_points=100)
    points = svg.split('points="')[1].split('"')[0].split()
    assert len(points) == 100
    assert svg.count("<polyline") == 1


def test_power_svg_without_samples():
    svg = power_svg({})
    assert "waiting for power samples" in svg and svg.endswith("</svg>")
    assert "polyline" not in power_svg({"cpu": [(0.0, None)]})


def test_run_view_follows_progress_and_samples():
    view = RunView(title="t")
    view.progress("load", 0, 1)
    view.progress("warmup", 1, 1)
    view.progress("run 1/2", 1, 4)
    assert view.bar.max == 4 and view.bar.value == 1
    view.on_sample(Sample(0.0, "cpu", 3.0, 0.0))
    assert [name for _, name in view.plot.marks] == ["load", "warmup", "run 1/2"]
    view.done()
    assert view.bar.value == view.bar.max and view.bar.bar_style == "success"
    text = view._repr_mimebundle_()["text/plain"]
    assert text.startswith("t: done") and "1 samples" in text


# ------------------------------------------------------------------ static images, themes
def test_static_image_is_an_svg_output_with_a_png_for_untrusted_notebooks():
    import base64

    from llem.widgets import StaticImage

    svg = power_svg({"cpu": [(0.0, 1.0), (1.0, 2.0)]}, [("prefill", 0.0, 0.5)], css_vars=False)
    data, meta = StaticImage(svg, "power timeline")._repr_mimebundle_()
    assert data["image/svg+xml"] == svg and data["text/plain"] == "power timeline"
    assert "text/html" not in data  # SVG inside HTML is stripped from an untrusted notebook
    if importlib.util.find_spec("vl_convert"):
        png = base64.b64decode(data["image/png"])
        assert png.startswith(b"\x89PNG")
        assert meta["image/png"] == {"width": 640, "height": 220}


def test_power_svg_takes_the_theme_live_and_plain_colours_as_an_image():
    live = power_svg({"cpu": [(0.0, 1.0), (1.0, 2.0)]}, [("decode", 0.0, 1.0)], title="t")
    # inline in a page: JupyterLab's variables with light fallbacks; text in currentColor
    assert "var(--jp-ui-font-color1, #222222)" in live and "var(--jp-layout-color0, #ffffff)" in live
    assert 'fill="currentColor"' in live and 'class="llem-background"' in live
    still = power_svg({"cpu": [(0.0, 1.0), (1.0, 2.0)]}, [("decode", 0.0, 1.0)], title="t", css_vars=False)
    assert "var(" not in still  # an image or a PNG converter sees no page variables
    assert 'class="llem-background" width="640" height="220" fill="#ffffff"' in still


def test_png_of_a_static_timeline_has_a_light_background():
    pytest.importorskip("vl_convert")
    import io

    from llem.widgets import StaticImage

    png = StaticImage(power_svg({"cpu": [(0.0, 1.0), (1.0, 2.0)]}, css_vars=False)).png(scale=1)
    assert png is not None
    try:
        from PIL import Image
    except ImportError:
        pytest.skip("Pillow is not installed")
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.getpixel((2, 2)) == (255, 255, 255)  # the corner, outside the plot area


def test_altair_charts_render_as_static_images():
    alt = pytest.importorskip("altair")
    pytest.importorskip("vl_convert")
    from llem.widgets import use_static_charts

    before = alt.renderers.active
    try:
        assert use_static_charts() == "llem-static"
        chart = alt.Chart(alt.Data(values=[{"a": 1}, {"a": 2}])).mark_point().encode(x="a:Q")
        bundle = chart._repr_mimebundle_()
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        assert data["image/svg+xml"].lstrip().startswith("<svg") and "image/png" in data
    finally:
        alt.renderers.enable(before)


# ------------------------------------------------------------------ the panel's first hour
def test_an_unset_slider_stands_at_the_backends_default_or_shows_no_number():
    panel = ConfigPanel(ExperimentConfig(model="tiny-random-llama"), target="H100")
    lp = panel.controls["decoder.length_penalty"].widget
    assert lp.description == "length_penalty (unset)" and lp.value == 1.0 and lp.readout
    beams = panel.controls["decoder.num_beams"].widget
    assert beams.value == 1 and beams.readout
    # a row whose unset default the table does not know: no made-up number
    unknown = next(rc for rc in panel.controls.values()
                   if rc.kind == "slider" and rc.value is None
                   and rc._effective(None) is None)
    assert unknown.widget.readout is False and unknown.widget.description.endswith("(unset)")
    # once set, the number shows
    panel.config.update({unknown.row.path: unknown.widget.max})
    assert unknown.widget.readout is True and unknown.widget.description == unknown.row.name


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_label_fits_its_column(backend):
    from llem.widgets.controls import LABEL_CHAR_PX, UNSET_MARK

    panel = ConfigPanel(ExperimentConfig(model="tiny-random-llama", backend=backend), target="H100")
    for rc in panel.controls.values():
        width = int(rc.widget.style.description_width.removesuffix("px"))
        assert width >= (len(rc.row.name) + len(UNSET_MARK)) * LABEL_CHAR_PX, rc.row.path
        assert int(rc.widget.layout.width.removesuffix("px")) > width  # room for the value
    # one column per tab: the controls of a tab line up
    tab = [rc for p, rc in panel.controls.items() if p.startswith(f"{backend}.")]
    assert len({rc.widget.style.description_width for rc in tab}) == 1


def test_prompts_given_to_the_panel_are_shown():
    panel = ConfigPanel(ExperimentConfig(model="tiny-random-llama"), prompts=["Hello!", "Name three colours."])
    assert "Hello!" in panel.prompts_view.value and "Name three colours." in panel.prompts_view.value
    assert "prompts (2, given to the panel" in panel.text()
    assert panel.prompts_view in panel.children
    plain = ConfigPanel(ExperimentConfig(model="tiny-random-llama"))
    assert plain.prompts_text() == "prompts: the config's set 'qa-short'"
    plain.config.prompts = "synthetic"  # an edit in code shows too
    assert "synthetic" in plain.prompts_view.value


def test_a_backend_switch_says_what_was_kept_reset_and_left_unused():
    cfg = ExperimentConfig(model="tiny-random-llama")
    panel = ConfigPanel(cfg, target="H100")
    cfg.update({"decoder.max_new_tokens": 16, "decoder.typical_p": 0.5, "pytorch.batch_size": 4})
    assert panel.switch_note.value == ""
    dd = panel.controls["experiment.backend"].widget
    dd.set_state({"index": [v for _, v in dd.options].index("vllm")})
    assert cfg.backend == "vllm"
    text = panel.switch_text
    assert text.startswith("Backend changed from pytorch to vllm.")
    assert "Kept: decoder.max_new_tokens=16" in text
    assert "Reset (unset): decoder.typical_p=0.5: vllm does not take it" in text
    assert "Not used by vllm: pytorch.batch_size=4" in text
    assert "decoder.typical_p" in panel.switch_note.value and text in panel.text()
    # back to pytorch: the pytorch section's value is used again, nothing decoder-only was set
    cfg.backend = "pytorch"
    assert panel.controls["pytorch.batch_size"].value == 4
    assert "from vllm to pytorch" in panel.switch_text and "Reset" not in panel.switch_text


def test_run_view_ticks_on_its_own_and_shows_what_the_load_does():
    import time

    view = RunView(title="t", tick_s=0.02)
    view.progress("load", 0, 1, step="reading the weights from the GGUF file")
    first = view.status.value
    assert "loading the model: reading the weights from the GGUF file" in first
    deadline = time.monotonic() + 5
    while view.ticks < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert view.ticks >= 3 and view.status.value != first  # the clock moved, nobody reported
    assert "reading the weights" in view.status.value
    view.progress("warmup", 0, 1)
    assert "reading the weights" not in view.status.value  # a step belongs to its stage
    view.done()
    ticks = view.ticks
    time.sleep(0.1)
    assert view.ticks == ticks and not view._ticker.is_alive()
    closed = RunView(title="c", tick_s=0.02)
    closed.close()
    assert not closed._ticker.is_alive()
