"""llem's real pynvml wrapper run against FakePynvml, a stand-in for the pynvml module itself.

The fake behaves as the driver does (refcounted init, NVMLError subclasses, mJ and mW, a
counter that steps, power averaged over a window, MIG and multi-GPU layouts), so these
tests exercise PynvmlLibrary, PynvmlDevice, the NVML meter and the machine probe as they
would run on a GPU.
"""

from __future__ import annotations

import importlib.util
import inspect

import pytest

from llem import machine as mach
from llem.energy.nvml import NvmlMeter, PynvmlLibrary, counter_period
from llem.energy.window import measure
from llem.errors import LlemError, MeterReadError
from llem.testing import FakeMigDevice, FakeNvmlGpu, FakePynvml, NVMLError, use_fake_pynvml

pytestmark = pytest.mark.gpu_path

MIB = 1024**2


def make(*gpus: FakeNvmlGpu, clock=None, **kw) -> FakePynvml:
    return FakePynvml(list(gpus) or [FakeNvmlGpu()], clock=clock or (lambda: 0.0), **kw)


# ------------------------------------------------------------------ the fake itself
def test_calls_before_init_raise_uninitialized_and_init_is_refcounted(clock):
    nv = make(clock=clock)
    with pytest.raises(nv.NVMLError_Uninitialized):
        nv.nvmlDeviceGetCount()
    with pytest.raises(nv.NVMLError_Uninitialized):
        nv.nvmlShutdown()
    nv.nvmlInit()
    nv.nvmlInit()
    nv.nvmlShutdown()
    assert nv.nvmlDeviceGetCount() == 1  # one reference is still held
    nv.nvmlShutdown()
    assert nv.refcount == 0
    with pytest.raises(nv.NVMLError_Uninitialized):
        nv.nvmlDeviceGetHandleByIndex(0)


def test_errors_are_built_and_worded_as_pynvml_does():
    e = NVMLError(3)
    assert type(e).__name__ == "NVMLError_NotSupported" and isinstance(e, NVMLError)
    assert e.value == 3 and str(e) == "Not Supported"
    nv = make()
    assert isinstance(nv.NVMLError_GpuIsLost(), NVMLError) and str(nv.NVMLError_NoPermission()) == (
        "Insufficient Permissions")
    assert nv.NVML_ERROR_NOT_SUPPORTED == 3 and nv.NVML_ERROR_GPU_IS_LOST == 15


def test_units_counter_steps_and_power_is_a_window_mean(clock):
    # 100 W for 1 s then 500 W: a 10 Hz counter, power averaged over 1 s (Hopper)
    gpu = FakeNvmlGpu(power_w=lambda t: 100.0 if t < 1.0 else 500.0, counter_period_s=0.1,
                      power_window_s=1.0, counter_start_mj=1000)
    nv = make(gpu, clock=clock)
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    clock.advance(0.95)
    assert nv.nvmlDeviceGetTotalEnergyConsumption(h) == pytest.approx(1000 + 90_000, abs=2)  # as of 0.9 s
    clock.advance(0.55)  # t = 1.5 s: the last second is 0.5 s at 100 W and 0.5 s at 500 W
    assert nv.nvmlDeviceGetPowerUsage(h) == pytest.approx(300_000, abs=50)
    assert nv.nvmlDeviceGetTotalEnergyConsumption(h) == pytest.approx(1000 + 100_000 + 250_000, abs=2)
    mem = nv.nvmlDeviceGetMemoryInfo(h)
    assert mem.used == 1024 * MIB and mem.total == mem.used + mem.free


def test_mig_and_multi_gpu_layouts():
    a100 = FakeNvmlGpu(name="NVIDIA A100-SXM4-40GB", compute_capability=(8, 0), mig=True,
                       mig_devices=[FakeMigDevice(profile="3g.20gb"), FakeMigDevice()])
    t4 = FakeNvmlGpu(name="Tesla T4", compute_capability=(7, 5), mig=None)
    nv = make(a100, t4)
    nv.nvmlInit()
    assert nv.nvmlDeviceGetCount() == 2  # MIG devices are not counted
    h0, h1 = nv.nvmlDeviceGetHandleByIndex(0), nv.nvmlDeviceGetHandleByIndex(1)
    assert nv.nvmlDeviceGetMigMode(h0) == [1, 1]
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlDeviceGetMigMode(h1)
    m0 = nv.nvmlDeviceGetMigDeviceHandleByIndex(h0, 0)
    assert nv.nvmlDeviceGetUUID(m0).startswith("MIG-") and nv.nvmlDeviceIsMigDeviceHandle(m0)
    assert nv.nvmlDeviceGetName(m0).endswith("MIG 3g.20gb")
    with pytest.raises(nv.NVMLError_NotFound):
        nv.nvmlDeviceGetMigDeviceHandleByIndex(h0, 5)  # an empty slot
    with pytest.raises(nv.NVMLError_NotSupported):
        nv.nvmlDeviceGetTotalEnergyConsumption(m0)  # a slice has no counter of its own
    assert nv.nvmlDeviceGetHandleByUUID(nv.nvmlDeviceGetUUID(m0)) == m0
    bus = nv.nvmlDeviceGetPciInfo(h1).busId
    assert bus == "00000000:28:00.0" and nv.nvmlDeviceGetHandleByPciBusId(bus) == h1


