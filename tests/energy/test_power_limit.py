"""experiment.gpu_power_limit_w: set through NVML for a run and always put back (fake GPUs)."""

from __future__ import annotations

import pytest

import llem
from llem import spec
from llem.config import ExperimentConfig
from llem.energy import nvml
from llem.energy.power_limit import (
    PowerLimitError,
    PowerLimitPermissionError,
    RunPowerLimit,
    power_limit,
)
from llem.errors import RunInterrupted
from llem.machine import Gpu, Machine, use_machine
from llem.testing import FakeGpu, FakeNvmlLibrary

pytestmark = pytest.mark.gpu_path


@pytest.fixture(autouse=True)
def _no_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def two_gpus(**kw):
    return FakeNvmlLibrary([FakeGpu(0, **kw), FakeGpu(1, **kw)])


def test_the_row_is_a_load_time_watts_setting():
    row = spec.param("experiment.gpu_power_limit_w")
    assert row.unit == "W" and row.load_time and row.type == "float" and row.default is None
    assert ExperimentConfig(gpu_power_limit_w=250).gpu_power_limit_w == 250.0


def test_applied_for_the_block_and_restored_after():
    lib = two_gpus()
    with power_limit(250, library=lib) as rec:
        assert [g.power_limit for g in lib.gpus] == [250_000, 250_000]
        assert not rec.restored
    assert [g.power_limit for g in lib.gpus] == [700_000, 700_000]
    assert lib.gpus[0].power_limits_set == [250_000, 700_000]
    assert rec.restored and rec.watts == 250.0
    d = rec.to_dict()
    assert d["gpus"][0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "previous_w": 700.0,
                            "applied_w": 250.0, "min_w": 200.0, "max_w": 700.0, "restored": True}
    assert lib.inits == lib.shutdowns == 1


def test_none_changes_nothing():
    lib = two_gpus()
    with power_limit(None, library=lib) as rec:
        assert rec is None
    assert lib.inits == 0 and lib.gpus[0].power_limits_set == []


def test_restored_on_error():
    lib = two_gpus()
    with pytest.raises(RuntimeError, match="boom"), power_limit(300, library=lib):
        raise RuntimeError("boom")
    assert [g.power_limit for g in lib.gpus] == [700_000, 700_000]


def test_restored_on_keyboard_interrupt():
    lib = two_gpus()
    with pytest.raises(KeyboardInterrupt), power_limit(300, library=lib):
        raise KeyboardInterrupt
    assert [g.power_limit for g in lib.gpus] == [700_000, 700_000]


def interrupt_at_call(gpu, n):
    """Make the ``n``-th later ``set_power_limit_mw`` call on ``gpu`` raise KeyboardInterrupt."""
    real, calls = gpu.set_power_limit_mw, []

    def flaky(mw):
        calls.append(mw)
        if len(calls) == n:
            raise KeyboardInterrupt
        real(mw)

    gpu.set_power_limit_mw = flaky


def test_an_interrupt_while_restoring_still_restores_every_gpu():
    lib = two_gpus()
    interrupt_at_call(lib.gpus[0], 2)  # the first attempt to put GPU 0 back
    with pytest.raises(KeyboardInterrupt), power_limit(300, library=lib) as rec:
        pass
    assert [g.power_limit for g in lib.gpus] == [700_000, 700_000] and rec.restored


def test_refused_without_an_nvidia_gpu():
    with pytest.raises(PowerLimitError) as e:
        with power_limit(250, library=FakeNvmlLibrary(init_error="NVML Shared Library Not Found")):
            pass
    msg = str(e.value)
    assert "experiment.gpu_power_limit_w=250 W cannot be applied" in msg
    assert "Shared Library Not Found" in msg and "leave experiment.gpu_power_limit_w unset" in msg
    with pytest.raises(PowerLimitError, match="sees no GPU"), power_limit(250, library=FakeNvmlLibrary([])):
        pass


def test_refused_outside_the_gpu_constraints_and_nothing_is_changed():
    lib = FakeNvmlLibrary([FakeGpu(0), FakeGpu(1, name="NVIDIA A100", power_limit_w=400,
                                               power_limit_range_w=(150, 400))])
    with pytest.raises(PowerLimitError) as e, power_limit(500, library=lib):
        pass
    msg = str(e.value)
    assert "500 W is outside what GPU 1 (NVIDIA A100) accepts: 150..400 W" in msg
    assert "choose a value from 150 to 400 W" in msg
    assert all(g.power_limits_set == [] for g in lib.gpus)
    with pytest.raises(PowerLimitError, match="accepts: 200..700 W"), power_limit(100, library=lib):
        pass


