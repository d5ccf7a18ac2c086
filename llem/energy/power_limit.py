"""A GPU power limit for the length of a run, set through NVML and always put back.

``experiment.gpu_power_limit_w`` asks for a cap in watts. :func:`power_limit` is the
``with`` block the runner puts around a run: on entry it checks every GPU the run uses
(an NVIDIA GPU NVML can open, the value within the GPU's
``nvmlDeviceGetPowerManagementLimitConstraints``), reads each one's limit in force, and
sets the new one with ``nvmlDeviceSetPowerManagementLimit`` (NVML allows this to root
only); on exit, whatever ended the block (an error, a ``KeyboardInterrupt``), it sets each
GPU back to the limit it had. Nothing is changed unless every GPU passes the checks; a
GPU that refuses midway puts back the ones already set.

The GPUs a run uses are the ones CUDA sees: those ``CUDA_VISIBLE_DEVICES`` names, all of
them when it is unset (NVML indices; see :func:`llem.machine.visible_gpus`).

A process killed outright (``SIGKILL``, a power cut) cannot put the limit back; NVML keeps
it until it is set again or the driver reloads (``nvidia-smi -i N -pl WATTS`` sets it by
hand, ``nvidia-smi -q -d POWER`` shows the default).

**Not yet run on real hardware**: tested against llem's fake NVML devices.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from llem.energy import nvml
from llem.errors import ConfigError, LlemError
from llem.machine import open_gpus, visible_gpus

#: The table row this module applies.
PATH = "experiment.gpu_power_limit_w"


class PowerLimitError(ConfigError):
    """A power limit cannot be applied here; the message says why and what to do."""


class PowerLimitPermissionError(PowerLimitError, PermissionError):
    """Setting a GPU power limit needs root."""


@dataclass
class GpuLimit:
    """One GPU's power limit: what it was, what was asked, and what it accepts (W)."""

    index: int
    name: str
    previous_w: float
    applied_w: float
    min_w: float
    max_w: float
    restored: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"index": self.index, "name": self.name, "previous_w": self.previous_w,
                "applied_w": self.applied_w, "min_w": self.min_w, "max_w": self.max_w,
                "restored": self.restored}


@dataclass
class PowerLimitRecord:
    """What :func:`power_limit` did: the limit asked for and each GPU's before and after."""

    watts: float
    gpus: list[GpuLimit] = field(default_factory=list)
    restore_errors: list[str] = field(default_factory=list)

    @property
    def restored(self) -> bool:
        """True once every GPU is back at its previous limit."""
        return all(g.restored for g in self.gpus) and not self.restore_errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (kept in ``result.environment["gpu_power_limit"]``)."""
        return {"watts": self.watts, "gpus": [g.to_dict() for g in self.gpus],
                "restored": self.restored, "restore_errors": list(self.restore_errors)}


def _w(mw: float) -> float:
    return round(mw / 1000.0, 3)


def _no_gpu(watts: float, why: str) -> PowerLimitError:
    return PowerLimitError(
        f"{PATH}={watts:g} W cannot be applied: {why}. A power limit is set through NVML on "
        f"an NVIDIA GPU. Fix: leave {PATH} unset on this machine, or run where an NVIDIA GPU is."
    )


def check_watts(watts: Any) -> float:
    """``watts`` as a float, or :class:`PowerLimitError` for a value that is not a positive number."""
    if isinstance(watts, bool) or not isinstance(watts, (int, float)) or not watts > 0:
        raise PowerLimitError(f"{PATH} must be a positive number of watts, not {watts!r}.")
    return float(watts)


@contextmanager
def power_limit(watts: float | None, gpus: Sequence[int] | None = None, *,
                library: Any = None) -> Iterator[PowerLimitRecord | None]:
    """Cap the power of the GPUs a run uses at ``watts`` for the ``with`` block.

    Parameters
    ----------
    watts : float or None
        The limit, W; None does nothing (yields None).
    gpus : sequence of int, optional
        NVML indices; the GPUs CUDA sees when None (:func:`llem.machine.visible_gpus`).
    library : NvmlLibrary, optional
        Where the GPUs come from (pynvml by default; :class:`llem.testing.FakeNvmlLibrary`
        in tests).

    Yields
    ------
    PowerLimitRecord or None
        Each GPU's previous and applied limit; ``restored`` turns True on exit.

    Raises
    ------
    PowerLimitError
        No NVIDIA GPU (NVML cannot start or sees none, or none is visible to CUDA), a GPU
        index that does not exist, or ``watts`` outside a GPU's min..max.
    PowerLimitPermissionError
        NVML refused to set the limit (not root).
    """
    if watts is None:
        yield None
        return
    watts = check_watts(watts)
    lib = library if library is not None else nvml._default_library()
    try:
        lib.init()
    except (LlemError, ImportError) as exc:
        raise _no_gpu(watts, str(exc).rstrip(".")) from None
    record = PowerLimitRecord(watts)
    try:
        devices = _devices(lib, watts, gpus)
        _apply(devices, watts, record)
        try:
            yield record
        finally:
            _restore(devices, record)
    finally:
        lib.shutdown()


def _devices(lib: Any, watts: float, gpus: Sequence[int] | None) -> list[Any]:
    """The GPUs to cap, each checked against its constraints before any is changed."""
    count = lib.device_count()
    if count == 0:
        raise _no_gpu(watts, "NVML started but sees no GPU")
    if gpus is None:
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        # CUDA's numbering, the one mapping (llem.machine.visible_gpus), up to the first MIG
        # entry: a MIG instance's GPU limit is not the instance's to set
        cut = None if env is None else ",".join(
            itertools.takewhile(lambda e: not e.strip().startswith("MIG-"), env.split(",")))
        wanted = [g.index for g in visible_gpus(open_gpus(lib), cut)]
        if not wanted:
            raise _no_gpu(watts, f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} "
                                 "hides every GPU (or names only MIG instances, whose GPU's limit "
                                 "is not theirs to set)")
    else:
        wanted = list(dict.fromkeys(gpus))
        bad = [i for i in wanted if not 0 <= i < count]
        if bad:
            raise PowerLimitError(f"{PATH}: GPU {bad[0]} does not exist; NVML sees {count} GPU(s), "
                                  f"indices 0..{count - 1}.")
    devices = [lib.device(i) for i in wanted]
    for dev in devices:
        low, high = dev.power_limit_constraints_mw()
        if not low <= watts * 1000.0 <= high:
            raise PowerLimitError(
                f"{PATH}={watts:g} W is outside what GPU {dev.index} ({dev.name()}) accepts: "
                f"{_w(low):g}..{_w(high):g} W (nvmlDeviceGetPowerManagementLimitConstraints). "
                f"Fix: choose a value from {_w(low):g} to {_w(high):g} W."
            )
    return devices


def _apply(devices: list[Any], watts: float, record: PowerLimitRecord) -> None:
    """Set each GPU's limit; on a refusal put back those already set, then raise."""
    for dev in devices:
        low, high = dev.power_limit_constraints_mw()
        entry = GpuLimit(dev.index, dev.name(), _w(dev.power_limit_mw()), watts, _w(low), _w(high))
        try:
            dev.set_power_limit_mw(int(round(watts * 1000.0)))
        except nvml.NvmlPermissionError as exc:
            _restore(devices, record)
            raise PowerLimitPermissionError(f"{PATH}={watts:g} W was not applied: {exc}") from None
        except BaseException:
            _restore(devices, record)
            raise
        record.gpus.append(entry)


