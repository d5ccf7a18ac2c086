"""The measurement window: ``with measure(...) as m:`` around an inference run.

>>> from llem.energy.window import measure
>>> with measure(meter="estimate", interval_s=0.05) as m:   # doctest: +SKIP
...     m.mark("prefill")
...     ...
...     m.mark("decode")
...     ...
>>> m.measurement.energy_j                                   # doctest: +SKIP

Opening the window resolves the meter, measures (or reuses) the idle baseline when
``baseline_s > 0``, starts the meter and a background sampler thread. Closing it joins the
thread, takes a last reading and builds a frozen
:class:`~llem.energy.measurement.Measurement`. On an exception or KeyboardInterrupt inside
the block the window still closes: the partial measurement is kept with
``complete=False`` and the exception propagates.
"""

from __future__ import annotations

import datetime as _dt
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

from llem._version import __version__
from llem.energy import baseline as _baseline
from llem.energy.measurement import DeviceReading, Measurement, PhaseMark, Sample, weakest_method
from llem.energy.registry import create_meter
from llem.energy.sampler import MIN_INTERVAL_S, Row, Sampler
from llem.errors import LlemError, MeterReadError

#: Default sampling interval, s (Zeus and codecarbon-style monitors poll at 100 ms-1 s;
#: 100 ms resolves prefill/decode phases of a typical request).
DEFAULT_INTERVAL_S = 0.1

#: Default lifetime of a cached idle baseline, s.
DEFAULT_BASELINE_TTL_S = 3600.0

#: Phase names the runner uses (free strings are allowed too).
PHASES: tuple[str, ...] = ("warmup", "prefill", "decode", "idle", "thermal")

_J_PER_KWH = 3.6e6


def measure(
    meter: Any = "auto",
    interval_s: float = DEFAULT_INTERVAL_S,
    baseline_s: float = 0.0,
    baseline_cache_ttl_s: float = DEFAULT_BASELINE_TTL_S,
    grid_intensity_g_per_kwh: float | None = None,
    devices: Any = None,
    scope: str | None = None,
    also_each_tick: Sequence[Callable[[], Any]] = (),
) -> MeasurementWindow:
    """Make a measurement window (open it with ``with`` or :meth:`MeasurementWindow.begin`).

    Parameters
    ----------
    meter : str or meter
        ``"auto"`` (best available per device: NVML for GPUs, RAPL else the estimate for
        CPU and RAM), ``"nvml"``, ``"rapl"``, ``"estimate"``, ``"codecarbon"``,
        ``"replay"``, ``"none"`` (time only), a plugin's name, or a meter instance.
    interval_s : float
        Seconds between samples (default 0.1).
    baseline_s : float
        Seconds of idle power to measure before the run (0: no baseline, no dynamic energy).
        Cached per session, keyed by what the meter measures.
    baseline_cache_ttl_s : float
        Reuse a cached baseline younger than this (0: always re-measure).
    grid_intensity_g_per_kwh : float, optional
        Grid carbon intensity for ``carbon_g`` (else codecarbon's when that meter runs,
        else no carbon figure).
    devices : iterable of int or "gpu:N", optional
        GPUs to read (NVML indices; all when None). CPU and RAM are always read.
    scope : {"process", "system"}, optional
        What the CPU and RAM estimate covers: this process (the default) or the whole
        machine (``experiment.energy_scope``). Counters (NVML, RAPL) read whole devices.
    also_each_tick : sequence of callables
        Other readings to take on the sampler's thread at each tick (a run's peak memory,
        :meth:`llem.energy.memory.PeakMemory.sample`), so no second thread wakes beside
        the model's.
    """
    return MeasurementWindow(
        meter=meter,
        interval_s=interval_s,
        baseline_s=baseline_s,
        baseline_cache_ttl_s=baseline_cache_ttl_s,
        grid_intensity_g_per_kwh=grid_intensity_g_per_kwh,
        devices=devices,
        scope=scope,
        also_each_tick=also_each_tick,
    )


