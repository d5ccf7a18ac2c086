"""Checks of the NVML readings themselves: the energy counter, the power reading, Zeus.

Each reads the GPU the PyTorch runs use through llem's own device interface
(:mod:`llem.energy.nvml`), so ``--simulate`` runs this code against the fake devices.
"""

from __future__ import annotations

import importlib.util
import inspect
import statistics
import time
from typing import Any

from llem.gpucheck.kit import Skip, check, outcome

#: Counter energy / power-integrated energy within this of 1 passes.
RATIO_TOLERANCE = 0.10


def watch(dev: Any, seconds: float, interval_s: float = 0.0) -> list[tuple[float, int | None, float]]:
    """Read ``(time, counter mJ, power mW)`` as often as ``interval_s`` allows for ``seconds``."""
    out = []
    end = time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        out.append((t, dev.total_energy_mj(), dev.power_mw()))
        if t >= end:
            return out
        if interval_s > 0:
            time.sleep(interval_s)


def update_period_s(times: list[float], values: list[Any]) -> tuple[float | None, int]:
    """Median time between changes of ``values`` (None with fewer than 3 changes), and the changes."""
    changes = [t for t, a, b in zip(times[1:], values, values[1:]) if b != a]
    if len(changes) < 3:
        return None, len(changes)
    return statistics.median(b - a for a, b in zip(changes, changes[1:])), len(changes)


def integrate_power_j(samples: list[tuple[float, Any, float]]) -> float:
    """Trapezoid integral of the power readings (mW) over their times, J."""
    e = 0.0
    for (t0, _, p0), (t1, _, p1) in zip(samples, samples[1:]):
        e += 0.5 * (p0 + p1) / 1000.0 * (t1 - t0)
    return e


@check("nvml-counter", "NVML total-energy counter reads, advances, and how often it updates",
       limit_s=30, issue="16.4, 15.6")
def nvml_counter(ctx: Any) -> dict[str, Any]:
    """Read the counter and the power as fast as possible for 2 s (with a load for the second)."""
    with ctx.nvml() as dev:
        name = dev.name()
        if dev.total_energy_mj() is None:
            return outcome("fail", f"{name}: nvmlDeviceGetTotalEnergyConsumption is not supported "
                           "(pre-Volta GPU or a vGPU guest); llem falls back to integrated power "
                           "(method 'sampled')", gpu=name)
        idle = watch(dev, 1.0, 0.0005)
        with ctx.load(required=False):
            busy = watch(dev, 1.5, 0.0005)
    samples = idle + busy
    times = [s[0] for s in samples]
    counters = [s[1] for s in samples]
    if any(c is None for c in counters):
        return outcome("fail", "the counter stopped answering mid-read (None after a value)")
    period, changes = update_period_s(times, counters)
    power_period, _ = update_period_s(times, [s[2] for s in samples])
    backwards = sum(1 for a, b in zip(counters, counters[1:]) if b is not None and a is not None and b < a)
    delta_mj = (counters[-1] or 0) - (counters[0] or 0)
    span = times[-1] - times[0]
    ctx.cache["counter_period_s"] = period
    numbers = dict(gpu=name, nvml_index=ctx.nvml_index, reads=len(samples), counter_changes=changes,
                   counter_update_ms=None if period is None else period * 1000,
                   power_update_ms=None if power_period is None else power_period * 1000,
                   delta_mj=delta_mj, seconds=span, mean_power_w=delta_mj / 1000 / span if span else None,
                   went_backwards=backwards)
    if backwards:
        return outcome("fail", f"the counter went backwards {backwards} time(s) in {span:.1f} s", **numbers)
    if delta_mj <= 0:
        return outcome("fail", f"the counter did not advance in {span:.1f} s of reads", **numbers)
    per = f"every {period * 1000:.1f} ms" if period else "too rarely to tell"
    pper = f"every {power_period * 1000:.0f} ms" if power_period else "too rarely to tell"
    return outcome("pass", f"{name}: +{delta_mj / 1000:.1f} J in {span:.1f} s; the counter updates "
                   f"{per}, the power reading {pper}", **numbers)


def _same_window(ctx: Any, dev: Any, lead_s: float, load_s: float, tail_s: float,
                 interval_s: float) -> tuple[list[tuple[float, Any, float]], float, float]:
    """Counter and power over idle ``lead_s``, ``load_s`` under load, idle ``tail_s``."""
    samples = watch(dev, lead_s, interval_s)
    t_load0 = time.perf_counter()
    with ctx.load():
        samples += watch(dev, load_s, interval_s)
    t_load1 = time.perf_counter()
    samples += watch(dev, tail_s, interval_s)
    return samples, t_load0, t_load1


