"""Idle baseline: subtraction, per-session caching, expiry."""

from __future__ import annotations

import time

import pytest

from llem.energy import baseline as bl
from llem.energy.base import Meter
from llem.energy.measurement import DeviceReading
from llem.energy.window import measure


class PowerScript(Meter):
    """Reports whatever power the test sets; energy integrates it over real time."""

    name = "script"

    def __init__(self, devices=None, power_w: float = 50.0, key: str = "script"):
        self.power_w = power_w
        self.key = key
        self.starts = 0

    @property
    def cache_key(self):
        return self.key

    def probe(self):
        raise NotImplementedError

    def start(self):
        self.starts += 1
        self.t = time.perf_counter()
        self.e = 0.0

    def sample(self):
        now = time.perf_counter()
        self.e += self.power_w * (now - self.t)
        self.t = now
        return [("dev", self.power_w, self.e, None)]

    def stop(self):
        return (DeviceReading("dev", "cpu", self.e, "measured", "script"),)


def test_dynamic_energy_subtracts_baseline_power_times_duration():
    meter = PowerScript(power_w=50.0)
    win = measure(meter=meter, interval_s=0.005, baseline_s=0.04)
    win.begin()  # baseline measured at 50 W
    meter.power_w = 150.0
    time.sleep(0.05)
    meas = win.end()
    assert meas.baseline_power_w == pytest.approx(50.0, rel=0.05)
    assert meas.baseline_power_w_by_device == pytest.approx({"dev": 50.0}, rel=0.05)
    assert meas.baseline_spread_w == pytest.approx(0.0, abs=1e-9)
    assert meas.baseline_duration_s == pytest.approx(0.04, abs=0.03)
    assert meas.baseline_age_s == pytest.approx(0.0, abs=0.05)
    assert meas.dynamic_energy_j == pytest.approx(meas.energy_j - meas.baseline_power_w * meas.duration_s)
    # 150 W total, 50 W idle: about two thirds is dynamic
    assert meas.dynamic_energy_j == pytest.approx(meas.energy_j * 2 / 3, rel=0.1)
    assert meas.dynamic_energy_j_by_device["dev"] == pytest.approx(meas.dynamic_energy_j)
    assert meter.starts == 2  # once for the baseline, once for the run


def test_baseline_is_cached_per_meter_key():
    meter = PowerScript()
    for _ in range(3):
        with measure(meter=meter, interval_s=0.005, baseline_s=0.02) as m:
            pass
    assert meter.starts == 1 + 3  # baseline measured once
    assert m.measurement.baseline_age_s > 0
    other = PowerScript(key="another machine part")
    with measure(meter=other, interval_s=0.005, baseline_s=0.02):
        pass
    assert other.starts == 2


def test_cached_baseline_expires():
    meter = PowerScript()
    with measure(meter=meter, interval_s=0.005, baseline_s=0.02, baseline_cache_ttl_s=0.03):
        pass
    time.sleep(0.05)
    with measure(meter=meter, interval_s=0.005, baseline_s=0.02, baseline_cache_ttl_s=0.03):
        pass
    assert meter.starts == 4  # measured again after expiry


def test_ttl_zero_never_caches():
    meter = PowerScript()
    for _ in range(2):
        with measure(meter=meter, interval_s=0.005, baseline_s=0.01, baseline_cache_ttl_s=0):
            pass
    assert meter.starts == 4


def test_cache_functions_with_explicit_time():
    b = bl.Baseline(power_w=10.0, spread_w=1.0, key="k", measured_at=100.0)
    bl.store_baseline(b)
    assert bl.cached_baseline("k", ttl_s=60, now=150.0) is b
    assert bl.cached_baseline("k", ttl_s=60, now=161.0) is None
    assert bl.cached_baseline("k", ttl_s=60, now=150.0) is None  # expired entries are dropped
    bl.store_baseline(b)
    bl.clear_baseline_cache()
    assert bl.cached_baseline("k", ttl_s=60, now=100.0) is None


def test_baseline_from_rows_arithmetic():
    rows = [
        (0.0, "a", None, 0.0, None),
        (0.0, "b", None, 0.0, None),
        (1.0, "a", 10.0, 10.0, None),
        (1.0, "b", 2.0, 2.0, None),
        (2.0, "a", 14.0, 24.0, None),
        (2.0, "b", 2.0, 4.0, None),
    ]
    readings = [
        DeviceReading("a", "gpu", 24.0, "measured", "x"),
        DeviceReading("b", "cpu", 4.0, "estimated", "x"),
    ]
    power, spread, by_device = bl.baseline_from_rows(rows, readings, 2.0)
    assert by_device == {"a": 12.0, "b": 2.0} and power == 14.0
    assert spread == pytest.approx(2.0)  # totals 12 and 16


def test_no_baseline_means_no_dynamic_energy():
    with measure(meter=PowerScript(), interval_s=0.005) as m:
        pass
    assert m.measurement.baseline_power_w is None and m.measurement.dynamic_energy_j is None
