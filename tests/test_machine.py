"""The machine layer: typed records of GPUs, CPU and packages; targets decided in one place."""

from __future__ import annotations

import pytest

from llem import machine as mach
from llem.energy.base import MeterUnavailableError
from llem.energy.nvml import NvmlMeter, PynvmlLibrary
from llem.machine import Gpu, Machine, get_machine, probe, use_machine, where
from llem.testing import FakeGpu, FakeNvmlLibrary


def test_probe_reads_gpus_through_nvml_fakes(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    lib = FakeNvmlLibrary([FakeGpu(0, compute_capability=(8, 6), name="NVIDIA A10G",
                                   memory_total_mib=23028.0, uuid="GPU-a10g"),
                           FakeGpu(1, compute_capability=(9, 0), mig=True)])
    m = probe(lib)
    assert m.source == "nvml" and m.driver == "550.54.15" and m.gpu_note == ""
    assert m.gpus[0] == Gpu(0, "NVIDIA A10G", 8.6, 23028.0, "GPU-a10g", False, True)
    assert m.gpus[1].mig is True and m.gpus[1].tier.name == "hopper"
    # the GPU CUDA numbers 0 (a run's): in PCI order the A10G; CUDA's default order puts the
    # fastest first, and CUDA_VISIBLE_DEVICES picks the one a run gets
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert m.gpu_count == 2 and m.cc == 8.6
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    assert m.cc == 9.0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a10g")
    assert m.cc == 8.6
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert m.cc_of([0]) == 8.6 and m.cc_of() == 8.6  # the weakest GPU decides for a set
    assert lib.inits == lib.shutdowns == 1


def test_probe_never_raises_and_says_why_there_is_no_gpu():
    m = probe(FakeNvmlLibrary(init_error="no driver"))
    assert m.gpus == () and m.cc is None and m.tier.name == "cpu"
    assert m.source == "none" and "no driver" in m.gpu_note
    assert probe(FakeNvmlLibrary([])).gpu_note == "NVML sees no GPU"


def test_the_real_nvml_layer_here_fails_cleanly():
    """On machines without a driver: no GPU, and the NVML meter's probe says why."""
    pytest.importorskip("pynvml")
    lib = PynvmlLibrary()
    try:
        lib.init()
    except MeterUnavailableError as exc:
        assert "NVML could not start" in str(exc)
        assert probe().gpus == ()
        assert not NvmlMeter().probe().available
    else:  # a GPU machine
        lib.shutdown()
        assert probe().gpus


def test_facts_are_what_the_skip_rules_read():
    m = Machine.fake(gpus=[("NVIDIA H100", 9.0)], packages={"flash_attn": True})
    facts = m.facts()
    assert facts["gpu_count"] == 1 and facts["cc"] == 9.0 and facts["cuda"] is True
    assert facts["packages"]["flash_attn"] is True and facts["packages"]["bitsandbytes"] is False
    # every package a rule or a gate of the table names is reported
    for name in ("flash_attn", "flash_attn_interface", "bitsandbytes"):
        assert name in facts["packages"]


def test_use_machine_swaps_the_machine_for_everyone():
    fake = Machine.fake(gpus=[("Tesla T4", 7.5)])
    with use_machine(fake):
        assert get_machine() is fake
        assert get_machine(refresh=True) is fake
    assert get_machine() is not fake


def test_where_words_a_target_as_the_target_and_this_machine_as_itself():
    cpu = Machine.fake()
    w = where(None, cpu)
    assert w.cc is None and w.words == "this machine (CPU only)" and not w.is_target
    t = where("T4", cpu)
    assert t.cc == 7.5 and t.is_target and t.words.startswith("the target 'T4'")
    assert "GPU" not in where(None, cpu).words
    gpu = where(None, Machine.fake(gpus=[("NVIDIA A100", 8.0)]))
    assert gpu.cc == 8.0 and "NVIDIA A100" in gpu.words
    with pytest.raises(ValueError, match="unknown GPU"):
        where("not-a-gpu")


def test_null_machine_has_nothing():
    assert mach.NULL_MACHINE.gpus == () and not mach.NULL_MACHINE.has("torch")
    assert mach.NULL_MACHINE.to_dict()["tier"] == "cpu"
