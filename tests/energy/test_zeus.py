"""The zeus meter, against a stand-in ``zeus`` package with Zeus's ZeusMonitor API.

Zeus is not installed on the development machines. The stand-in below follows Zeus's
public API (``zeus.monitor.ZeusMonitor(gpu_indices=None, cpu_indices=None, ...)``,
``begin_window(key, sync_execution=True)``, ``end_window(key, sync_execution=True,
cancel=False)`` returning a ``Measurement`` with ``time``, ``gpu_energy``, ``cpu_energy``,
``dram_energy``; GPUs without an energy counter handled by a ``power_monitor`` with
``gpu_indices``; no RAPL permission is a RuntimeError only when cpu_indices are asked for),
and reads its GPUs from llem's FakeGpu counters.
"""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass

import pytest

from llem import plugins, spec
from llem.config import ExperimentConfig
from llem.energy import registry
from llem.energy.base import MeterUnavailableError
from llem.energy.window import measure
from llem.energy.zeus import TIMELINE_NOTE, ZeusMeter, cuda_index_for_nvml_device
from llem.errors import LlemError, MissingDependencyError
from llem.machine import Gpu, Machine, use_machine
from llem.testing import FakeGpu


@dataclass
class _Measurement:
    time: float
    gpu_energy: dict
    cpu_energy: dict | None = None
    dram_energy: dict | None = None


class _Package:
    """A RAPL package: CPU and DRAM counters growing at fixed watts (mJ)."""

    def __init__(self, cpu_w: float, dram_w: float | None) -> None:
        self.cpu_w, self.dram_w, self.t0 = cpu_w, dram_w, time.time()

    def read(self) -> tuple[float, float | None]:
        dt = time.time() - self.t0
        return self.cpu_w * dt * 1000.0, None if self.dram_w is None else self.dram_w * dt * 1000.0


def fake_zeus(gpus=(), packages=(), rapl_permission=True, version="0.16.0", init_error=None):
    """A ``zeus`` package whose ZeusMonitor reads ``gpus`` (FakeGpu) and RAPL ``packages``."""
    calls: dict[str, list] = {"init": [], "begin": [], "end": []}

    class PowerMonitor:
        def __init__(self, gpu_indices, update_period=None):
            self.gpu_indices = list(gpu_indices)

    class ZeusMonitor:
        def __init__(self, gpu_indices=None, cpu_indices=None, approx_instant_energy=False,
                     log_file=None, sync_execution_with="torch"):
            calls["init"].append({"gpu_indices": gpu_indices, "cpu_indices": cpu_indices})
            if init_error:
                raise RuntimeError(init_error)
            cpus = list(packages)
            if not rapl_permission:
                if cpu_indices:
                    raise RuntimeError("Root privilege is required to read RAPL metrics.")
                cpus = []
            self._gpus, self._cpus = list(gpus), cpus
            self.gpu_indices = gpu_indices if gpu_indices is not None else list(range(len(self._gpus)))
            self.cpu_indices = cpu_indices if cpu_indices is not None else list(range(len(cpus)))
            self.measurement_states: dict = {}
            old = [i for i in self.gpu_indices if not self._gpus[i].energy_counter]
            self.power_monitor = PowerMonitor(old) if old else None

        def _gpu_j(self, i):
            g = self._gpus[i]
            if g.energy_counter:
                return g.total_energy_mj() / 1000.0
            return g.power_mw() / 1000.0 * time.time()  # integrated by the poller

        def begin_window(self, key, sync_execution=True):
            if key in self.measurement_states:
                raise ValueError(f"Measurement window '{key}' already exists")
            calls["begin"].append((key, sync_execution))
            self.measurement_states[key] = (
                time.time(), {i: self._gpu_j(i) for i in self.gpu_indices},
                {i: self._cpus[i].read() for i in self.cpu_indices})

        def end_window(self, key, sync_execution=True, cancel=False):
            try:
                t0, g0, c0 = self.measurement_states.pop(key)
            except KeyError:
                raise ValueError(f"Measurement window '{key}' does not exist") from None
            calls["end"].append((key, sync_execution))
            cpu, dram = {}, {}
            for i in self.cpu_indices:
                c, d = self._cpus[i].read()
                cpu[i] = (c - c0[i][0]) / 1000.0
                if d is not None:
                    dram[i] = (d - c0[i][1]) / 1000.0
            return _Measurement(time.time() - t0, {i: self._gpu_j(i) - g0[i] for i in self.gpu_indices},
                                cpu or None, dram or None)

    zeus = types.ModuleType("zeus")
    zeus.__version__ = version
    monitor = types.ModuleType("zeus.monitor")
    monitor.ZeusMonitor = ZeusMonitor
    monitor.Measurement = _Measurement
    monitor.PowerMonitor = PowerMonitor
    zeus.monitor = monitor
    return zeus, monitor, calls


