"""The ``estimate`` meter: CPU and RAM energy from a model, for machines with no counter.

This is what runs on laptops without RAPL access, in VMs and on the development and CI
machines. Its figures are always labelled ``estimated``, and every reading records the
model and its inputs.

Model
-----
CPU energy (J) = CPU seconds x W per hardware thread, where

* CPU seconds are those of **this process** (all its threads; ``time.process_time()``)
  with ``scope="process"`` (the default), or of the **whole system** (busy time summed
  over CPUs, ``psutil.cpu_times()``) with ``scope="system"``;
* W per thread is the CPU's TDP divided by its hardware threads: from the small table
  :data:`CPU_TDP_TABLE` below when the CPU model is in it, else from codecarbon's CPU
  table (``codecarbon/data/hardware/cpu_power.csv``, read as a file; codecarbon's tracker
  is not started) divided by the threads we can count, else the default
  :data:`DEFAULT_WATTS_PER_THREAD`.

RAM energy (J) = resident memory in GiB x :data:`RAM_WATTS_PER_GIB` integrated over time:
the process's RSS with ``scope="process"``, used system memory with ``scope="system"``.

The process model charges only the work this process does: a CPU's idle power is not in
it (so an idle baseline is near zero). TDP is a sustained-load design figure, not a
measurement, so the CPU term is an upper-end share under load; compare estimated figures
with each other on one machine, never with measured ones.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llem.energy.base import Meter, Probe, RawSample, package_version
from llem.energy.measurement import DeviceReading
from llem.energy.memory import process_rss_reader

#: Default W per hardware thread for a CPU found in no table: codecarbon's
#: ``DEFAULT_POWER_PER_CORE = 4`` (codecarbon/core/cpu.py, 3.x), which it applies per
#: thread ("4 W per thread") when it does not know the CPU.
DEFAULT_WATTS_PER_THREAD = 4.0

#: RAM power per GiB in use: 3 W per 8 GB, the ratio codecarbon v2 used (its methodology
#: docs cite Crucial, "How much power does memory use?",
#: https://www.crucial.com/support/articles-faq-memory/how-much-power-does-memory-use).
#: codecarbon computed "GB" as bytes / 1024**3, i.e. GiB. codecarbon 3 replaced it with
#: a per-DIMM model (5 W per x86 DIMM) because power follows DIMM count more than size;
#: we keep the per-GiB ratio because it scales with what a process actually holds.
RAM_WATTS_PER_GIB = 3.0 / 8.0

_GIB = 1024**3


@dataclass(frozen=True)
class CpuSpec:
    """A CPU's vendor-rated TDP and hardware thread count."""

    name: str
    tdp_w: float
    cores: int
    threads: int
    source: str


#: A few common CPUs: TDP and core/thread counts from the vendors' product pages (AMD
#: product pages at amd.com/en/products/processors/server/epyc and .../desktops/ryzen;
#: Intel ARK at ark.intel.com). Each TDP also agrees with codecarbon's cpu_power.csv (3.3).
#: For Intel client parts the figure is "Processor Base Power" (TDP-up for 11th-gen mobile).
_AMD = "amd.com product page, default TDP"
_ARK = "Intel ARK, TDP"
_ARK_BASE = "Intel ARK, Processor Base Power"
_ARK_UP = "Intel ARK, configurable TDP-up"

