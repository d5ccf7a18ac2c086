"""Measurement: derived figures, phase split, energy between times, JSON round trip."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llem.energy.measurement import (
    UNMARKED,
    DeviceReading,
    Measurement,
    PhaseMark,
    Sample,
    weakest_method,
)


def make(timeline, phases=(), duration_s=4.0, baseline_power_w=None, **kw) -> Measurement:
    finals: dict[str, float] = {}
    for s in timeline:
        finals[s.device] = s.energy_j
    readings = tuple(
        DeviceReading(d, "gpu" if d.startswith("gpu") else "cpu", e, "measured", "test")
        for d, e in finals.items()
    )
    return Measurement(
        duration_s=duration_s,
        energy_j=sum(finals.values()),
        energy_j_by_device=finals,
        devices=readings,
        method=weakest_method(r.method for r in readings),
        source="test",
        timeline=tuple(timeline),
        phases=tuple(phases),
        baseline_power_w=baseline_power_w,
        **kw,
    )


def constant(device: str, power_w: float, duration_s: float = 4.0, dt: float = 1.0) -> list[Sample]:
    n = int(round(duration_s / dt))
    return [Sample(k * dt, device, power_w, power_w * k * dt) for k in range(n + 1)]


def test_weakest_method_orders_measured_sampled_estimated():
    assert weakest_method([]) == "none"
    assert weakest_method(["measured"]) == "measured"
    assert weakest_method(["measured", "sampled"]) == "sampled"
    assert weakest_method(["sampled", "estimated", "measured"]) == "estimated"
    with pytest.raises(ValueError, match="guessed"):
        weakest_method(["guessed"])


def test_device_reading_refuses_unknown_kind_and_method():
    with pytest.raises(ValueError, match="kind"):
        DeviceReading("x", "tpu", 1.0, "measured", "s")
    with pytest.raises(ValueError, match="method"):
        DeviceReading("x", "cpu", 1.0, "guessed", "s")


def test_derived_figures():
    m = make(constant("gpu:0", 100.0) + constant("cpu", 20.0), baseline_power_w=30.0)
    assert m.energy_j == pytest.approx(480.0)
    assert m.mean_power_w == pytest.approx(120.0)
    assert m.peak_power_w == pytest.approx(120.0)
    assert m.dynamic_energy_j == pytest.approx(480.0 - 30.0 * 4.0)
    assert m.energy_kwh == pytest.approx(480.0 / 3.6e6)
    assert make(constant("cpu", 1.0)).dynamic_energy_j is None


def test_dynamic_energy_by_device():
    m = make(
        constant("gpu:0", 100.0) + constant("cpu", 20.0),
        baseline_power_w=75.0,
        baseline_power_w_by_device={"gpu:0": 70.0, "cpu": 5.0},
    )
    assert m.dynamic_energy_j_by_device == pytest.approx({"gpu:0": 400 - 280, "cpu": 80 - 20})


def test_energy_between_interpolates_and_clamps():
    m = make(constant("gpu:0", 100.0))
    assert m.energy_between(0.0, 4.0) == pytest.approx(400.0)
    assert m.energy_between(0.5, 1.5) == pytest.approx(100.0)
    assert m.energy_between(-1.0, 0.0) == 0.0
    assert m.energy_between(3.0, 10.0) == pytest.approx(100.0)
    assert m.energy_between(1.0, 2.0, device="gpu:0") == pytest.approx(100.0)
    assert m.energy_between(1.0, 2.0, device="nope") == 0.0
    with pytest.raises(ValueError):
        m.energy_between(2.0, 1.0)


def test_phase_energy_split_sums_to_total():
    # 100 W for 2 s then 300 W for 2 s
    tl = [
        Sample(0.0, "gpu:0", 100.0, 0.0),
        Sample(1.0, "gpu:0", 100.0, 100.0),
        Sample(2.0, "gpu:0", 100.0, 200.0),
        Sample(3.0, "gpu:0", 300.0, 500.0),
        Sample(4.0, "gpu:0", 300.0, 800.0),
    ]
    m = make(tl, phases=[PhaseMark(0.5, "prefill"), PhaseMark(2.0, "decode")])
    split = m.phase_energy_j()
    assert split == pytest.approx({UNMARKED: 50.0, "prefill": 150.0, "decode": 600.0})
    assert sum(split.values()) == pytest.approx(m.energy_between(0, m.duration_s))
    assert m.phase_duration_s() == pytest.approx({UNMARKED: 0.5, "prefill": 1.5, "decode": 2.0})


def test_repeated_phase_names_accumulate():
    m = make(
        constant("cpu", 10.0),
        phases=[
            PhaseMark(0.0, "prefill"),
            PhaseMark(1.0, "decode"),
            PhaseMark(2.0, "prefill"),
            PhaseMark(3.0, "decode"),
        ],
    )
    assert m.phase_energy_j() == pytest.approx({"prefill": 20.0, "decode": 20.0})


def test_no_marks_is_one_unmarked_phase():
    m = make(constant("cpu", 10.0))
    assert m.phase_energy_j() == pytest.approx({UNMARKED: 40.0})


def test_round_trip_through_json_is_lossless():
    m = make(
        constant("gpu:0", 123.456, dt=0.1) + constant("cpu", 7.0, dt=0.1),
        phases=[PhaseMark(0.0, "warmup"), PhaseMark(1.25, "decode")],
        baseline_power_w=50.0,
        baseline_spread_w=0.5,
        baseline_power_w_by_device={"gpu:0": 45.0, "cpu": 5.0},
        carbon_g=1.5,
        carbon_intensity_g_per_kwh=400.0,
        carbon_source="user",
        notes=("n1",),
        meter_versions={"llem": "0"},
        complete=False,
        error="KeyboardInterrupt",
    )
    d = json.loads(json.dumps(m.to_dict()))
    back = Measurement.from_dict(d)
    assert back == m
    assert back.to_dict() == m.to_dict()
    assert d["derived"]["dynamic_energy_j"] == pytest.approx(m.dynamic_energy_j)


def test_from_dict_refuses_other_schemas():
    d = make(constant("cpu", 1.0)).to_dict()
    d["schema"] = "llem.measurement/99"
    with pytest.raises(ValueError, match="schema"):
        Measurement.from_dict(d)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e12, max_value=1e12)
json_value = st.one_of(st.none(), st.booleans(), st.integers(-(10**9), 10**9), finite, st.text(max_size=8))


@st.composite
def measurements(draw):
    devices = draw(
        st.lists(st.sampled_from(["gpu:0", "gpu:1", "cpu", "ram", "cpu:0"]), unique=True, max_size=4)
    )
    timeline = [
        Sample(draw(finite), d, draw(st.none() | finite), draw(finite), draw(st.none() | finite))
        for d in devices
        for _ in range(draw(st.integers(0, 3)))
    ]
    readings = tuple(
        DeviceReading(
            d,
            draw(st.sampled_from(["gpu", "cpu", "ram"])),
            draw(finite),
            draw(st.sampled_from(["measured", "sampled", "estimated"])),
            draw(st.text(max_size=20)),
            draw(st.dictionaries(st.text(max_size=5), json_value, max_size=3)),
            draw(st.none() | finite),
        )
        for d in devices
    )
    return Measurement(
        duration_s=draw(finite),
        energy_j=draw(st.none() | finite),
        energy_j_by_device={r.device: r.energy_j for r in readings},
        devices=readings,
        method=weakest_method(r.method for r in readings),
        source=draw(st.text(max_size=30)),
        meter=draw(st.text(max_size=10)),
        timeline=tuple(timeline),
        phases=tuple(
            PhaseMark(draw(finite), draw(st.text(min_size=1, max_size=8)))
            for _ in range(draw(st.integers(0, 3)))
        ),
        t0_perf=draw(finite),
        baseline_power_w=draw(st.none() | finite),
        baseline_spread_w=draw(st.none() | finite),
        carbon_g=draw(st.none() | finite),
        complete=draw(st.booleans()),
        error=draw(st.none() | st.text(max_size=10)),
        notes=tuple(draw(st.lists(st.text(max_size=10), max_size=2))),
    )


@settings(max_examples=60, deadline=None)
@given(measurements())
def test_round_trip_property(m):
    back = Measurement.from_dict(json.loads(json.dumps(m.to_dict(), allow_nan=False)))
    assert back == m


def test_summary_and_repr_are_short_and_never_raise():
    m = make(constant("gpu:0", 100.0, duration_s=100.0, dt=0.1), duration_s=100.0)
    assert len(repr(m)) < 200
    assert "measured" in m.summary()
    assert m._repr_mimebundle_()["text/plain"]
    assert not math.isnan(m.peak_power_w)
