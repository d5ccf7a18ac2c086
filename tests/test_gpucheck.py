"""The GPU check kit (llem.gpucheck) run with --simulate: llem's fake NVML devices, PyTorch on the CPU.

One run of ``python -m llem.gpucheck --simulate`` in a fresh process (the kit swaps llem's
``nvml`` meter and the machine for its lifetime) feeds the tests below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llem.gpucheck import CHECKS, outcome, select
from llem.gpucheck.kit import CheckSpec, Skip, markdown, run_checks, run_one
from llem.gpucheck.nvml_checks import integrate_power_j, update_period_s

pytestmark = pytest.mark.gpu_path

ROOT = Path(__file__).resolve().parents[1]

#: Checks of the (simulated) NVML readings: they must pass against the fakes.
NVML_CHECKS = ("nvml-counter", "counter-vs-power")


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpucheck")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "llem.gpucheck", "--simulate", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads((out / "gpucheck.json").read_text(encoding="utf-8"))
    return report, (out / "gpucheck.md").read_text(encoding="utf-8"), done


def test_the_json_has_the_machine_and_one_record_per_registered_check(kit):
    report, _, _ = kit
    assert report["schema"] == "llem.gpucheck/1" and report["mode"] == "simulate"
    assert {"gpus", "cpu", "driver", "tier"} <= set(report["machine"])
    assert [g["name"] for g in report["machine"]["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2  # the fakes
    assert [c["name"] for c in report["checks"]] == [c.name for c in CHECKS]
    for c in report["checks"]:
        assert {"name", "status", "detail", "numbers", "seconds", "issue"} <= set(c)
        assert c["status"] in ("pass", "fail", "skip"), c
        assert isinstance(c["detail"], str) and c["detail"], c
        assert isinstance(c["numbers"], dict)


def test_the_simulated_nvml_checks_pass_with_their_numbers(kit):
    checks = {c["name"]: c for c in kit[0]["checks"]}
    for name in NVML_CHECKS:
        assert checks[name]["status"] == "pass", checks[name]
    counter = checks["nvml-counter"]["numbers"]
    assert counter["delta_mj"] > 0 and counter["went_backwards"] == 0
    # the fake devices update every 20 ms; the kit measures that period
    assert 10 <= counter["counter_update_ms"] <= 40
    same = checks["counter-vs-power"]["numbers"]
    assert 0.9 <= same["ratio"] <= 1.1
    assert same["load_power_w"] > same["idle_power_w"] * 2  # the simulated load raised GPU 0's power


def test_the_pytorch_checks_ran_on_the_cpu_and_the_gpu_only_ones_say_why_they_skip(kit):
    checks = {c["name"]: c for c in kit[0]["checks"]}
    run = checks["llem-run-tiny-random-llama"]
    assert run["status"] == "pass", run
    assert run["numbers"]["device"] == "cpu" and run["numbers"]["output_tokens"] > 0
    assert run["numbers"]["tokens_per_s"] > 0
    for name in ("llem-run-smollm2-135m", "llem-vs-bare-smollm2-135m"):
        assert checks[name]["status"] == "skip" and "tiny-random-llama only" in checks[name]["detail"]
    assert checks["zeus-same-window"]["status"] == "skip"
    assert checks["cuda-not-initialised"]["status"] == "pass", checks["cuda-not-initialised"]
    assert checks["cuda-not-initialised"]["numbers"]["gpus"] == 2
    versus = checks["llem-vs-bare-tiny-random-llama"]["numbers"]
    assert versus["llem_tok_s"] > 0 and versus["bare_tok_s"] > 0 and len(versus["per_round"]["llem"]) == 2
    tier = checks["tier-precision-attention"]
    assert tier["status"] == "pass", tier
    cases = tier["numbers"]["cases"]
    assert cases["bfloat16"]["outcome"] == "ran" and cases["bfloat16"]["dtype"] == "bfloat16"
    assert cases["flash_attention_3"]["outcome"] == "refused by the tier check"
    assert checks["release-frees-memory"]["status"] == "pass", checks["release-frees-memory"]


def test_features_not_in_this_llem_skip_with_that_reason(kit):
    checks = {c["name"]: c for c in kit[0]["checks"]}
    from llem.gpucheck.feature_checks import _flags_feature, _power_limit_feature

    if not _power_limit_feature():
        assert checks["power-limit"] == {**checks["power-limit"], "status": "skip",
                                         "detail": "not in this llem version"}
    if not _flags_feature():
        assert checks["validity-flags"]["status"] == "skip"
        assert checks["validity-flags"]["detail"] == "not in this llem version"


def test_the_markdown_is_a_table_with_every_check_and_says_it_is_simulated(kit):
    report, md, _ = kit
    assert "SIMULATED" in md and "| check | issue | status |" in md
    for c in report["checks"]:
        assert f"| {c['name']} |" in md


# --------------------------------------------------------------- the runner itself
def _spec(name, fn, limit_s=5.0):
    return CheckSpec(name, name, fn, limit_s, "test")


def test_one_failing_check_never_stops_the_others_and_a_hang_is_cut_off():
    def boom(ctx):
        raise RuntimeError("the GPU fell off the bus")

    def hang(ctx):
        while True:
            pass

    def skip(ctx):
        raise Skip("needs CUDA (the simulated run uses the CPU)")

    def ok(ctx):
        return outcome("pass", "fine", ratio=1.0, bad=float("nan"))

    got = run_checks(None, [_spec("a", boom), _spec("b", hang, 0.3), _spec("c", skip), _spec("d", ok)])
    assert [g["status"] for g in got] == ["fail", "fail", "skip", "pass"]
    assert "RuntimeError: the GPU fell off the bus" in got[0]["detail"]
    assert "time limit of 0.3 s" in got[1]["detail"] and got[1]["seconds"] < 3
    assert got[2]["detail"] == "needs CUDA (the simulated run uses the CPU)"
    assert got[3]["numbers"] == {"ratio": 1.0, "bad": None}  # NaN is not JSON


def test_a_spent_budget_skips_the_rest_with_the_reason():
    got = run_checks(None, [_spec("a", lambda ctx: outcome("pass", "x"))], budget_s=1.0)
    assert got[0]["status"] == "skip" and "budget" in got[0]["detail"]


def test_a_check_returning_something_else_is_a_fail():
    assert run_one(_spec("a", lambda ctx: {"status": "maybe"}), None)["status"] == "fail"
    with pytest.raises(ValueError, match="not one of pass, fail, skip"):
        outcome("ok", "x")


def test_select_names_checks_and_refuses_unknown_ones():
    assert [c.name for c in select(["nvml-counter"])] == ["nvml-counter"]
    with pytest.raises(ValueError, match="nvml-countr.*the checks are"):
        select(["nvml-countr"])


def test_the_reading_helpers():
    times = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]
    values = [1, 1, 2, 2, 3, 3, 4, 4, 5]
    period, changes = update_period_s(times, values)
    assert changes == 4 and period == pytest.approx(0.02)
    assert update_period_s(times[:3], values[:3]) == (None, 1)
    # 2 W for 1 s, then 4 W for 1 s (mW readings)
    assert integrate_power_j([(0.0, None, 2000.0), (1.0, None, 2000.0), (1.0, None, 4000.0),
                              (2.0, None, 4000.0)]) == pytest.approx(6.0)
    md = markdown({"machine": {}, "checks": [{"name": "x|y", "status": "pass", "detail": "a|b",
                                              "numbers": {"r": 0.123456}, "seconds": 1}]})
    assert "x\\|y" in md and "r=0.1235" in md


# --------------------------------------------------------------- features other branches add
class _Ctx:
    simulate, cuda, quick, nvml_index = False, True, True, 0

    def need_gpu(self, what=""):
        pass


class _FakeLimits:
    """A GPU's power limit as pynvml would give it (W), for the power-limit check."""

    limit_w, permitted = 700.0, True

    def __init__(self, index):
        self.writes = []

    def now_w(self):
        return type(self).limit_w

    def bounds_w(self):
        return 200.0, 700.0

    def enforced_w(self):
        return self.now_w()

    def may_set(self):
        return (True, "") if self.permitted else (False, "Insufficient Permissions")

    def set_w(self, watts):
        self.writes.append(watts)
        type(self).limit_w = watts

    def close(self):
        pass


