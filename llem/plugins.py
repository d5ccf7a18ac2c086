"""One registry for llem's plugins: backends, meters and exporters.

Each kind of plugin is an entry-point group (``llem.backends``, ``llem.meters``,
``llem.exporters``); llem's own plugins are declared in those groups in ``setup.cfg`` and
found the same way as anyone else's. :data:`BUILTINS` mirrors those declarations for a
source tree whose package metadata is not installed (a drift test keeps the two equal).

A plugin is checked when it is registered: on :func:`register`, and when its entry point
is first loaded. Nothing here imports a plugin's module before it is asked for, so
``import llem`` stays cheap.

>>> import llem.plugins as plugins
>>> "pytorch" in plugins.names("backend")
True
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from llem.errors import LlemError, unknown_name


class PluginError(LlemError, TypeError):
    """A class registered as a plugin lacks part of its kind's interface."""


class BackendPluginError(PluginError):
    """A class registered as a backend lacks part of the backend protocol."""


class MeterPluginError(PluginError):
    """A class registered as a meter lacks part of the meter interface."""


class ExporterPluginError(PluginError):
    """A class registered as an exporter lacks part of the exporter interface."""


@dataclass(frozen=True)
class Kind:
    """One kind of plugin: its entry-point group and the interface a class must have.

    Attributes
    ----------
    name : str
        ``"backend"``, ``"meter"`` or ``"exporter"``.
    group : str
        The entry-point group.
    methods : tuple of str
        Callables the class must have.
    attributes : tuple of str
        Other attributes it must have.
    constructible : bool
        True when the class must be constructible without arguments.
    reserved : tuple of str
        Names that are choices rather than plugins (``auto``, ``none`` for meters).
    aliases : dict
        Other spellings accepted for a name (``md`` for ``markdown``).
    error : type
        The exception raised for a class that does not fit.
    interface : str
        Where the interface is described, for the error message.
    """

    name: str
    group: str
    methods: tuple[str, ...]
    attributes: tuple[str, ...] = ()
    constructible: bool = False
    reserved: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    error: type[PluginError] = PluginError
    interface: str = ""


KINDS: dict[str, Kind] = {
    "backend": Kind("backend", "llem.backends", ("load", "generate", "count_tokens", "release"),
                    error=BackendPluginError, interface="llem.backends.base.Backend"),
    "meter": Kind("meter", "llem.meters", ("probe", "start", "sample", "stop"), constructible=True,
                  reserved=("auto", "none"), error=MeterPluginError,
                  interface="llem.energy.base.Meter"),
    "exporter": Kind("exporter", "llem.exporters", ("export",), attributes=("extensions",),
                     aliases={"md": "markdown", "htm": "html"}, error=ExporterPluginError,
                     interface="llem.report.Exporter"),
}

#: kind -> name -> "module:attribute", mirroring setup.cfg's entry points.
BUILTINS: dict[str, dict[str, str]] = {
    "backend": {
        "pytorch": "llem.backends.pytorch:PyTorchBackend",
        "vllm": "llem.backends.vllm:VLLMBackend",
        "tensorrt": "llem.backends.tensorrt:TensorRTBackend",
    },
    "meter": {
        "nvml": "llem.energy.nvml:NvmlMeter",
        "rapl": "llem.energy.rapl:RaplMeter",
        "estimate": "llem.energy.estimate:EstimateMeter",
        "codecarbon": "llem.energy.codecarbon:CodeCarbonMeter",
        "zeus": "llem.energy.zeus:ZeusMeter",
        "replay": "llem.testing:ReplayMeter",
    },
    "exporter": {
        "html": "llem.report:HtmlExporter",
        "markdown": "llem.report:MarkdownExporter",
        "json": "llem.report:JsonExporter",
        "csv": "llem.report:CsvExporter",
    },
}

_registered: dict[str, dict[str, type]] = {k: {} for k in KINDS}


def kind(name: str) -> Kind:
    """The :class:`Kind` called ``name`` (``backend``, ``meter``, ``exporter``)."""
    try:
        return KINDS[name]
    except KeyError:
        raise unknown_name("plugin kind", name, KINDS) from None