def test_power_limits_need_permission():
    nv = make(FakeNvmlGpu(power_limit_w=700.0, power_limit_range_w=(200.0, 700.0)))
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    assert nv.nvmlDeviceGetPowerManagementLimit(h) == 700_000
    assert nv.nvmlDeviceGetPowerManagementLimitConstraints(h) == [200_000, 700_000]
    with pytest.raises(nv.NVMLError_NoPermission):
        nv.nvmlDeviceSetPowerManagementLimit(h, 300_000)
    nv.allow_power_limit = True
    with pytest.raises(nv.NVMLError_InvalidArgument):
        nv.nvmlDeviceSetPowerManagementLimit(h, 100_000)
    nv.nvmlDeviceSetPowerManagementLimit(h, 300_000)
    assert nv.nvmlDeviceGetEnforcedPowerLimit(h) == 300_000
    assert nv.nvmlDeviceGetCurrentClocksEventReasons(h) == nv.nvmlClocksEventReasonNone
    assert nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU) == 45


@pytest.mark.skipif(importlib.util.find_spec("pynvml") is None, reason="nvidia-ml-py is not installed")
def test_the_fake_uses_the_real_modules_names():
    import pynvml

    nv = make()
    ours = [n for n in dir(nv) if n.startswith(("nvml", "NVMLError", "NVML_"))]
    missing = [n for n in ours if not hasattr(pynvml, n)]
    assert not missing, f"FakePynvml names that pynvml {pynvml.__name__} lacks: {missing}"
    for n in ours:
        if n.startswith("NVML_ERROR_"):
            assert getattr(nv, n) == getattr(pynvml, n), n
        elif n.startswith("nvmlClocks"):
            assert getattr(nv, n) == getattr(pynvml, n), n
        elif n.startswith("NVMLError_"):
            real = str(getattr(pynvml, n)())  # without a driver pynvml words only the codes it knows
            assert getattr(nv, n)().value == getattr(pynvml, n)().value, n
            assert real.startswith("NVML Error with code") or str(getattr(nv, n)()) == real, n
        elif n.startswith("nvmlDevice") and callable(getattr(pynvml, n)):
            real = list(inspect.signature(getattr(pynvml, n)).parameters)
            fake = list(inspect.signature(getattr(nv, n)).parameters)
            assert len(fake) >= len([p for p in real if p != "version"]), n


# ------------------------------------------------------- llem's real wrapper on the fake
def test_the_wrapper_reads_the_fake_through_import_pynvml(clock):
    nv = make(FakeNvmlGpu(uuid="GPU-abc", pci_bus_id="00000000:3B:00.0"), clock=clock)
    with use_fake_pynvml(nv):
        lib = PynvmlLibrary()
        lib.init()
        dev = lib.device(0)
        assert dev.name() == "NVIDIA H100 80GB HBM3" and dev.uuid() == "GPU-abc"
        assert dev.pci_bus_id() == "00000000:3B:00.0" and dev.compute_capability() == (9, 0)
        assert dev.power_mw() == 300_000.0 and dev.memory_used_bytes() == 1024 * MIB
        lib.shutdown()
    assert nv.refcount == 0


