"""Validity flags: each fires when it should and not otherwise, survives JSON, and is shown
in the Result's display, compare(), the report banner, the sweep summary, %%llem and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import types
from pathlib import Path

import pytest

from llem.energy.conditions import (
    CpuTimes,
    child_pids,
    cpu_times,
    gpu_conditions,
    other_cpu_share,
    parse_proc_stat,
)
from llem.energy.measurement import DeviceReading, Measurement, Sample
from llem.energy.nvml import NvmlMeter, PynvmlDevice
from llem.results import RequestRecord, Result, RunMeasurement, compare
from llem.results.flags import FLAG_KINDS, Flag, flag_kind, result_flags, warning_ids
from llem.testing import FakeGpu, FakeNvmlLibrary


# ----------------------------------------------------------------------- builders
def proc_stat(user, system, idle, steal=0, cpus=2):
    """The text of a /proc/stat with these totals (ticks) over ``cpus`` CPUs."""
    lines = [f"cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0"]
    lines += [f"cpu{i} {user // cpus} 0 {system // cpus} {idle // cpus} 0 0 0 {steal // cpus} 0 0"
              for i in range(cpus)]
    return "\n".join(lines + ["intr 12345", "ctxt 999", "btime 1700000000"]) + "\n"


def reading(tmp_path, name, text, own_s):
    path = tmp_path / name
    path.write_text(text)
    return cpu_times(str(path), own=lambda: own_s)


def measurement(duration_s=1.0, samples=20, devices=(), counter_period_s=None, **kw):
    ts = [duration_s * i / max(1, samples - 1) for i in range(samples)]
    devices = devices or (DeviceReading("cpu", "cpu", 2.0, "estimated", "estimate"),)
    return Measurement(
        duration_s=duration_s, energy_j=sum(d.energy_j for d in devices),
        energy_j_by_device={d.device: d.energy_j for d in devices}, devices=tuple(devices),
        method="estimated", source="estimate", meter="estimate", interval_s=duration_s / max(1, samples - 1),
        timeline=tuple(Sample(t, "cpu", 2.0, 2.0 * t / duration_s) for t in ts),
        counter_period_s=counter_period_s, **kw)


def run(i, tps=100.0, energy_per_token_j=0.25, meas=None, complete=True):
    return RunMeasurement(
        index=i, duration_s=8 / tps, prefill_s=0.01, decode_s=8 / tps - 0.01, num_requests=2,
        input_tokens=10, output_tokens=8, padding_tokens=0, decode_waste_tokens=0, num_batches=1,
        tokens_per_s=tps, requests_per_s=tps / 4, energy_j=8 * energy_per_token_j, dynamic_energy_j=None,
        prefill_energy_j=None, decode_energy_j=None, energy_per_token_j=energy_per_token_j,
        dynamic_energy_per_token_j=None, energy_per_request_j=None, dynamic_energy_per_request_j=None,
        peak_memory_mib=None, memory_source="", flops_estimate=None,
        measurement=meas if meas is not None else measurement(), complete=complete,
        requests=(RequestRecord(prompt_id="p0", prompt="prompt 0", text="text 0", input_tokens=5,
                                output_tokens=4, batch=0, batch_start_s=0.0, token_times_s=(0.01, 0.02)),))


def result(runs=None, profile="publication", device="cpu", warmup=None, **kw):
    runs = runs if runs is not None else tuple(run(i) for i in range(3))
    return Result(model="tiny-random-llama", backend="pytorch", runs=tuple(runs),
                  config={"profile": profile, "baseline": {"max_spread": 0.2}},
                  environment={"device": device}, warmup=warmup or {"passes": 5}, **kw)


def ids(r, shares=()):
    return [f.id for f in result_flags(r, shares)]


def gpu_reading(gpu):
    """One window of the NVML meter over ``gpu``: its DeviceReading (conditions at start and end)."""
    meter = NvmlMeter(library=FakeNvmlLibrary([gpu]))
    meter.start()
    meter.sample()
    (r,) = meter.stop()
    return r


def gpu_result(*gpus_per_run, device="cuda:0"):
    """A result whose runs were measured by the NVML meter on the given fake GPUs (one per run)."""
    runs = [run(i, meas=measurement(devices=(gpu_reading(g),))) for i, g in enumerate(gpus_per_run)]
    return result(runs, device=device)


# ---------------------------------------------------------------- the table itself
def test_every_kind_has_a_check_a_severity_and_advice():
    assert len({k.id for k in FLAG_KINDS}) == len(FLAG_KINDS)
    for k in FLAG_KINDS:
        assert k.severity in ("info", "warning") and k.fires and k.advice
    assert flag_kind("machine-busy").threshold == 0.2
    with pytest.raises(Exception, match="runs-disagree"):
        flag_kind("runs-disagre")
    with pytest.raises(ValueError, match="severity"):
        Flag("x", "fatal", "m", 1.0)


def test_docs_list_every_flag_with_its_severity():
    text = (Path(__file__).resolve().parents[1] / "docs" / "energy.md").read_text(encoding="utf-8")
    for k in FLAG_KINDS:
        assert f"| `{k.id}` | {k.severity} |" in text, k.id


def test_a_quiet_steady_result_carries_no_flag():
    assert result_flags(result(), [0.02, 0.05, None]) == ()


# ------------------------------------------------------------------- machine-busy
def test_proc_stat_is_parsed_and_other_processes_share_computed(tmp_path):
    busy, steal, total, cpus = parse_proc_stat(proc_stat(1000, 500, 8000, steal=500, cpus=4), 100.0)
    assert (busy, steal, total, cpus) == (15.0, 5.0, 100.0, 4)
    # 10 s on 2 CPUs: 20 CPU-seconds; busy rose 12 s of which this process used 2 s, steal 1 s
    a = reading(tmp_path, "a", proc_stat(10_000, 2_000, 50_000), own_s=30.0)
    b = reading(tmp_path, "b", proc_stat(10_000 + 1000, 2_000 + 200, 50_000 + 700, steal=100), own_s=32.0)
    assert isinstance(a, CpuTimes) and a.cpus == 2
    assert other_cpu_share(a, b) == pytest.approx((12.0 - 2.0 + 1.0) / 20.0)


def test_machine_busy_fires_on_a_busy_machine_and_not_on_a_quiet_one(tmp_path):
    a = reading(tmp_path, "a", proc_stat(10_000, 2_000, 50_000), own_s=30.0)
    busy = reading(tmp_path, "b", proc_stat(11_400, 2_200, 50_400), own_s=33.0)  # others 13 of 20 s
    quiet = reading(tmp_path, "q", proc_stat(10_300, 2_000, 51_700), own_s=32.5)  # others 0.5 of 20 s
    share = other_cpu_share(a, busy)
    assert share == pytest.approx(0.65)
    (flag,) = result_flags(result(), [0.01, share, None])
    assert flag.id == "machine-busy" and flag.severity == "warning" and flag.value == pytest.approx(0.65)
    assert flag.message == "other processes used 65% of the CPUs while measuring (run 2 of 3)"
    assert ids(result(), [other_cpu_share(a, quiet)] * 3) == []


def test_no_proc_stat_gives_no_flag_not_an_error(tmp_path):
    assert cpu_times(str(tmp_path / "no-such-file")) is None
    assert cpu_times(str(tmp_path)) is None  # a folder, not a file
    (tmp_path / "junk").write_text("nothing here\n")
    assert cpu_times(str(tmp_path / "junk")) is None
    a = CpuTimes(10, 0, 100, 1, cpus=2)
    assert other_cpu_share(None, a) is None and other_cpu_share(a, None) is None
    assert other_cpu_share(a, CpuTimes(10.2, 0, 100.5, 1, cpus=2)) is None  # too short to tell
    assert ids(result(), [None, None, None]) == []


def test_this_runs_children_count_as_its_own(tmp_path):
    from llem.energy.conditions import own_cpu_s

    me = os.getpid()
    tree = {me: "101 102", 101: "103", 102: "", 103: ""}
    for pid, kids in tree.items():
        (tmp_path / str(pid) / "task" / str(pid)).mkdir(parents=True)
        (tmp_path / str(pid) / "task" / str(pid) / "children").write_text(kids + " \n")
        # utime 200 + stime 100 ticks, reaped children 0: 3 s at 100 Hz
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (a (b) c) S " + "1 " * 10 + "200 100 0 0 20 0\n")
    assert child_pids(str(tmp_path)) == {101, 102, 103}  # grandchildren too
    t = os.times()
    alone = t.user + t.system + t.children_user + t.children_system
    ticks = os.sysconf("SC_CLK_TCK")
    assert own_cpu_s(str(tmp_path)) == pytest.approx(alone + 3 * 300 / ticks, abs=0.05)


def test_this_process_reads_proc_stat_and_its_own_cpu_time():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat on this platform")
    t = cpu_times()
    assert t is not None and t.total_s > 0 and t.own_s > 0 and t.cpus >= 1
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in child_pids()  # an engine's worker process is this run's
    finally:
        child.kill()
        child.wait()


def test_the_runner_reads_proc_stat_once_at_each_runs_start_and_end(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import llem
    import llem.runner as runner

    texts = [proc_stat(10_000, 2_000, 50_000), proc_stat(11_400, 2_200, 50_400)]
    calls = []

    def fake_cpu_times():
        calls.append(1)
        path = tmp_path / f"stat{len(calls)}"
        path.write_text(texts[(len(calls) - 1) % 2])
        return cpu_times(str(path), own=lambda: 30.0 + 3.0 * ((len(calls) - 1) % 2))

    monkeypatch.setattr(runner, "cpu_times", fake_cpu_times)
    r = llem.run({"model": "tiny-random-llama", "repeats": 2, "meter": "estimate", "num_prompts": 2,
                  "sampling_interval_s": 0.02, "decoder": {"max_new_tokens": 3}, "warmup": {"runs": 0}})
    assert len(calls) == 4  # two readings per measured run, none per sample
    busy = next(f for f in r.flags if f.id == "machine-busy")
    assert busy.value == pytest.approx(0.65) and "65% of the CPUs" in busy.message
    assert "quick-profile" in [f.id for f in r.flags]  # the config's default profile, an info
    # kept in JSON, and in the saved file
    back = Result.from_dict(json.loads(r.to_json()))
    assert back.flags == r.flags and back == r
    saved = r.save(tmp_path / "res")
    from llem.results import load_result

    assert load_result(saved).flags == r.flags
    # a platform without /proc/stat: no flag, no error
    monkeypatch.setattr(runner, "cpu_times", lambda: None)
    quiet = llem.run({"model": "tiny-random-llama", "repeats": 1, "meter": "estimate", "num_prompts": 1,
                      "decoder": {"max_new_tokens": 2}, "warmup": {"runs": 0}})
    assert "machine-busy" not in [f.id for f in quiet.flags]


# ------------------------------------------------------------------ runs-disagree
def test_runs_disagree_fires_on_a_spread_above_the_threshold():
    steady = result([run(0, 100.0), run(1, 105.0), run(2, 95.0)])
    assert ids(steady) == []
    spread = result([run(0, 50.0), run(1, 150.0), run(2, 100.0)])
    (flag,) = result_flags(spread)
    assert flag.id == "runs-disagree" and flag.value == pytest.approx(0.5)
    assert flag.message.startswith("throughput varies by 50% across the 3 runs")
    energy = result([run(0, energy_per_token_j=0.1), run(1, energy_per_token_j=0.3)])
    (flag,) = result_flags(energy)
    assert "energy per output token varies by 71%" in flag.message
    assert ids(result([run(0, 50.0)])) == []  # one run: nothing to disagree with
    assert ids(result([run(0, 50.0), run(1, 150.0, complete=False)])) == []  # a partial run is left out


# -------------------------------------------------------------------- short-window
def test_short_window_fires_on_few_samples_or_a_window_shorter_than_the_counter():
    assert ids(result([run(0, meas=measurement(samples=12))])) == []
    (flag,) = result_flags(result([run(0, meas=measurement(samples=4, duration_s=0.3))]))
    assert flag.id == "short-window" and flag.value == 4
    assert "only 4 power samples" in flag.message and "fewer than 10" in flag.message
    (flag,) = result_flags(result([run(0, meas=measurement(samples=40, duration_s=0.05,
                                                            counter_period_s=0.1))]))
    assert "lasted 0.05 s, less than the energy counter's update period (0.1 s)" in flag.message
    assert flag.value == pytest.approx(0.05)
    assert ids(result([run(0, meas=measurement(samples=40, duration_s=2.0, counter_period_s=0.1))])) == []
    none = dataclasses.replace(run(0), measurement=None)
    assert ids(result([none])) == []  # meter="none": no window to judge


# ---------------------------------------------------------------- existing notes
def test_noisy_baseline_warmup_and_quick_profile_are_flags():
    noisy = measurement(baseline_power_w=10.0, baseline_spread_w=5.0)
    (flag,) = result_flags(result([run(0, meas=noisy)]))
    assert flag.id == "noisy-baseline" and flag.value == 0.5 and "50%" in flag.message
    assert ids(result([run(0, meas=measurement(baseline_power_w=10.0, baseline_spread_w=1.0))])) == []
    unsettled = result(warmup={"passes": 20, "adaptive": True, "converged": False, "final_cv": 0.12,
                               "cv_threshold": 0.05})
    (flag,) = result_flags(unsettled)
    assert flag.id == "warmup-unsettled" and flag.value == 0.12
    assert "20 passes" in flag.message and "12%" in flag.message and "threshold 5%" in flag.message
    assert ids(result(warmup={"passes": 6, "adaptive": True, "converged": True})) == []
    quick = result(profile="quick", warmup={"passes": 1})
    (flag,) = result_flags(quick)
    assert flag.id == "quick-profile" and flag.severity == "info" and flag.value == 1
    assert "1 warmup pass, no thermal wait" in flag.message


# ------------------------------------------------------------------------- GPUs
@pytest.mark.gpu_path
def test_the_nvml_meter_keeps_the_gpu_conditions_at_the_window_start_and_end():
    gpu = FakeGpu(processes=[os.getpid(), 4242], clock_reasons=0x41, temperature=61.0, mig=True)
    r = gpu_reading(gpu)
    cond = r.model_inputs["conditions"]
    for at in ("start", "end"):
        assert cond[at] == {"pids": [4242, os.getpid()] if 4242 < os.getpid() else [os.getpid(), 4242],
                            "own_pids": [os.getpid()], "clock_event_reasons": 0x41,
                            "temperature_c": 61.0, "mig": True}
    assert gpu.calls["running_processes"] == gpu.calls["temperature_c"] == 2  # start and end, not per sample
    back = Measurement.from_dict(json.loads(json.dumps(measurement(devices=(r,)).to_dict())))
    assert back.devices[0].model_inputs["conditions"] == cond
    # readings a GPU does not support are left out; one that raises never fails the window
    bare = gpu_conditions(FakeGpu(processes=None, clock_reasons=None, temperature=None))
    assert bare == {"mig": False}

    class Broken(FakeGpu):
        def temperature_c(self):
            raise RuntimeError("driver hiccup")

    assert "temperature_c" not in gpu_conditions(Broken())


@pytest.mark.gpu_path
def test_gpu_shared_fires_when_another_process_has_a_context():
    me = os.getpid()
    assert ids(gpu_result(FakeGpu(processes=[me]))) == []
    assert ids(gpu_result(FakeGpu(processes=None))) == []  # not supported: no flag
    (flag,) = result_flags(gpu_result(FakeGpu(processes=[me, 4242, 4343])))
    assert flag.id == "gpu-shared" and flag.value == 2
    assert flag.message.startswith("2 other processes had compute contexts on gpu:0")
    # in a container NVML lists host ids: none is ours, one is taken to be this run
    assert ids(gpu_result(FakeGpu(processes=[999_991]))) == []
    (flag,) = result_flags(gpu_result(FakeGpu(processes=[999_991, 999_992])))
    assert flag.value == 1 and "PID namespace" in flag.message
    # a run on the CPU does not own the GPU's context: every process there is another's
    (flag,) = result_flags(gpu_result(FakeGpu(processes=[999_991]), device="cpu"))
    assert flag.value == 1


@pytest.mark.gpu_path
def test_mig_throttling_and_power_cap():
    (flag,) = result_flags(gpu_result(FakeGpu(mig=True)))
    assert flag.id == "mig-whole-gpu" and "whole GPU" in flag.message and flag.value == 1
    (flag,) = result_flags(gpu_result(FakeGpu(clock_reasons=0x40 | 0x1)))
    assert flag.id == "throttled" and flag.message == "gpu:0's clocks were slowed while measuring: HW thermal slowdown"
    assert flag.value == 0x41
    assert ids(gpu_result(FakeGpu(clock_reasons=0x1))) == []  # idle is not a slowdown
    assert ids(gpu_result(FakeGpu(clock_reasons=None))) == []
    (flag,) = result_flags(gpu_result(FakeGpu(clock_reasons=0x4)))
    assert flag.id == "power-capped" and flag.severity == "info"


@pytest.mark.gpu_path
def test_thermal_drift_fires_when_the_gpu_warms_across_runs():
    def gpu(*temps):
        seq = list(temps)  # read at each window's start and end
        return FakeGpu(temperature=lambda t: seq.pop(0) if len(seq) > 1 else seq[0])

    r = gpu_result(gpu(50.0, 60.0), gpu(60.0, 66.0), gpu(66.0, 71.0))
    (flag,) = result_flags(r)
    assert flag.id == "thermal-drift" and flag.value == 11
    assert flag.message == "gpu:0 warmed from 60 °C to 71 °C across the 3 runs (+11 °C)"
    assert ids(gpu_result(gpu(60.0, 62.0), gpu(62.0, 63.0))) == []  # within 5 °C
    assert ids(gpu_result(gpu(60.0, 70.0))) == []  # one run: no across-runs drift


@pytest.mark.gpu_path
def test_the_pynvml_layer_uses_the_real_names_and_treats_not_supported_as_none():
    class NotSupported(Exception):
        pass

    def unsupported(*a):
        raise NotSupported()

    nv = types.SimpleNamespace(
        NVMLError=Exception, NVMLError_NotSupported=NotSupported, NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [types.SimpleNamespace(pid=7, usedGpuMemory=1)],
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x20,
        nvmlDeviceGetTemperature=lambda h, sensor: 64 if sensor == 0 else 99)
    dev = PynvmlDevice(nv, "h", 0)
    assert dev.running_processes() == [7] and dev.clock_event_reasons() == 0x20 and dev.temperature_c() == 64.0
    old = types.SimpleNamespace(NVMLError=Exception, NVMLError_NotSupported=NotSupported,
                                nvmlDeviceGetCurrentClocksThrottleReasons=lambda h: 0x8)
    assert PynvmlDevice(old, "h", 0).clock_event_reasons() == 0x8  # bindings before the rename
    none = types.SimpleNamespace(
        NVMLError=Exception, NVMLError_NotSupported=NotSupported, NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetComputeRunningProcesses=unsupported, nvmlDeviceGetCurrentClocksEventReasons=unsupported,
        nvmlDeviceGetTemperature=unsupported)
    d = PynvmlDevice(none, "h", 0)
    assert d.running_processes() is None and d.clock_event_reasons() is None and d.temperature_c() is None


# ------------------------------------------------------------------- JSON, displays
def flagged():
    r = result()
    return dataclasses.replace(r, flags=result_flags(r, [0.63]) + (
        Flag("quick-profile", "info", "measured with the quick profile: not for publication", 1.0),))


def test_flags_survive_json_and_old_files_load():
    r = flagged()
    d = json.loads(r.to_json())
    assert d["flags"][0] == {"id": "machine-busy", "severity": "warning", "value": 0.63,
                             "message": "other processes used 63% of the CPUs while measuring"}
    back = Result.from_dict(d)
    assert back.flags == r.flags and back.warnings == r.flags[:1]
    del d["flags"]  # a file from an llem before flags
    assert Result.from_dict(d).flags == ()
    d["flags"] = [{"id": "x", "severity": 3, "message": "m"}]
    with pytest.raises(Exception, match="severity"):
        Result.from_dict(d)


def test_the_result_shows_its_flags():
    r = flagged()
    text = repr(r)
    assert "WARNING machine-busy: other processes used 63% of the CPUs while measuring" in text
    assert "info quick-profile:" in text
    assert text.index("machine-busy") < text.index("throughput")  # before the figures
    page = r._repr_html_()
    assert "1 validity warning" in page and "other processes used 63%" in page
    assert repr(result()).count("WARNING") == 0


def test_compare_shows_which_rows_carry_warnings():
    a, b = flagged(), dataclasses.replace(result(), name="quiet")
    c = compare([a, b])
    rows = c.rows()
    assert rows[0]["warnings"] == ["machine-busy"] and rows[1]["warnings"] == []
    head, body = c.cells()
    assert head[-1] == "warnings" and body[0][-1] == "machine-busy" and body[1][-1] == "-"
    assert "warnings" in repr(c) and "machine-busy" in c._repr_html_()
    assert "warnings" not in compare([b, b]).cells()[0]  # no column when no row carries one


def test_the_report_has_a_banner_per_flag(tmp_path):
    pytest.importorskip("altair")
    from llem.report.content import build_report
    from llem.report.render import render_html, render_markdown

    rep = build_report(flagged(), charts=False)
    warn = [t for lv, t in rep.banners if lv == "warn" and t.startswith("machine-busy")]
    assert len(warn) == 1 and "63% of the CPUs" in warn[0] and "What to do: close other programs" in warn[0]
    assert not any(t.startswith("quick-profile") for _, t in rep.banners)  # NOT FOR PUBLICATION says it
    html_text = render_html(rep)
    assert 'class="banner warn"' in html_text and "other processes used 63% of the CPUs" in html_text
    md = render_markdown(rep, tmp_path, "charts")
    assert "other processes used 63% of the CPUs" in md
    from llem.report.content import table_rows

    assert [row["warnings"] for row in table_rows(flagged())] == ["machine-busy"] * 3  # the CSV's column
    two = build_report([flagged(), dataclasses.replace(flagged(), id="b2", name="b")], charts=False)
    (both,) = [t for _, t in two.banners if t.startswith("machine-busy")]
    assert both.count("other processes used 63%") == 2  # one banner naming each result


def test_warning_ids_and_the_magic_run_report():
    from llem.magic import RunReport

    r = flagged()
    assert warning_ids(r.flags) == ["machine-busy"]
    rr = RunReport(r, n_text=1, timeline=False)
    bundle = rr._repr_mimebundle_()
    assert bundle["text/plain"].startswith("WARNING machine-busy: other processes used 63%")
    assert bundle["text/plain"].index("WARNING") < bundle["text/plain"].index("> prompt")
    assert "1 validity warning" in bundle["text/html"]
    # with no text and no timeline asked for, nothing extra: the Result's display has them
    assert not RunReport(r, n_text=0, timeline=False).has_content()
    assert "WARNING" not in RunReport(result(), n_text=1, timeline=False)._repr_mimebundle_()["text/plain"]


# ------------------------------------------------------------ faces: sweep, CLI, %%llem
@pytest.fixture
def busy_machine(monkeypatch, tmp_path):
    """Every measured run sees other processes use 65% of the CPUs (fake /proc/stat readings)."""
    import llem.runner as runner

    texts = [proc_stat(10_000, 2_000, 50_000), proc_stat(11_400, 2_200, 50_400)]
    calls = []

    def fake_cpu_times():
        calls.append(1)
        k = (len(calls) - 1) % 2
        path = tmp_path / f"stat{len(calls)}"
        path.write_text(texts[k])
        return cpu_times(str(path), own=lambda: 30.0 + 3.0 * k)

    monkeypatch.setattr(runner, "cpu_times", fake_cpu_times)
    return calls


TINY = {"model": "tiny-random-llama", "prompts": ["Hello there"], "repeats": 1, "meter": "estimate",
        "sampling_interval_s": 0.02, "decoder": {"max_new_tokens": 2}, "warmup": {"runs": 0}}


def test_the_sweep_summary_shows_which_rows_carry_warnings(busy_machine, tmp_path):
    pytest.importorskip("torch")
    import llem

    res = llem.sweep({**TINY, "study": {"cycles": 1}}, {"decoder.max_new_tokens": [2, 3]},
                     results_dir=tmp_path / "sweep", progress=False)
    rows = res.summary()
    assert [row["warnings"].get("machine-busy") for row in rows] == [1, 1]
    text = repr(res)
    assert "warnings" in text.splitlines()[0] and "machine-busy (1/1 cycles)" in text
    assert "machine-busy" in res._repr_html_()
    assert "machine-busy" in [w for row in res.compare().rows() for w in row["warnings"]]


def test_the_cli_shows_warnings_even_when_quiet(busy_machine, tmp_path):
    pytest.importorskip("click")
    import yaml
    from click.testing import CliRunner

    from llem.cli import cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    res = CliRunner().invoke(cli, ["run", str(cfg), "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "WARNING machine-busy: other processes used 65% of the CPUs" in res.stdout
    res = CliRunner().invoke(cli, ["run", str(cfg), "-q", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "warning: machine-busy: other processes used 65% of the CPUs" in res.stderr
    assert "llem result" not in res.stdout


def test_the_magic_shows_warnings_above_the_text(busy_machine):
    pytest.importorskip("IPython")
    from IPython.testing.globalipapp import get_ipython
    from IPython.utils.capture import capture_output

    ip = get_ipython()
    ip.run_line_magic("load_ext", "llem")
    with capture_output() as c:
        r = ip.run_cell_magic("llem", "-m tiny-random-llama -n 2 -r 1 --meter estimate --no-live", "Hello there\n")
    assert "machine-busy" in [f.id for f in r.warnings]
    shown, *charts = c.outputs  # the run report, then its timeline as an image of its own
    assert all("image/svg+xml" in ch.data for ch in charts)
    text = shown.data["text/plain"]
    assert text.startswith("WARNING machine-busy: other processes used 65%") and "> Hello there" in text
    assert "validity warning" in shown.data["text/html"]
    data, _ = ip.display_formatter.format(r)
    assert "WARNING machine-busy" in data["text/plain"] and "validity warning" in data["text/html"]