class MeasurementWindow:
    """One measurement: opened once, closed once, then holds its :class:`Measurement`.

    See :func:`measure` for the parameters.
    """

    def __init__(
        self,
        meter: Any = "auto",
        interval_s: float = DEFAULT_INTERVAL_S,
        baseline_s: float = 0.0,
        baseline_cache_ttl_s: float = DEFAULT_BASELINE_TTL_S,
        grid_intensity_g_per_kwh: float | None = None,
        devices: Any = None,
        scope: str | None = None,
        also_each_tick: Sequence[Callable[[], Any]] = (),
    ) -> None:
        _check_number("interval_s", interval_s, minimum=MIN_INTERVAL_S)
        _check_number("baseline_s", baseline_s, minimum=0.0)
        _check_number("baseline_cache_ttl_s", baseline_cache_ttl_s, minimum=0.0)
        if grid_intensity_g_per_kwh is not None:
            _check_number("grid_intensity_g_per_kwh", grid_intensity_g_per_kwh, minimum=0.0)
        self.meter_spec = meter
        self.interval_s = float(interval_s)
        self.baseline_s = float(baseline_s)
        self.baseline_cache_ttl_s = float(baseline_cache_ttl_s)
        self.grid_intensity_g_per_kwh = grid_intensity_g_per_kwh
        self.devices = devices
        self.scope = scope
        self.also_each_tick = tuple(also_each_tick)
        self.meter: Any = None
        self.baseline: _baseline.Baseline | None = None
        self.t0_perf: float | None = None
        self._state = "new"
        self._sampler: Sampler | None = None
        self._marks: list[PhaseMark] = []
        self._measurement: Measurement | None = None
        self._started_at = ""
        self._baseline_age_s: float | None = None
        self._finalizer: Any = None

    # ------------------------------------------------------------------- lifecycle
    def begin(self) -> MeasurementWindow:
        """Open the window: resolve the meter, baseline if asked, start sampling."""
        if self._state != "new":
            raise LlemError(
                f"This measurement window is already {self._state}; a window opens once. "
                "Call measure(...) again for a new measurement."
            )
        self._state = "opening"
        meter_started = False
        try:
            self.meter = meter = create_meter(self.meter_spec, self.devices, self.scope)
            if self.baseline_s > 0:
                key = str(getattr(meter, "cache_key", type(meter).__name__))
                b = _baseline.cached_baseline(key, self.baseline_cache_ttl_s)
                if b is None:
                    b = _baseline.measure_baseline(meter, self.baseline_s, self.interval_s)
                    if self.baseline_cache_ttl_s > 0:
                        _baseline.store_baseline(b)
                self.baseline = b
                self._baseline_age_s = b.age_s()
            self._started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
            self.t0_perf = t0 = time.perf_counter()
            meter.start()
            meter_started = True
            self._sampler = sampler = Sampler(meter, self.interval_s, t0, also=self.also_each_tick)
            sampler.tick()
            sampler.start()
            self._finalizer = weakref.finalize(self, sampler._stop.set)
        except BaseException:
            self._state = "failed"
            if self._sampler is not None:
                self._sampler.stop()
            if meter_started:
                try:
                    self.meter.stop()
                except Exception:
                    pass
            raise
        self._state = "running"
        return self

    def mark(self, name: str) -> PhaseMark:
        """Mark the start of phase ``name`` now (``"warmup"``, ``"prefill"``, ``"decode"``, ...)."""
        return self.mark_at(name, time.perf_counter())

    def poke(self) -> None:
        """Take the sample that is due now, on the calling thread (see :meth:`Sampler.poke`).

        For a loop inside the window that runs many short steps: poking between them takes
        the samples in passing, and the sampler thread, which otherwise wakes beside the
        work every interval, then wakes about once a second. A no-op when the window is
        not running (before it opens there is no sampler; once it closes, the sampler is
        stopped and a poke reads nothing).
        """
        sampler = self._sampler
        if sampler is not None:
            sampler.poke()

    def mark_at(self, name: str, t_perf: float) -> PhaseMark:
        """Mark the start of phase ``name`` at ``t_perf`` (a ``time.perf_counter()`` value)."""
        if self._state != "running" or self.t0_perf is None:
            raise LlemError(f"Cannot mark phase {name!r}: the window is {self._state}, not running.")
        if not isinstance(name, str) or not name:
            raise LlemError(f"A phase name must be a non-empty string, not {name!r}.")
        m = PhaseMark(t_perf - self.t0_perf, name)
        self._marks.append(m)
        return m

    def end(self, *, complete: bool = True, error: str | None = None) -> Measurement:
        """Close the window and return its measurement (idempotent once ended).

        The sampler thread is joined before this returns, also when a KeyboardInterrupt
        arrives meanwhile (then the measurement is kept as incomplete and the interrupt is
        raised after cleanup).
        """
        if self._measurement is not None:
            return self._measurement
        if self._state != "running" or self._sampler is None:
            raise LlemError(f"Cannot end a measurement window that is {self._state}; open it first.")
        self._state = "closing"
        sampler = self._sampler
        notes: list[str] = []
        readings: tuple[DeviceReading, ...] = ()
        pending: BaseException | None = None
        t_end = time.perf_counter() - (self.t0_perf or 0.0)
        try:
            stopped, interrupted = sampler.stop()
            if interrupted:
                pending = KeyboardInterrupt()
            if not stopped:
                notes.append("the sampler thread did not stop within 5 s (left as a daemon thread)")
            if sampler.error is not None:
                notes.append(f"sampling stopped early at t={sampler.error_t_s:.3f} s: {sampler.error!r}")
                if isinstance(sampler.error, MeterReadError):  # a wrong figure: raise, after closing
                    pending = pending or sampler.error
            if not isinstance(pending, MeterReadError):
                try:
                    t_end = sampler.tick()
                except MeterReadError as exc:
                    notes.append(f"last reading failed: {exc}")
                    pending = pending or exc
                except Exception as exc:
                    notes.append(f"last reading failed: {exc!r}")
        except BaseException as exc:  # an interrupt while closing: finish closing first
            pending = pending or exc
        try:
            readings = tuple(self.meter.stop())
        except Exception as exc:
            notes.append(f"meter stop failed: {exc!r}")
        except BaseException as exc:
            pending = pending or exc
        finally:
            if self._finalizer is not None:
                self._finalizer.detach()
            self._state = "ended"
        if pending is not None:
            complete = False
            error = error or (f"{type(pending).__name__}: {pending}" if isinstance(pending, MeterReadError)
                              else type(pending).__name__)
        self._measurement = self._build(sampler.rows, readings, t_end, complete, error, notes)
        if pending is not None:
            raise pending
        return self._measurement

    def __enter__(self) -> MeasurementWindow:
        return self.begin()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is None:
            self.end()
        else:
            what = exc_type.__name__ + (f": {exc}" if str(exc) else "")
            try:
                self.end(complete=False, error=what)
            except KeyboardInterrupt:
                if not issubclass(exc_type, KeyboardInterrupt):
                    raise
            except MeterReadError:  # the block's own exception goes on; the notes keep this one
                pass
        return False

    # -------------------------------------------------------------------- state
    @property
    def running(self) -> bool:
        """True between begin() and end()."""
        return self._state == "running"

    @property
    def state(self) -> str:
        """``new``, ``running``, ``ended`` or ``failed``."""
        return self._state

    @property
    def measurement(self) -> Measurement:
        """The measurement, once the window has ended (partial if it ended on an error)."""
        if self._measurement is None:
            raise LlemError(f"The window is {self._state}; its measurement exists once it has ended.")
        return self._measurement

    def elapsed_s(self) -> float:
        """Seconds since the window opened."""
        return 0.0 if self.t0_perf is None else time.perf_counter() - self.t0_perf

    def live_samples(self, start: int = 0) -> list[Sample]:
        """The samples taken so far, from index ``start`` on (safe from another thread).

        Samples are only ever appended, so a poller can pass the count it has already
        seen to get just the new ones.
        """
        rows = self._sampler.rows[start:] if self._sampler is not None else []
        return [Sample(*r) for r in rows]

    def latest_power_w(self) -> dict[str, float | None]:
        """Latest power per device, W (for live displays)."""
        out: dict[str, float | None] = {}
        rows = self._sampler.rows if self._sampler is not None else []
        n = len(rows)
        for i in range(n - 1, -1, -1):
            r = rows[i]
            if r[1] in out:
                break
            out[r[1]] = r[2]
        return out

    # ----------------------------------------------------------------------- build
    def _build(
        self,
        rows: list[Row],
        readings: tuple[DeviceReading, ...],
        duration_s: float,
        complete: bool,
        error: str | None,
        notes: list[str],
    ) -> Measurement:
        meter = self.meter
        try:
            notes = [*(getattr(meter, "notes", ()) or ()), *notes]
        except Exception:
            pass
        timeline = _timeline(rows, readings, duration_s)
        by_device = {r.device: r.energy_j for r in readings}
        energy_j = sum(by_device.values()) if readings else None
        method = weakest_method(r.method for r in readings)
        versions: dict[str, str] = {}
        try:
            versions["llem"] = __version__
        except Exception:
            pass
        try:
            if hasattr(meter, "versions"):
                versions.update(meter.versions())
        except Exception as exc:
            notes.append(f"meter versions unavailable: {exc!r}")
        try:
            source = meter.describe() if hasattr(meter, "describe") else type(meter).__name__
        except Exception:
            source = type(meter).__name__
        b = self.baseline
        carbon_g = intensity = carbon_source = None
        if energy_j is not None:
            if self.grid_intensity_g_per_kwh is not None:
                intensity = float(self.grid_intensity_g_per_kwh)
                carbon_source = f"user-set grid intensity {intensity:g} g/kWh x total energy"
            else:
                got = meter.carbon() if callable(getattr(meter, "carbon", None)) else None
                if got is not None:
                    _, intensity, carbon_source = got
            if intensity is not None:
                carbon_g = energy_j / _J_PER_KWH * intensity
        return Measurement(
            duration_s=duration_s,
            energy_j=energy_j,
            energy_j_by_device=by_device,
            devices=readings,
            method=method,
            source=source,
            meter=str(getattr(meter, "label", getattr(meter, "name", type(meter).__name__))),
            meter_versions=versions,
            timeline=timeline,
            phases=tuple(sorted(self._marks, key=lambda p: p.t_s)),
            t0_perf=self.t0_perf or 0.0,
            started_at=self._started_at,
            interval_s=self.interval_s,
            baseline_power_w=b.power_w if b else None,
            baseline_spread_w=b.spread_w if b else None,
            baseline_power_w_by_device=dict(b.power_w_by_device) if b else {},
            baseline_duration_s=b.duration_s if b else None,
            baseline_age_s=self._baseline_age_s,
            carbon_g=carbon_g,
            carbon_intensity_g_per_kwh=intensity,
            carbon_source=carbon_source,
            complete=complete,
            error=error,
            notes=tuple(notes),
            counter_period_s=_counter_period(meter),
        )