def test_machine_probe_lists_gpus_with_bus_ids_and_mig_and_shuts_nvml_down():
    nv = make(FakeNvmlGpu(), FakeNvmlGpu(name="NVIDIA A100-SXM4-80GB", compute_capability=(8, 0), mig=True,
                                         mig_devices=[FakeMigDevice()]))
    with use_fake_pynvml(nv):
        m = mach.probe()
    assert [g.name for g in m.gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"]
    assert m.gpus[1].mig and m.gpus[1].mig_uuids == (nv.gpus[1].mig_devices[0].uuid,)
    assert m.gpus[0].pci_bus_id == "00000000:18:00.0" and m.gpus[0].energy_counter
    assert nv.inits == nv.shutdowns == 1 and nv.refcount == 0  # issue 15 item 12


def test_meter_probe_refuses_a_gpu_with_no_power_and_no_counter_and_says_why():
    nv = make(FakeNvmlGpu(name="GRID A100-4C", power_supported=False, energy_counter=False))
    with use_fake_pynvml(nv):
        p = NvmlMeter().probe()
        assert not p.available
        assert "gpu:0 GRID A100-4C gives neither an energy counter nor a power reading" in p.reason
        assert "experiment.meter='estimate'" in p.reason
        with pytest.raises(LlemError, match="neither an energy counter nor a power reading"):
            NvmlMeter().start()
    assert nv.refcount == 0


def test_a_gpu_without_power_readings_is_metered_by_its_counter(clock):
    nv = make(FakeNvmlGpu(power_w=200.0, power_supported=False), clock=clock)
    with use_fake_pynvml(nv):
        m = NvmlMeter(clock=clock)
        p = m.probe()
        assert p.available and "no power reading: power from the counter" in p.reason
        m.start()
        clock.advance(1.0)
        ((_, power, energy, _),) = m.sample()
        (r,) = m.stop()
    assert energy == pytest.approx(200.0, abs=0.01) and power == pytest.approx(200.0, abs=0.01)
    assert r.method == "measured" and r.model_inputs["power_reading"] is False


def test_a_counter_that_stops_answering_mid_run_raises_instead_of_a_negative_energy(clock):
    nv = make(FakeNvmlGpu(power_w=300.0), clock=clock)
    nv.fail("nvmlDeviceGetTotalEnergyConsumption", "NotSupported", after_s=2.0)
    with use_fake_pynvml(nv):
        m = NvmlMeter(clock=clock)
        m.start()
        clock.advance(1.0)
        assert m.sample()[0][2] == pytest.approx(300.0)
        clock.advance(1.5)
        with pytest.raises(MeterReadError, match=r"energy counter of gpu:0 \(NVIDIA H100.*stopped answering"):
            m.sample()
        (r,) = m.stop()
    assert r.energy_j == pytest.approx(300.0)  # what was read before, never negative
    assert nv.refcount == 0


def test_the_window_raises_the_read_error_and_keeps_the_partial_record():
    nv = FakePynvml([FakeNvmlGpu(power_w=300.0)])  # real time: the sampler thread runs
    with use_fake_pynvml(nv):
        nv.fail("nvmlDeviceGetTotalEnergyConsumption", "NotSupported", after_s=nv.now() + 0.05)
        win = measure(meter="nvml", interval_s=0.01)
        with pytest.raises(MeterReadError, match="cannot be known"):
            with win:
                import time

                time.sleep(0.15)
    meas = win.measurement
    assert not meas.complete and "MeterReadError" in (meas.error or "")
    assert all(e >= 0 for e in meas.energy_j_by_device.values())
    assert nv.refcount == 0


def test_a_lost_gpu_is_a_llem_error_naming_it_and_the_fix(clock):
    nv = make(FakeNvmlGpu(), FakeNvmlGpu(), clock=clock)
    nv.lose(1, after_s=1.0)
    with use_fake_pynvml(nv):
        m = NvmlMeter(devices=[1], clock=clock)
        m.start()
        clock.advance(2.0)
        with pytest.raises(MeterReadError, match=r"gpu:1.*GPU is lost.*nvidia-smi -r"):
            m.sample()
        m.stop()


def test_the_counter_period_is_estimated_and_reaches_the_measurement(clock):
    # a 10 Hz counter read every 25 ms: the reads see it step every 0.1 s
    nv = make(FakeNvmlGpu(power_w=300.0, counter_period_s=0.1), clock=clock)
    with use_fake_pynvml(nv):
        m = NvmlMeter(clock=clock)
        m.start()
        for _ in range(40):
            clock.advance(0.025)
            m.sample()
        (r,) = m.stop()
    assert m.counter_period_s == pytest.approx(0.1, abs=0.01)
    assert r.model_inputs["counter_period_s"] == pytest.approx(0.1, abs=0.01)
    assert r.energy_j == pytest.approx(300.0, abs=0.01)  # 1 s at 300 W, as of the last step


def test_counter_period_is_unknown_when_every_read_sees_a_new_value():
    assert counter_period([0.0, 0.1, 0.2, 0.3, 0.4], [0, 1, 2, 3, 4]) is None
    assert counter_period([0.0, 0.1], [0, 0]) is None
    assert counter_period([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], [0, 0, 5, 5, 9, 9, 14]) == 0.1


def test_a_window_records_the_counter_period():
    nv = FakePynvml([FakeNvmlGpu(power_w=300.0, counter_period_s=0.05)])
    with use_fake_pynvml(nv):
        with measure(meter="nvml", interval_s=0.01) as win:
            import time

            time.sleep(0.4)
    period = win.measurement.counter_period_s
    assert period is not None and 0.03 <= period <= 0.08
    assert type(win.measurement).from_dict(win.measurement.to_dict()).counter_period_s == period


def test_a_pynvml_error_at_start_is_a_llem_error_and_nvml_is_shut_down():
    nv = make(FakeNvmlGpu(), FakeNvmlGpu())
    nv.fail("nvmlDeviceGetCudaComputeCapability", "Unknown", gpu=1)
    with use_fake_pynvml(nv):
        with pytest.raises(MeterReadError, match=r"NVML could not read gpu:1: "
                                                 r"nvmlDeviceGetCudaComputeCapability failed \(Unknown Error\)"):
            NvmlMeter().start()
        p = NvmlMeter().probe()
        assert not p.available and "gpu:1" in p.reason
        assert NvmlMeter(devices=[0]).probe().available  # the other GPU is fine
    assert nv.refcount == 0


def test_init_failures_say_why(monkeypatch):
    with use_fake_pynvml(make(init_error="DriverNotLoaded")):
        p = NvmlMeter().probe()
        m = mach.probe()
    assert not p.available and "the NVIDIA kernel driver is not loaded" in p.reason
    assert m.gpus == () and "Driver Not Loaded" in m.gpu_note
