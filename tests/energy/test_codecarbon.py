"""The codecarbon adapter (runs codecarbon's real offline tracker; ~1-2 s the first time)."""

from __future__ import annotations

import time

import pytest

from llem.energy.codecarbon import CodeCarbonMeter
from llem.energy.window import measure


def test_probe_without_starting_anything():
    p = CodeCarbonMeter().probe()
    assert p.name == "codecarbon" and p.reason


def test_codecarbon_in_a_window():
    pytest.importorskip("codecarbon")
    with measure(meter=CodeCarbonMeter(country_iso_code="CAN"), interval_s=0.05) as m:
        time.sleep(0.05)
    meas = m.measurement
    readings = {r.device: r for r in meas.devices}
    assert {"cpu", "ram"} <= set(readings)
    assert readings["ram"].method == "estimated"
    assert readings["cpu"].model_inputs["codecarbon_mode"]
    assert "codecarbon" in meas.source and "codecarbon" in meas.meter_versions
    assert meas.carbon_g is not None and meas.carbon_g >= 0 and "codecarbon" in meas.carbon_source
    # codecarbon reports at the end: each device is drawn as a line at its mean power
    assert {s.device for s in meas.timeline} == set(readings)
