"""Report exporters by name and by file suffix, over the one plugin registry.

Exporters are plugins like backends and meters: :mod:`llem.plugins` is the one registry
(the ``llem.exporters`` entry-point group, llem's own HTML, Markdown, JSON and CSV
exporters included; a class is checked when it is registered or first loaded, and an
unknown name lists the ones that exist). This module adds what is particular to
exporters: choosing one by a file's suffix (:func:`exporter_for_path`), and handing back an
instance ready to write (:func:`exporter_for`).

It sits below the results and the report (it imports only :mod:`llem.plugins` and
:mod:`llem.errors`), so ``Result.export`` and ``llem.report.export`` find an exporter the
same way without the results importing the report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llem import plugins
from llem.errors import LlemError, unknown_name
from llem.plugins import ExporterPluginError

#: name -> "module:attribute", mirroring setup.cfg's entry points (llem.plugins.BUILTINS).
BUILTIN_EXPORTERS: dict[str, str] = plugins.BUILTINS["exporter"]

#: Other spellings of an exporter's name (``md``, ``htm``).
ALIASES: dict[str, str] = plugins.KINDS["exporter"].aliases


def check_exporter_class(obj: Any, name: str = "?") -> None:
    """Raise :class:`ExporterPluginError` unless ``obj`` has ``export`` and ``extensions``."""
    plugins.check("exporter", obj, name)


def register_exporter(name: str, cls: type, *, replace: bool = False) -> type:
    """Register ``cls`` as exporter ``name`` in this process (checked now)."""
    return plugins.register_exporter(name, cls, replace=replace)


def exporter_names() -> list[str]:
    """Names of the exporters that can be asked for."""
    return plugins.names("exporter")


def get_exporter(name: str) -> Any:
    """An instance of exporter ``name`` (aliases accepted): registered, entry point, or built-in."""
    return plugins.get("exporter", name)()


def exporter_for_path(path: str | os.PathLike[str]) -> str:
    """The exporter whose extensions include ``path``'s suffix."""
    suffix = Path(path).suffix.lower()
    known: dict[str, tuple[str, ...]] = {}
    for name in exporter_names():
        try:
            known[name] = tuple(e.lower() for e in get_exporter(name).extensions)
        except LlemError:
            continue
        if suffix in known[name]:
            return name
    raise unknown_name("report file type", suffix or "(no suffix)", [e for v in known.values() for e in v])


def exporter_for(path: str | os.PathLike[str], format: str | None = None) -> tuple[Any, Path]:
    """The exporter for writing ``path`` (``format`` names one, else the suffix picks it), and the path."""
    p = Path(path).expanduser()
    return get_exporter(format or exporter_for_path(p)), p


__all__ = [
    "ALIASES", "BUILTIN_EXPORTERS", "ExporterPluginError", "check_exporter_class", "exporter_for",
    "exporter_for_path", "exporter_names", "get_exporter", "register_exporter",
]