def _timeline(rows: list[Row], readings: tuple[DeviceReading, ...], duration_s: float) -> tuple[Sample, ...]:
    """Samples from raw rows; a device's missing first power is that of its next sample.

    Devices a meter reported only at the end (codecarbon) get a straight line from 0 J
    at the start to their total at the end, at their mean power.
    """
    first_missing: dict[str, int] = {}
    out: list[Sample] = []
    seen: set[str] = set()
    for t, device, power_w, energy_j, memory_mib in rows:
        if device not in seen:
            seen.add(device)
            if power_w is None:
                first_missing[device] = len(out)
        elif device in first_missing:
            i = first_missing.pop(device)
            s = out[i]
            out[i] = Sample(s.t_s, s.device, power_w, s.energy_j, s.memory_mib)
        out.append(Sample(t, device, power_w, energy_j, memory_mib))
    for r in readings:
        if r.device not in seen and duration_s > 0:
            p = r.energy_j / duration_s
            out.insert(0, Sample(0.0, r.device, p, 0.0, None))
            out.append(Sample(duration_s, r.device, p, r.energy_j, None))
    out.sort(key=lambda s: s.t_s)
    return tuple(out)


def _counter_period(meter: Any) -> float | None:
    try:
        p = getattr(meter, "counter_period_s", None)
    except Exception:  # noqa: BLE001 - a plugin's property must not lose the measurement
        return None
    return float(p) if isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0 else None


def _check_number(name: str, value: Any, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise LlemError(f"measure() {name} must be a number >= {minimum:g}, not {value!r}.")