def _restore(devices: list[Any], record: PowerLimitRecord) -> None:
    """Put every GPU set so far back at its previous limit (all of them, even if one fails).

    A ``KeyboardInterrupt`` that lands while restoring is raised once every GPU has been
    tried; a GPU that cannot be restored is named in ``record.restore_errors``.
    """
    by_index = {d.index: d for d in devices}
    pending: BaseException | None = None
    for entry in record.gpus:
        if entry.restored:
            continue
        try:
            by_index[entry.index].set_power_limit_mw(int(round(entry.previous_w * 1000.0)))
            entry.restored = True
        except Exception as exc:  # noqa: BLE001 - the others are still put back
            record.restore_errors.append(
                f"GPU {entry.index} stays at {entry.applied_w:g} W: putting back "
                f"{entry.previous_w:g} W failed ({exc}). Fix: sudo nvidia-smi -i {entry.index} "
                f"-pl {entry.previous_w:g}")
        except BaseException as exc:  # an interrupt: finish putting back first
            pending = pending or exc
            try:
                by_index[entry.index].set_power_limit_mw(int(round(entry.previous_w * 1000.0)))
                entry.restored = True
            except BaseException:  # noqa: BLE001
                record.restore_errors.append(f"GPU {entry.index} stays at {entry.applied_w:g} W "
                                             "(interrupted while putting its limit back)")
    if pending is not None:
        raise pending


_RAISE = object()


class RunPowerLimit:
    """The power limit of one run, as the runner holds it: applied now, put back by :meth:`close`.

    Parameters
    ----------
    watts : float or None
        ``experiment.gpu_power_limit_w``; None does nothing.
    effective : dict, optional
        The run's effective config; the limit applied is recorded there.
    library : NvmlLibrary, optional
        Where the GPUs come from (pynvml by default).

    Raises
    ------
    PowerLimitError
        As :func:`power_limit`, before anything is changed.
    """

    def __init__(self, watts: float | None, effective: dict[str, Any] | None = None, *,
                 library: Any = None) -> None:
        self._block = power_limit(watts, library=library)
        self.record: PowerLimitRecord | None = self._block.__enter__()
        self._open = self.record is not None
        if self.record is not None and effective is not None:
            effective[PATH] = self.record.watts

    def restore_and_record(self, environment: dict[str, Any], notes: list[str]) -> None:
        """Put every GPU back (:meth:`close`), then record the limit in ``environment``.

        ``environment["gpu_power_limit"]`` gets :meth:`PowerLimitRecord.to_dict`; a GPU
        that could not be put back is named in ``notes``. An interrupt that lands while
        restoring is raised, as by :meth:`close`.
        """
        self.close()
        if self.record is not None:
            environment["gpu_power_limit"] = self.record.to_dict()
            notes.extend(n for n in self.record.restore_errors if n not in notes)

    def close(self, stopped: Any = _RAISE) -> Any:
        """Put every GPU back (once; later calls do nothing).

        Without ``stopped`` an interrupt that lands meanwhile is raised once every GPU has
        been tried. Given ``stopped`` (the runner's "where an interrupt landed": None or a
        stage), the interrupt is kept as that instead: the return value is ``stopped``, or
        ``"putting the GPU power limit back"`` when it was None and an interrupt landed.
        """
        keep = None if stopped is _RAISE else stopped
        if not self._open:
            return keep
        self._open = False
        try:
            self._block.__exit__(None, None, None)
        except KeyboardInterrupt:
            if stopped is _RAISE:
                raise
            return keep or "putting the GPU power limit back"
        return keep


__all__ = ["PATH", "GpuLimit", "PowerLimitError", "PowerLimitPermissionError", "PowerLimitRecord",
           "RunPowerLimit", "check_watts", "power_limit"]