def check(kind_name: str, obj: Any, name: str = "?") -> None:
    """Raise the kind's :class:`PluginError` unless ``obj`` is a class with its interface."""
    k = kind(kind_name)
    where = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
    label = f"{k.name.capitalize()} plugin {name!r}"
    if not inspect.isclass(obj):
        raise k.error(f"{label} ({where}) must be a class, not {type(obj).__name__}.")
    missing = [m for m in k.methods if not callable(getattr(obj, m, None))]
    missing += [a for a in k.attributes if not hasattr(obj, a)]
    if missing:
        need = ", ".join((*k.methods, *k.attributes))
        raise k.error(f"{label} ({where}) lacks {', '.join(missing)}: a {k.name} needs {need}"
                      + (f" (see {k.interface})." if k.interface else "."))
    if not k.constructible:
        return
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    required = [p for p in sig.parameters.values() if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise k.error(f"{label} ({where}) must be constructible without arguments; its "
                      f"constructor requires {', '.join(p.name for p in required)}.")


def register(kind_name: str, name: str, cls: type, *, replace: bool = False) -> type:
    """Register ``cls`` as the ``kind_name`` plugin called ``name``, checked now.

    Raises
    ------
    PluginError
        The class lacks the interface, ``name`` is reserved, or another class already
        has that name (pass ``replace=True`` to replace it).
    """
    k = kind(kind_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w-]*", name):
        raise k.error(f"A {k.name} name must be a word such as 'mine', not {name!r}.")
    if name in k.reserved:
        raise k.error(f"{name!r} is reserved (it is a choice among {k.name}s); choose another name.")
    check(kind_name, cls, name)
    table = _registered[k.name]
    if not replace and name in table and table[name] is not cls:
        raise k.error(f"A {k.name} called {name!r} is already registered ({table[name]!r}); "
                      "pass replace=True.")
    table[name] = cls
    return cls


@functools.cache
def _entry_points(group: str) -> dict[str, Any]:
    try:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=group)}
    except Exception:  # noqa: BLE001 - broken metadata must not hide the built-ins
        return {}


def names(kind_name: str, *, reserved: bool = True) -> list[str]:
    """Every name of ``kind_name`` that resolves here: built-ins, entry points, registered.

    With ``reserved`` (the default) the choices that are not plugins (``auto``, ``none``)
    are included.
    """
    k = kind(kind_name)
    out = {*BUILTINS[k.name], *_entry_points(k.group), *_registered[k.name]}
    if reserved:
        out.update(k.reserved)
    return sorted(out)


def canonical(kind_name: str, name: str) -> str:
    """``name`` with the kind's aliases resolved (``md`` -> ``markdown``)."""
    return kind(kind_name).aliases.get(name, name)


def get(kind_name: str, name: str) -> type:
    """The class of the ``kind_name`` plugin ``name``: registered, entry point, or built-in.

    Raises
    ------
    UnknownNameError
        For a name that is none of these, with a did-you-mean and the known names.
    PluginError
        When the plugin cannot be imported or lacks the interface.
    """
    k = kind(kind_name)
    name = canonical(kind_name, name)
    table = _registered[k.name]
    if name in table:
        return table[name]
    ep = _entry_points(k.group).get(name)
    target = ep.value if ep is not None else BUILTINS[k.name].get(name)
    if target is None:
        raise unknown_name(k.name, name, names(kind_name))
    try:
        if ep is not None:
            cls = ep.load()
        else:
            module, _, attr = target.partition(":")
            cls = getattr(importlib.import_module(module), attr)
    except LlemError:
        raise
    except Exception as exc:
        raise k.error(f"{k.name.capitalize()} plugin {name!r} ({target}) could not be loaded: "
                      f"{exc}") from exc
    return register(kind_name, name, cls, replace=True)


def clear_cache() -> None:
    """Read the entry points again (after installing a plugin in a running kernel)."""
    _entry_points.cache_clear()


def register_backend(name: str, cls: type, *, replace: bool = False) -> type:
    """Register ``cls`` as backend ``name``; ``experiment.backend=name`` then selects it."""
    return register("backend", name, cls, replace=replace)


def register_meter(name: str, cls: type, *, replace: bool = False) -> type:
    """Register ``cls`` as meter ``name``; ``experiment.meter=name`` then selects it."""
    return register("meter", name, cls, replace=replace)


def register_exporter(name: str, cls: type, *, replace: bool = False) -> type:
    """Register ``cls`` as exporter ``name`` (``llem.report.export(..., format=name)``)."""
    return register("exporter", name, cls, replace=replace)


__all__ = [
    "BUILTINS", "KINDS", "BackendPluginError", "ExporterPluginError", "Kind", "MeterPluginError",
    "PluginError", "canonical", "check", "clear_cache", "get", "kind", "names", "register",
    "register_backend", "register_exporter", "register_meter",
]