@pytest.fixture
def install_zeus(monkeypatch):
    """Install a stand-in zeus; returns the calls it saw."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)

    def install(**kw):
        zeus, monitor, calls = fake_zeus(**kw)
        monkeypatch.setitem(sys.modules, "zeus", zeus)
        monkeypatch.setitem(sys.modules, "zeus.monitor", monitor)
        monkeypatch.setattr("llem.energy.zeus.package_version", lambda name: None)
        return calls

    return install


def test_zeus_is_a_builtin_meter_and_a_choice():
    assert registry.get_meter_class("zeus") is ZeusMeter
    assert plugins.BUILTINS["meter"]["zeus"] == "llem.energy.zeus:ZeusMeter"
    assert "zeus" in spec.param("experiment.meter").choices
    assert ExperimentConfig(meter="zeus").meter == "zeus"


def test_missing_zeus_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "zeus", None)
    monkeypatch.setitem(sys.modules, "zeus.monitor", None)
    with pytest.raises(MissingDependencyError) as e:
        ZeusMeter().start()
    assert "pip install 'llem[zeus]'" in str(e.value)
    p = ZeusMeter().probe()
    assert not p.available and "llem[zeus]" in p.reason


@pytest.mark.gpu_path
def test_gpu_and_rapl_measured_in_a_window(install_zeus):
    calls = install_zeus(gpus=[FakeGpu(0, power_w=200.0), FakeGpu(1, power_w=100.0)],
                         packages=[_Package(50.0, 5.0)])
    with measure(meter="zeus", interval_s=0.05, devices=[1]) as m:
        time.sleep(0.2)
    meas = m.measurement
    by = {r.device: r for r in meas.devices}
    assert set(by) == {"gpu:1", "cpu:0", "ram:0"}  # only the GPU asked for
    assert calls["init"][0]["gpu_indices"] == [1]
    assert by["gpu:1"].method == "measured" and by["gpu:1"].kind == "gpu"
    assert by["gpu:1"].energy_j == pytest.approx(100.0 * meas.duration_s, rel=0.3)
    assert by["cpu:0"].energy_j == pytest.approx(50.0 * meas.duration_s, rel=0.3)
    assert by["ram:0"].kind == "ram" and by["ram:0"].method == "measured"
    assert meas.method == "measured"
    assert "zeus 0.16.0" in meas.source and meas.meter_versions["zeus"] == "0.16.0"
    assert all("zeus 0.16.0" in r.source for r in meas.devices)
    assert TIMELINE_NOTE in meas.notes
    assert {s.device for s in meas.timeline} == set(by)  # drawn at mean power
    assert len(calls["begin"]) == len(calls["end"]) == 1


@pytest.mark.gpu_path
def test_a_gpu_without_energy_counter_is_sampled_not_measured(install_zeus):
    install_zeus(gpus=[FakeGpu(0, compute_capability=(6, 0), energy_counter=False, power_w=80.0)])
    with measure(meter="zeus", interval_s=0.05) as m:
        time.sleep(0.1)
    (r,) = m.measurement.devices
    assert r.device == "gpu:0" and r.method == "sampled" and "PowerMonitor" in r.source
    assert m.measurement.method == "sampled"


@pytest.mark.gpu_path
def test_nvml_indices_are_translated_to_cuda_ones(install_zeus, monkeypatch, request):
    calls = install_zeus(gpus=[FakeGpu(0), FakeGpu(1), FakeGpu(2)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    machine = Machine.fake([Gpu(i, "NVIDIA H100", 9.0, uuid=f"GPU-{i}") for i in range(3)])
    stack = use_machine(machine)
    stack.__enter__()
    request.addfinalizer(lambda: stack.__exit__(None, None, None))
    assert cuda_index_for_nvml_device(0) == 1
    meter = ZeusMeter(devices=["gpu:0"])
    meter.start()
    (r,) = meter.stop()
    assert calls["init"][0]["gpu_indices"] == [1]  # Zeus counts as CUDA does
    assert r.device == "gpu:0" and r.model_inputs["zeus_gpu_index"] == 1
    with pytest.raises(LlemError, match="hidden by CUDA_VISIBLE_DEVICES"):
        ZeusMeter(devices=[1]).start()


def test_no_gpu_and_no_rapl_is_a_clear_error(install_zeus):
    install_zeus(gpus=[], packages=[], rapl_permission=False)
    with pytest.raises(MeterUnavailableError) as e:
        ZeusMeter().start()
    msg = str(e.value)
    assert "no NVIDIA GPU" in msg and "RAPL" in msg and "meter='estimate'" in msg
    p = ZeusMeter().probe()
    assert not p.available and "no NVIDIA GPU" in p.reason


def test_zeus_own_start_failure_becomes_a_llem_error(install_zeus):
    install_zeus(gpus=[FakeGpu(0)], init_error="NVML Shared Library Not Found")
    with pytest.raises(MeterUnavailableError, match="ZeusMonitor could not start.*Library Not Found"):
        ZeusMeter().start()
    assert not ZeusMeter().probe().available


def test_cpu_only_and_probe(install_zeus):
    calls = install_zeus(gpus=[], packages=[_Package(20.0, None)])
    meter = ZeusMeter()
    p = meter.probe()
    assert p.available and p.devices == ("cpu:0",) and p.method == "measured"
    meter.start()
    assert len(calls["init"]) == 1  # the probe's monitor is the one started
    time.sleep(0.05)
    (r,) = meter.stop()
    assert r.device == "cpu:0" and r.energy_j > 0


def test_baseline_then_run_reuse_one_monitor(install_zeus):
    calls = install_zeus(gpus=[FakeGpu(0, power_w=50.0)])
    with measure(meter=ZeusMeter(), interval_s=0.05, baseline_s=0.1, baseline_cache_ttl_s=0) as m:
        time.sleep(0.05)
    assert len(calls["init"]) == 1 and len(calls["begin"]) == 2
    assert m.measurement.baseline_power_w == pytest.approx(50.0, rel=0.3)


def test_sync_follows_torch_being_loaded(install_zeus, monkeypatch):
    calls = install_zeus(gpus=[FakeGpu(0)])
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    meter = ZeusMeter()
    meter.start()
    meter.stop()
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    meter.start()
    meter.stop()
    assert [s for _, s in calls["begin"]] == [False, True]


def test_monitor_kwargs_may_not_name_devices():
    with pytest.raises(LlemError, match="devices="):
        ZeusMeter(monitor_kwargs={"gpu_indices": [0]})