def _power_limit_check(monkeypatch, llem_run, permitted=True):
    from llem.gpucheck import feature_checks, runs

    monkeypatch.setattr(feature_checks, "_power_limit_feature", lambda: True)
    monkeypatch.setattr(_FakeLimits, "limit_w", 700.0)
    monkeypatch.setattr(_FakeLimits, "permitted", permitted)
    monkeypatch.setattr(feature_checks, "_Limits", _FakeLimits)
    monkeypatch.setattr(runs, "config", lambda ctx, model, **kw: kw)
    monkeypatch.setattr(feature_checks, "run", llem_run)
    return feature_checks.power_limit(_Ctx())


def test_power_limit_applied_during_the_run_and_restored_passes(monkeypatch):
    class Result:
        effective_config = {"experiment.gpu_power_limit_w": 560.0}

    def llem_run(cfg, on_sample=None):
        before = _FakeLimits.limit_w
        _FakeLimits.limit_w = cfg["experiment.gpu_power_limit_w"]
        on_sample(object())
        _FakeLimits.limit_w = before
        return Result()

    got = _power_limit_check(monkeypatch, llem_run)
    assert got["status"] == "pass", got
    assert got["numbers"]["asked_w"] == 560 and got["numbers"]["during_w"] == [560.0]
    assert got["numbers"]["after_w"] == 700.0