# fmt: off
CPU_TDP_TABLE: tuple[CpuSpec, ...] = (
    # name                        TDP W  cores threads  where the figures come from
    CpuSpec("AMD EPYC 7763",             280.0, 64, 128, _AMD),  # Milan
    CpuSpec("AMD EPYC 7713",             225.0, 64, 128, _AMD),  # Milan
    CpuSpec("AMD EPYC 7742",             225.0, 64, 128, _AMD),  # Rome
    CpuSpec("AMD EPYC 9654",             360.0, 96, 192, _AMD),  # Genoa
    CpuSpec("Intel Xeon Platinum 8380",  270.0, 40, 80, _ARK),   # Ice Lake-SP
    CpuSpec("Intel Xeon Platinum 8480+", 350.0, 56, 112, _ARK),  # Sapphire Rapids
    CpuSpec("Intel Xeon Platinum 8592+", 350.0, 64, 128, _ARK),  # Emerald Rapids
    CpuSpec("Intel Xeon Gold 6248R",     205.0, 24, 48, _ARK),   # Cascade Lake
    CpuSpec("Intel Core i9-13900K",      125.0, 24, 32, _ARK_BASE),
    CpuSpec("Intel Core i7-1185G7",       28.0, 4, 8, _ARK_UP),
    CpuSpec("AMD Ryzen 9 7950X",         170.0, 16, 32, _AMD),
    CpuSpec("AMD Ryzen 7 5800X",         105.0, 8, 16, _AMD),
)
# fmt: on


@dataclass(frozen=True)
class CpuPowerFigure:
    """The W-per-thread figure the estimate uses, and where it came from.

    Attributes
    ----------
    cpu_model : str
        The CPU model string as the OS reports it.
    watts_per_thread : float
        W charged per CPU-second of one hardware thread.
    table : str
        ``"llem"``, ``"codecarbon"``, ``"default"`` or ``"user"``.
    matched : str or None
        The table row that matched.
    tdp_w : float or None
        The TDP of that row.
    threads : int or None
        Threads the TDP was divided over.
    source : str
        One line of provenance.
    """

    cpu_model: str
    watts_per_thread: float
    table: str
    matched: str | None
    tdp_w: float | None
    threads: int | None
    source: str


def normalize_cpu_name(name: str) -> str:
    """Lower-case a CPU model string and drop marks, clock speeds and filler words.

    ``"AMD EPYC 7763 64-Core Processor"`` -> ``"amd epyc 7763"``;
    ``"Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.0GHz"`` -> ``"intel xeon platinum 8480+"``.
    """
    s = name.lower()
    s = re.sub(r"\((r|tm|c)\)|[®™]", " ", s)
    s = re.sub(r"@\s*[\d.]+\s*[gm]hz", " ", s)
    s = re.sub(r"\b\d+-core\b", " ", s)
    s = re.sub(r"\b(processor|cpu|with radeon graphics)\b", " ", s)
    return " ".join(s.split())


def match_cpu(model: str, names: list[str]) -> str | None:
    """Return the entry of ``names`` that ``model`` is, or None.

    An entry matches when its normalized form equals the model's, or (for entries of at
    least two words that contain a digit, so a bare family name never matches) appears
    in it as whole words; the longest such entry wins.
    """
    m = normalize_cpu_name(model)
    if not m:
        return None
    padded = f" {m} "
    best: tuple[int, str] | None = None
    for name in names:
        n = normalize_cpu_name(name)
        if not n:
            continue
        if n == m:
            return name
        if " " in n and any(c.isdigit() for c in n) and f" {n} " in padded:
            if best is None or len(n) > best[0]:
                best = (len(n), name)
    return best[1] if best else None


@functools.lru_cache(maxsize=1)
def cpu_model_name() -> str:
    """The CPU model string (``/proc/cpuinfo`` "model name", else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def codecarbon_cpu_table_path() -> Path | None:
    """Path of codecarbon's ``cpu_power.csv`` when codecarbon is installed (not imported)."""
    try:
        spec = importlib.util.find_spec("codecarbon")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "hardware" / "cpu_power.csv"
        if p.is_file():
            return p
    return None


@functools.lru_cache(maxsize=4)
def read_codecarbon_cpu_table(path: str) -> dict[str, float]:
    """Read codecarbon's CPU table (``Name,TDP``) into ``{name: tdp_w}``."""
    out: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                out[row["Name"].strip()] = float(row["TDP"])
            except (KeyError, TypeError, ValueError):
                continue
    return out


def _cores_in_name(model: str) -> int | None:
    m = re.search(r"(\d+)-core", model.lower())
    return int(m.group(1)) if m else None


