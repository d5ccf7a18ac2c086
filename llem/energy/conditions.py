"""What else the machine was doing while a window measured: CPU load and GPU conditions.

Read only at a window's start and end, never per sample, so measuring stays cheap:

* :func:`cpu_times` reads ``/proc/stat`` once (the machine's busy, idle and steal time over
  all CPUs) and this process's own CPU time (``os.times``, plus its live children's from
  ``/proc/<pid>/stat``, so the worker processes of an engine count as this run's). Two readings give
  :func:`other_cpu_share`: the share of the machine's CPU time that other processes (or, on a
  VM, the hypervisor's other guests: steal time) used between them. A platform without
  ``/proc/stat`` gives None, never an error.
* :func:`gpu_conditions` asks one GPU (a :class:`~llem.energy.nvml.GpuDevice`) for the
  processes with a compute context on it, its clock event (throttle) reasons, its
  temperature and its MIG mode. A reading the GPU does not support is left out.

:mod:`llem.results.flags` turns these readings into the validity flags of a result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Where the kernel keeps the machine's CPU time counters.
PROC_STAT = "/proc/stat"

#: Below this many seconds per CPU a window's share is too coarse to tell (the counters
#: tick at 100 Hz, so one tick per CPU would be more than 2% of a shorter window).
MIN_WINDOW_S_PER_CPU = 0.5


@dataclass(frozen=True)
class CpuTimes:
    """One reading of the machine's CPU time, seconds summed over all CPUs.

    Attributes
    ----------
    busy_s : float
        user + nice + system + irq + softirq (guest time is inside user).
    steal_s : float
        Time a hypervisor gave this VM's CPUs to other guests.
    total_s : float
        busy + idle + iowait + steal.
    own_s : float
        CPU time of this process (all its threads) and its children.
    cpus : int
        CPUs counted (the ``cpuN`` lines).
    """

    busy_s: float
    steal_s: float
    total_s: float
    own_s: float
    cpus: int = 1


def parse_proc_stat(text: str, ticks_per_s: float = 100.0) -> tuple[float, float, float, int] | None:
    """``(busy_s, steal_s, total_s, cpus)`` from the text of ``/proc/stat`` (None if it has no ``cpu`` line).

    >>> parse_proc_stat(chr(10).join(["cpu  100 0 50 800 10 5 5 30 0 0", "cpu0 50 0 25 400 5 2 3 15 0 0"]))
    (1.6, 0.3, 10.0, 1)
    """
    fields: list[int] | None = None
    cpus = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu":
            try:
                fields = [int(x) for x in parts[1:]]
            except ValueError:
                return None
        elif parts[0].startswith("cpu") and parts[0][3:].isdigit():
            cpus += 1
    if fields is None or len(fields) < 4:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    total = busy + idle + iowait + steal
    return busy / ticks_per_s, steal / ticks_per_s, total / ticks_per_s, max(cpus, 1)


def child_pids(proc: str = "/proc") -> set[int]:
    """Ids of this process's live descendants (an engine's worker processes).

    Read from the kernel's ``<proc>/<pid>/task/<tid>/children`` lists, a few small files;
    where the kernel has none, psutil's scan of the process table (slower: every process).
    """
    me = os.getpid()
    try:
        tids = os.listdir(f"{proc}/{me}/task")
        listed = os.path.exists(f"{proc}/{me}/task/{tids[0]}/children") if tids else False
    except OSError:
        listed = False
    if not listed:
        try:
            import psutil

            return {c.pid for c in psutil.Process().children(recursive=True)}
        except Exception:  # noqa: BLE001 - no psutil, or no process table: no children known
            return set()
    found: set[int] = set()
    todo = [me]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"{proc}/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"{proc}/{pid}/task/{tid}/children", encoding="ascii") as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def _process_cpu_s(pid: int, proc: str, ticks_per_s: float) -> float:
    """CPU seconds of process ``pid`` (utime + stime + its reaped children's) from ``<proc>/<pid>/stat``."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / ticks_per_s
    except (OSError, IndexError, ValueError):
        return 0.0


def own_cpu_s(proc: str = "/proc") -> float:
    """CPU seconds of this process (all threads), its waited-for children and its live ones."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    ticks = _ticks_per_s()
    return total + sum(_process_cpu_s(pid, proc, ticks) for pid in child_pids(proc))


def _ticks_per_s() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def cpu_times(path: str = PROC_STAT, own: Callable[[], float] = own_cpu_s) -> CpuTimes | None:
    """Read the machine's CPU time (``path``) and this process's; None where there is no such file."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return None
    parsed = parse_proc_stat(text, _ticks_per_s())
    if parsed is None:
        return None
    busy, steal, total, cpus = parsed
    return CpuTimes(busy, steal, total, own(), cpus)


def other_cpu_share(start: CpuTimes | None, end: CpuTimes | None) -> float | None:
    """Share (0..1) of the machine's CPU time between two readings that other processes used.

    ``(busy - own + steal) / total`` over the interval; None when either reading is
    missing or the interval is shorter than :data:`MIN_WINDOW_S_PER_CPU` per CPU.

    >>> a = CpuTimes(busy_s=10, steal_s=0, total_s=100, own_s=5, cpus=2)
    >>> b = CpuTimes(busy_s=16, steal_s=1, total_s=110, own_s=7, cpus=2)
    >>> round(other_cpu_share(a, b), 3)
    0.5
    """
    if start is None or end is None:
        return None
    total = end.total_s - start.total_s
    if total < MIN_WINDOW_S_PER_CPU * max(1, end.cpus):
        return None
    other = (end.busy_s - start.busy_s) - (end.own_s - start.own_s) + (end.steal_s - start.steal_s)
    return min(1.0, max(0.0, other / total))


def own_pids() -> set[int]:
    """Ids of this process and its live descendants (an engine's worker processes)."""
    return {os.getpid(), *child_pids()}


def gpu_conditions(dev: Any, ours: set[int] | None = None) -> dict[str, Any]:
    """What one GPU reports now, JSON-safe; a reading it does not support is left out.

    Keys: ``pids`` (processes with a compute context on it), ``own_pids`` (those that are
    this process or its children), ``clock_event_reasons`` (NVML's bit mask),
    ``temperature_c`` and ``mig``. A device without one of the readings (an older plugin
    device) or one that raises leaves that key out: a reading here never fails a
    measurement.
    """
    out: dict[str, Any] = {}
    readers = (("pids", "running_processes"), ("clock_event_reasons", "clock_event_reasons"),
               ("temperature_c", "temperature_c"), ("mig", "mig_enabled"))
    for key, method in readers:
        fn = getattr(dev, method, None)
        if not callable(fn):
            continue
        try:
            value = fn()
        except Exception:  # noqa: BLE001 - a flag's reading must not stop a run
            continue
        if value is None:
            continue
        out[key] = sorted(int(p) for p in value) if key == "pids" else value
    if "pids" in out:
        mine = ours if ours is not None else own_pids()
        out["own_pids"] = [p for p in out["pids"] if p in mine]
    return out


__all__ = ["MIN_WINDOW_S_PER_CPU", "PROC_STAT", "CpuTimes", "child_pids", "cpu_times", "gpu_conditions",
           "other_cpu_share", "own_cpu_s", "own_pids", "parse_proc_stat"]