def test_power_limit_left_changed_fails_and_the_kit_restores_it(monkeypatch):
    class Result:
        effective_config: dict = {}

    def llem_run(cfg, on_sample=None):
        _FakeLimits.limit_w = cfg["experiment.gpu_power_limit_w"]
        on_sample(object())
        return Result()  # never restored

    got = _power_limit_check(monkeypatch, llem_run)
    assert got["status"] == "fail" and "after 560 W (was 700 W)" in got["detail"]
    assert _FakeLimits.limit_w == 700.0  # put back by the kit


def test_power_limit_not_permitted_needs_llem_to_say_so(monkeypatch):
    from llem.errors import ConfigError

    def refuses(words):
        def llem_run(cfg, on_sample=None):
            raise ConfigError(words)
        return llem_run

    got = _power_limit_check(monkeypatch, refuses("Setting the GPU power limit needs root permission."), False)
    assert got["status"] == "pass" and "Insufficient Permissions" in got["detail"]
    got = _power_limit_check(monkeypatch, refuses("Something else went wrong."), False)
    assert got["status"] == "fail" and "without saying" in got["detail"]


def test_validity_flags_idle_and_beside_a_busy_process(monkeypatch):
    from llem.gpucheck import feature_checks, runs

    class Flag:
        def __init__(self, fid):
            self.id = fid

    class Result:
        def __init__(self, flags):
            self.flags = flags

    calls = []

    def llem_run(cfg):
        calls.append(cfg)
        return Result([] if len(calls) == 1 else [Flag("machine-busy"), {"id": "short-window"}])

    monkeypatch.setattr(feature_checks, "_flags_feature", lambda: True)
    monkeypatch.setattr(runs, "config", lambda ctx, model, **kw: kw)
    monkeypatch.setattr(feature_checks, "run", llem_run)
    ctx = _Ctx()
    ctx.cuda = False  # the busy process spins a CPU; machine-busy is expected
    got = feature_checks.validity_flags(ctx)
    assert got["status"] == "pass", got
    assert got["numbers"]["idle_flags"] == [] and got["numbers"]["loaded_flags"] == ["machine-busy",
                                                                                     "short-window"]
    calls.clear()
    monkeypatch.setattr(feature_checks, "run", lambda cfg: Result([]))
    assert feature_checks.validity_flags(ctx)["status"] == "fail"


# --------------------------------------------------------------- issue 15's other items
#: The checks of issue 15 items 3, 4, 5, 9, 10 and 12, and whether each passes in --simulate.
ISSUE15_CHECKS = {"trt-beam-best-only": "15.3", "engine-phase-split": "15.4", "peak-memory": "15.5",
                  "transformers-floor": "15.9", "nvml-probe": "15.10", "nvml-init-balanced": "15.12",
                  "vllm-seed-once": "15.12"}


def test_the_issue15_checks_are_listed_with_their_items(capsys):
    from llem.gpucheck.__main__ import main

    assert main(["--list"]) == 0
    listed = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name, item in ISSUE15_CHECKS.items():
        assert listed.get(name) == item, (name, listed.get(name))


