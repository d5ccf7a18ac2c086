"""The runner meters exactly the GPUs the model is on, and peak memory is the run's own.

Runs go through llem's real NVML wrapper against FakePynvml (issue 15 items 1 and 5,
issue 13 item 5).
"""

from __future__ import annotations

import threading
import time

import pytest

import llem
from llem import plugins
from llem.backends.base import BatchOutput, LoadInfo, RequestOutput, cuda_ordinals, parallel_devices
from llem.config import ExperimentConfig
from llem.energy.memory import PeakMemory, reader_for
from llem.energy.nvml import PynvmlLibrary
from llem.errors import LlemError
from llem.machine import (
    Gpu,
    cuda_order,
    cuda_order_is_certain,
    nvml_gpus_for_cuda,
    probe,
    use_machine,
    visible_gpus,
)
from llem.results.figures import figure, figures_for
from llem.testing import FakeMigDevice, FakeNvmlGpu, FakePynvml, use_fake_pynvml

pytestmark = pytest.mark.gpu_path

MIB = 1024**2


class PlacedBackend:
    """A plugin backend whose model sits on the CUDA devices it is told (nothing is computed)."""

    name = "placed"
    cuda_devices: tuple[int, ...] = ()

    def load(self, config):
        device = f"cuda:{self.cuda_devices[0]}" if self.cuda_devices else "cpu"
        return LoadInfo(model_id=config.model, device=device, cuda_devices=self.cuda_devices)

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, prompts, on_phase=None):
        t0 = time.perf_counter()
        if on_phase:
            on_phase("prefill")
        time.sleep(0.03)
        if on_phase:
            on_phase("decode")
        time.sleep(0.03)
        t = time.perf_counter() - t0
        outs = tuple(RequestOutput(p, "ok", len(p.split()), 1, (t,)) for p in prompts)
        return BatchOutput(outs, t, t, t0_perf=t0)

    def release(self):
        pass


@pytest.fixture
def placed():
    saved = {k: dict(v) for k, v in plugins._registered.items()}
    plugins.register_backend("placed", PlacedBackend)
    yield PlacedBackend
    PlacedBackend.cuda_devices = ()
    for k, v in saved.items():
        plugins._registered[k].clear()
        plugins._registered[k].update(v)


def cfg(meter="nvml"):
    return ExperimentConfig.from_dict({"backend": "placed", "meter": meter, "model": "any", "repeats": 1,
                                       "warmup": {"runs": 0}, "sampling_interval_s": 0.01})


def three_gpus(**kw):
    return FakePynvml([FakeNvmlGpu(power_w=100.0 * (i + 1), memory_used_mib=1000.0 * (i + 1), **kw)
                       for i in range(3)])


# ---------------------------------------------------------------- the one mapping
def test_visible_devices_by_index_uuid_mig_and_order():
    gpus = (Gpu(0, "NVIDIA A10G", 8.6, 23028.0, "GPU-a10", pci_bus_id="00000000:18:00.0"),
            Gpu(1, "NVIDIA H100", 9.0, 81559.0, "GPU-h100", pci_bus_id="00000000:3B:00.0"),
            Gpu(2, "NVIDIA A100", 8.0, 40960.0, "GPU-a100", mig=True, mig_uuids=("MIG-aaa", "MIG-bbb"),
                pci_bus_id="00000000:86:00.0"))
    pci = [g.index for g in cuda_order(gpus, "PCI_BUS_ID")]
    assert pci == [0, 1, 2]
    assert [g.index for g in cuda_order(gpus, None)] == [1, 0, 2]  # fastest first: the H100 is 0
    assert not cuda_order_is_certain(gpus, None) and cuda_order_is_certain(gpus, "PCI_BUS_ID")
    idx = lambda v, o="PCI_BUS_ID": [g.index for g in visible_gpus(gpus, v, o)]  # noqa: E731
    assert idx("2,0") == [2, 0] and idx("GPU-h1") == [1] and idx("MIG-bbb") == [2]
    assert idx("MIG-GPU-a100/1/0") == [2]  # the older MIG id form names the parent GPU
    assert idx("1,7,0") == [1]  # CUDA stops at the first entry that names no GPU
    assert idx("GPU-") == []  # a prefix that names several GPUs names none
    assert idx("0", None) == [1]  # index 0 in CUDA's default order
    assert [g.index for g in nvml_gpus_for_cuda([1, 0], gpus, "2,0", "PCI_BUS_ID")] == [0, 2]
    with pytest.raises(LlemError, match="CUDA device 2 is not one NVML can match.*sees 2 GPU"):
        nvml_gpus_for_cuda([2], gpus, "2,0", "PCI_BUS_ID")


