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


class WordsBackend:
    """A plugin backend for run-level tests: 'generates' each prompt's words back.

    ``step_s()`` is the time one token takes (a subclass may make it depend on the GPU);
    ``before_generate()`` is called at each batch.
    """

    name = "words"
    #: The CUDA ordinals the 'model' is on (the runner meters those GPUs); none: the CPU.
    cuda_devices: tuple[int, ...] = ()

    def load(self, config):
        from llem.backends.base import LoadInfo

        self.max_new_tokens = config.decoder.max_new_tokens
        return LoadInfo(model_id=config.model, effective={}, cuda_devices=self.cuda_devices)

    def count_tokens(self, text):
        return len(text.split())

    def step_s(self) -> float:
        return 0.002

    def before_generate(self) -> None:
        pass

    def generate(self, prompts, on_phase=None, max_new_tokens=None, min_new_tokens=None, seed=None):
        from llem.backends.base import BatchOutput, RequestOutput

        self.before_generate()
        step = self.step_s()
        t0 = time.perf_counter()
        if on_phase:
            on_phase("prefill")
        out = []
        for p in prompts:
            words = p.split()[: max_new_tokens or self.max_new_tokens]
            times = []
            for _ in words:
                time.sleep(step)
                times.append(time.perf_counter() - t0)
            out.append(RequestOutput(p, " ".join(words), len(p.split()), len(words), tuple(times)))
        if on_phase:
            on_phase("decode")
        return BatchOutput(tuple(out), time.perf_counter() - t0, out[0].token_times_s[0], t0_perf=t0)

    def release(self):
        pass


@pytest.fixture
def words_backend() -> type:
    """The :class:`WordsBackend` class (subclass it for a test's own timing)."""
    return WordsBackend


@pytest.fixture
def register_backend():
    """``register_backend(name, cls)`` for the test; the registry is put back after it."""
    from llem import plugins

    saved = {k: dict(v) for k, v in plugins._registered.items()}
    yield plugins.register_backend
    for k, v in saved.items():
        plugins._registered[k].clear()
        plugins._registered[k].update(v)