def test_refused_without_permission_and_the_first_gpu_is_put_back():
    lib = FakeNvmlLibrary([FakeGpu(0), FakeGpu(1, root=False)])
    with pytest.raises(PowerLimitPermissionError) as e, power_limit(300, library=lib):
        pass
    msg = str(e.value)
    assert "was not applied" in msg and "needs root" in msg
    assert lib.gpus[0].power_limits_set == [300_000, 700_000] and lib.gpus[0].power_limit == 700_000
    assert isinstance(e.value, PermissionError)


def test_pynvml_no_permission_becomes_a_llem_error():
    class NVMLError(Exception):
        pass

    class NoPermission(NVMLError):
        pass

    def refuse(handle, mw):
        raise NoPermission("Insufficient Permissions")

    import types

    nv = types.SimpleNamespace(
        NVMLError=NVMLError, NVMLError_NoPermission=NoPermission,
        nvmlDeviceGetPowerManagementLimit=lambda h: 350_000,
        nvmlDeviceGetPowerManagementLimitConstraints=lambda h: [100_000, 350_000],
        nvmlDeviceSetPowerManagementLimit=refuse,
    )
    dev = nvml.PynvmlDevice(nv, object(), 3)
    assert dev.power_limit_mw() == 350_000 and dev.power_limit_constraints_mw() == (100_000, 350_000)
    with pytest.raises(nvml.NvmlPermissionError, match="GPU 3.*Insufficient Permissions.*needs root"):
        dev.set_power_limit_mw(200_000)
    nv.nvmlDeviceSetPowerManagementLimit = lambda h, mw: (_ for _ in ()).throw(NVMLError("Invalid Argument"))
    with pytest.raises(nvml.NvmlSettingError, match="200000 mW: Invalid Argument"):
        dev.set_power_limit_mw(200_000)