def test_backends_say_which_cuda_devices_the_model_is_on():
    assert cuda_ordinals({"model.embed": 0, "model.layers.0": 1, "lm_head": "cpu"}.values()) == (0, 1)
    assert cuda_ordinals(["cuda", "cuda:3", "disk", "meta"]) == (0, 3)
    assert parallel_devices({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}) == (0, 1, 2, 3)
    assert reader_for("pytorch", (0,)) == "torch" and reader_for("vllm", (0, 1)) == "nvml"
    assert reader_for("pytorch", ()) == "rss"


# ------------------------------------------------------------------ the runner
def test_a_run_meters_only_the_gpu_the_model_is_on(placed, monkeypatch):
    nv = three_gpus()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    placed.cuda_devices = (1,)  # CUDA's device 1 is NVML's GPU 0 here
    with use_fake_pynvml(nv):
        with use_machine(probe()):
            r = llem.run(cfg(), prompts=["a b c", "d e"])
    meas = r.runs[0].measurement
    assert meas.device_names == ("gpu:0",)
    assert [g["index"] for g in r.environment["metered_gpus"]] == [0]
    assert r.environment["metered_gpus"][0]["uuid"] == nv.gpus[0].uuid
    assert r.environment["tier"] == "hopper"
    # memory is NVML's for an engine outside torch, on that GPU only
    assert r.runs[0].peak_memory_mib == pytest.approx(1000.0)
    assert "NVML memory in use" in r.runs[0].memory_source and "gpu:0" in r.runs[0].memory_source
    assert nv.refcount == 0  # every init was shut down


def test_a_tensor_parallel_run_meters_each_of_its_gpus(placed, monkeypatch):
    nv = three_gpus()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    placed.cuda_devices = parallel_devices({"tensor_parallel_size": 2})
    with use_fake_pynvml(nv), use_machine(probe()):
        r = llem.run(cfg(), prompts=["a b c"])
    assert r.runs[0].measurement.device_names == ("gpu:0", "gpu:1")
    assert r.runs[0].peak_memory_mib == pytest.approx(3000.0)  # 1000 + 2000 MiB


def test_a_cpu_run_on_a_gpu_machine_meters_no_gpu(placed, monkeypatch):
    nv = three_gpus()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with use_fake_pynvml(nv), use_machine(probe()):
        r = llem.run(cfg("auto"), prompts=["a b c"])
        with pytest.raises(LlemError, match="no GPU was asked for"):
            llem.run(cfg("nvml"), prompts=["a b c"])
    names = r.runs[0].measurement.device_names
    assert names and not any(n.startswith("gpu") for n in names)
    assert r.environment["metered_gpus"] == [] and r.environment["tier"] == "cpu"
    assert "RSS" in r.runs[0].memory_source


