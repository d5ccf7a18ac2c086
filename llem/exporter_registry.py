"""Where report exporters are found: the ``llem.exporters`` plugin registry.

Exporters are plugins in the ``llem.exporters`` entry-point group; the built-ins
(:mod:`llem.report`'s HTML, Markdown, JSON and CSV exporters) register there too, with
:data:`BUILTIN_EXPORTERS` as the fallback for a source checkout whose package metadata is
not installed. A class is checked when it is loaded or registered, and an unknown name or
file suffix lists the ones that exist.

This module sits below the results and the report (it imports only :mod:`llem.errors`), so
``Result.export`` and ``llem.report.export`` find an exporter the same way without the
results importing the report. It is one separate block on purpose: it is the exporter
part of the one plugin registry (``llem.plugins``) for backends, meters and exporters.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from llem.errors import LlemError, unknown_name

#: Built-in exporters, used when the entry points are not installed (a source checkout).
BUILTIN_EXPORTERS = {
    "html": "llem.report:HtmlExporter",
    "markdown": "llem.report:MarkdownExporter",
    "json": "llem.report:JsonExporter",
    "csv": "llem.report:CsvExporter",
}

#: Other spellings of an exporter's name.
ALIASES = {"md": "markdown", "htm": "html"}


class ExporterPluginError(LlemError, TypeError):
    """A class registered as an exporter lacks part of the exporter interface."""


_REGISTERED: dict[str, type] = {}


def check_exporter_class(obj: Any, name: str = "?") -> None:
    """Refuse a class that lacks the exporter interface (raises :class:`ExporterPluginError`)."""
    if not isinstance(obj, type):
        raise ExporterPluginError(f"Exporter {name!r} must be a class, not {type(obj).__name__}.")
    missing = [a for a in ("export", "extensions") if not hasattr(obj, a)]
    if missing:
        raise ExporterPluginError(f"Exporter {name!r} ({obj.__module__}.{obj.__qualname__}) lacks "
                                  f"{', '.join(missing)}; an exporter needs export(results, path, "
                                  "**options) and a tuple of file extensions.")
    if not callable(getattr(obj, "export", None)):
        raise ExporterPluginError(f"Exporter {name!r}: export is not callable.")


def register_exporter(name: str, cls: type, *, replace: bool = False) -> type:
    """Register ``cls`` as exporter ``name`` in this process (checked first)."""
    check_exporter_class(cls, name)
    if name in _REGISTERED and not replace:
        raise ValueError(f"An exporter named {name!r} is already registered; pass replace=True.")
    _REGISTERED[name] = cls
    return cls


def _entry_points() -> dict[str, Any]:
    try:
        return {ep.name: ep for ep in entry_points(group="llem.exporters")}
    except Exception:  # noqa: BLE001 - broken metadata must not hide the built-ins
        return {}


def exporter_names() -> list[str]:
    """Names of the exporters that can be asked for."""
    return sorted({*BUILTIN_EXPORTERS, *_entry_points(), *_REGISTERED})


def get_exporter(name: str) -> Any:
    """An instance of exporter ``name``: registered here, else entry point, else built-in."""
    name = ALIASES.get(name, name)
    cls: Any = _REGISTERED.get(name)
    if cls is None:
        ep = _entry_points().get(name)
        if ep is not None:
            try:
                cls = ep.load()
            except Exception as exc:  # noqa: BLE001
                raise ExporterPluginError(
                    f"Exporter {name!r} ({ep.value}) could not be loaded: {exc}") from None
        elif name in BUILTIN_EXPORTERS:
            module, _, attr = BUILTIN_EXPORTERS[name].partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            raise unknown_name("exporter", name, exporter_names())
    check_exporter_class(cls, name)
    return cls()


def exporter_for_path(path: str | os.PathLike[str]) -> str:
    """The exporter whose extensions include ``path``'s suffix."""
    suffix = Path(path).suffix.lower()
    names = exporter_names()
    for name in names:
        try:
            exts = tuple(e.lower() for e in get_exporter(name).extensions)
        except LlemError:
            continue
        if suffix in exts:
            return name
    known = {}
    for name in names:
        try:
            known[name] = ", ".join(get_exporter(name).extensions)
        except LlemError:
            pass
    raise unknown_name("report file type", suffix or "(no suffix)",
                       [e for v in known.values() for e in v.split(", ")])


def exporter_for(path: str | os.PathLike[str], format: str | None = None) -> tuple[Any, Path]:
    """The exporter for writing ``path`` (``format`` names one, else the suffix picks it), and the path."""
    p = Path(path).expanduser()
    return get_exporter(format or exporter_for_path(p)), p


__all__ = [
    "ALIASES", "BUILTIN_EXPORTERS", "ExporterPluginError", "check_exporter_class", "exporter_for",
    "exporter_for_path", "exporter_names", "get_exporter", "register_exporter",
]
