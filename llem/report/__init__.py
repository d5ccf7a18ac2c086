"""Reports of one or several results: self-contained HTML, Markdown, JSON and CSV.

``llem.report.export(results, "report.html")`` (or ``result.export(path)``) writes a
report; the path's suffix picks the exporter unless ``format=`` names one. Exporters are
plugins found in the ``llem.exporters`` entry-point group (the four built-ins register
there too, with a fallback table for a source checkout); a class is checked when it is
loaded, and an unknown name lists the ones that exist.

What a report holds, in every format that can hold it:

- a banner for what a reader must know first: the ``quick`` profile (*not for
  publication*), *estimated* energy (no hardware counter), a synthetic replay, an
  incomplete run, a single run (no confidence interval);
- the key figures (the figure table's ``report`` view, :mod:`llem.results.figures`), each
  mean with its 95% confidence interval over the repeated runs and the method of each
  energy figure (``measured`` / ``sampled`` / ``estimated``) with its source, per device;
- the charts (:mod:`llem.plots`): power over time with the phases shaded, energy per
  token, energy per token against latency and throughput with the Pareto front, the
  prefill/decode split;
- the configuration (each setting with its effective value, unit and help from
  :mod:`llem.spec`), the settings that had no effect and why, notes on the capabilities
  and GPU tier the settings used need, the environment, every run, and a few generated
  texts.

Modules
-------
``content``    what a report says: :class:`Report`, :func:`build_report`, :func:`key_figures`,
               :func:`capability_notes`, :func:`table_rows` / :func:`to_dataframe`
``render``     the HTML and Markdown documents
``exporters``  the exporters (HTML, Markdown, JSON, CSV) and :func:`export`; the exporter
               registry they are found in is :mod:`llem.exporter_registry`
"""

from llem.report.content import (
    SCHEMA,
    Report,
    build_report,
    capability_notes,
    config_rows,
    energy_methods,
    key_figures,
    run_rows,
    table_rows,
    to_dataframe,
)
from llem.report.exporters import (
    BUILTIN_EXPORTERS,
    CsvExporter,
    Exporter,
    ExporterPluginError,
    HtmlExporter,
    JsonExporter,
    MarkdownExporter,
    check_exporter_class,
    export,
    exporter_for_path,
    exporter_names,
    get_exporter,
    register_exporter,
)

__all__ = [
    "BUILTIN_EXPORTERS",
    "SCHEMA",
    "CsvExporter",
    "Exporter",
    "ExporterPluginError",
    "HtmlExporter",
    "JsonExporter",
    "MarkdownExporter",
    "Report",
    "build_report",
    "capability_notes",
    "check_exporter_class",
    "config_rows",
    "energy_methods",
    "export",
    "exporter_for_path",
    "exporter_names",
    "get_exporter",
    "key_figures",
    "register_exporter",
    "run_rows",
    "table_rows",
    "to_dataframe",
]