def cpu_power_figure(
    cpu_model: str | None = None,
    logical_cpus: int | None = None,
    use_codecarbon: bool = True,
    codecarbon_table: Path | str | None = None,
) -> CpuPowerFigure:
    """Choose the W-per-thread figure for a CPU: llem's table, codecarbon's, or the default.

    Parameters
    ----------
    cpu_model : str, optional
        CPU model string; this machine's by default.
    logical_cpus : int, optional
        Hardware threads visible here (``os.cpu_count()`` by default); used only with a
        codecarbon row, whose table has no thread counts.
    use_codecarbon : bool
        Look in codecarbon's table when llem's has no row.
    codecarbon_table : path, optional
        Use this ``Name,TDP`` CSV instead of the installed codecarbon's.
    """
    model = cpu_model if cpu_model is not None else cpu_model_name()
    own = match_cpu(model, [s.name for s in CPU_TDP_TABLE])
    if own is not None:
        spec = next(s for s in CPU_TDP_TABLE if s.name == own)
        w = spec.tdp_w / spec.threads
        return CpuPowerFigure(
            model,
            w,
            "llem",
            spec.name,
            spec.tdp_w,
            spec.threads,
            f"{spec.name} TDP {spec.tdp_w:g} W / {spec.threads} threads ({spec.cores} cores; {spec.source})",
        )
    if use_codecarbon:
        path = Path(codecarbon_table) if codecarbon_table else codecarbon_cpu_table_path()
        if path is not None:
            table = read_codecarbon_cpu_table(str(path))
            hit = match_cpu(model, list(table))
            if hit is not None:
                tdp = table[hit]
                local = logical_cpus or os.cpu_count() or 1
                named = _cores_in_name(model) or 0
                threads = max(local, named)
                return CpuPowerFigure(
                    model,
                    tdp / threads,
                    "codecarbon",
                    hit,
                    tdp,
                    threads,
                    f"{hit} TDP {tdp:g} W (codecarbon cpu_power.csv) / {threads} threads "
                    f"(max of {local} visible here and {named or 'no'} cores in the model name)",
                )
    return CpuPowerFigure(
        model,
        DEFAULT_WATTS_PER_THREAD,
        "default",
        None,
        None,
        None,
        f"CPU {model!r} not in llem's or codecarbon's table: default "
        f"{DEFAULT_WATTS_PER_THREAD:g} W/thread (codecarbon DEFAULT_POWER_PER_CORE)",
    )


# ------------------------------------------------------------------ pure arithmetic
def cpu_energy_j(cpu_seconds: float, watts_per_thread: float) -> float:
    """CPU energy, J: CPU-seconds (summed over threads) x W per thread."""
    return cpu_seconds * watts_per_thread


def ram_energy_j(gib: float, seconds: float, watts_per_gib: float = RAM_WATTS_PER_GIB) -> float:
    """RAM energy, J, for ``gib`` GiB held for ``seconds`` s at ``watts_per_gib``."""
    return gib * watts_per_gib * seconds


def trapezoid_j(p0_w: float, p1_w: float, dt_s: float) -> float:
    """Energy of a power reading pair over ``dt_s`` by the trapezoid rule, J."""
    return 0.5 * (p0_w + p1_w) * dt_s


# ---------------------------------------------------------------------------- meter
#: What an estimate covers in each scope (``experiment.energy_scope``), as its sources say it.
SCOPE_WORDS: dict[str, dict[str, str]] = {
    "process": {
        "cpu": "covers this process only",
        "ram": "covers this process only",
        "all": "this process only, not the rest of the machine; experiment.energy_scope='system' counts "
               "the whole machine, as codecarbon does",
    },
    "system": {
        "cpu": "covers the whole machine (busy CPU time of all processes)",
        "ram": "covers the whole machine (memory used by all processes)",
        "all": "the whole machine: busy CPU time of all processes and used system memory, "
               "as codecarbon counts",
    },
}


