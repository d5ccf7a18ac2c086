"""The record a measurement window produces: :class:`Measurement` and its parts.

Everything here is plain data (frozen dataclasses) with units in the field names.
Times in a timeline are seconds since the window started (``t_s``); the absolute
``time.perf_counter()`` value of that start is kept as ``Measurement.t0_perf`` so a caller
can convert its own ``perf_counter`` times with ``t_s = t_perf - meas.t0_perf``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property, partial
from typing import Any

from llem._input import build_each, build_row, check_fields

#: How an energy figure was obtained, from the most to the least direct.
#: ``measured``: a hardware energy counter (NVML total-energy counter, RAPL).
#: ``sampled``: power readings integrated over time (NVML power where no counter).
#: ``estimated``: a model (CPU time x a power figure, RAM size x W/GiB).
METHODS: tuple[str, ...] = ("measured", "sampled", "estimated")

#: The method of a measurement that read no device at all (``meter="none"``).
NO_METHOD = "none"

#: Device kinds a reading can have.
KINDS: tuple[str, ...] = ("gpu", "cpu", "ram")

#: Version tag written by :meth:`Measurement.to_dict`.
SCHEMA = "llem.measurement/1"

#: Name given by :meth:`Measurement.phase_energy_j` to the time before the first mark.
UNMARKED = "(unmarked)"

_J_PER_KWH = 3.6e6


def weakest_method(methods: Iterable[str]) -> str:
    """Return the least direct of ``methods`` (``"none"`` for an empty iterable).

    A total over devices is labelled with its weakest part, so a sum that includes an
    estimate is never shown as measured.
    """
    worst = -1
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"Unknown measurement method {m!r}; expected one of {METHODS}.")
        worst = max(worst, METHODS.index(m))
    return METHODS[worst] if worst >= 0 else NO_METHOD


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one device.

    Attributes
    ----------
    t_s : float
        Seconds since the window started.
    device : str
        Device name, e.g. ``"gpu:0"``, ``"cpu"``, ``"cpu:0"`` (RAPL package 0), ``"ram"``.
    power_w : float or None
        Power in W at this instant (or averaged over the interval that ends here, for
        meters that derive power from a counter). None when the meter could not tell.
    energy_j : float
        Energy in J the device used since the window started (cumulative).
    memory_mib : float or None
        Device memory in use, MiB (GPUs), when the meter reads it.
    """

    t_s: float
    device: str
    power_w: float | None
    energy_j: float
    memory_mib: float | None = None


@dataclass(frozen=True, slots=True)
class PhaseMark:
    """A phase boundary set by the runner: from ``t_s`` on, the run is in phase ``name``."""

    t_s: float
    name: str


