"""The NVML meter on fake devices behind llem's device interface, and the pynvml layer."""

from __future__ import annotations

import types

import pytest

from llem.energy.nvml import (
    GpuDevice,
    NvmlLibrary,
    NvmlMeter,
    PynvmlDevice,
    PynvmlLibrary,
    gpu_indices,
)
from llem.errors import LlemError
from llem.testing import FakeGpu, FakeNvmlLibrary

MIB = 1024**2


def lib_with(*gpus: FakeGpu) -> FakeNvmlLibrary:
    return FakeNvmlLibrary(list(gpus))


def test_fakes_implement_the_interface(clock):
    assert isinstance(FakeGpu(clock=clock), GpuDevice)
    assert isinstance(FakeNvmlLibrary(), NvmlLibrary)
    assert isinstance(PynvmlLibrary(), NvmlLibrary)


def test_counter_path_is_measured(clock):
    gpu = FakeGpu(power_w=250.0, memory_used_mib=2048.0, clock=clock)
    lib = lib_with(gpu)
    m = NvmlMeter(library=lib, clock=clock)
    m.start()
    clock.advance(2.0)
    ((dev, p, e, mem),) = m.sample()
    assert dev == "gpu:0" and p == pytest.approx(250.0) and e == pytest.approx(500.0, abs=1e-3)
    assert mem == pytest.approx(2048.0)
    clock.advance(1.0)
    m.sample()
    (r,) = m.stop()
    assert r.method == "measured" and r.kind == "gpu"
    assert r.energy_j == pytest.approx(750.0, abs=1e-3)
    assert "nvmlDeviceGetTotalEnergyConsumption" in r.source
    assert r.model_inputs["compute_capability"] == 9.0
    assert r.model_inputs["energy_counter"] is True
    assert r.peak_memory_mib == pytest.approx(2048.0)
    assert lib.inits == lib.shutdowns == 1


def test_power_integration_path_is_sampled(clock):
    # power rises linearly 100 -> 300 W over 2 s: the trapezoid rule is exact
    gpu = FakeGpu(
        name="Tesla P100-PCIE-16GB",
        compute_capability=(6, 0),
        energy_counter=False,
        power_w=lambda t: 100.0 + 100.0 * t,
        clock=clock,
    )
    m = NvmlMeter(library=lib_with(gpu), clock=clock)
    m.start()
    for _ in range(4):
        clock.advance(0.5)
        m.sample()
    (r,) = m.stop()
    assert r.method == "sampled"
    assert r.energy_j == pytest.approx(400.0)
    assert "nvmlDeviceGetPowerUsage integrated" in r.source and "4 samples" in r.source
    assert r.model_inputs["energy_counter"] is False


def test_counter_and_integration_agree_on_steady_power(clock):
    counted = FakeGpu(index=0, power_w=300.0, clock=clock)
    sampled = FakeGpu(index=1, power_w=300.0, energy_counter=False, clock=clock)
    m = NvmlMeter(library=lib_with(counted, sampled), clock=clock)
    m.start()
    for _ in range(10):
        clock.advance(0.1)
        m.sample()
    readings = {r.device: r for r in m.stop()}
    assert readings["gpu:0"].energy_j == pytest.approx(readings["gpu:1"].energy_j, rel=1e-4)
    assert {readings["gpu:0"].method, readings["gpu:1"].method} == {"measured", "sampled"}


def test_memory_peak_tracks_the_highest_reading(clock):
    gpu = FakeGpu(memory_used_mib=lambda t: 1000.0 + (500.0 if 0.9 < t < 1.1 else 0.0), clock=clock)
    m = NvmlMeter(library=lib_with(gpu), clock=clock)
    m.start()
    for _ in range(3):
        clock.advance(0.5)
        m.sample()
    assert m.stop()[0].peak_memory_mib == pytest.approx(1500.0)


def test_device_selection(clock):
    lib = lib_with(FakeGpu(0, clock=clock), FakeGpu(1, clock=clock), FakeGpu(2, clock=clock))
    m = NvmlMeter(devices=[2, "gpu:0"], library=lib, clock=clock)
    m.start()
    assert [r[0] for r in m.sample()] == ["gpu:2", "gpu:0"]
    m.stop()
    with pytest.raises(LlemError, match="GPU index 5 does not exist: NVML sees 3 GPU"):
        NvmlMeter(devices=[5], library=lib).start()
    assert lib.inits == lib.shutdowns


def test_gpu_indices_parsing():
    assert gpu_indices(None) is None
    assert gpu_indices(1) == [1]
    assert gpu_indices(["gpu:3", 0, "cpu"]) == [3, 0]
    assert gpu_indices(["cpu"]) == []
    with pytest.raises(LlemError):
        gpu_indices([True])


def test_probe_reports_devices_counters_and_failures(clock):
    lib = lib_with(
        FakeGpu(0, clock=clock),
        FakeGpu(1, name="Tesla T4", compute_capability=(7, 5), energy_counter=False, clock=clock),
    )
    p = NvmlMeter(library=lib).probe()
    assert p.available and p.devices == ("gpu:0", "gpu:1") and p.method == "sampled"
    assert "energy counter" in p.reason and "no energy counter: power sampled" in p.reason
    assert "driver 550.54.15" in p.reason
    assert lib.inits == lib.shutdowns == 1
    p = NvmlMeter(library=FakeNvmlLibrary(init_error="NVML Shared Library Not Found")).probe()
    assert not p.available and "Shared Library Not Found" in p.reason
    p = NvmlMeter(library=FakeNvmlLibrary([])).probe()
    assert not p.available and "no GPU" in p.reason


class _NotSupported(Exception):
    pass


def test_pynvml_device_maps_not_supported_to_none():
    nv = types.SimpleNamespace(
        NVMLError_NotSupported=_NotSupported,
        nvmlDeviceGetTotalEnergyConsumption=lambda h: (_ for _ in ()).throw(_NotSupported()),
        nvmlDeviceGetPowerUsage=lambda h: 71_234,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 * MIB, total=16 * MIB),
        nvmlDeviceGetCudaComputeCapability=lambda h: (7, 0),
        nvmlDeviceGetName=lambda h: b"Tesla V100",
        nvmlDeviceGetUUID=lambda h: "GPU-abc",
    )
    d = PynvmlDevice(nv, object(), 0)
    assert d.total_energy_mj() is None
    assert d.power_mw() == 71_234.0
    assert d.memory_used_bytes() == 3 * MIB and d.memory_total_bytes() == 16 * MIB
    assert d.compute_capability() == (7, 0) and d.name() == "Tesla V100" and d.uuid() == "GPU-abc"
    nv.nvmlDeviceGetTotalEnergyConsumption = lambda h: 987_654
    assert d.total_energy_mj() == 987_654


def test_cuda_visible_devices_translation(monkeypatch):
    # the one mapping from CUDA ordinals to NVML records lives in llem.machine
    from llem.machine import Gpu, nvml_gpus_for_cuda

    gpus = [Gpu(i, "H100", 9.0, uuid=u) for i, u in enumerate(("GPU-aaaa", "GPU-bbbb", "GPU-cccc", "GPU-dddd"))]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [g.index for g in nvml_gpus_for_cuda([1], gpus)] == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert [g.index for g in nvml_gpus_for_cuda([0, 1], gpus)] == [3, 1]
    with pytest.raises(LlemError, match="sees 2 GPU"):
        nvml_gpus_for_cuda([2], gpus)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bb")
    assert [g.index for g in nvml_gpus_for_cuda([0], gpus)] == [1]