class EstimateMeter(Meter):
    """CPU and RAM energy from CPU time and resident memory (always ``estimated``).

    Parameters
    ----------
    devices : ignored
        Accepted for a uniform meter signature (the estimate has one CPU and one RAM).
    scope : {"process", "system"}
        Charge this process's CPU time and RSS (default) or the whole system's busy CPU
        time and used memory.
    cpu, ram : bool
        Which parts to estimate (``ram=True, cpu=False`` completes a RAPL meter that has
        no DRAM domain).
    watts_per_thread : float, optional
        Override the CPU power figure (recorded as ``table="user"``).
    ram_watts_per_gib : float
        W per GiB of memory held.
    clock : callable
        Time source (``time.perf_counter``); tests pass a fake.
    """

    name = "estimate"

    def __init__(
        self,
        devices: Any = None,
        *,
        scope: str = "process",
        cpu: bool = True,
        ram: bool = True,
        watts_per_thread: float | None = None,
        ram_watts_per_gib: float = RAM_WATTS_PER_GIB,
        clock: Any = time.perf_counter,
        cpu_seconds: Any = None,
        ram_bytes: Any = None,
    ) -> None:
        if scope not in ("process", "system"):
            raise ValueError(f"EstimateMeter scope must be 'process' or 'system', not {scope!r}.")
        self.scope = scope
        self.cpu = cpu
        self.ram = ram
        self.ram_watts_per_gib = float(ram_watts_per_gib)
        if watts_per_thread is not None:
            self.figure = CpuPowerFigure(
                cpu_model_name(),
                float(watts_per_thread),
                "user",
                None,
                None,
                None,
                f"user-set {watts_per_thread:g} W/thread",
            )
        else:
            self.figure = _default_figure()
        self._figure_inputs = _figure_inputs(self.figure)
        self._threads = _logical_cpus()
        self._clock = clock
        self._cpu_seconds = cpu_seconds or (
            _process_cpu_seconds if scope == "process" else _system_cpu_seconds
        )
        self._ram_bytes = ram_bytes or (process_rss_reader() if scope == "process" else _system_used_bytes)
        self._running = False

    @property
    def cache_key(self) -> str:
        """Scope, parts and constants."""
        return (
            f"estimate/{self.scope}/cpu={self.cpu}/ram={self.ram}/"
            f"{self.figure.watts_per_thread:g}/{self.ram_watts_per_gib:g}"
        )

    @property
    def label(self) -> str:
        """``estimate`` or ``estimate(ram)``."""
        if self.cpu and self.ram:
            return "estimate"
        return "estimate(" + ("cpu" if self.cpu else "ram") + ")"

    def probe(self) -> Probe:
        """Always available."""
        return Probe(
            "estimate",
            True,
            self.describe(),
            tuple(d for d, on in (("cpu", self.cpu), ("ram", self.ram)) if on),
            "estimated",
        )

    def _cpu_text(self) -> str:
        what = "process" if self.scope == "process" else "system busy"
        return f"{what} CPU time x {self.figure.watts_per_thread:.4g} W/thread ({self.figure.source})"

    def _ram_text(self) -> str:
        mem = "process RSS" if self.scope == "process" else "used system memory"
        return f"RAM {self.ram_watts_per_gib:g} W/GiB of {mem} (3 W per 8 GB, codecarbon v2 after Crucial)"

    def cpu_source(self) -> str:
        """Provenance of the CPU figure, with what it covers."""
        return f"estimate: {self._cpu_text()}; {SCOPE_WORDS[self.scope]['cpu']}"

    def ram_source(self) -> str:
        """Provenance of the RAM figure, with what it covers."""
        return f"estimate: {self._ram_text()}; {SCOPE_WORDS[self.scope]['ram']}"

    def describe(self) -> str:
        """``estimate: process CPU time x 4 W/thread (...) + RAM ... (scope: this process only ...)``."""
        parts = [t for t, on in ((self._cpu_text(), self.cpu), (self._ram_text(), self.ram)) if on]
        return "estimate: " + " + ".join(parts) + f" (scope: {SCOPE_WORDS[self.scope]['all']})"

    def versions(self) -> dict[str, str]:
        """Psutil's version (used for RSS and system CPU times)."""
        v = package_version("psutil")
        return {"psutil": v} if v else {}

    def start(self) -> None:
        """Take the starting CPU time and memory."""
        now = self._clock()
        self._t0 = self._t_prev = now
        self._cpu0 = self._cpu_prev = self._cpu_seconds()
        self._ram_prev_gib = self._ram_bytes() / _GIB if self.ram else 0.0
        self._ram_peak_gib = self._ram_prev_gib
        self._ram_sum_gib_s = 0.0
        self._ram_e = 0.0
        self._cpu_e = 0.0
        self._n = 0
        self._running = True

    def sample(self) -> list[RawSample]:
        """CPU and RAM readings (energy cumulative since start)."""
        now = self._clock()
        dt = now - self._t_prev
        out: list[RawSample] = []
        if self.cpu:
            cpu_s = self._cpu_seconds()
            e = cpu_energy_j(cpu_s - self._cpu0, self.figure.watts_per_thread)
            p = (e - self._cpu_e) / dt if dt > 0 else None
            self._cpu_e = e
            self._cpu_prev = cpu_s
            out.append(("cpu", p, e, None))
        if self.ram:
            gib = self._ram_bytes() / _GIB
            self._ram_sum_gib_s += 0.5 * (gib + self._ram_prev_gib) * dt
            self._ram_e = self._ram_sum_gib_s * self.ram_watts_per_gib
            self._ram_prev_gib = gib
            self._ram_peak_gib = max(self._ram_peak_gib, gib)
            out.append(("ram", gib * self.ram_watts_per_gib, self._ram_e, None))
        self._t_prev = now
        self._n += 1
        return out

    def stop(self) -> tuple[DeviceReading, ...]:
        """Totals up to the last ``sample()`` (the window samples right before stopping)."""
        self._running = False
        duration = self._t_prev - self._t0
        out = []
        if self.cpu:
            cpu_s = self._cpu_prev - self._cpu0
            threads = self._threads
            util = cpu_s / (duration * threads) if duration > 0 else 0.0
            out.append(
                DeviceReading(
                    "cpu",
                    "cpu",
                    self._cpu_e,
                    "estimated",
                    self.cpu_source(),
                    {
                        "model": "cpu_seconds x watts_per_thread",
                        "scope": self.scope,
                        "cpu_seconds": cpu_s,
                        "watts_per_thread": self.figure.watts_per_thread,
                        "mean_utilisation": util,
                        "logical_cpus": threads,
                        **self._figure_inputs,
                    },
                )
            )
        if self.ram:
            mean_gib = self._ram_sum_gib_s / duration if duration > 0 else self._ram_prev_gib
            out.append(
                DeviceReading(
                    "ram",
                    "ram",
                    self._ram_e,
                    "estimated",
                    self.ram_source(),
                    {
                        "model": "resident_gib x watts_per_gib, trapezoid over samples",
                        "scope": self.scope,
                        "watts_per_gib": self.ram_watts_per_gib,
                        "mean_gib": mean_gib,
                        "peak_gib": self._ram_peak_gib,
                        "samples": self._n,
                        "source": "3 W per 8 GB (codecarbon v2 methodology, after Crucial)",
                    },
                )
            )
        return tuple(out)


@functools.lru_cache(maxsize=1)
def _logical_cpus() -> int:
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def _default_figure() -> CpuPowerFigure:
    return cpu_power_figure()


def _process_cpu_seconds() -> float:
    return time.process_time()


def _system_cpu_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    busy = t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    return float(busy)


@functools.lru_cache(maxsize=8)
def _figure_inputs(figure: CpuPowerFigure) -> dict[str, Any]:
    return {f"figure_{k}": v for k, v in asdict(figure).items() if k != "watts_per_thread"}


def _system_used_bytes() -> float:
    import psutil

    vm = psutil.virtual_memory()
    return float(vm.total - vm.available)
