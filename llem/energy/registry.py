"""Meters by name, and the ``auto`` choice: the best available meter per device.

Meters are plugins like backends and exporters: :mod:`llem.plugins` is the one registry
(the ``llem.meters`` entry-point group, llem's own meters included; a class is checked
when it is registered). This module adds what is particular to meters: two names that
are choices rather than meters, ``"auto"`` (the best available per device) and
``"none"`` (time only), and :func:`create_meter`, which turns a name into an instance.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

from llem import plugins
from llem.energy.base import REQUIRED_METHODS, CompositeMeter, NullMeter
from llem.energy.nvml import gpu_indices
from llem.plugins import MeterPluginError

GROUP = plugins.KINDS["meter"].group

#: name -> "module:attribute", mirroring setup.cfg's entry points (llem.plugins.BUILTINS).
BUILTIN_METERS: dict[str, str] = plugins.BUILTINS["meter"]

#: Names that pick meters rather than name one.
SPECIAL_NAMES: tuple[str, ...] = plugins.KINDS["meter"].reserved


def check_meter_class(obj: Any, name: str = "?") -> None:
    """Raise :class:`MeterPluginError` unless ``obj`` has the meter interface.

    The interface: callables ``probe``, ``start``, ``sample``, ``stop``, and a
    constructor that can be called with no argument or with ``devices=``.
    """
    plugins.check("meter", obj, name)


def register_meter(name: str, cls: type, *, replace: bool = False) -> type:
    """Register ``cls`` as the meter called ``name`` (checked now)."""
    return plugins.register_meter(name, cls, replace=replace)


def meter_names() -> list[str]:
    """Every meter name that resolves here (built-ins, plugins, registered, auto, none)."""
    return plugins.names("meter")


def get_meter_class(name: str) -> type:
    """The class of meter ``name``: registered, else entry point, else built-in table.

    Raises
    ------
    UnknownNameError
        For a name that is none of these, with a did-you-mean and the known names.
    """
    if name in SPECIAL_NAMES:
        raise MeterPluginError(f"{name!r} picks meters (see create_meter); it is not a meter class.")
    return plugins.get("meter", name)


def _construct(cls: type, devices: Any, scope: str | None = None) -> Any:
    if devices is None and scope is None:
        return cls()
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    kw: dict[str, Any] = {}
    if devices is not None and ("devices" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())):
        kw["devices"] = devices
    if scope is not None and "scope" in params:  # the estimate's; counters read whole devices
        kw["scope"] = scope
    return cls(**kw)


def auto_meter(devices: Any = None, scope: str | None = None) -> CompositeMeter:
    """The best available meter for each device.

    GPUs: ``nvml`` when NVML starts and sees a GPU. CPU: ``rapl`` when its counters are
    readable, else ``estimate``; RAM: RAPL's DRAM domain when there is one, else the
    estimate's RAM model. ``scope`` (``"process"`` or ``"system"``) is the estimate's.
    Probes are cached for the process (:func:`clear_probe_cache` forgets them).
    """
    plan, notes = _auto_decision(_devices_key(devices))
    meters: list[Any] = []
    for name, kw in plan:
        cls = get_meter_class(name)
        if name == "estimate" and scope is not None:
            kw = {**kw, "scope": scope}
        meters.append(cls(devices=devices, **kw))
    return CompositeMeter(meters, label="auto", notes=notes)


def _devices_key(devices: Any) -> Any:
    if devices is None or isinstance(devices, (int, str)):
        return devices
    return tuple(devices)


@functools.lru_cache(maxsize=16)
def _auto_decision(devices: Any) -> tuple[tuple[tuple[str, dict[str, Any]], ...], tuple[str, ...]]:
    """The meters auto uses, and notes for the measurement on what it could not use."""
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
    plugins.clear_cache()


def create_meter(meter: Any = "auto", devices: Any = None, scope: str | None = None) -> Any:
    """Turn ``meter`` (a name or an instance) into a meter instance.

    Parameters
    ----------
    meter : str or meter instance
        ``"auto"``, ``"none"``, a registered name (``"nvml"``, ``"rapl"``,
        ``"estimate"``, ``"codecarbon"``, ``"zeus"``, ``"replay"``, plugins), or an object
        with the meter interface.
    devices : optional
        GPU indices (ints or ``"gpu:N"``) for meters that read GPUs.
    scope : {"process", "system"}, optional
        What an estimate covers (``experiment.energy_scope``), for meters that take a
        ``scope``; an instance is used as it is.
    """
    if meter is None or meter == "none":
        return NullMeter()
    if meter == "auto":
        return auto_meter(devices, scope)
    if isinstance(meter, str):
        return _construct(get_meter_class(meter), devices, scope)
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(meter, m, None))]
    if missing:
        raise MeterPluginError(
            f"{type(meter).__name__!r} is not a meter: it lacks {', '.join(missing)} "
            f"(a meter needs {', '.join(REQUIRED_METHODS)}). Give a meter name, one of "
            f"{', '.join(meter_names())}, or a meter instance."
        )
    return meter
