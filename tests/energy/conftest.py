"""Fixtures for the energy tests: fake clocks, fake powercap trees, thread hygiene."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from llem.energy import baseline as _baseline


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llem-sampler"]


@pytest.fixture(autouse=True)
def no_leftover_threads():
    """Every test must leave no sampler thread behind."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 1.0
    while _sampler_threads() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert _sampler_threads() == [], "a llem-sampler thread outlived its window"
    new = [t for t in threading.enumerate() if t not in before and t.is_alive() and t.name.startswith("llem")]
    assert new == []


@pytest.fixture(autouse=True)
def fresh_baseline_cache():
    _baseline.clear_baseline_cache()
    yield
    _baseline.clear_baseline_cache()


class PowercapTree:
    """A fake /sys/class/powercap made of real files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def zone(
        self,
        zone: str,
        name: str,
        energy_uj: int | None = 0,
        max_energy_range_uj: int | None = 262_143_328_850,
    ) -> Path:
        d = self.root / zone
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        if energy_uj is not None:
            (d / "energy_uj").write_text(f"{energy_uj}\n")
        if max_energy_range_uj is not None:
            (d / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")
        return d

    def set(self, zone: str, energy_uj: int) -> None:
        (self.root / zone / "energy_uj").write_text(f"{energy_uj}\n")

    def standard(
        self, packages: int = 1, dram: bool = True, core: bool = True, psys: bool = False
    ) -> PowercapTree:
        """Zones as a typical Intel server shows them (flat, like /sys/class/powercap)."""
        (self.root / "intel-rapl").mkdir(exist_ok=True)  # the control type itself
        for p in range(packages):
            self.zone(f"intel-rapl:{p}", f"package-{p}", energy_uj=1_000_000 * (p + 1))
            if core:
                self.zone(f"intel-rapl:{p}:0", "core", energy_uj=500_000)
            if dram:
                self.zone(
                    f"intel-rapl:{p}:1",
                    "dram",
                    energy_uj=200_000 * (p + 1),
                    max_energy_range_uj=65_532_610_987,
                )
        if psys:
            self.zone(f"intel-rapl:{packages}", "psys", energy_uj=42)
        return self


@pytest.fixture
def powercap(tmp_path: Path) -> PowercapTree:
    return PowercapTree(tmp_path / "powercap")
