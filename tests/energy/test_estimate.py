"""The estimate meter: CPU table lookup and its arithmetic on fake inputs."""

from __future__ import annotations

import pytest

from llem.energy import estimate as est
from llem.energy.estimate import (
    CPU_TDP_TABLE,
    DEFAULT_WATTS_PER_THREAD,
    RAM_WATTS_PER_GIB,
    EstimateMeter,
    cpu_power_figure,
    match_cpu,
    normalize_cpu_name,
)

GIB = 1024**3


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("AMD EPYC 7763 64-Core Processor", "amd epyc 7763"),
        ("Intel(R) Xeon(R) Platinum 8480+", "intel xeon platinum 8480+"),
        ("Intel(R) Xeon(R) CPU @ 2.20GHz", "intel xeon"),
        ("13th Gen Intel(R) Core(TM) i9-13900K", "13th gen intel core i9-13900k"),
        ("Intel(R) Xeon(R) Processor", "intel xeon"),
    ],
)
def test_normalize_cpu_name(raw, norm):
    assert normalize_cpu_name(raw) == norm


def test_match_prefers_exact_then_longest_whole_words():
    names = [s.name for s in CPU_TDP_TABLE]
    assert match_cpu("AMD EPYC 7763 64-Core Processor", names) == "AMD EPYC 7763"
    assert match_cpu("13th Gen Intel(R) Core(TM) i9-13900K", names) == "Intel Core i9-13900K"
    assert match_cpu("Intel(R) Xeon(R) Processor", names) is None  # a bare family never matches
    assert match_cpu("AMD EPYC 77630", names) is None  # whole words only


def test_figure_from_llem_table_is_tdp_over_threads():
    fig = cpu_power_figure("AMD EPYC 7763 64-Core Processor", use_codecarbon=False)
    assert fig.table == "llem"
    assert fig.watts_per_thread == pytest.approx(280.0 / 128)
    assert "amd.com" in fig.source


def test_every_table_row_cites_a_source_and_is_consistent():
    for spec in CPU_TDP_TABLE:
        assert spec.source and spec.tdp_w > 0 and spec.threads >= spec.cores > 0
        assert "amd.com" in spec.source or "Intel ARK" in spec.source


def test_figure_from_a_codecarbon_style_table(tmp_path):
    table = tmp_path / "cpu_power.csv"
    table.write_text("Name,TDP\nAMD EPYC 7B13,240\nIntel Xeon Gold 6338,205\n")
    fig = cpu_power_figure("AMD EPYC 7B13 64-Core Processor", logical_cpus=2, codecarbon_table=table)
    assert fig.table == "codecarbon" and fig.matched == "AMD EPYC 7B13"
    # threads: the larger of what is visible (2 vCPUs) and the cores in the name (64)
    assert fig.threads == 64
    assert fig.watts_per_thread == pytest.approx(240.0 / 64)
    fig = cpu_power_figure("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", logical_cpus=8, codecarbon_table=table)
    assert fig.watts_per_thread == pytest.approx(205.0 / 8)


def test_installed_codecarbon_table_is_read_without_importing_codecarbon():
    import sys

    path = est.codecarbon_cpu_table_path()
    if path is None:
        pytest.skip("codecarbon not installed")
    had = "codecarbon" in sys.modules
    table = est.read_codecarbon_cpu_table(str(path))
    assert len(table) > 1000 and table["AMD EPYC 7763"] == 280.0
    assert ("codecarbon" in sys.modules) == had


def test_unknown_cpu_gets_the_documented_default(tmp_path):
    table = tmp_path / "cpu_power.csv"
    table.write_text("Name,TDP\nAMD EPYC 7B13,240\n")
    fig = cpu_power_figure("Intel(R) Xeon(R) Processor", codecarbon_table=table)
    assert fig.table == "default"
    assert fig.watts_per_thread == DEFAULT_WATTS_PER_THREAD == 4.0
    assert "default" in fig.source


def test_arithmetic_helpers():
    assert est.cpu_energy_j(2.5, 4.0) == 10.0
    assert est.ram_energy_j(8.0, 10.0) == pytest.approx(30.0)  # 3 W per 8 GiB for 10 s
    assert est.trapezoid_j(100.0, 200.0, 2.0) == 300.0
    assert RAM_WATTS_PER_GIB == 0.375


class FakeInputs:
    def __init__(self):
        self.cpu_s = 50.0
        self.rss = 2 * GIB

    def cpu_seconds(self):
        return self.cpu_s

    def ram_bytes(self):
        return self.rss


def test_meter_arithmetic_on_fake_inputs(clock):
    inp = FakeInputs()
    m = EstimateMeter(watts_per_thread=5.0, clock=clock, cpu_seconds=inp.cpu_seconds, ram_bytes=inp.ram_bytes)
    m.start()
    clock.advance(1.0)
    inp.cpu_s += 1.5  # 1.5 busy threads for 1 s
    rows = {d: (p, e) for d, p, e, _ in m.sample()}
    assert rows["cpu"] == pytest.approx((7.5, 7.5))
    assert rows["ram"] == pytest.approx((0.75, 0.75))  # 2 GiB x 0.375 W/GiB for 1 s
    clock.advance(2.0)
    inp.cpu_s += 1.0
    inp.rss = 4 * GIB
    rows = {d: (p, e) for d, p, e, _ in m.sample()}
    assert rows["cpu"] == pytest.approx((2.5, 12.5))
    assert rows["ram"][1] == pytest.approx(0.75 + 0.5 * (0.75 + 1.5) * 2.0)
    readings = {r.device: r for r in m.stop()}
    cpu, ram = readings["cpu"], readings["ram"]
    assert cpu.method == ram.method == "estimated"
    assert cpu.energy_j == pytest.approx(12.5)
    assert cpu.model_inputs["cpu_seconds"] == pytest.approx(2.5)
    assert cpu.model_inputs["watts_per_thread"] == 5.0
    assert cpu.model_inputs["figure_table"] == "user"
    assert cpu.model_inputs["scope"] == "process"
    assert ram.model_inputs["peak_gib"] == pytest.approx(4.0)
    assert ram.model_inputs["mean_gib"] == pytest.approx((2 * 1 + 3 * 2) / 3)
    assert "W/thread" in cpu.source and "W/GiB" in ram.source


def test_ram_only_and_cpu_only(clock):
    inp = FakeInputs()
    m = EstimateMeter(cpu=False, clock=clock, cpu_seconds=inp.cpu_seconds, ram_bytes=inp.ram_bytes)
    m.start()
    clock.advance(1.0)
    assert [r[0] for r in m.sample()] == ["ram"]
    assert [r.device for r in m.stop()] == ["ram"]
    assert m.label == "estimate(ram)"
    assert "CPU" not in m.describe()


def test_scope_is_checked():
    with pytest.raises(ValueError, match="scope"):
        EstimateMeter(scope="cluster")


def test_real_process_scope_counts_this_process_cpu_time():
    m = EstimateMeter(watts_per_thread=10.0)
    m.start()
    x = 0
    for i in range(300_000):
        x += i * i
    m.sample()
    cpu = next(r for r in m.stop() if r.device == "cpu")
    assert cpu.model_inputs["cpu_seconds"] > 0
    assert cpu.energy_j == pytest.approx(cpu.model_inputs["cpu_seconds"] * 10.0)


def test_system_scope_runs():
    m = EstimateMeter(scope="system")
    m.start()
    m.sample()
    readings = m.stop()
    assert {r.device for r in readings} == {"cpu", "ram"}
    assert "system" in m.describe()
    assert all(r.energy_j >= 0 for r in readings)
