"""The meter interface every energy source implements, and the two trivial meters.

A meter is a small object with four calls, made from one thread at a time:

``probe()``
    Cheap, never raises: can this meter run here, and if not, why not
    (returns a :class:`Probe`).
``start()``
    Acquire handles and zero the counters. Raises :class:`MeterUnavailableError`
    (with a message that says how to fix it) when the source cannot be read.
``sample()``
    Return the current readings as a list of ``(device, power_w, energy_j,
    memory_mib)`` tuples, ``energy_j`` being cumulative since ``start()``. Called by the
    sampler thread every interval, so it must be cheap (well under a millisecond).
``stop()``
    Release handles and return one :class:`~llem.energy.measurement.DeviceReading`
    per device: energy from ``start()`` up to the last ``sample()`` (the window always
    samples right before stopping, so the totals equal the timeline's last values),
    method, source, model inputs.

A meter may be started again after ``stop()`` (the window measures the idle baseline and
then the run with the same meter). Optional extras: ``versions()`` (library and driver
versions), ``describe()`` (one line of provenance), ``cache_key`` (what the meter
measures, to key the baseline cache), ``notes`` (lines for the measurement's notes),
``counter_period_s`` (how often its energy counter updates, s, when known) and
``carbon()`` (a meter that knows a carbon figure, as codecarbon does).

Third-party meters register in the ``llem.meters`` entry-point group; a class is
checked when it is registered (:func:`llem.energy.registry.check_meter_class`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

from llem.energy.measurement import DeviceReading
from llem.errors import LlemError

#: One row returned by :meth:`Meter.sample`: (device, power_w, energy_j, memory_mib).
RawSample = tuple[str, "float | None", float, "float | None"]

#: Methods a meter must have (checked when a meter is registered).
REQUIRED_METHODS: tuple[str, ...] = ("probe", "start", "sample", "stop")


@functools.lru_cache(maxsize=64)
def package_version(distribution: str) -> str | None:
    """Installed version of ``distribution`` (cached: metadata lookups cost milliseconds)."""
    try:
        from importlib.metadata import version

        return version(distribution)
    except Exception:
        return None


class MeterUnavailableError(LlemError, RuntimeError):
    """A meter cannot read its source here; the message says why and how to fix it."""


class MeterPermissionError(MeterUnavailableError, PermissionError):
    """A counter exists but this user may not read it; the message says how to grant access."""


@dataclass(frozen=True)
class Probe:
    """Whether a meter can run on this machine.

    Attributes
    ----------
    name : str
        The meter's registered name.
    available : bool
        True when ``start()`` is expected to succeed.
    reason : str
        What was found, or why the meter cannot run and how to fix it.
    devices : tuple of str
        The devices it would read.
    method : str
        The method its figures would carry (``measured``/``sampled``/``estimated``).
    """

    name: str
    available: bool
    reason: str
    devices: tuple[str, ...] = ()
    method: str = ""


class Meter:
    """Base class for meters (subclassing is optional; the four calls are what counts)."""

    #: Registered name, e.g. ``"nvml"``.
    name: ClassVar[str] = ""

    def probe(self) -> Probe:
        """Say whether the meter can run here (cheap; never raises)."""
        raise NotImplementedError

    def start(self) -> None:
        """Acquire handles and zero the counters."""
        raise NotImplementedError

    def sample(self) -> list[RawSample]:
        """Return ``(device, power_w, energy_j_since_start, memory_mib)`` per device."""
        raise NotImplementedError

    def stop(self) -> tuple[DeviceReading, ...]:
        """Release handles; return the per-device totals since ``start()``."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """Versions of the libraries and drivers read through."""
        return {}

    def describe(self) -> str:
        """One line saying how this meter's figures are obtained."""
        return self.name

    @property
    def cache_key(self) -> str:
        """What this meter measures, as a key for the idle-baseline cache."""
        return f"{type(self).__module__}.{type(self).__qualname__}"

    @property
    def label(self) -> str:
        """Name shown in ``Measurement.meter``."""
        return self.name or type(self).__name__


class NullMeter(Meter):
    """Reads nothing: a window with ``meter="none"`` records time and phases only."""

    name = "none"

    def probe(self) -> Probe:
        """Always available."""
        return Probe("none", True, "times the window only; no energy is read", (), "")

    def start(self) -> None:
        """Nothing to acquire."""

    def sample(self) -> list[RawSample]:
        """No readings."""
        return []

    def stop(self) -> tuple[DeviceReading, ...]:
        """No devices."""
        return ()

    def describe(self) -> str:
        """Provenance line."""
        return "no meter (timing only)"


class CompositeMeter(Meter):
    """Several meters read together, e.g. NVML for the GPUs and RAPL for the CPU."""

    name = "auto"

    def __init__(self, meters: list[Any], label: str | None = None, notes: tuple[str, ...] = ()) -> None:
        self.meters = list(meters)
        self._label = label
        self._notes = tuple(notes)

    @property
    def notes(self) -> tuple[str, ...]:
        """What the reader of the measurement should know (the parts' notes included)."""
        out = list(self._notes)
        for m in self.meters:
            out.extend(getattr(m, "notes", ()) or ())
        return tuple(out)

    @property
    def label(self) -> str:
        """``auto: nvml+estimate`` style name."""
        inner = "+".join(getattr(m, "label", type(m).__name__) for m in self.meters) or "none"
        return f"{self._label}: {inner}" if self._label else inner

    @property
    def cache_key(self) -> str:
        """Keys of the parts."""
        return "+".join(getattr(m, "cache_key", type(m).__name__) for m in self.meters)

    def probe(self) -> Probe:
        """Available when every part is."""
        probes = [m.probe() for m in self.meters]
        return Probe(
            self.label,
            all(p.available for p in probes),
            "; ".join(f"{p.name}: {p.reason}" for p in probes),
            tuple(d for p in probes for d in p.devices),
            "",
        )

    def start(self) -> None:
        """Start every part; if one fails, stop those already started."""
        started: list[Any] = []
        try:
            for m in self.meters:
                m.start()
                started.append(m)
        except BaseException:
            for m in started:
                try:
                    m.stop()
                except Exception:
                    pass
            raise

    def sample(self) -> list[RawSample]:
        """Readings of every part, concatenated."""
        out: list[RawSample] = []
        for m in self.meters:
            out.extend(m.sample())
        return out

    def stop(self) -> tuple[DeviceReading, ...]:
        """Stop every part (all of them, even if one fails), concatenating readings."""
        readings: list[DeviceReading] = []
        error: BaseException | None = None
        for m in self.meters:
            try:
                readings.extend(m.stop())
            except BaseException as exc:  # stop the others first
                error = error or exc
        if error is not None:
            raise error
        return tuple(readings)

    def versions(self) -> dict[str, str]:
        """Merged versions of the parts."""
        out: dict[str, str] = {}
        for m in self.meters:
            if hasattr(m, "versions"):
                out.update(m.versions())
        return out

    def describe(self) -> str:
        """The parts' provenance lines joined with ``"; "``."""
        return "; ".join(m.describe() if hasattr(m, "describe") else type(m).__name__ for m in self.meters)

    @property
    def counter_period_s(self) -> float | None:
        """The slowest energy-counter update period a part knows, s (None: none knows)."""
        periods = [p for m in self.meters if (p := getattr(m, "counter_period_s", None)) is not None]
        return max(periods) if periods else None

    def carbon(self) -> tuple[float, float, str] | None:
        """The first carbon figure a part knows, if any."""
        for m in self.meters:
            c = getattr(m, "carbon", None)
            if callable(c):
                got = c()
                if got is not None:
                    return got
        return None