@check("counter-vs-power", "Counter energy against power integrated over the same window, under load",
       limit_s=45, issue="16.4, 15.6")
def counter_vs_power(ctx: Any) -> dict[str, Any]:
    """1 s idle, 4 s load, 1.5 s idle (the power reading's ~1 s average catches up), 10 ms reads."""
    lead, load, tail = (0.5, 1.5, 0.5) if ctx.quick else (1.0, 4.0, 1.5)
    with ctx.nvml() as dev:
        if dev.total_energy_mj() is None:
            raise Skip("this GPU has no energy counter to compare")
        samples, t0, t1 = _same_window(ctx, dev, lead, load, tail, 0.01)
    counter_j = ((samples[-1][1] or 0) - (samples[0][1] or 0)) / 1000.0
    power_j = integrate_power_j(samples)
    idle_w = [p / 1000 for t, _, p in samples if t < t0]
    busy_w = [p / 1000 for t, _, p in samples if t0 + 1.0 <= t < t1] or [p / 1000 for t, _, p in samples
                                                                        if t0 <= t < t1]
    ratio = counter_j / power_j if power_j > 0 else None
    numbers = dict(counter_j=counter_j, power_integrated_j=power_j, ratio=ratio, samples=len(samples),
                   window_s=samples[-1][0] - samples[0][0],
                   idle_power_w=statistics.fmean(idle_w) if idle_w else None,
                   load_power_w=statistics.fmean(busy_w) if busy_w else None)
    if ratio is None:
        return outcome("fail", "the integrated power is 0 J: the power reading did not answer", **numbers)
    raised = (numbers["load_power_w"] or 0) > 1.2 * (numbers["idle_power_w"] or 0)
    words = (f"counter {counter_j:.1f} J vs power-integrated {power_j:.1f} J: ratio {ratio:.3f}; "
             f"idle {numbers['idle_power_w']:.0f} W, load {numbers['load_power_w']:.0f} W")
    if not raised:
        return outcome("fail", words + " (the load did not raise the power by 20%)", **numbers)
    ok = abs(ratio - 1) <= RATIO_TOLERANCE
    return outcome("pass" if ok else "fail", words + ("" if ok else f" (outside 1 +- {RATIO_TOLERANCE:g})"),
                   **numbers)


def _zeus_monitor(cuda_index: int) -> Any:
    from zeus.monitor import ZeusMonitor

    params = inspect.signature(ZeusMonitor).parameters
    kw: dict[str, Any] = {}
    if "gpu_indices" in params:
        kw["gpu_indices"] = [cuda_index]
    if "cpu_indices" in params:
        kw["cpu_indices"] = []
    return ZeusMonitor(**kw)


@check("zeus-same-window", "Zeus's ZeusMonitor against the NVML counter on the same window",
       limit_s=45, issue="16.2, 16.4")
def zeus_same_window(ctx: Any) -> dict[str, Any]:
    """A Zeus window and llem's counter read around the same load; their ratio."""
    if importlib.util.find_spec("zeus") is None:
        raise Skip("zeus is not installed here (pip install zeus; it needs nothing downloaded at run time)")
    if ctx.simulate:
        raise Skip("Zeus reads the real NVML, not the simulated devices")
    ctx.need_cuda("Zeus on the same window")
    try:
        monitor = _zeus_monitor(0)
    except Exception as exc:  # noqa: BLE001 - Zeus's own refusal, as a skip with its words
        raise Skip(f"ZeusMonitor could not start: {exc!r}") from None
    with ctx.nvml() as dev:
        c0 = dev.total_energy_mj()
        monitor.begin_window("llem-gpucheck")
        with ctx.load():
            time.sleep(3.0)
        time.sleep(1.0)
        got = monitor.end_window("llem-gpucheck")
        c1 = dev.total_energy_mj()
    energy = getattr(got, "gpu_energy", {}) or {}
    zeus_j = sum(float(v) for v in energy.values())
    counter_j = ((c1 or 0) - (c0 or 0)) / 1000.0 if c0 is not None else None
    ratio = zeus_j / counter_j if counter_j else None
    numbers = dict(zeus_j=zeus_j, counter_j=counter_j, ratio=ratio, zeus_time_s=getattr(got, "time", None),
                   zeus_gpus=list(energy))
    if ratio is None:
        return outcome("fail", "no ratio: the counter or Zeus gave 0 J", **numbers)
    ok = abs(ratio - 1) <= RATIO_TOLERANCE
    return outcome("pass" if ok else "fail", f"Zeus {zeus_j:.1f} J vs llem's counter {counter_j:.1f} J: "
                   f"ratio {ratio:.3f}", **numbers)
