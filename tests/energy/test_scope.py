"""experiment.energy_scope: the estimate covers this process or the whole machine, and says so."""

from __future__ import annotations

import time

import pytest

import llem
from llem import spec
from llem.config import ExperimentConfig
from llem.energy import registry
from llem.energy.estimate import SCOPE_WORDS, EstimateMeter
from llem.energy.window import measure
from llem.errors import ConfigError


def test_the_row():
    row = spec.param("experiment.energy_scope")
    assert row.choices == ("process", "system") and row.default == "process" and not row.allow_none
    assert ExperimentConfig().energy_scope == "process"
    assert ExperimentConfig(energy_scope="system").energy_scope == "system"
    with pytest.raises(ConfigError, match="energy_scope"):
        ExperimentConfig(energy_scope="cluster")


def test_the_meter_factory_passes_the_scope_to_the_estimate():
    assert registry.create_meter("estimate", scope="system").scope == "system"
    assert registry.create_meter("estimate").scope == "process"
    auto = registry.create_meter("auto", scope="system")
    estimates = [m for m in auto.meters if isinstance(m, EstimateMeter)]
    assert all(m.scope == "system" for m in estimates)
    registry.create_meter("rapl", scope="system")  # counters take no scope: not passed


@pytest.mark.parametrize("scope", ["process", "system"])
def test_each_figure_says_what_it_covers(scope):
    with measure(meter="estimate", interval_s=0.02, scope=scope) as m:
        time.sleep(0.05)
    meas = m.measurement
    assert f"(scope: {SCOPE_WORDS[scope]['all']})" in meas.source
    cpu, ram = (next(r for r in meas.devices if r.kind == k) for k in ("cpu", "ram"))
    assert cpu.source.endswith(SCOPE_WORDS[scope]["cpu"]) and cpu.model_inputs["scope"] == scope
    assert ram.source.endswith(SCOPE_WORDS[scope]["ram"]) and ram.model_inputs["scope"] == scope
    if scope == "process":
        assert "this process only" in meas.source and "process RSS" in ram.source
    else:
        assert "the whole machine" in meas.source and "all processes" in cpu.source
        assert "used system memory" in ram.source


def test_the_whole_machine_holds_more_memory_than_this_process():
    a, b = EstimateMeter(scope="process"), EstimateMeter(scope="system")
    for meter in (a, b):
        meter.start()
        time.sleep(0.02)
        meter.sample()
    ram_a = next(r for r in a.stop() if r.kind == "ram").model_inputs["mean_gib"]
    ram_b = next(r for r in b.stop() if r.kind == "ram").model_inputs["mean_gib"]
    assert ram_b > ram_a > 0


def test_a_run_and_its_report_say_the_scope(register_backend, words_backend, tmp_path):
    register_backend("words", words_backend)
    cfg = ExperimentConfig.from_dict({"backend": "words", "model": "any", "meter": "auto",
                                      "energy_scope": "system", "repeats": 1, "warmup": {"runs": 0},
                                      "sampling_interval_s": 0.01})
    r = llem.run(cfg, prompts=["a b", "c d"])
    assert "the whole machine" in r.environment["energy_source"]
    assert r.config["energy_scope"] == "system"
    text = llem.report.export(r, tmp_path / "r.md").read_text(encoding="utf-8")
    assert SCOPE_WORDS["system"]["cpu"] in text  # the per-device sources
    assert r"experiment.energy\_scope='process'" in text  # the glossary's scope row (Markdown)
