"""The measurement window and its sampler thread: lifecycle, errors, interrupts, threads."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from llem.energy.base import Meter, Probe
from llem.energy.measurement import DeviceReading, Measurement
from llem.energy.sampler import Sampler
from llem.energy.window import MeasurementWindow, measure
from llem.errors import LlemError
from llem.testing import FakeGpu, FakeNvmlLibrary


def samplers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llem-sampler"]


class SteadyMeter(Meter):
    """100 W on one fake device, energy from real time."""

    name = "steady"

    def __init__(self, devices=None, power_w: float = 100.0, fail_after: int | None = None):
        self.power_w = power_w
        self.fail_after = fail_after
        self.starts = self.stops = self.samples = 0

    def probe(self):
        return Probe("steady", True, "test", ("dev",), "measured")

    def start(self):
        self.starts += 1
        self.t0 = time.perf_counter()
        self.last = 0.0

    def sample(self):
        self.samples += 1
        if self.fail_after is not None and self.samples > self.fail_after:
            raise RuntimeError("device fell off the bus")
        self.last = (time.perf_counter() - self.t0) * self.power_w
        return [("dev", self.power_w, self.last, None)]

    def stop(self):
        self.stops += 1
        return (DeviceReading("dev", "gpu", self.last, "measured", "steady test meter"),)


def test_window_samples_in_the_background_and_stops():
    meter = SteadyMeter()
    with measure(meter=meter, interval_s=0.005) as m:
        assert m.running and len(samplers()) == 1
        time.sleep(0.06)
        assert len(m.live_samples()) >= 3
        assert m.latest_power_w() == {"dev": 100.0}
    assert samplers() == []
    meas = m.measurement
    assert isinstance(meas, Measurement) and meas.complete and meas.error is None
    assert meas.duration_s == pytest.approx(0.06, abs=0.04)
    assert len(meas.timeline) >= 5
    ts = [s.t_s for s in meas.timeline]
    assert ts == sorted(ts)
    assert meas.energy_j == pytest.approx(meas.timeline[-1].energy_j)
    assert meas.energy_j == pytest.approx(100.0 * meas.duration_s, rel=0.1)
    assert meas.method == "measured" and meas.meter == "steady" and meas.source == "steady"
    assert meas.t0_perf > 0 and meas.started_at.endswith("+00:00")
    assert meas.meter_versions["llem"]
    assert meter.starts == meter.stops == 1


def test_begin_end_api_and_single_use():
    win = measure(meter="estimate", interval_s=0.01)
    assert isinstance(win, MeasurementWindow) and win.state == "new"
    with pytest.raises(LlemError, match="exists once it has ended"):
        _ = win.measurement
    with pytest.raises(LlemError, match="not running"):
        win.mark("prefill")
    win.begin()
    win.mark("prefill")
    meas = win.end()
    assert win.end() is meas is win.measurement
    assert win.state == "ended"
    with pytest.raises(LlemError, match="opens once"):
        win.begin()
    with pytest.raises(LlemError, match="not running"):
        win.mark("decode")


def test_marks_use_perf_counter_and_split_energy():
    with measure(meter=SteadyMeter(), interval_s=0.005) as m:
        m.mark("prefill")
        time.sleep(0.02)
        t = time.perf_counter()
        m.mark_at("decode", t)
        time.sleep(0.04)
    meas = m.measurement
    assert [p.name for p in meas.phases] == ["prefill", "decode"]
    assert meas.phases[1].t_s == pytest.approx(t - meas.t0_perf)
    split = meas.phase_energy_j()
    assert split["decode"] > split["prefill"] > 0
    assert sum(split.values()) == pytest.approx(meas.energy_between(0, meas.duration_s))


def test_exception_inside_the_block_keeps_a_partial_measurement():
    with pytest.raises(ZeroDivisionError):
        with measure(meter=SteadyMeter(), interval_s=0.005) as m:
            time.sleep(0.02)
            raise ZeroDivisionError("division by zero")
    assert samplers() == []
    meas = m.measurement
    assert meas.complete is False and meas.error.startswith("ZeroDivisionError")
    assert meas.energy_j > 0 and len(meas.timeline) >= 2


def test_keyboard_interrupt_raised_in_the_block():
    with pytest.raises(KeyboardInterrupt):
        with measure(meter="estimate", interval_s=0.005) as m:
            time.sleep(0.02)
            raise KeyboardInterrupt
    assert samplers() == []
    assert m.measurement.complete is False and m.measurement.error == "KeyboardInterrupt"


def test_keyboard_interrupt_delivered_asynchronously():
    """Ctrl-C as the notebook delivers it: a signal to the main thread while it waits."""
    timer = threading.Timer(0.03, os.kill, (os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        with measure(meter=SteadyMeter(), interval_s=0.005) as m:
            timer.start()
            time.sleep(2.0)
    timer.join()
    assert samplers() == []
    assert m.measurement.complete is False
    assert m.measurement.duration_s < 1.0


def test_sampler_error_ends_sampling_but_not_the_window():
    with measure(meter=SteadyMeter(fail_after=3), interval_s=0.005) as m:
        time.sleep(0.05)
    meas = m.measurement
    assert any("device fell off the bus" in n for n in meas.notes)
    assert any("last reading failed" in n for n in meas.notes)
    assert meas.complete  # the run itself finished; the notes say what was lost


def test_meter_that_fails_to_start_leaves_no_thread():
    class Broken(SteadyMeter):
        def start(self):
            raise RuntimeError("no device")

    win = measure(meter=Broken(), interval_s=0.005)
    with pytest.raises(RuntimeError, match="no device"):
        win.begin()
    assert win.state == "failed" and samplers() == []


def test_meter_none_times_only():
    with measure(meter="none", interval_s=0.01) as m:
        time.sleep(0.01)
    meas = m.measurement
    assert meas.energy_j is None and meas.method == "none" and meas.devices == ()
    assert meas.duration_s > 0 and meas.mean_power_w is None


def test_estimate_meter_end_to_end_and_round_trip():
    with measure(meter="estimate", interval_s=0.005) as m:
        m.mark("decode")
        x = 0
        for i in range(200_000):
            x += i
    meas = m.measurement
    assert meas.method == "estimated" and set(meas.energy_j_by_device) == {"cpu", "ram"}
    assert meas.source.startswith("estimate: process CPU time x ")
    assert "psutil" in meas.meter_versions
    # the first power value is back-filled from the next interval
    assert all(s.power_w is not None for s in meas.timeline)
    assert Measurement.from_dict(meas.to_dict()) == meas


def test_nvml_meter_in_a_window_on_fake_gpus():
    lib = FakeNvmlLibrary([FakeGpu(0, power_w=400.0), FakeGpu(1, power_w=200.0, energy_counter=False)])
    from llem.energy.nvml import NvmlMeter

    with measure(meter=NvmlMeter(library=lib), interval_s=0.005) as m:
        time.sleep(0.05)
    meas = m.measurement
    e = meas.energy_j_by_device
    assert e["gpu:0"] == pytest.approx(400.0 * meas.duration_s, rel=0.15)
    assert e["gpu:1"] == pytest.approx(200.0 * meas.duration_s, rel=0.15)
    assert meas.method == "sampled"
    assert meas.meter_versions["nvidia-driver"] == "550.54.15"
    assert meas.peak_power_w == pytest.approx(600.0)


def test_grid_intensity_gives_carbon():
    with measure(meter=SteadyMeter(), interval_s=0.01, grid_intensity_g_per_kwh=400.0) as m:
        time.sleep(0.02)
    meas = m.measurement
    assert meas.carbon_g == pytest.approx(meas.energy_j / 3.6e6 * 400.0)
    assert meas.carbon_intensity_g_per_kwh == 400.0 and "user-set" in meas.carbon_source


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"interval_s": 0}, "interval_s"),
        ({"interval_s": "fast"}, "interval_s"),
        ({"baseline_s": -1}, "baseline_s"),
        ({"grid_intensity_g_per_kwh": -3}, "grid_intensity"),
    ],
)
def test_bad_arguments_are_refused(kw, match):
    with pytest.raises(LlemError, match=match):
        measure(**kw)


def test_sampler_ticks_on_a_grid_and_joins():
    meter = SteadyMeter()
    meter.start()
    s = Sampler(meter, 0.01, time.perf_counter())
    s.start()
    time.sleep(0.105)
    stopped, interrupted = s.stop()
    assert stopped and not interrupted and not s.alive
    assert 7 <= s.ticks <= 12
    with pytest.raises(ValueError):
        Sampler(meter, 0.0, 0.0)


def test_abandoned_window_stops_its_thread_when_collected():
    import gc

    win = measure(meter=SteadyMeter(), interval_s=0.005).begin()
    assert len(samplers()) == 1
    del win
    gc.collect()
    deadline = time.monotonic() + 1
    while samplers() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert samplers() == []


def test_readings_given_to_the_window_ride_on_the_sampler_ticks():
    seen: list[str] = []

    def memory():
        seen.append(threading.current_thread().name)

    def broken():
        raise OSError("cannot read")

    with measure(meter=SteadyMeter(), interval_s=0.01, also_each_tick=(memory, broken)) as m:
        time.sleep(0.06)
        assert [t.name for t in threading.enumerate() if t.name.startswith("llem-")] == ["llem-sampler"]
    ticks = m._sampler.ticks
    # every tick read it too (the first and the last on the thread that opens and closes
    # the window, the rest on the sampler's)
    assert len(seen) == ticks >= 4
    assert set(seen[1:-1]) == {"llem-sampler"} and seen[0] == seen[-1] == "MainThread"
    # the failing reading was dropped after its first error; the energy samples went on
    assert [str(e) for e in m._sampler.also_errors] == ["cannot read"]
    assert m.measurement.energy_j > 0 and len(m.measurement.timeline) >= 4


def test_pokes_take_the_due_ticks_and_the_thread_steps_back_until_they_stop():
    meter = SteadyMeter()
    meter.start()
    s = Sampler(meter, 0.01, time.perf_counter(), poke_slack_s=0.2)
    s.poke()
    assert meter.samples == 0  # nothing due yet: a poke reads nothing
    s.start()
    end = time.perf_counter() + 0.4
    while time.perf_counter() < end:  # a work loop poking between 1 ms steps
        s.poke()
        time.sleep(0.001)
    poked, by_thread = s.poked_ticks, s.ticks - s.poked_ticks
    assert poked >= 15
    assert by_thread <= 3  # the thread checks back every 0.2 s instead of every 0.01 s
    deadline = time.monotonic() + 5
    while s.ticks - poked < 10 and time.monotonic() < deadline:  # the pokes stop: it takes over
        time.sleep(0.01)
    assert s.ticks - poked >= 10 and s.poked_ticks == poked
    assert s.stop() == (True, False)
    times = [r[0] for r in s.rows]
    assert times == sorted(times)  # one tick at a time, in order, whoever took it


def test_a_meter_failing_on_a_poke_ends_the_sampling_and_raises_nothing_into_the_work():
    meter = SteadyMeter(fail_after=0)
    meter.start()
    s = Sampler(meter, 0.005, time.perf_counter(), poke_slack_s=5.0)
    s.start()
    time.sleep(0.001)
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:
        s.poke()
    assert "fell off the bus" in str(s.error) and s.error_t_s is not None
    deadline = time.monotonic() + 2
    while s.alive and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not s.alive and s.stop() == (True, False)


def test_a_window_poked_from_its_work_loop_records_the_same_kind_of_timeline():
    with measure(meter=SteadyMeter(), interval_s=0.01) as m:
        end = time.perf_counter() + 0.15
        while time.perf_counter() < end:
            m.poke()
            time.sleep(0.001)
    m.poke()  # after the window ends: nothing
    assert m._sampler.poked_ticks >= 8
    meas = m.measurement
    assert len(meas.timeline) >= 10 and meas.energy_j > 0


def test_pokes_further_apart_than_two_intervals_leave_the_thread_on_its_grid():
    meter = SteadyMeter()
    meter.start()
    s = Sampler(meter, 0.01, time.perf_counter(), poke_slack_s=0.5)
    s.start()
    end = time.perf_counter() + 0.4
    while time.perf_counter() < end:  # steps of 35 ms: too sparse to keep a 10 ms grid
        s.poke()
        time.sleep(0.035)
    assert s.stop() == (True, False)
    assert s.ticks - s.poked_ticks >= 20  # the thread kept sampling every interval
