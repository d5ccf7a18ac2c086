"""The figure table, the number formatter, the config flattener and the palette: one of each."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from test_results import result as make_result
from test_results import run as make_run

from llem import report
from llem.config import ExperimentConfig
from llem.results import Result, RunMeasurement, Stat, compare, palette
from llem.results import figures as F
from llem.spec import flatten, is_leaf


# --------------------------------------------------------------------------- the table
def test_every_figure_is_a_run_attribute_and_every_view_is_known():
    run = make_run(0, 100.0)
    for f in F.FIGURES:
        assert hasattr(run, f.attr), f.attr
        assert f.views <= set(F.VIEWS) and f.views, f.attr
        assert f.scale > 0 and f.digits >= 2 and f.label, f.attr
    assert len({f.attr for f in F.FIGURES}) == len(F.FIGURES)
    assert len({f.label for f in F.FIGURES}) == len(F.FIGURES)  # one figure, one label
    with pytest.raises(ValueError, match="view"):
        F.Figure("x", "x", views=frozenset({"nowhere"}))
    with pytest.raises(KeyError, match="Did you mean 'tokens_per_s'"):
        F.figure("tokens_per_sec")


def test_every_figure_named_anywhere_is_in_the_table():
    r = make_result()
    table = {f.attr for f in F.FIGURES}
    assert set(r.summary) == set(F.attrs("summary")) <= table
    assert set(F.SUMMARY_FIGURES) == set(r.summary)
    assert F.COMPARE_FIGURES == F.attrs("compare")
    row = compare([r]).rows()[0]
    assert [k for k in row if k in table] == list(F.attrs("compare"))
    labels = {f.label for f in F.FIGURES}
    key = [label for label, _value, _meaning in report.key_figures(r)]
    assert key[-1] == "measured runs" and set(key[:-1]) <= labels
    assert key[:-1] == [f.label for f, _ in r.figure_rows("report")]
    headings = {f.heading for f in F.FIGURES}
    run_row = report.run_rows(r)[0]
    assert set(run_row) - {"run", "method", "complete"} == {f.heading for f in F.figures_for("runs")} <= headings
    csv_row = report.table_rows([r])[0]
    assert set(F.attrs("csv")) <= set(csv_row)
    display = [label for label, _ in r.summary_rows()]
    assert set(display) - {"energy method"} <= labels
    # the sweep's figures are the compare view's (see llem/results/figures.py)
    assert F.attrs("sweep") == ("energy_per_token_j", "tokens_per_s", "ttft_p50_s", "itl_p50_s",
                                "peak_memory_mib")


def test_a_figure_has_the_same_label_in_the_result_display_compare_and_the_report():
    a, b = make_result(name="a"), make_result(name="b", batch_size=4)
    text = repr(a)
    display = dict(a.summary_rows())
    head, _ = compare([a, b]).cells()
    key = {label for label, _v, _m in report.key_figures(a)}
    overview = report.build_report([a, b], charts=False).overview_rows()[0]
    shown = [f for f in F.FIGURES if {"display", "compare", "report"} <= f.views]
    assert {f.attr for f in shown} == {"energy_per_token_j", "tokens_per_s", "ttft_p50_s", "itl_p50_s",
                                       "peak_memory_mib"}
    for f in shown:
        assert re.search(rf"^  {re.escape(f.label)}  ", text, re.M), f.label
        assert f.label in display and f.label in head and f.label in key and f.label in overview, f.label
    # the same formatted value, too
    for f in shown:
        value = F.format_stat(a.summary[f.attr], f)
        assert display[f.label].startswith(value)
        assert overview[f.label].startswith(value)


def test_charts_take_their_axis_titles_from_the_table():
    pytest.importorskip("altair")
    from llem import plots

    r = make_result()
    chart = plots.energy_vs_latency(r, x="ttft").to_dict()
    text = str(chart)
    assert F.figure("ttft_p50_s").axis_title() == "TTFT p50 (ms)"
    assert "TTFT p50 (ms)" in text
    assert F.figure("energy_per_token_j").axis_title("estimated") in text
    assert F.figure("tokens_per_s").axis_title() == "throughput (output tokens/s)"


# ------------------------------------------------------------------------- formatting
@pytest.mark.parametrize(("value", "digits", "text"), [
    (0.0123456, 4, "0.01235"),
    (12345.6, 4, "12,346"),
    (9999.4, 4, "9999"),
    (161.3, 4, "161.3"),
    (0.0, 4, "0"),
    (-2.5, 4, "-2.5"),
    (None, 4, "n/a"),
    (math.nan, 4, "n/a"),
    (math.inf, 4, "n/a"),
    (4.5678, 2, "4.6"),
])
def test_format_number(value, digits, text):
    assert F.format_number(value, digits) == text


def test_format_value_stat_and_interval_follow_the_table():
    assert F.format_value(0.0123, "ttft_p50_s") == "12.3 ms"
    assert F.format_value(0.0123, "ttft_p50_s", unit=False) == "12.3"
    assert F.format_value(0.1613, "energy_per_token_j") == "161.3 mJ"
    assert F.format_value(2.5e9, "flops_estimate") == "2.5 GFLOP"
    assert F.format_value(0.167, "padding_fraction") == "16.7% of prompt tokens"
    assert F.format_value(None, "tokens_per_s") == "n/a"
    st = Stat.of([100.0, 110.0, 90.0])
    assert F.format_stat(st, "tokens_per_s") == "100 tok/s ± 25 (95% CI, n=3)"
    assert F.format_stat(Stat.of([192.0, 192.0]), "output_tokens") == "192"  # a count: no interval
    assert F.format_stat(Stat.of([]), "tokens_per_s") == "n/a"
    assert F.format_stat(Stat.of([0.05]), "itl_p50_s") == "50 ms"
    assert F.format_interval((0.0119, 0.0127), "ttft_p50_s") == "[11.9, 12.7]"
    assert F.format_interval(None, "ttft_p50_s") == ""
    # Stat.format is the same formatter with an explicit unit
    assert st.format("tok/s") == F.format_stat(st, "tokens_per_s")
    assert Stat.of([0.0123, 0.0125]).format("ms", 1e3) == "12.4 ms ± 1.3 (95% CI, n=2)"


def test_results_keep_the_first_versions_names():
    import llem.results as results

    assert results._g is F.format_number and results._plain is results.plain
    assert results.SUMMARY_FIGURES["ttft_p50_s"] == ("TTFT p50", "ms", 1e3)
    assert callable(results.now_iso)


# ------------------------------------------------------------------------ the flattener
def test_flatten_keeps_a_dict_valued_row_whole():
    cfg = {"model": "m", "passthrough": {"a": {"b": 1}},
           "pytorch": {"batch_size": 2, "max_memory": {"0": "20GiB", "cpu": "30GiB"}},
           "vllm.compilation_config": {"level": 3}, "sweep": {"x": [1]}, "notes": ["n"]}
    flat = flatten(cfg)
    assert flat == {"experiment.model": "m", "experiment.passthrough": {"a": {"b": 1}},
                    "pytorch.batch_size": 2, "pytorch.max_memory": {"0": "20GiB", "cpu": "30GiB"},
                    "vllm.compilation_config": {"level": 3}}
    assert is_leaf("vllm.compilation_config") and is_leaf("decoder.max_tokens")  # an alias
    assert not is_leaf("vllm.compilation_config.level")
    # a mapping under a path the table does not know is opened
    assert flatten({"decoder": {"old_group": {"x": 1}}}) == {"decoder.old_group.x": 1}
    with pytest.raises(ValueError, match="keys must be strings"):
        flatten({"pytorch": {1: 2}})


def test_compare_keeps_vllm_compilation_config_whole():
    """The old flattener split it into ``vllm.compilation_config.level``."""
    base = make_result()

    def with_cc(level, name):
        return dataclasses.replace(base, name=name, backend="vllm", config={
            "model": "m", "backend": "vllm", "vllm": {"compilation_config": {"level": level},
                                                      "gpu_memory_utilization": 0.9}})

    c = compare([with_cc(1, "a"), with_cc(3, "b")])
    assert c.varying == ("vllm.compilation_config",)
    assert [r["vllm.compilation_config"] for r in c.rows()] == [{"level": 1}, {"level": 3}]
    assert "vllm.compilation_config.level" not in repr(c)
    rows = report.table_rows([with_cc(1, "a")])
    assert rows[0]["config.vllm.compilation_config"] == '{"level": 1}'
    assert "config.vllm.compilation_config.level" not in rows[0]


def test_config_flat_is_the_same_flattener():
    cfg = ExperimentConfig.from_dict({"model": "tiny-random-llama",
                                      "pytorch": {"max_memory": {"cpu": "4GiB"}}})
    assert cfg.flat(only_set=True) == flatten(cfg.to_dict(only_set=True))
    assert cfg.flat()["pytorch.max_memory"] == {"cpu": "4GiB"}


def test_the_magic_flattens_with_the_same_function():
    pytest.importorskip("IPython")
    from IPython.core.error import UsageError

    from llem.magic import _flatten, parse_cell

    flat, prompts = parse_cell("model: tiny-random-llama\npytorch:\n  max_memory: {cpu: 4GiB}\n")
    assert prompts is None and flat == {"experiment.model": "tiny-random-llama",
                                        "pytorch.max_memory": {"cpu": "4GiB"}}
    with pytest.raises(UsageError, match="the cell: config keys must be strings"):
        _flatten({1: 2}, "the cell")


# --------------------------------------------------------------------------- the palette
def test_the_live_plot_and_the_report_shade_phases_alike():
    pytest.importorskip("altair")
    from llem import plots
    from llem.testing import replay_measurement
    from llem.widgets.svg import measurement_svg

    m = replay_measurement()
    svg = measurement_svg(m)
    for name in ("prefill", "decode"):
        colour = palette.PHASE_COLOURS[name]
        assert re.search(rf'fill="{colour}" fill-opacity="{palette.PHASE_OPACITY}"><title>{name}:', svg), name
    chart = plots.power_timeline(m).to_dict()
    scales = [layer["encoding"]["color"]["scale"] for layer in chart["layer"]
              if layer.get("encoding", {}).get("color", {}).get("title") == "phase"]
    (scale,) = scales
    assert dict(zip(scale["domain"], scale["range"])) == palette.phase_colours(scale["domain"])
    assert scale["range"][scale["domain"].index("prefill")] == palette.PHASE_COLOURS["prefill"]
    assert plots.PHASE_COLORS is palette.PHASE_COLOURS
    # devices: the same line colours, in order
    assert palette.device_colour(0) in svg
    assert list(palette.DEVICE_COLOURS) in [layer["encoding"]["color"]["scale"].get("range")
                                            for layer in chart["layer"] if "color" in layer.get("encoding", {})]


def test_method_words_and_colours_are_defined_once():
    from llem.energy.measurement import METHODS, NO_METHOD

    assert set(palette.METHOD_WORDS) == set(palette.METHOD_COLOURS) == {*METHODS, NO_METHOD}
    assert palette.method_word("estimated") == "ESTIMATED" and palette.method_word("measured") == "measured"
    assert palette.method_note("estimated") == " (estimated)" and palette.method_note("sampled") == ""
    r = make_result()
    assert all(v.endswith("— ESTIMATED") for label, v, _ in report.key_figures(r)
               if label.startswith("energy per"))
    assert palette.phase_part("host") == palette.phase_part("(unmarked)") == palette.PHASE_PARTS[2]
    assert palette.phase_part("thermal") == "other (thermal)"
    assert palette.phase_colours(["prefill", "run 1/2", "run 2/2"]) == {
        "prefill": palette.PHASE_COLOURS["prefill"], "run 1/2": palette.PHASE_FALLBACK[0],
        "run 2/2": palette.PHASE_FALLBACK[1]}


def test_a_result_without_a_meter_says_so_once():
    r = make_result()
    none = dataclasses.replace(r, runs=tuple(dataclasses.replace(x, measurement=None) for x in r.runs))
    rows = [label for label, _ in none.summary_rows()]
    assert rows.count("energy per output token") == 1
    assert "energy per request" not in rows and "energy method" not in rows
    assert dict(none.summary_rows())["energy per output token"] == "not measured (meter='none')"
    assert isinstance(none, Result) and isinstance(none.runs[0], RunMeasurement)