@dataclass(frozen=True)
class DeviceReading:
    """What one device used over the window, and how that figure was obtained.

    Attributes
    ----------
    device : str
        Device name as in the timeline.
    kind : str
        ``"gpu"``, ``"cpu"`` or ``"ram"``.
    energy_j : float
        Energy over the window, J.
    method : str
        ``"measured"``, ``"sampled"`` or ``"estimated"``.
    source : str
        Human-readable provenance (counter or model, and its constants).
    model_inputs : dict
        The inputs behind the figure (counter values, CPU seconds, W per thread, ...),
        JSON-safe.
    peak_memory_mib : float or None
        Highest memory in use seen on the device, MiB, when read.
    """

    device: str
    kind: str
    energy_j: float
    method: str
    source: str
    model_inputs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    peak_memory_mib: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"DeviceReading.kind must be one of {KINDS}, not {self.kind!r}.")
        if self.method not in METHODS:
            raise ValueError(f"DeviceReading.method must be one of {METHODS}, not {self.method!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {
            "device": self.device,
            "kind": self.kind,
            "energy_j": self.energy_j,
            "method": self.method,
            "source": self.source,
            "model_inputs": dict(self.model_inputs),
            "peak_memory_mib": self.peak_memory_mib,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceReading:
        """Rebuild from :meth:`to_dict` output (:class:`~llem._input.FieldError` for a wrong type)."""
        check_fields(cls, d)
        return cls(
            device=d["device"],
            kind=d["kind"],
            energy_j=d["energy_j"],
            method=d["method"],
            source=d["source"],
            model_inputs=dict(d.get("model_inputs") or {}),
            peak_memory_mib=d.get("peak_memory_mib"),
        )


@dataclass(frozen=True, repr=False)
class Measurement:
    """Energy, power and time over one measurement window.

    Attributes
    ----------
    duration_s : float
        Wall time of the window, s (baseline excluded).
    energy_j : float or None
        Total energy over all devices, J; None only when no device was read
        (``meter="none"``).
    energy_j_by_device : dict
        Device name -> J.
    devices : tuple of DeviceReading
        Per-device energy with method and source.
    method : str
        The least direct method among the devices (``"none"`` with no device).
    source : str
        Human-readable provenance of the whole figure.
    meter : str
        The meter that was used (``"auto: nvml+estimate"``, ``"estimate"``, ...).
    meter_versions : dict
        Versions of llem and of the libraries/drivers the meter read through.
    timeline : tuple of Sample
        Readings over time (cumulative energy per device since the window start).
    phases : tuple of PhaseMark
        Phase marks set during the window.
    t0_perf : float
        ``time.perf_counter()`` at the window start.
    started_at : str
        Wall-clock start, ISO 8601 UTC.
    interval_s : float
        Sampling interval asked for, s.
    baseline_power_w : float or None
        Idle power over all devices, W, when a baseline was measured or reused.
    baseline_spread_w : float or None
        Standard deviation of the baseline's per-interval total power, W.
    baseline_power_w_by_device : dict
        Device -> idle W.
    baseline_duration_s : float or None
        How long the baseline was measured, s.
    baseline_age_s : float or None
        Age of the baseline at the window start (0 for a fresh one, >0 when cached).
    carbon_g : float or None
        g CO2e for ``energy_j`` at ``carbon_intensity_g_per_kwh``.
    carbon_intensity_g_per_kwh : float or None
        Grid carbon intensity used, g CO2e per kWh.
    carbon_source : str or None
        Where the intensity came from (user setting, codecarbon).
    complete : bool
        False when the window ended on an exception or interrupt (partial measurement).
    error : str or None
        Why the window ended early, when it did.
    notes : tuple of str
        Anything the reader should know (sampler stopped early, skipped domains, ...).
    counter_period_s : float or None
        How often the energy counter read here updates, s, when known (a window shorter
        than this cannot resolve its energy).
    """

    duration_s: float
    energy_j: float | None
    energy_j_by_device: Mapping[str, float]
    devices: tuple[DeviceReading, ...]
    method: str
    source: str
    meter: str = ""
    meter_versions: Mapping[str, str] = field(default_factory=dict)
    timeline: tuple[Sample, ...] = ()
    phases: tuple[PhaseMark, ...] = ()
    t0_perf: float = 0.0
    started_at: str = ""
    interval_s: float = 0.1
    baseline_power_w: float | None = None
    baseline_spread_w: float | None = None
    baseline_power_w_by_device: Mapping[str, float] = field(default_factory=dict)
    baseline_duration_s: float | None = None
    baseline_age_s: float | None = None
    carbon_g: float | None = None
    carbon_intensity_g_per_kwh: float | None = None
    carbon_source: str | None = None
    complete: bool = True
    error: str | None = None
    notes: tuple[str, ...] = ()
    counter_period_s: float | None = None

    # ----------------------------------------------------------------- derived figures
    @property
    def dynamic_energy_j(self) -> float | None:
        """Energy above idle: ``energy_j - baseline_power_w * duration_s``, J.

        None without a baseline. Can come out slightly negative when the run used no
        more than idle power (baseline noise); it is not clamped.
        """
        if self.baseline_power_w is None or self.energy_j is None:
            return None
        return self.energy_j - self.baseline_power_w * self.duration_s

    @property
    def dynamic_energy_j_by_device(self) -> dict[str, float]:
        """Per-device energy above that device's idle power, J (empty without baseline)."""
        if not self.baseline_power_w_by_device:
            return {}
        return {
            d: e - self.baseline_power_w_by_device.get(d, 0.0) * self.duration_s
            for d, e in self.energy_j_by_device.items()
        }

    @property
    def mean_power_w(self) -> float | None:
        """Mean total power over the window, W (``energy_j / duration_s``)."""
        if self.energy_j is None or self.duration_s <= 0:
            return None
        return self.energy_j / self.duration_s

    @cached_property
    def peak_power_w(self) -> float | None:
        """Highest total power (summed over devices at one sampling instant), W."""
        by_t: dict[float, float] = {}
        for s in self.timeline:
            if s.power_w is not None:
                by_t[s.t_s] = by_t.get(s.t_s, 0.0) + s.power_w
        return max(by_t.values()) if by_t else None

    @property
    def energy_kwh(self) -> float | None:
        """Total energy in kWh."""
        return None if self.energy_j is None else self.energy_j / _J_PER_KWH

    @property
    def device_names(self) -> tuple[str, ...]:
        """Names of the devices read, in reading order."""
        return tuple(r.device for r in self.devices)

    @cached_property
    def _series(self) -> dict[str, tuple[list[float], list[float]]]:
        out: dict[str, tuple[list[float], list[float]]] = {}
        for s in self.timeline:
            ts, es = out.setdefault(s.device, ([], []))
            ts.append(s.t_s)
            es.append(s.energy_j)
        return out

    def power_series(self, device: str | None = None) -> list[tuple[float, float]]:
        """``(t_s, power_w)`` pairs for one device, or summed over devices per instant."""
        if device is not None:
            return [(s.t_s, s.power_w) for s in self.timeline if s.device == device and s.power_w is not None]
        by_t: dict[float, float] = {}
        for s in self.timeline:
            if s.power_w is not None:
                by_t[s.t_s] = by_t.get(s.t_s, 0.0) + s.power_w
        return sorted(by_t.items())

    def energy_at(self, t_s: float, device: str | None = None) -> float:
        """Cumulative energy at ``t_s`` (linear between samples), J, for one device or all."""
        devices = [device] if device is not None else list(self._series)
        total = 0.0
        for d in devices:
            ts, es = self._series.get(d, ([], []))
            total += _interp(ts, es, t_s)
        return total

    def energy_between(self, t0_s: float, t1_s: float, device: str | None = None) -> float:
        """Energy used between ``t0_s`` and ``t1_s`` (window seconds), J, from the timeline.

        The cumulative energy of each device is interpolated linearly between samples;
        before the first sample it is 0, after the last it stays at the last value.
        """
        if t1_s < t0_s:
            raise ValueError(f"energy_between needs t0_s <= t1_s, got {t0_s} > {t1_s}.")
        return self.energy_at(t1_s, device) - self.energy_at(t0_s, device)

    def phase_spans(self) -> list[tuple[str, float, float]]:
        """``(name, t_start_s, t_end_s)`` for each phase, in time order.

        A phase runs from its mark to the next mark (or the window end). Time before the
        first mark, if any, is named ``"(unmarked)"``.
        """
        marks = sorted(self.phases, key=lambda p: p.t_s)
        spans: list[tuple[str, float, float]] = []
        if not marks:
            return [(UNMARKED, 0.0, self.duration_s)] if self.duration_s > 0 else []
        if marks[0].t_s > 0:
            spans.append((UNMARKED, 0.0, marks[0].t_s))
        for a, b in zip(marks, [*marks[1:], None]):
            end = self.duration_s if b is None else b.t_s
            spans.append((a.name, a.t_s, max(a.t_s, end)))
        return spans

    def phase_energy_j(self, device: str | None = None) -> dict[str, float]:
        """Energy per phase name, J (a name marked several times sums its spans).

        The values add up to ``energy_between(0, duration_s)``.
        """
        out: dict[str, float] = {}
        for name, a, b in self.phase_spans():
            out[name] = out.get(name, 0.0) + self.energy_between(a, b, device)
        return out

    def phase_duration_s(self) -> dict[str, float]:
        """Time per phase name, s."""
        out: dict[str, float] = {}
        for name, a, b in self.phase_spans():
            out[name] = out.get(name, 0.0) + (b - a)
        return out

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict; :meth:`from_dict` rebuilds an equal Measurement.

        Derived figures (``dynamic_energy_j``, ``mean_power_w``, ``peak_power_w``) are
        included for readers of the JSON and ignored when loading.
        """
        d: dict[str, Any] = {"schema": SCHEMA}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "devices":
                v = [r.to_dict() for r in v]
            elif f.name == "timeline":
                d["timeline_columns"] = ["t_s", "device", "power_w", "energy_j", "memory_mib"]
                v = [[s.t_s, s.device, s.power_w, s.energy_j, s.memory_mib] for s in v]
            elif f.name == "phases":
                v = [[p.t_s, p.name] for p in v]
            elif f.name == "notes":
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            d[f.name] = v
        d["derived"] = {
            "dynamic_energy_j": _finite_or_none(self.dynamic_energy_j),
            "mean_power_w": _finite_or_none(self.mean_power_w),
            "peak_power_w": _finite_or_none(self.peak_power_w),
        }
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        """Rebuild a Measurement from :meth:`to_dict` output (or its JSON)."""
        schema = d.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise ValueError(f"Cannot read a measurement with schema {schema!r}; this llem reads {SCHEMA!r}.")
        check_fields(cls, d)
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in known}
        kw["devices"] = tuple(build_each(DeviceReading.from_dict, d.get("devices", ()), "devices"))
        kw["timeline"] = tuple(build_each(partial(build_row, Sample), d.get("timeline", ()), "timeline"))
        kw["phases"] = tuple(build_each(partial(build_row, PhaseMark), d.get("phases", ()), "phases"))
        kw["notes"] = tuple(d.get("notes", ()))
        for k in ("energy_j_by_device", "meter_versions", "baseline_power_w_by_device"):
            kw[k] = dict(d.get(k) or {})
        return cls(**kw)

    # ----------------------------------------------------------------------- display
    def summary(self) -> str:
        """A few lines of text: energy, power, time, method and source."""
        lines = []
        state = "" if self.complete else f"  [INCOMPLETE: {self.error or 'ended early'}]"
        if self.energy_j is None:
            lines.append(f"{self.duration_s:.3f} s, no energy meter{state}")
        else:
            lines.append(
                f"{_fmt_j(self.energy_j)} in {self.duration_s:.3f} s "
                f"(mean {self.mean_power_w or 0:.1f} W, peak {_fmt_w(self.peak_power_w)}), "
                f"{self.method}{state}"
            )
            if self.dynamic_energy_j is not None:
                lines.append(
                    f"  above idle: {_fmt_j(self.dynamic_energy_j)} "
                    f"(idle {self.baseline_power_w:.2f} ± {self.baseline_spread_w or 0:.2f} W)"
                )
            for r in self.devices:
                lines.append(f"  {r.device:<10} {_fmt_j(r.energy_j):>12}  {r.method:<9} {r.source}")
        if self.carbon_g is not None:
            lines.append(f"  carbon: {self.carbon_g:.4g} g CO2e ({self.carbon_source})")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        e = "None" if self.energy_j is None else f"{self.energy_j:.6g}"
        return (
            f"Measurement(duration_s={self.duration_s:.6g}, energy_j={e}, method={self.method!r}, "
            f"devices={list(self.device_names)}, samples={len(self.timeline)}, complete={self.complete})"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        try:
            return {"text/plain": self.summary()}
        except Exception as exc:  # display never raises
            return {"text/plain": f"{self!r} (summary failed: {exc!r})"}


def _finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _interp(ts: list[float], es: list[float], t: float) -> float:
    if not ts or t <= ts[0]:
        return 0.0 if not ts or t < ts[0] else es[0]
    if t >= ts[-1]:
        return es[-1]
    i = bisect.bisect_right(ts, t)
    t0, t1, e0, e1 = ts[i - 1], ts[i], es[i - 1], es[i]
    if t1 == t0:
        return e1
    return e0 + (e1 - e0) * (t - t0) / (t1 - t0)


def _fmt_j(j: float) -> str:
    if abs(j) >= 3.6e6:
        return f"{j / _J_PER_KWH:.4g} kWh"
    if abs(j) >= 1e3:
        return f"{j / 1e3:.4g} kJ"
    return f"{j:.4g} J"


def _fmt_w(w: float | None) -> str:
    return "n/a" if w is None or math.isnan(w) else f"{w:.1f} W"