def test_the_issue15_checks_pass_in_simulate_or_skip_naming_the_install(kit):
    checks = {c["name"]: c for c in kit[0]["checks"]}
    for name in ISSUE15_CHECKS:
        assert checks[name]["status"] in ("pass", "fail", "skip"), checks[name]
    for name in ("trt-beam-best-only", "engine-phase-split", "peak-memory", "transformers-floor", "nvml-probe",
                 "nvml-init-balanced"):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["trt-beam-best-only"]["numbers"] == {"counted": 16, "expected": 16, "beams": 3}
    assert checks["engine-phase-split"]["numbers"]["over_no_split"]
    assert not checks["engine-phase-split"]["numbers"]["fits_no_split"]
    mem = checks["peak-memory"]["numbers"]
    assert "RSS" in mem["source"] and all(q <= p for p, q in zip(mem["peak_mib"], mem["run_peak_mib"]))
    probe = checks["nvml-probe"]["numbers"]
    assert [g["power_mw"] for g in probe["gpus"]] == [70000.0, 70000.0]  # the fakes, through llem's wrapper
    assert probe["fake"]["no_power"]["power_mw"] is None
    assert "no power reading" in probe["fake"]["no_power"]["probe"]
    assert probe["fake"]["neither"]["start"].startswith("llem: gpu:1")
    balanced = checks["nvml-init-balanced"]["numbers"]
    assert balanced["inits"] == balanced["shutdowns"] >= 1
    assert balanced["fake_refcount_after"] == balanced["fake_refcount_before"] == 0
    seed = checks["vllm-seed-once"]
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        assert seed["status"] == "skip" and "pip install 'llem[vllm]'" in seed["detail"]
    else:
        assert seed["status"] == "pass", seed


def test_counting_nvml_sees_an_unpaired_init_and_puts_the_fake_back():
    from llem.gpucheck.issue15_checks import counting_nvml
    from llem.testing import FakeNvmlGpu, FakePynvml, use_fake_pynvml

    fake = FakePynvml([FakeNvmlGpu()], clock=lambda: 0.0)
    with use_fake_pynvml(fake):
        with counting_nvml() as counts:
            import pynvml

            pynvml.nvmlInit()
            pynvml.nvmlInit()
            pynvml.nvmlShutdown()
        assert counts == {"nvmlInit": 2, "nvmlShutdown": 1} and fake.refcount == 1
        assert "nvmlInit" not in vars(fake)  # the fake's own method again
        fake.nvmlShutdown()
        assert fake.refcount == 0


def test_the_engine_checks_skip_naming_the_install_without_the_engine(monkeypatch):
    from llem.gpucheck import issue15_checks as i15

    monkeypatch.setattr(i15, "_importable", lambda module: False)
    for fn, words in ((i15.trt_beam_best_only, "pip install 'llem[tensorrt]'"),
                      (i15.engine_phase_split, "pip install 'llem[vllm]'")):
        with pytest.raises(Skip, match=re_escape(words)):
            fn(_Ctx())


def re_escape(text):
    import re

    return re.escape(text)


def test_the_transformers_floor_is_read_from_llems_metadata():
    from llem.backends.pytorch.loading import TRANSFORMERS_MIN
    from llem.gpucheck.issue15_checks import declared_floor

    got = declared_floor()
    assert got is None or got[:2] == TRANSFORMERS_MIN


def test_peak_memory_on_a_gpu_wants_the_torch_allocator_within_the_gpus_memory(monkeypatch):
    from types import SimpleNamespace

    from llem.gpucheck import issue15_checks as i15
    from llem.gpucheck import runs

    def answer(source, peak, rise):
        r = SimpleNamespace(memory_source=source, peak_memory_mib=peak, run_peak_memory_mib=rise)
        monkeypatch.setattr(runs, "llem_run", lambda ctx, model: (SimpleNamespace(runs=[r]), {"device": "cuda:0"}))
        ctx = _Ctx()
        ctx.machine = SimpleNamespace(gpus=[SimpleNamespace(index=0, memory_total_mib=1000.0)])
        return i15.peak_memory(ctx)

    torch_source = "torch allocator peak, reset per run, summed over cuda:0"
    assert answer(torch_source, 500.0, 100.0)["status"] == "pass"
    got = answer("process RSS peak, sampled", 500.0, 100.0)
    assert got["status"] == "fail" and "torch allocator over cuda:0" in got["detail"]
    got = answer(torch_source, 2000.0, 100.0)
    assert got["status"] == "fail" and "above the GPU's 1000 MiB" in got["detail"]
    got = answer(torch_source, 500.0, 600.0)
    assert got["status"] == "fail" and "run_peak_memory_mib is above" in got["detail"]
