"""Writing reports to files: the exporters, and :func:`export`.

``export(results, "report.html")`` writes a report; the path's suffix picks the exporter
unless ``format=`` names one. Exporters are plugins found in the ``llem.exporters``
entry-point group (:mod:`llem.exporter_registry`; the four built-ins below register there
too); a class is checked when it is loaded, and an unknown name lists the ones that exist.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llem._files import write_atomic
from llem.errors import unknown_name

# Where exporters are found: the one plugin registry (llem.plugins), through
# llem.exporter_registry, which adds the choice by file suffix and sits below the results
# so that Result.export uses it too.
from llem.exporter_registry import (
    BUILTIN_EXPORTERS,
    ExporterPluginError,
    check_exporter_class,
    exporter_for,
    exporter_for_path,
    exporter_names,
    get_exporter,
    register_exporter,
)
from llem.report.content import as_results, build_report, table_rows
from llem.report.render import render_html, render_markdown


class Exporter:
    """Base of the exporters; subclassing is optional.

    ``name``, ``extensions`` and ``export`` are what counts:
    ``export(results, path, **options)`` writes the report of ``results`` (a list of
    Results) at ``path`` and returns the path of the main file written. Every exporter
    takes the options ``title`` and ``charts`` (ignoring them where they mean nothing) and
    refuses options it does not know.
    """

    name: str = ""
    extensions: tuple[str, ...] = ()
    description: str = ""

    def export(self, results: list[Any], path: Path, **options: Any) -> Path:
        """Write the report; return the main file's path."""
        raise NotImplementedError


class HtmlExporter(Exporter):
    """One self-contained HTML file: inline style, charts as SVG (or PNG) ``data:`` images, no script.

    Options: ``title``, ``charts`` (bool), ``chart_format`` (``"svg"`` or ``"png"``),
    ``max_timelines``.
    """

    name = "html"
    extensions = (".html", ".htm")
    description = "self-contained HTML (charts embedded, opens offline)"

    def export(self, results: list[Any], path: Path, *, title: str | None = None, charts: bool = True,
               chart_format: str = "svg", max_timelines: int = 4, **options: Any) -> Path:
        """Write the HTML report."""
        _no_options(self.name, options)
        if chart_format not in ("svg", "png"):
            raise unknown_name("chart format", chart_format, ["svg", "png"])
        rep = build_report(results, title=title, charts=charts, max_timelines=max_timelines)
        write_atomic(path, render_html(rep, chart_format))
        return path


class MarkdownExporter(Exporter):
    """A Markdown file with its charts as PNG files in ``<name>_files/`` beside it.

    Options: ``title``, ``charts`` (bool), ``scale`` (PNG pixel ratio), ``max_timelines``.
    """

    name = "markdown"
    extensions = (".md", ".markdown")
    description = "Markdown with PNG charts in a folder beside it"

    def export(self, results: list[Any], path: Path, *, title: str | None = None, charts: bool = True,
               scale: float = 1.5, max_timelines: int = 4, **options: Any) -> Path:
        """Write the Markdown report and its chart files."""
        _no_options(self.name, options)
        rep = build_report(results, title=title, charts=charts, max_timelines=max_timelines)
        rel = f"{path.stem}_files"
        write_atomic(path, render_markdown(rep, path.parent / rel, rel, scale))
        return path


class JsonExporter(Exporter):
    """Every result in full plus the report's tables, as one JSON document (no charts)."""

    name = "json"
    extensions = (".json",)
    description = "JSON: every result in full, with key figures, methods and capability notes"

    def export(self, results: list[Any], path: Path, *, title: str | None = None, indent: int | None = 1,
               charts: bool = False, **options: Any) -> Path:
        """Write the JSON report (``charts`` is accepted and ignored: JSON holds no charts)."""
        _no_options(self.name, options)
        rep = build_report(results, title=title, charts=False)
        write_atomic(path, json.dumps(rep.to_dict(), indent=indent, allow_nan=False, default=str) + "\n")
        return path


class CsvExporter(Exporter):
    """One row per run: identity, every config field, every metric (:func:`table_rows`)."""

    name = "csv"
    extensions = (".csv",)
    description = "CSV: one row per run, one column per config field and metric"

    def export(self, results: list[Any], path: Path, *, title: str | None = None, charts: bool = False,
               **options: Any) -> Path:
        """Write the CSV table (``title`` and ``charts`` are accepted and ignored)."""
        _no_options(self.name, options)
        rows = table_rows(results)
        cols: list[str] = []
        for row in rows:
            cols.extend(k for k in row if k not in cols)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([csv_cell(c) for c in cols])
        for row in rows:
            w.writerow([csv_cell(row.get(k)) for k in cols])
        write_atomic(path, buf.getvalue())
        return path


#: First characters that make a spreadsheet read a cell as a formula (or hide one after a
#: tab or carriage return): ``=``, ``+``, ``-``, ``@``.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell no spreadsheet runs as a formula.

    Text that starts with ``= + - @``, a tab or a carriage return gets a leading ``'``
    (spreadsheets show it as text); numbers, and text that is a number (``-1.5``), stay as
    they are. None is an empty cell.
    """
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _no_options(name: str, options: Mapping[str, Any]) -> None:
    if options:
        raise TypeError(f"The {name} exporter takes no option(s) {', '.join(map(repr, options))}.")


def export(results: Any, path: str | os.PathLike[str], *, format: str | None = None,
           **options: Any) -> Path:
    """Write a report of one or several results at ``path``.

    Parameters
    ----------
    results : Result, list of Result, or paths to result files / folders
    path : str or path
        The file to write; its suffix picks the exporter (``.html``, ``.md``, ``.json``,
        ``.csv``) unless ``format`` is given.
    format : str, optional
        Exporter name (``html``, ``markdown``, ``json``, ``csv`` or a plugin's).
    **options
        Passed to the exporter (``title=``, ``charts=False``, ``chart_format="png"`` ...).

    Returns
    -------
    pathlib.Path
        The main file written.
    """
    exporter, p = exporter_for(path, format)
    return Path(exporter.export(as_results(results), p, **options))


__all__ = [
    "BUILTIN_EXPORTERS", "FORMULA_STARTS", "CsvExporter", "Exporter", "ExporterPluginError", "HtmlExporter",
    "JsonExporter", "MarkdownExporter", "check_exporter_class", "csv_cell", "export", "exporter_for_path",
    "exporter_names", "get_exporter", "register_exporter",
]