def test_a_model_on_a_gpu_nvml_cannot_match_meters_nothing_and_says_why(placed, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    placed.cuda_devices = (0,)
    with use_fake_pynvml(FakePynvml([], init_error="LibraryNotFound")), use_machine(probe()):
        r = llem.run(cfg("auto"), prompts=["a b"])
    assert not any(n.startswith("gpu") for n in r.runs[0].measurement.device_names)
    assert any("No GPU energy was read" in n for n in r.notes)


# --------------------------------------------------------------------- memory
class FakeTorch:
    """torch.cuda's memory statistics per device, as the allocator keeps them."""

    def __init__(self, allocated: dict[int, int]) -> None:
        self.alloc = dict(allocated)
        self.peak = dict(allocated)
        self.resets: list[int] = []
        self.cuda = self

    def reset_peak_memory_stats(self, d):
        self.resets.append(d)
        self.peak[d] = self.alloc[d]

    def memory_allocated(self, d):
        return self.alloc[d]

    def max_memory_allocated(self, d):
        return self.peak[d]

    def use(self, d, extra):
        self.peak[d] = max(self.peak[d], self.alloc[d] + extra)


def test_torch_peaks_are_reset_per_run_for_every_device_of_the_model():
    torch = FakeTorch({0: 1000 * MIB, 1: 800 * MIB})
    torch.peak[1] = 5000 * MIB  # left over from an earlier run
    mem = PeakMemory("torch", cuda_devices=(0, 1), torch_module=torch)
    mem.start()
    torch.use(0, 200 * MIB)
    torch.use(1, 300 * MIB)
    peak, own = mem.stop()
    assert torch.resets == [0, 1]
    assert peak == pytest.approx(2300.0) and own == pytest.approx(500.0)
    assert "torch allocator peak, reset per run" in mem.source and "cuda:0, cuda:1" in mem.source


def test_rss_peak_is_reported_with_the_runs_own_rise_above_its_start():
    values = iter([900 * MIB, 950 * MIB, 1200 * MIB, 1000 * MIB])
    last = [900 * MIB]

    def rss():
        last[0] = next(values, last[0])
        return last[0]

    mem = PeakMemory("rss", rss=rss, interval_s=0.005)
    mem.start()
    time.sleep(0.05)
    peak, own = mem.stop()
    assert peak == pytest.approx(1200.0) and own == pytest.approx(300.0)
    assert mem.source == "process RSS peak, sampled"


def test_the_kernels_peak_rss_catches_what_sampling_between_ticks_misses():
    from llem.energy import memory

    if not memory.reset_rss_peak():
        pytest.skip("the kernel's peak RSS cannot be reset here (not Linux, or no permission)")
    mem = PeakMemory("rss")
    mem.start(background=False)
    assert not mem.samples  # nothing to read while the model runs
    block = b"\x01" * (256 * MIB)  # touched at once, freed before any sample could see it
    del block
    peak, own = mem.stop()
    assert own >= 250 and peak >= own
    assert mem.source == "process RSS peak: the kernel's high-water mark, reset at the run's start"


def test_rss_peak_without_a_thread_of_its_own_reads_when_asked():
    values = iter([900 * MIB, 1300 * MIB, 1000 * MIB])
    last = [900 * MIB]

    def rss():
        last[0] = next(values, last[0])
        return last[0]

    before = {t.name for t in threading.enumerate()}
    mem = PeakMemory("rss", rss=rss)
    mem.start(background=False)
    assert mem.samples and {t.name for t in threading.enumerate()} == before
    mem.sample()  # what the window's sampler does at each tick
    peak, own = mem.stop()
    assert peak == pytest.approx(1300.0) and own == pytest.approx(400.0)
    assert not PeakMemory("torch").samples


def test_nvml_memory_is_read_through_the_real_wrapper_per_gpu():
    nv = FakePynvml([FakeNvmlGpu(memory_used_mib=lambda t: 2000.0 + (500.0 if t > 0.02 else 0.0)),
                     FakeNvmlGpu(memory_used_mib=7000.0)])
    with use_fake_pynvml(nv):
        mem = PeakMemory("nvml", nvml_indices=(0,), interval_s=0.005, library=PynvmlLibrary())
        mem.start()
        time.sleep(0.06)
        peak, own = mem.stop()
    assert peak == pytest.approx(2500.0) and own == pytest.approx(500.0)  # GPU 1 is not the model's
    assert nv.refcount == 0


def test_a_mig_slice_reports_its_own_memory():
    nv = FakePynvml([FakeNvmlGpu(mig=True, mig_devices=[FakeMigDevice(memory_used_mib=300.0)])])
    with use_fake_pynvml(nv):
        m = probe()
    assert m.gpus[0].mig_uuids and visible_gpus(m.gpus, m.gpus[0].mig_uuids[0]) == (m.gpus[0],)


def test_the_runs_own_peak_is_a_figure_shown_next_to_the_peak():
    f = figure("run_peak_memory_mib")
    assert f.source == "memory_source" and f.unit == "MiB"
    for view in ("summary", "display", "report", "runs", "csv"):
        attrs = [x.attr for x in figures_for(view)]
        assert attrs.index("run_peak_memory_mib") == attrs.index("peak_memory_mib") + 1, view


def test_nvml_memory_that_cannot_open_its_gpu_shuts_nvml_down_and_says_why():
    nv = FakePynvml([FakeNvmlGpu()])
    with use_fake_pynvml(nv):
        mem = PeakMemory("nvml", nvml_indices=(5,), library=PynvmlLibrary())
        mem.start()
        assert mem.stop() == (None, None)
    assert nv.refcount == 0 and "memory reading failed" in mem.source and "gpu:5" in mem.source


def test_recording_the_environment_leaves_nvml_shut_down(monkeypatch):
    from llem import machine as mach
    from llem.runner import environment

    nv = three_gpus()
    monkeypatch.setattr(mach, "_current", None)  # restored after the test
    with use_fake_pynvml(nv):
        env = environment(LoadInfo(model_id="m", device="cuda:0", cuda_devices=(0,)), PlacedBackend(),
                          machine=mach.get_machine(refresh=True), metered=mach.get_machine().gpus[:1])
    assert env["gpu"] == "NVIDIA H100 80GB HBM3" and env["machine"]["gpus"][2]["pci_bus_id"]
    assert nv.inits >= 1 and nv.refcount == 0  # issue 15 item 12: every nvmlInit has its nvmlShutdown


def test_a_run_on_a_mig_slice_says_energy_is_the_whole_gpus(placed, monkeypatch):
    nv = FakePynvml([FakeNvmlGpu(name="NVIDIA A100-SXM4-40GB", compute_capability=(8, 0), mig=True,
                                 mig_devices=[FakeMigDevice(memory_used_mib=500.0)])])
    placed.cuda_devices = (0,)
    with use_fake_pynvml(nv):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", nv.gpus[0].mig_devices[0].uuid)
        with use_machine(probe()):
            r = llem.run(cfg(), prompts=["a b"])
    assert r.runs[0].measurement.device_names == ("gpu:0",) and r.environment["metered_gpus"][0]["mig"]
    assert any("MIG slice" in n and "whole GPU" in n for n in r.notes)
