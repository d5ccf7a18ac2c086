"""Charts: built from a replayed GPU timeline (llem.testing) and from a real CPU run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

pytest.importorskip("altair")

import llem
from llem import plots
from llem.testing import replay_measurement

TINY = {"model": "tiny-random-llama", "num_prompts": 2, "repeats": 2, "sampling_interval_s": 0.02,
        "decoder": {"max_new_tokens": 8}}


@pytest.fixture(scope="module")
def cpu_result():
    return llem.run(TINY)


@pytest.fixture(scope="module")
def replay_result():
    """A real run whose energy comes from the shipped (synthetic) H100 recording."""
    return llem.run({**TINY, "meter": "replay"})


def _walk(spec):
    """Every dict inside a Vega-Lite spec."""
    if isinstance(spec, dict):
        yield spec
        for v in spec.values():
            yield from _walk(v)
    elif isinstance(spec, list):
        for v in spec:
            yield from _walk(v)


def _axis_titles(chart):
    titles = []
    for d in _walk(chart.to_dict()):
        enc = d.get("encoding")
        if isinstance(enc, dict):
            for ch in ("x", "y"):
                t = enc.get(ch, {}).get("title") if isinstance(enc.get(ch), dict) else None
                if t:
                    titles.append(t)
    return titles


def _values(chart):
    return [row for d in _walk(chart.to_dict()) if "values" in d and isinstance(d["values"], list)
            for row in d["values"]]


def _text(chart):
    return json.dumps(chart.to_dict())


# ------------------------------------------------------------------------- pure parts
def test_pareto_front_minimize_and_maximize():
    pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0 + 1e-9), (None, 0.0)]
    assert plots.pareto_front(pts) == [0, 1, 3]
    # throughput: more x is better
    assert plots.pareto_front([(10.0, 2.0), (20.0, 3.0), (15.0, 4.0)], maximize_x=True) == [1, 0]
    assert plots.pareto_front([]) == []


def test_importing_plots_does_not_import_altair():
    code = "import sys, llem.plots; print('altair' in sys.modules, 'vl_convert' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------ replayed GPU timeline
def test_timeline_from_replayed_gpu_recording():
    m = replay_measurement()
    chart = plots.power_timeline(m)
    titles = _axis_titles(chart)
    assert "time (s)" in titles and any(t.startswith("power (W)") for t in titles)
    rows = _values(chart)
    devices = {r["device"] for r in rows if "power_w" in r}
    assert {"gpu:0 (measured)", "cpu (estimated)", "ram (estimated)", "total"} <= devices
    phases = {r["phase"] for r in rows if "phase" in r}
    assert {"idle", "warmup", "prefill", "decode"} <= phases
    text = _text(chart)
    assert "SYNTHETIC" in text and "ESTIMATED" in text
    gpu = [r["power_w"] for r in rows if r.get("device") == "gpu:0 (measured)"]
    assert 300 < max(gpu) < 800 and min(gpu) > 40  # the recording's idle-to-prefill range
    svg = plots.to_svg(chart)
    assert svg.startswith("<svg") and "estimated" in svg and "power (W)" in svg


def test_timeline_buckets_keep_the_energy():
    m = replay_measurement()
    chart = plots.power_timeline(m, devices=["gpu:0"], max_points=40)
    pts = sorted((r["t_s"], r["power_w"]) for r in _values(chart) if r.get("device") == "gpu:0 (measured)")
    assert len(pts) <= 40
    samples = [s for s in m.timeline if s.device == "gpu:0"]
    # every bucket's power is its energy over its time: their sum of W x s is the energy
    step = -(-len(samples) // 40)
    kept = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    area = sum(p * (b.t_s - a.t_s) for (_, p), a, b in zip(pts, kept, kept[1:]))
    assert area == pytest.approx(kept[-1].energy_j - kept[0].energy_j, rel=1e-6)
    with pytest.raises(ValueError, match="gpu:7"):
        plots.power_timeline(m, devices=["gpu:7"])


def test_every_chart_builds_from_a_replayed_run(replay_result):
    r = replay_result
    assert any(d.device == "gpu:0" and d.method == "measured" for d in r.runs[0].measurement.devices)
    charts = plots.report_charts(r)
    assert set(charts) == {"timeline:tiny-random-llama (pytorch)", "energy_per_token", "energy_vs_latency",
                           "energy_vs_throughput", "phase_energy"}
    timeline = charts["timeline:tiny-random-llama (pytorch)"]
    assert "gpu:0 (measured)" in {row.get("device") for row in _values(timeline)}
    for name, chart in charts.items():
        assert "SYNTHETIC" in _text(chart), name
        plots.to_svg(chart)


# ---------------------------------------------------------------------------- CPU run
def test_every_chart_builds_from_a_cpu_run(cpu_result):
    charts = plots.report_charts(cpu_result)
    assert len(charts) == 5
    units = ("(s)", "(W", "(mJ", "(ms)", "tokens/s)", "(J per run")
    for name, chart in charts.items():
        titles = _axis_titles(chart)
        assert titles, name
        for t in titles:
            assert any(u in t for u in units), (name, t)
        # estimated energy is said on the chart itself
        assert "estimated" in _text(chart).lower(), name
        assert "estimated" in plots.to_svg(chart).lower(), name


def test_energy_per_token_bars_carry_the_95_ci(cpu_result):
    chart = plots.energy_per_token(cpu_result)
    bar = next(r for r in _values(chart) if "lo" in r)
    st = cpu_result.summary["energy_per_token_j"]
    assert bar["mj"] == pytest.approx(st.mean * 1e3)
    assert bar["hi"] == pytest.approx((st.mean + st.ci95_half) * 1e3)
    assert bar["lo"] == pytest.approx(max(0.0, (st.mean - st.ci95_half) * 1e3))
    assert bar["tag"] == "estimated" and bar["n"] == 2
    dots = [r for r in _values(chart) if set(r) == {"config", "mj", "method"}]
    assert len(dots) == 2
    assert "energy per output token (mJ, estimated)" in _axis_titles(chart)


def test_several_results_are_labelled_by_what_differs_and_a_front_is_marked(cpu_result):
    fast = dataclasses.replace(
        cpu_result, config={**cpu_result.config, "pytorch": {**cpu_result.config["pytorch"], "batch_size": 2}},
        runs=tuple(dataclasses.replace(run, tokens_per_s=run.tokens_per_s * 2) for run in cpu_result.runs))
    labels = plots.result_labels([cpu_result, fast])
    assert labels == ["batch_size=1", "batch_size=2"]
    chart = plots.energy_vs_latency([cpu_result, fast], x="throughput")
    rows = [r for r in _values(chart) if "pareto" in r]
    front = {r["config"] for r in rows if r["pareto"] == "on the front"}
    assert front == {"batch_size=2"}  # same energy, twice the throughput
    assert "throughput (output tokens/s)" in _axis_titles(chart)
    with pytest.raises(llem.ConfigError, match="x axis"):
        plots.energy_vs_latency(cpu_result, x="latancy")


def test_phase_split_adds_up(cpu_result):
    chart = plots.phase_energy(cpu_result)
    rows = [r for r in _values(chart) if "part" in r]
    assert {r["part"] for r in rows} >= {"prefill", "decode"}
    total = sum(r["value"] for r in rows)
    assert total == pytest.approx(cpu_result.summary["energy_j"].mean, rel=1e-6)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_static_outputs(cpu_result, tmp_path):
    chart = plots.energy_per_token(cpu_result)
    assert plots.to_png(chart, scale=1).startswith(b"\x89PNG")
    for suffix in (".png", ".svg", ".pdf", ".json"):
        p = plots.save(chart, tmp_path / f"c{suffix}")
        assert p.stat().st_size > 100
    with pytest.raises(llem.ConfigError, match="chart format"):
        plots.save(chart, tmp_path / "c.gif")


def test_a_result_without_energy_is_refused_clearly(cpu_result):
    none = dataclasses.replace(cpu_result, runs=tuple(
        dataclasses.replace(run, measurement=None, energy_j=None, energy_per_token_j=None)
        for run in cpu_result.runs))
    with pytest.raises(ValueError, match="meter='none'"):
        plots.power_timeline(none)
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.energy_per_token(none)
    assert "energy_per_token" not in plots.report_charts(none)
