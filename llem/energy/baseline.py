"""Idle baseline: the power a machine draws doing nothing, measured once and cached.

Before a window with ``baseline_s > 0`` the same meter runs for ``baseline_s`` seconds
while the calling thread sleeps. The result is cached for the Python session, keyed by
what the meter measures (``meter.cache_key``), and reused until it is older than the
window's ``baseline_cache_ttl_s``. The window then reports total energy and dynamic
energy (total minus baseline power x duration).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llem.energy.sampler import Sampler


@dataclass(frozen=True)
class Baseline:
    """Idle power over all devices and per device.

    Attributes
    ----------
    power_w : float
        Mean idle power, W (sum over devices).
    spread_w : float
        Standard deviation of the per-interval total power, W.
    power_w_by_device : dict
        Device -> mean idle W.
    duration_s : float
        How long it was measured, s.
    samples : int
        Intervals measured.
    key : str
        The meter's cache key.
    measured_at : float
        ``time.monotonic()`` when it was measured.
    """

    power_w: float
    spread_w: float
    power_w_by_device: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    samples: int = 0
    key: str = ""
    measured_at: float = 0.0

    def age_s(self, now: float | None = None) -> float:
        """Seconds since it was measured."""
        return (time.monotonic() if now is None else now) - self.measured_at


_cache: dict[str, Baseline] = {}
_lock = threading.Lock()


def cached_baseline(key: str, ttl_s: float, now: float | None = None) -> Baseline | None:
    """The cached baseline for ``key`` if younger than ``ttl_s``; expired ones are dropped."""
    with _lock:
        b = _cache.get(key)
        if b is None:
            return None
        if ttl_s <= 0 or b.age_s(now) > ttl_s:
            del _cache[key]
            return None
        return b


def store_baseline(b: Baseline) -> None:
    """Cache ``b`` under its key."""
    with _lock:
        _cache[b.key] = b


def clear_baseline_cache() -> None:
    """Forget every cached baseline (the next window with ``baseline_s > 0`` re-measures)."""
    with _lock:
        _cache.clear()


def baseline_from_rows(
    rows: list[tuple[Any, ...]], readings: Any, duration_s: float
) -> tuple[float, float, dict[str, float]]:
    """Mean power (total and per device) and spread from a baseline's timeline and readings.

    Mean power per device is its energy over the baseline divided by the duration; the
    spread is the standard deviation of the total power across sampling instants.
    """
    by_device = {r.device: (r.energy_j / duration_s if duration_s > 0 else 0.0) for r in readings}
    totals: dict[float, float] = {}
    for t, _device, power_w, _e, _m in rows:
        if power_w is not None:
            totals[t] = totals.get(t, 0.0) + power_w
    values = list(totals.values())
    spread = statistics.pstdev(values) if len(values) >= 2 else 0.0
    return sum(by_device.values()), spread, by_device


def measure_baseline(meter: Any, duration_s: float, interval_s: float, sleep: Any = time.sleep) -> Baseline:
    """Run ``meter`` for ``duration_s`` seconds of idle and return its :class:`Baseline`.

    The meter is started and stopped here; the sampler thread is always joined, also when
    the sleep is interrupted (the interrupt then propagates).
    """
    meter.start()
    t0 = time.perf_counter()
    sampler = Sampler(meter, interval_s, t0)
    started = False
    try:
        sampler.tick()
        sampler.start()
        started = True
        sleep(duration_s)
    finally:
        if started:
            _, interrupted = sampler.stop()
        else:
            interrupted = False
        try:
            t_end = sampler.tick()
        finally:
            readings = meter.stop()
        if interrupted:
            raise KeyboardInterrupt
    power_w, spread_w, by_device = baseline_from_rows(sampler.rows, readings, t_end)
    return Baseline(
        power_w=power_w,
        spread_w=spread_w,
        power_w_by_device=by_device,
        duration_s=t_end,
        samples=sampler.ticks,
        key=str(getattr(meter, "cache_key", type(meter).__name__)),
        measured_at=time.monotonic(),
    )