def test_only_the_gpus_cuda_sees(monkeypatch):
    lib = FakeNvmlLibrary([FakeGpu(0), FakeGpu(1), FakeGpu(2)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with power_limit(300, library=lib) as rec:
        assert [g.power_limit for g in lib.gpus] == [700_000, 700_000, 300_000]
    assert [g.index for g in rec.gpus] == [2]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(PowerLimitError, match="hides every GPU"), power_limit(300, library=lib):
        pass
    with power_limit(300, gpus=[0], library=lib) as rec:
        assert [g.index for g in rec.gpus] == [0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-00000000")  # ambiguous: names no GPU
    with pytest.raises(PowerLimitError, match="hides every GPU"), power_limit(300, library=lib):
        pass
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"MIG-{lib.gpus[1].uuid()},0")  # a MIG instance first
    with pytest.raises(PowerLimitError, match="MIG instances"), power_limit(300, library=lib):
        pass


def test_the_runner_s_holder_records_and_closes_once():
    lib = two_gpus()
    effective, env, notes = {}, {}, []
    held = RunPowerLimit(300, effective, library=lib)
    assert effective == {"experiment.gpu_power_limit_w": 300.0} and lib.gpus[1].power_limit == 300_000
    held.restore_and_record(env, notes)  # closes first
    assert held.close() is None and held.close("run 1/1") == "run 1/1"  # later ones do nothing
    assert env["gpu_power_limit"]["restored"] is True and notes == []
    assert lib.gpus[0].power_limits_set == [300_000, 700_000]
    none = RunPowerLimit(None, effective, library=lib)
    none.restore_and_record(env := {}, notes)
    assert env == {} and none.close(None) is None


def test_the_runner_s_holder_keeps_an_interrupt_while_restoring_as_where_it_stopped():
    lib = two_gpus()
    held = RunPowerLimit(300, library=lib)
    interrupt_at_call(lib.gpus[1], 1)  # the first attempt to put GPU 1 back
    assert held.close(None) == "putting the GPU power limit back"
    assert [g.power_limit for g in lib.gpus] == [700_000, 700_000]


# --------------------------------------------------------------------- in a run
@pytest.fixture
def fake_nvml(monkeypatch, register_backend, words_backend):
    """One fake GPU whose power follows its limit (400 W asked, capped by the limit).

    ``fake_nvml.backend`` is the ``limited`` backend: its tokens come slower under a lower
    cap, and ``backend.seen`` lists the limit in force at each batch.
    """
    gpu = FakeGpu(0)
    gpu._power = lambda t: min(400.0, gpu.power_limit / 1000.0)
    lib = FakeNvmlLibrary([gpu])
    monkeypatch.setattr(nvml, "_default_library", lambda: lib)

    class Limited(words_backend):
        name = "limited"
        seen: list = []
        cuda_devices = (0,)

        def before_generate(self):
            Limited.seen.append(gpu.power_limit / 1000.0)

        def step_s(self):
            return 0.004 * (400.0 / min(400.0, gpu.power_limit / 1000.0)) ** 0.5  # under 400 W

    gpu.backend = Limited
    register_backend("limited", Limited)
    with use_machine(Machine.fake([Gpu(0, "NVIDIA H100 80GB HBM3", 9.0, uuid="GPU-fake0")])):
        yield gpu


def config(**fields):
    base = {"backend": "limited", "model": "any", "meter": "nvml", "repeats": 1,
            "warmup": {"runs": 1}, "decoder": {"max_new_tokens": 6}, "sampling_interval_s": 0.01}
    base.update(fields)
    return ExperimentConfig.from_dict(base)


PROMPTS = ["one two three four five six seven", "eight nine ten eleven twelve thirteen"]


def test_a_run_applies_the_limit_records_it_and_puts_it_back(fake_nvml):
    r = llem.run(config(gpu_power_limit_w=250), prompts=PROMPTS)
    assert fake_nvml.backend.seen and set(fake_nvml.backend.seen) == {250.0}  # warmup and measured
    assert fake_nvml.power_limit == 700_000
    assert r.effective_config["experiment.gpu_power_limit_w"] == 250.0
    env = r.environment["gpu_power_limit"]
    assert env["watts"] == 250.0 and env["restored"] is True
    assert env["gpus"][0]["previous_w"] == 700.0 and env["gpus"][0]["applied_w"] == 250.0
    assert r.runs[0].measurement.energy_j == pytest.approx(250.0 * r.runs[0].measurement.duration_s,
                                                           rel=0.2)


def test_a_run_without_the_setting_leaves_the_gpu_alone(fake_nvml):
    r = llem.run(config(), prompts=PROMPTS)
    assert fake_nvml.power_limits_set == [] and "gpu_power_limit" not in r.environment
    assert "experiment.gpu_power_limit_w" not in r.effective_config


def test_an_interrupted_run_puts_the_limit_back(fake_nvml):
    def hook(stage, done, total):
        if stage.startswith("run 1"):
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as e:
        llem.run(config(gpu_power_limit_w=300), prompts=PROMPTS, progress=hook)
    assert fake_nvml.power_limit == 700_000 and fake_nvml.power_limits_set == [300_000, 700_000]
    assert e.value.partial.environment["gpu_power_limit"]["restored"] is True


def test_a_failing_run_puts_the_limit_back(fake_nvml, monkeypatch):
    monkeypatch.setattr(fake_nvml.backend, "generate", lambda self, *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        llem.run(config(gpu_power_limit_w=300), prompts=PROMPTS)
    assert fake_nvml.power_limit == 700_000


def test_a_run_is_refused_before_loading_when_not_permitted(fake_nvml, monkeypatch):
    fake_nvml.root = False
    loaded = []
    monkeypatch.setattr(fake_nvml.backend, "load", lambda self, cfg: loaded.append(cfg))
    with pytest.raises(PowerLimitPermissionError, match="needs root"):
        llem.run(config(gpu_power_limit_w=300), prompts=PROMPTS)
    assert loaded == [] and fake_nvml.power_limit == 700_000


def test_a_sweep_over_power_limits_gives_the_pareto_chart(fake_nvml, tmp_path):
    pytest.importorskip("altair")
    from llem.plots import energy_vs_latency, pareto_front

    limits = [200.0, 300.0, 450.0, 700.0]
    res = llem.sweep(config(**{"study": {"cycles": 1}}), {"experiment.gpu_power_limit_w": limits},
                     results_dir=tmp_path, progress=False)
    assert res.complete and len(res.results) == 4
    assert sorted(r.effective_config["experiment.gpu_power_limit_w"] for r in res.results) == limits
    assert fake_nvml.power_limit == 700_000
    chart = res.pareto()  # one point per power limit, its cycles pooled
    rows = chart.to_dict()["layer"][3]["data"]["values"]
    assert sorted(row["config"] for row in rows) == [f"gpu_power_limit_w={w}" for w in limits]
    front = {rows[i]["config"] for i in pareto_front([(row["x"], row["mj"]) for row in rows])}
    assert {row["config"] for row in rows if row["pareto"] == "on the front"} == front
    # the cheapest and the fastest settings are never dominated
    assert min(rows, key=lambda row: row["mj"])["config"] in front
    assert min(rows, key=lambda row: row["x"])["config"] in front
    cheapest = min(rows, key=lambda row: row["mj"])["config"]
    assert cheapest == "gpu_power_limit_w=200.0"  # J/token grows as sqrt(W) below 400 W
    per_result = energy_vs_latency(res.results).to_dict()["layer"][3]["data"]["values"]
    assert len(per_result) == 4 and all("(cycle 1)" in row["config"] for row in per_result)
