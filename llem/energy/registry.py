"""Finding meters by name: the ``llem.meters`` entry-point group, built-ins included.

llem's own meters are declared in that group in ``setup.cfg`` and found the same way as
third-party ones; :data:`BUILTIN_METERS` is the fallback when the package metadata is not
installed (running from a source tree). Two names are not meters but choices:
``"auto"`` (the best available per device) and ``"none"`` (time only).

A meter class is checked when it is registered (entry point loaded, or
:func:`register_meter` called): it must have the calls of the meter interface.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from llem.energy.base import REQUIRED_METHODS, CompositeMeter, NullMeter
from llem.errors import LlemError, unknown_name

GROUP = "llem.meters"

#: name -> "module:attribute", mirroring setup.cfg's entry points.
BUILTIN_METERS: dict[str, str] = {
    "nvml": "llem.energy.nvml:NvmlMeter",
    "rapl": "llem.energy.rapl:RaplMeter",
    "estimate": "llem.energy.estimate:EstimateMeter",
    "codecarbon": "llem.energy.codecarbon:CodeCarbonMeter",
    "replay": "llem.testing:ReplayMeter",
}

#: Names that pick meters rather than name one.
SPECIAL_NAMES: tuple[str, ...] = ("auto", "none")

_registered: dict[str, type] = {}


class MeterPluginError(LlemError, TypeError):
    """A class registered as a meter lacks part of the meter interface."""


def check_meter_class(obj: Any, name: str = "?") -> None:
    """Raise :class:`MeterPluginError` unless ``obj`` has the meter interface.

    The interface: callables ``probe``, ``start``, ``sample``, ``stop``, and a
    constructor that can be called with no argument or with ``devices=``.
    """
    where = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
    if not inspect.isclass(obj):
        raise MeterPluginError(f"Meter plugin {name!r} ({where}) must be a class, not {type(obj).__name__}.")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(obj, m, None))]
    if missing:
        raise MeterPluginError(
            f"Meter plugin {name!r} ({where}) lacks {', '.join(missing)}: a meter needs "
            f"{', '.join(REQUIRED_METHODS)} (see llem.energy.base.Meter)."
        )
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    params = list(sig.parameters.values())
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if required:
        raise MeterPluginError(
            f"Meter plugin {name!r} ({where}) must be constructible without arguments; "
            f"its constructor requires {', '.join(p.name for p in required)}."
        )


def register_meter(name: str, cls: type, *, replace: bool = False) -> type:
    """Register ``cls`` as the meter called ``name`` (checked now)."""
    if name in SPECIAL_NAMES:
        raise MeterPluginError(f"{name!r} is reserved (it picks meters); choose another meter name.")
    check_meter_class(cls, name)
    if not replace and name in _registered and _registered[name] is not cls:
        raise MeterPluginError(
            f"A meter called {name!r} is already registered ({_registered[name]!r}); pass replace=True."
        )
    _registered[name] = cls
    return cls


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    try:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=GROUP)}
    except Exception:
        return {}


def meter_names() -> list[str]:
    """Every meter name that resolves here (built-ins, plugins, registered, auto, none)."""
    return sorted({*BUILTIN_METERS, *_entry_points(), *_registered, *SPECIAL_NAMES})


def get_meter_class(name: str) -> type:
    """The class of meter ``name``: registered, else entry point, else built-in table.

    Raises
    ------
    UnknownNameError
        For a name that is none of these, with a did-you-mean and the known names.
    """
    if name in _registered:
        return _registered[name]
    ep = _entry_points().get(name)
    if ep is not None:
        try:
            cls = ep.load()
        except Exception as exc:
            raise LlemError(f"Meter plugin {name!r} ({ep.value}) failed to load: {exc}") from exc
        return register_meter(name, cls, replace=True)
    target = BUILTIN_METERS.get(name)
    if target is not None:
        module, _, attr = target.partition(":")
        return register_meter(name, getattr(importlib.import_module(module), attr), replace=True)
    raise unknown_name("meter", name, meter_names())


def _construct(cls: type, devices: Any) -> Any:
    if devices is None:
        return cls()
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    if "devices" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return cls(devices=devices)
    return cls()


def auto_meter(devices: Any = None) -> CompositeMeter:
    """The best available meter for each device.

    GPUs: ``nvml`` when NVML starts and sees a GPU. CPU: ``rapl`` when its counters are
    readable, else ``estimate``; RAM: RAPL's DRAM domain when there is one, else the
    estimate's RAM model. Probes are cached for the process
    (:func:`clear_probe_cache` forgets them).
    """
    plan, notes = _auto_decision(_devices_key(devices))
    meters: list[Any] = []
    for name, kw in plan:
        cls = get_meter_class(name)
        meters.append(cls(devices=devices, **kw))
    return CompositeMeter(meters, label="auto", notes=notes)


def _devices_key(devices: Any) -> Any:
    if devices is None or isinstance(devices, (int, str)):
        return devices
    return tuple(devices)


@functools.lru_cache(maxsize=16)
def _auto_decision(devices: Any) -> tuple[tuple[tuple[str, dict[str, Any]], ...], tuple[str, ...]]:
    """The meters auto uses, and notes for the measurement on what it could not use."""
    from llem.energy.nvml import gpu_indices

    plan: list[tuple[str, dict[str, Any]]] = []
    notes: list[str] = []
    wanted = gpu_indices(devices)
    if wanted != []:
        probe = get_meter_class("nvml")(devices=devices).probe()
        if probe.available:
            plan.append(("nvml", {}))
        elif wanted:  # GPUs were asked for by index: say why they are not measured
            notes.append(f"GPU(s) {wanted} asked for but not measured: {probe.reason}")
    rapl = get_meter_class("rapl")()
    probe = rapl.probe()
    if probe.available:
        plan.append(("rapl", {}))
        if not getattr(rapl, "has_dram", False):
            plan.append(("estimate", {"cpu": False}))
    else:
        plan.append(("estimate", {}))
        if "permission denied" in probe.reason:
            notes.append(f"CPU energy is estimated: the RAPL counters are not readable. {probe.reason}")
    return tuple(plan), tuple(notes)


def _auto_plan(devices: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    return _auto_decision(devices)[0]


def auto_plan(devices: Any = None) -> list[str]:
    """Names of the meters ``"auto"`` would use (``["estimate"]`` on a machine with no counter)."""
    return [
        n if not kw else f"{n}({', '.join(f'{k}={v}' for k, v in kw.items())})"
        for n, kw in _auto_plan(_devices_key(devices))
    ]


def clear_probe_cache() -> None:
    """Forget the cached probes (after granting RAPL access, plugging a GPU, ...)."""
    _auto_decision.cache_clear()
    _entry_points.cache_clear()


def create_meter(meter: Any = "auto", devices: Any = None) -> Any:
    """Turn ``meter`` (a name or an instance) into a meter instance.

    Parameters
    ----------
    meter : str or meter instance
        ``"auto"``, ``"none"``, a registered name (``"nvml"``, ``"rapl"``,
        ``"estimate"``, ``"codecarbon"``, ``"replay"``, plugins), or an object with the
        meter interface.
    devices : optional
        GPU indices (ints or ``"gpu:N"``) for meters that read GPUs.
    """
    if meter is None or meter == "none":
        return NullMeter()
    if meter == "auto":
        return auto_meter(devices)
    if isinstance(meter, str):
        return _construct(get_meter_class(meter), devices)
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(meter, m, None))]
    if missing:
        raise MeterPluginError(
            f"{type(meter).__name__!r} is not a meter: it lacks {', '.join(missing)} "
            f"(a meter needs {', '.join(REQUIRED_METHODS)}). Give a meter name, one of "
            f"{', '.join(meter_names())}, or a meter instance."
        )
    return meter
