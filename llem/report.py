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
- the key figures, each mean with its 95% confidence interval over the repeated runs and
  the method of each energy figure (``measured`` / ``sampled`` / ``estimated``) with its
  source, per device;
- the charts (:mod:`llem.plots`): power over time with the phases shaded, energy per
  token, energy per token against latency and throughput with the Pareto front, the
  prefill/decode split;
- the configuration (each setting with its effective value, unit and help from
  :mod:`llem.spec`), the settings that had no effect and why, notes on the capabilities
  and GPU tier the settings used need, the environment, every run, and a few generated
  texts.

The HTML file needs no network to be read: its charts are SVG images inside the file
(``data:`` URIs), its style is inline, and it holds no script. The Markdown report writes
its charts as PNG files in a folder beside it. JSON holds every result in full
(:meth:`~llem.results.Result.to_dict`) with the report's tables; CSV holds one row per run
(:func:`table_rows`, also :func:`to_dataframe`).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from llem._files import write_atomic
from llem.errors import LlemError, unknown_name

__all__ = [
    "BUILTIN_EXPORTERS",
    "CsvExporter",
    "Exporter",
    "ExporterPluginError",
    "HtmlExporter",
    "JsonExporter",
    "MarkdownExporter",
    "Report",
    "build_report",
    "capability_notes",
    "export",
    "exporter_for_path",
    "exporter_names",
    "get_exporter",
    "key_figures",
    "table_rows",
    "to_dataframe",
]

#: Version tag of the JSON report.
SCHEMA = "llem.report/1"

#: Built-in exporters, used when the entry points are not installed (a source checkout).
BUILTIN_EXPORTERS = {
    "html": "llem.report:HtmlExporter",
    "markdown": "llem.report:MarkdownExporter",
    "json": "llem.report:JsonExporter",
    "csv": "llem.report:CsvExporter",
}


class ExporterPluginError(LlemError, TypeError):
    """A class registered as an exporter lacks part of the exporter interface."""


# =============================================================== what a report holds
def _results(results: Any) -> list[Any]:
    """Results from a Result, a list, a ResultList, or paths to result files / folders."""
    from llem.results import Result, load_result, load_results

    if isinstance(results, Result):
        return [results]
    if isinstance(results, (str, os.PathLike)):
        results = [results]
    out: list[Any] = []
    for item in results:
        if isinstance(item, Result):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            p = Path(item)
            out.extend(load_results(p) if p.is_dir() else [load_result(p)])
        else:
            raise TypeError(f"Cannot report on a {type(item).__name__}; give llem Results or result files.")
    if not out:
        raise LlemError("There are no results to report on (an empty list, or a folder without "
                        "readable result files).")
    return out


def _fmt_stat(st: Any, unit: str = "", scale: float = 1.0) -> str:
    return st.format(unit, scale) if st is not None else "n/a"


def _g(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def _profile(r: Any) -> str:
    return str(r.config.get("profile") or r.effective_config.get("experiment.profile") or "")


def _measurements(r: Any) -> list[Any]:
    return [run.measurement for run in r.runs if run.measurement is not None]


def _synthetic(r: Any) -> bool:
    for m in _measurements(r):
        if "SYNTHETIC" in str(m.source) or any("SYNTHETIC" in str(n) for n in m.notes):
            return True
    return False


_METHOD_WORD = {"measured": "measured", "sampled": "sampled", "estimated": "ESTIMATED",
                "none": "not measured"}


def key_figures(r: Any) -> list[tuple[str, str, str]]:
    """``(label, value, what it is)`` of one result's headline figures.

    Each value is the mean over the measured runs with its 95% confidence interval; an
    energy value names its method.
    """
    from llem.results import Stat

    s = r.summary
    method = r.method
    tag = "" if method in ("measured", "none") else f" — {_METHOD_WORD.get(method, method)}"
    rows: list[tuple[str, str, str]] = []
    if method == "none":
        rows.append(("energy per output token", "not measured (meter='none')", ""))
    else:
        rows.append(("energy per output token", _fmt_stat(s["energy_per_token_j"], "mJ", 1e3) + tag,
                     "energy of a whole run divided by the tokens it generated"))
        if s["dynamic_energy_per_token_j"].mean is not None:
            rows.append(("  above idle", _fmt_stat(s["dynamic_energy_per_token_j"], "mJ", 1e3) + tag,
                         "the same after subtracting idle power x run time"))
        rows.append(("energy per request", _fmt_stat(s["energy_per_request_j"], "J") + tag,
                     "energy of a run divided by its prompts"))
        rows.append(("energy per run", _fmt_stat(s["energy_j"], "J") + tag,
                     "one pass over every prompt, all devices read"))
        power = Stat.of(m.mean_power_w for m in _measurements(r))
        rows.append(("mean power", _fmt_stat(power, "W") + tag, "energy per run / run time"))
        pe, de, tot = s["prefill_energy_j"].mean, s["decode_energy_j"].mean, s["energy_j"].mean
        if pe is not None and de is not None and tot:
            rows.append(("prefill / decode", f"{_g(pe, 3)} J / {_g(de, 3)} J per run "
                         f"({100 * pe / tot:.0f}% / {100 * de / tot:.0f}%)",
                         "energy before each batch's first token / after it"))
        carbon = Stat.of(m.carbon_g for m in _measurements(r))
        if carbon.mean is not None:
            src = next((m.carbon_source for m in _measurements(r) if m.carbon_source), "")
            rows.append(("carbon per run", _fmt_stat(carbon, "g CO2e") + (f" ({src})" if src else ""),
                         "energy x grid carbon intensity"))
    rows.append(("throughput", _fmt_stat(s["tokens_per_s"], "tok/s"), "output tokens per second of run time"))
    rows.append(("requests", _fmt_stat(s["requests_per_s"], "req/s"), "prompts answered per second"))
    rows.append(("time to first token", f"p50 {_fmt_stat(s['ttft_p50_s'], 'ms', 1e3)}; "
                 f"p90 {_fmt_stat(s['ttft_p90_s'], 'ms', 1e3)}",
                 "from a batch's start to a request's first token"))
    rows.append(("inter-token latency", f"p50 {_fmt_stat(s['itl_p50_s'], 'ms', 1e3)}; "
                 f"p90 {_fmt_stat(s['itl_p90_s'], 'ms', 1e3)}", "time between consecutive tokens"))
    mem_src = r.runs[0].memory_source if r.runs else ""
    rows.append(("peak memory", _fmt_stat(s["peak_memory_mib"], "MiB") + (f" ({mem_src})" if mem_src else ""),
                 "highest memory in use while measuring"))
    toks = s["output_tokens"]
    rows.append(("output tokens per run", _g(toks.mean, 6) if toks.mean is not None else "n/a",
                 "tokens generated in one pass over the prompts"))
    n = len(r.runs)
    rows.append(("measured runs", f"{n}" + ("" if r.complete else " (INCOMPLETE)"),
                 "repeats; each figure above is their mean with a 95% CI"))
    return rows


def energy_methods(r: Any) -> list[dict[str, Any]]:
    """Per device: mean energy per run (J), method and source, over the result's runs."""
    by_dev: dict[str, dict[str, Any]] = {}
    for m in _measurements(r):
        for d in m.devices:
            row = by_dev.setdefault(d.device, {"device": d.device, "kind": d.kind, "energy": [],
                                               "method": d.method, "source": d.source})
            row["energy"].append(d.energy_j)
    out = []
    for row in by_dev.values():
        e = row.pop("energy")
        row["energy_j"] = statistics.fmean(e) if e else None
        out.append(row)
    return out


def _tier_cc(r: Any) -> float | None:
    cc = r.environment.get("compute_capability")
    try:
        return float(cc) if cc is not None else None
    except (TypeError, ValueError):
        return None


def _on(value: Any) -> bool:
    return value not in (None, False, "", 0, {}, [])


def _flat_config(r: Any) -> dict[str, Any]:
    """The result's config as ``section.field`` -> value (top-level fields under ``experiment.``)."""
    from llem.results import _flatten

    return {(k if "." in k else f"experiment.{k}"): v for k, v in _flatten(r.config).items()}


def capability_notes(r: Any) -> list[dict[str, str]]:
    """Notes from :mod:`llem.spec` on the settings this result used.

    For each setting the config set to something other than its default (plus the
    effective precision and attention), when the table has something to say about it: the
    GPU tier and package it needs and whether this run's tier has them, the related
    capability's support on this backend, and the table's note. A last row describes the
    machine's tier when it is ``cpu``. Settings that had no effect are in
    ``Result.skipped``.
    """
    from llem import spec

    backend = r.backend
    cc = _tier_cc(r)
    tier = str(r.environment.get("tier") or spec.tier_for(cc).name)
    flat = _flat_config(r)
    eff = dict(r.effective_config)
    used: dict[str, Any] = {}
    for path, value in flat.items():
        try:
            row = spec.param(path)
        except Exception:  # noqa: BLE001 - a key the table does not know (older result)
            continue
        if row.section in spec.BACKENDS and row.section != backend:
            continue
        if _on(value) and value != row.default:
            used[path] = value
    for path in (f"{backend}.dtype", f"{backend}.attn_implementation"):
        if path not in used and _on(eff.get(path)):
            used[path] = eff[path]
    notes = []
    for path, value in used.items():
        try:
            row = spec.param(path)
        except Exception:  # noqa: BLE001
            continue
        parts: list[str] = []
        gate = spec.gate_for(path, value) if not isinstance(value, (dict, list)) else None
        if gate is not None:
            need = []
            if gate.min_cc:
                need.append(f"compute capability {gate.min_cc}+ ({spec.tier_for(gate.min_cc).name})")
            elif gate.cuda:
                need.append("an NVIDIA GPU")
            if gate.package:
                need.append(f"the {gate.package} package" + (f" ({gate.install})" if gate.install else ""))
            problem = spec.tier_problem(gate, cc)
            verdict = (f"not on this run's tier ({tier}): {problem}" if problem
                       else f"this run's tier ({tier}) has it")
            parts.append("needs " + ", ".join(need) + f"; {verdict}" if need else verdict)
            if gate.reason:
                parts.append(gate.reason)
        for c in spec.CAPABILITIES:
            if path not in c.params and not (c.kind == "precision" and path.endswith(".dtype")):
                continue
            if c.kind in ("precision", "attention") and str(value) != c.name and \
                    f"flash_attention_{value}" != c.name:
                continue
            sup = c.support.get(backend)
            if sup is not None:
                parts.append(f"{c.display} on {backend}: {sup.level}"
                             + (f" ({sup.note})" if sup.note else ""))
            if c.gate is not None and c.gate.min_cc and gate is None:
                problem = spec.tier_problem(c.gate, cc, on_cpu_ok_without_cuda=True)
                parts.append(f"{c.display} needs {c.gate.min_cc}+ on CUDA"
                             + (f"; {problem}" if problem else ""))
            if c.note and "seed" not in c.note.lower():  # notes on the seed are project history
                parts.append(c.note)
        if row.note and "seed" not in row.note.lower():
            parts.append(row.note)
        if not parts:
            continue
        unit = f" {row.unit}" if row.unit else ""
        notes.append({"setting": path, "value": f"{value!r}{unit}", "help": row.help,
                      "notes": " ".join(p if p.endswith(".") else p + "." for p in parts)})
    cpu = next((c for c in spec.CAPABILITIES if c.name == "cpu"), None)
    if tier == "cpu" and cpu is not None and backend in cpu.support:
        sup = cpu.support[backend]
        notes.append({"setting": "(machine)", "value": "cpu tier", "help": cpu.help,
                      "notes": f"{cpu.display} on {backend}: {sup.level}"
                      + (f" ({sup.note})." if sup.note else ".")
                      + " No CUDA kernels: GPU-only settings are refused or skipped here."})
    return notes


def config_rows(r: Any) -> list[dict[str, str]]:
    """Each setting of the result's config: value given, effective value, unit, help."""
    from llem import spec

    flat = _flat_config(r)
    eff = dict(r.effective_config)
    rows = []
    for path in dict.fromkeys([*flat, *eff]):
        given, effective = flat.get(path), eff.get(path, flat.get(path))
        if given is None and effective is None:
            continue
        try:
            row = spec.param(path)
            unit, help_ = row.unit or "", row.help
            if row.section in spec.BACKENDS and row.section != r.backend:
                continue
        except Exception:  # noqa: BLE001
            unit, help_ = "", ""
        rows.append({"setting": path, "value": "unset" if given is None else _show(given),
                     "effective": _show(effective), "unit": unit, "help": help_})
    return rows


def _show(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def run_rows(r: Any) -> list[dict[str, Any]]:
    """One row per measured run of a result, with units in the keys."""
    out = []
    for run in r.runs:
        out.append({
            "run": run.index + 1, "duration_s": run.duration_s, "requests": run.num_requests,
            "output_tokens": run.output_tokens, "tokens_per_s": run.tokens_per_s,
            "ttft_p50_ms": _ms(run.ttft_p50_s), "itl_p50_ms": _ms(run.itl_p50_s),
            "energy_j": run.energy_j, "energy_per_token_mj": _ms(run.energy_per_token_j),
            "prefill_energy_j": run.prefill_energy_j, "decode_energy_j": run.decode_energy_j,
            "peak_memory_mib": run.peak_memory_mib, "method": run.method, "complete": run.complete,
        })
    return out


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1e3


# ----------------------------------------------------------------- per-run table
#: run metrics in :func:`table_rows`: column -> attribute of RunMeasurement
_RUN_METRICS = (
    "duration_s", "prefill_s", "decode_s", "num_requests", "input_tokens", "output_tokens",
    "padding_tokens", "num_batches", "tokens_per_s", "requests_per_s", "ttft_p50_s", "ttft_p90_s",
    "itl_p50_s", "itl_p90_s", "energy_j", "dynamic_energy_j", "prefill_energy_j", "decode_energy_j",
    "energy_per_token_j", "dynamic_energy_per_token_j", "energy_per_request_j", "peak_memory_mib",
    "flops_estimate",
)


def table_rows(results: Any) -> list[dict[str, Any]]:
    """One row per run of every result: identity, every config field, every metric.

    Columns: ``result_id``, ``result_name``, ``model``, ``backend``, ``created_at``,
    ``config_hash``, ``profile``, ``run``, then ``config.<section>.<field>`` for each
    setting, then the run's metrics (units in the names), ``energy_method``,
    ``energy_source``, ``run_complete`` and ``result_complete``.
    """
    from llem.results import _flatten

    res = _results(results)
    rows = []
    for r in res:
        flat = {f"config.{k}": (_show(v) if isinstance(v, (dict, list)) else v)
                for k, v in _flatten(r.config).items()}
        for run in r.runs:
            row: dict[str, Any] = {
                "result_id": r.id, "result_name": r.name, "model": r.model, "backend": r.backend,
                "created_at": r.created_at, "config_hash": r.config_hash, "profile": _profile(r),
                "run": run.index,
            }
            row.update(flat)
            for k in _RUN_METRICS:
                row[k] = getattr(run, k)
            row["energy_method"] = run.method
            row["energy_source"] = getattr(run.measurement, "source", "") if run.measurement else ""
            row["run_complete"] = run.complete
            row["result_complete"] = r.complete
            rows.append(row)
    return rows


def to_dataframe(results: Any) -> Any:
    """:func:`table_rows` as a pandas DataFrame (one row per run; needs pandas)."""
    from llem.errors import import_optional

    return import_optional("pandas", "data", "to_dataframe").DataFrame(table_rows(results))


# ===================================================================== the report
@dataclass
class Report:
    """What a report says, independent of its format.

    Built by :func:`build_report`; the exporters render it.
    """

    results: list[Any]
    labels: list[str]
    title: str
    created_at: str
    banners: list[tuple[str, str]] = field(default_factory=list)
    charts: dict[str, Any] = field(default_factory=dict)
    chart_error: str = ""

    @property
    def profiles(self) -> list[str]:
        """The profile of each result."""
        return [_profile(r) for r in self.results]

    @property
    def not_for_publication(self) -> bool:
        """True when any result was measured with the ``quick`` profile."""
        return any(p != "publication" for p in self.profiles)

    def overview_rows(self) -> list[dict[str, str]]:
        """One row per result: the headline figures, formatted."""
        rows = []
        for lab, r in zip(self.labels, self.results):
            s = r.summary
            method = r.method
            rows.append({
                "result": lab, "model": r.model, "backend": r.backend,
                "device": str(r.environment.get("gpu") or r.environment.get("device") or ""),
                "runs": f"{len(r.runs)}" + ("" if r.complete else " (incomplete)"),
                "profile": _profile(r),
                "energy/token": (_fmt_stat(s["energy_per_token_j"], "mJ", 1e3) if method != "none"
                                 else "not measured"),
                "method": method,
                "throughput": _fmt_stat(s["tokens_per_s"], "tok/s"),
                "TTFT p50": _fmt_stat(s["ttft_p50_s"], "ms", 1e3),
                "ITL p50": _fmt_stat(s["itl_p50_s"], "ms", 1e3),
                "peak memory": _fmt_stat(s["peak_memory_mib"], "MiB"),
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The report's tables as JSON-safe data, every result in full."""
        from llem import __version__

        return {
            "schema": SCHEMA,
            "title": self.title,
            "created_at": self.created_at,
            "llem_version": __version__,
            "not_for_publication": self.not_for_publication,
            "banners": [{"level": lv, "text": t} for lv, t in self.banners],
            "overview": self.overview_rows(),
            "results": [
                {
                    "label": lab,
                    "profile": _profile(r),
                    "method": r.method,
                    "energy_source": r.energy_source,
                    "key_figures": [{"figure": a, "value": b, "meaning": c} for a, b, c in key_figures(r)],
                    "energy_by_device": energy_methods(r),
                    "capability_notes": capability_notes(r),
                    "result": r.to_dict(),
                }
                for lab, r in zip(self.labels, self.results)
            ],
        }


def build_report(results: Any, *, title: str | None = None, charts: bool = True,
                 max_timelines: int = 4) -> Report:
    """Gather what a report of ``results`` says (charts built unless ``charts=False``).

    Parameters
    ----------
    results : Result, list of Result, or paths to result files / folders
    title : str, optional
    charts : bool
        Build the charts (needs altair); when they cannot be built the report says why.
    max_timelines : int
        Power timelines drawn (one per result, the first ones).
    """
    from llem.plots import result_labels
    from llem.results import now_iso

    res = _results(results)
    labels = result_labels(res)
    if title is None:
        title = (f"llem report: {res[0].model} on {res[0].backend}" if len(res) == 1
                 else f"llem report: {len(res)} results")
    rep = Report(res, labels, title, now_iso())
    quick = [lab for lab, r in zip(labels, res) if _profile(r) != "publication"]
    if quick:
        rep.banners.append(("danger", "NOT FOR PUBLICATION: measured with the 'quick' profile (1 warmup "
                            "pass, no thermal wait)" + (f" — {', '.join(quick)}" if len(res) > 1 else "")
                            + ". Use profile='publication' for figures you cite."))
    methods = {r.method for r in res}
    if "estimated" in methods:
        rep.banners.append(("warn", "Energy is ESTIMATED, not measured: this machine has no hardware "
                            "energy counter that llem could read, so the figures come from a model "
                            "(CPU time x watts per thread, memory size x watts per GiB). Treat them as "
                            "rough; compare settings on the same machine only."))
    if methods == {"none"}:
        rep.banners.append(("warn", "No energy was measured (meter='none'): only time and memory."))
    if any(_synthetic(r) for r in res):
        rep.banners.append(("danger", "SYNTHETIC data: a replayed, made-up recording (llem.testing), not "
                            "a measurement. Do not cite its numbers."))
    if not all(r.complete for r in res):
        rep.banners.append(("warn", "INCOMPLETE: a run was interrupted or failed part way; the figures "
                            "cover what was measured before it stopped."))
    single = [lab for lab, r in zip(labels, res) if len(r.runs) < 2]
    if single:
        which = f" ({', '.join(single)})" if len(res) > 1 else ""
        rep.banners.append(("info", "One measured run only" + which
                            + ": no confidence interval can be given. Set repeats >= 3."))
    if charts:
        try:
            from llem.plots import report_charts

            rep.charts = report_charts(res, max_timelines=max_timelines)
        except ImportError as exc:
            rep.chart_error = str(exc)
    return rep


# ====================================================================== rendering
class _Doc:
    """What a format must render: the report is composed once against this interface."""

    def heading(self, level: int, text: str, anchor: str = "") -> None:
        raise NotImplementedError

    def para(self, text: str, cls: str = "") -> None:
        raise NotImplementedError

    def banner(self, level: str, text: str) -> None:
        raise NotImplementedError

    def table(self, head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> None:
        raise NotImplementedError

    def chart(self, name: str, chart: Any, caption: str) -> None:
        raise NotImplementedError

    def pre(self, text: str) -> None:
        raise NotImplementedError

    def open_details(self, summary: str, open_: bool = False) -> None:
        raise NotImplementedError

    def close_details(self) -> None:
        raise NotImplementedError


_CHART_CAPTIONS = {
    "timeline": "Power of each device over the measured runs, phases shaded (prefill: batch start to "
                "first token; decode: first to last token; host: between batches).",
    "energy_per_token": "Energy per output token: bar = mean over runs, whisker = 95% confidence "
                        "interval, dots = single runs.",
    "energy_vs_latency": "Energy per token against median request latency; red points are the Pareto "
                         "front (nothing else is both faster and cheaper).",
    "energy_vs_throughput": "Energy per token against throughput; red points are the Pareto front.",
    "phase_energy": "Where the energy of a run goes: prefill, decode and host work between batches.",
}


def _compose(doc: _Doc, rep: Report) -> None:
    from llem import __version__

    multi = len(rep.results) > 1
    doc.heading(1, rep.title)
    doc.para(f"Written {rep.created_at} by llem {__version__}. "
             f"{len(rep.results)} result{'s' if multi else ''}, "
             f"{sum(len(r.runs) for r in rep.results)} measured runs.", "meta")
    for level, text in rep.banners:
        doc.banner(level, text)

    if multi:
        doc.heading(2, "Overview", "overview")
        rows = rep.overview_rows()
        doc.table(list(rows[0]), [list(r.values()) for r in rows], "overview")
    else:
        r = rep.results[0]
        doc.heading(2, "Key figures", "key-figures")
        doc.table(["figure", "value (mean ± 95% CI)", "what it is"], key_figures(r), "figures")
        env = r.environment
        where = env.get("gpu") or env.get("cpu") or env.get("device") or "?"
        doc.para(f"{r.model} on {r.backend}, {where} (tier {env.get('tier', '?')}); "
                 f"profile '{_profile(r)}'; energy method: {r.method}"
                 + (f" ({r.energy_source})" if r.energy_source else "") + ".", "meta")

    if rep.charts or rep.chart_error:
        doc.heading(2, "Charts", "charts")
        if rep.chart_error:
            doc.banner("info", f"Charts left out: {rep.chart_error}")
        for name, chart in rep.charts.items():
            kind = name.split(":")[0]
            doc.chart(name, chart, _CHART_CAPTIONS.get(kind, ""))

    if multi:
        from llem.results import compare

        cmp_ = compare(rep.results)
        head, body = cmp_._cells()
        for row, lab in zip(body, rep.labels):
            row[0] = lab
        doc.heading(2, "Comparison", "comparison")
        doc.para("The settings that differ between the results, and the mean figures (95% CI).")
        doc.table(head, body)

    for lab, r in zip(rep.labels, rep.results):
        _compose_result(doc, r, lab, multi)

    doc.heading(2, "How to read this report", "glossary")
    doc.table(["term", "meaning"], _GLOSSARY, "glossary")


_GLOSSARY = [
    ("measured", "read from a hardware energy counter (NVML total-energy counter on NVIDIA GPUs, "
                 "RAPL on CPUs)"),
    ("sampled", "power readings integrated over time (where a GPU has no energy counter)"),
    ("estimated", "a model, not a reading: process CPU time x watts per thread, plus resident memory x "
                  "watts per GiB; used where no counter can be read. A total that includes an estimate "
                  "is labelled estimated"),
    ("95% CI", "the mean over repeated runs ± t(0.975, n-1) x standard deviation / sqrt(n); with one "
               "run there is none"),
    ("above idle", "energy minus idle power x run time, when an idle baseline was measured"),
    ("prefill / decode", "phases marked by the runner: prefill runs from a batch's start to its first "
                         "token, decode from there to its last token"),
    ("TTFT / ITL", "time to first token (from the batch start) / time between consecutive tokens; "
                   "p50 is the median, p90 the 90th percentile, over every request of a run"),
    ("quick / publication", "measurement profiles: quick = 1 warmup pass and no thermal wait (not for "
                            "publication); publication = 5 warmup passes and a 60 s thermal floor"),
]


def _compose_result(doc: _Doc, r: Any, label: str, multi: bool) -> None:
    doc.heading(2, ("Result: " + label) if multi else "Details", "r-" + r.id)
    if multi:
        doc.table(["figure", "value (mean ± 95% CI)", "what it is"], key_figures(r), "figures")

    doc.heading(3, "Energy: how each figure was obtained")
    devs = energy_methods(r)
    if devs:
        doc.table(["device", "kind", "energy per run (J, mean)", "method", "source"],
                  [[d["device"], d["kind"], _g(d["energy_j"]), d["method"], d["source"]] for d in devs])
    else:
        doc.para("No energy meter was used (meter='none').")
    ms = _measurements(r)
    if ms:
        m0 = ms[0]
        bits = [f"meter {m0.meter!r}", f"sampling every {_g(m0.interval_s)} s"]
        if m0.baseline_power_w is not None:
            bits.append(f"idle baseline {_g(m0.baseline_power_w)} W ± {_g(m0.baseline_spread_w or 0)} W "
                        f"over {_g(m0.baseline_duration_s)} s (subtracted in the 'above idle' figures)")
        else:
            bits.append("no idle baseline (set baseline.seconds to measure one)")
        doc.para("; ".join(bits) + ".")
        versions = {k: v for k, v in m0.meter_versions.items() if v}
        if versions:
            doc.para("Meter versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")

    notes = list(r.notes)
    for m in ms:
        notes.extend(n for n in m.notes if n not in notes)
    if notes:
        doc.heading(3, "Notes")
        doc.table(["note"], [[n] for n in notes])
    if r.skipped:
        doc.heading(3, "Settings that had no effect")
        doc.table(["setting", "why"], sorted(r.skipped.items()))
    caps = capability_notes(r)
    if caps:
        doc.heading(3, "Capability notes for the settings used")
        doc.table(["setting", "value", "what it does", "needs / support"],
                  [[c["setting"], c["value"], c["help"], c["notes"]] for c in caps])

    doc.heading(3, "Runs")
    rows = run_rows(r)
    if rows:
        doc.table(["run", "duration (s)", "requests", "output tokens", "tok/s", "TTFT p50 (ms)",
                   "ITL p50 (ms)", "energy (J)", "energy/token (mJ)", "prefill (J)", "decode (J)",
                   "peak memory (MiB)", "method", "complete"],
                  [[_cell(v) for v in row.values()] for row in rows], "runs")
    else:
        doc.para("No run finished.")

    doc.open_details(f"Configuration ({r.config_hash or 'no hash'})")
    doc.table(["setting", "value", "effective", "unit", "what it does"],
              [[c["setting"], c["value"], c["effective"], c["unit"], c["help"]] for c in config_rows(r)],
              "config")
    doc.close_details()
    doc.open_details("Environment")
    doc.table(["", ""], [[k, _show(v)] for k, v in r.environment.items() if v not in (None, "")])
    doc.close_details()
    if r.warmup:
        doc.open_details("Warmup")
        doc.table(["", ""], [[k, _show(v)] for k, v in r.warmup.items()])
        doc.close_details()
    texts = r.requests[:3]
    if texts:
        doc.open_details(f"Generated text (first {len(texts)} of the last run)")
        for q in texts:
            doc.para(f"Prompt {q.prompt_id}: {q.prompt[:300]}", "prompt")
            doc.pre(q.text[:1200])
        doc.close_details()


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return _g(v)
    return "" if v is None else str(v)


# ---------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:18px 28px 48px;background:#fff}
h1{font-size:1.55em;margin:.2em 0 .1em}h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd;
padding-bottom:.15em}h3{font-size:1.0em;margin:1.1em 0 .3em}
.meta{color:#555;font-size:.9em;margin:.2em 0 .6em}
.banner{padding:7px 12px;margin:6px 0;border-radius:4px;font-size:.93em;border-left:6px solid}
.banner.danger{background:#fde8e8;border-color:#c62828;color:#7f1010;font-weight:600}
.banner.warn{background:#fff4e0;border-color:#e08a00;color:#6b3d00}
.banner.info{background:#eaf2fb;border-color:#4c78a8;color:#1d3b5c}
table{border-collapse:collapse;font-size:.86em;margin:.3em 0 .8em}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f1f1f1}table.figures td:nth-child(2){font-weight:600;white-space:nowrap}
table.figures td:nth-child(3){color:#666}
figure{margin:.6em 0 1.2em}figure img{width:100%;max-width:1040px;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
pre{white-space:pre-wrap;background:#f6f6f6;padding:6px 9px;font-size:.85em;margin:.2em 0 .8em}
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
p.prompt{font-size:.85em;color:#444;margin:.6em 0 .1em}
"""


class _HtmlDoc(_Doc):
    def __init__(self, chart_format: str = "svg", scale: float = 1.5) -> None:
        self.parts: list[str] = []
        self.chart_format = chart_format
        self.scale = scale
        self.chart_errors: list[str] = []

    def heading(self, level: int, text: str, anchor: str = "") -> None:
        aid = f' id="{html.escape(_slug(anchor))}"' if anchor else ""
        self.parts.append(f"<h{level}{aid}>{html.escape(text)}</h{level}>")

    def para(self, text: str, cls: str = "") -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{c}>{html.escape(text)}</p>")

    def banner(self, level: str, text: str) -> None:
        self.parts.append(f'<div class="banner {level}" role="note">{html.escape(text)}</div>')

    def table(self, head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> None:
        c = f' class="{cls}"' if cls else ""
        out = [f"<table{c}>"]
        if any(head):
            ths = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
            out.append(f"<thead><tr>{ths}</tr></thead>")
        out.append("<tbody>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>")
        out.append("</tbody></table>")
        self.parts.append("".join(out))

    def chart(self, name: str, chart: Any, caption: str) -> None:
        from llem import plots

        alt_text = _chart_alt(name, chart)
        try:
            if self.chart_format == "png":
                data = base64.b64encode(plots.to_png(chart, scale=self.scale)).decode("ascii")
                src = f"data:image/png;base64,{data}"
            else:
                svg = plots.to_svg(chart)
                src = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
        except Exception as exc:  # noqa: BLE001 - a chart that fails must not lose the report
            self.chart_errors.append(f"{name}: {exc}")
            self.banner("info", f"Chart {name!r} could not be drawn: {exc}")
            return
        self.parts.append(
            f'<figure class="chart" data-chart="{html.escape(name)}"><img alt="{html.escape(alt_text)}" '
            f'src="{src}"><figcaption>{html.escape(caption)}</figcaption></figure>')

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def open_details(self, summary: str, open_: bool = False) -> None:
        self.parts.append(f"<details{' open' if open_ else ''}><summary>{html.escape(summary)}</summary>")

    def close_details(self) -> None:
        self.parts.append("</details>")

    def document(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                "<meta name=\"generator\" content=\"llem\">"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
                "<body><main>\n" + "\n".join(self.parts) + "\n</main></body></html>\n")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "x"


def _chart_alt(name: str, chart: Any) -> str:
    try:
        t = chart.title
        text = getattr(t, "text", t)
        sub = getattr(t, "subtitle", None)
        if isinstance(sub, list):
            text = f"{text}. " + ". ".join(sub)
        return str(text)
    except Exception:  # noqa: BLE001
        return name


# ------------------------------------------------------------------------ Markdown
class _MdDoc(_Doc):
    def __init__(self, folder: Path, rel: str, scale: float = 1.5) -> None:
        self.lines: list[str] = []
        self.folder = folder
        self.rel = rel
        self.scale = scale
        self.files: list[Path] = []
        self.chart_errors: list[str] = []

    def heading(self, level: int, text: str, anchor: str = "") -> None:
        self.lines += ["#" * level + " " + text, ""]

    def para(self, text: str, cls: str = "") -> None:
        self.lines += [("*" + _md(text) + "*") if cls == "meta" else _md(text), ""]

    def banner(self, level: str, text: str) -> None:
        mark = {"danger": "**⚠ ", "warn": "**⚠ ", "info": "**"}.get(level, "**")
        first, _, rest = text.partition(":")
        body = f"{mark}{_md(first)}:** {_md(rest.strip())}" if rest else f"{mark}{_md(text)}**"
        self.lines += ["> " + body, ""]

    def table(self, head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> None:
        h = [str(x) or " " for x in head]
        self.lines.append("| " + " | ".join(_md_cell(x) for x in h) + " |")
        self.lines.append("|" + "---|" * len(h))
        for row in rows:
            self.lines.append("| " + " | ".join(_md_cell(_cell(v)) for v in row) + " |")
        self.lines.append("")

    def chart(self, name: str, chart: Any, caption: str) -> None:
        from llem import plots

        fname = _slug(name) + ".png"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / fname
            path.write_bytes(plots.to_png(chart, scale=self.scale))
        except Exception as exc:  # noqa: BLE001
            self.chart_errors.append(f"{name}: {exc}")
            self.banner("info", f"Chart {name!r} could not be drawn: {exc}")
            return
        self.files.append(path)
        self.lines += [f"![{_md(_chart_alt(name, chart))}]({self.rel}/{fname})", "", f"*{_md(caption)}*", ""]

    def pre(self, text: str) -> None:
        self.lines += ["```text", text.replace("```", "'''"), "```", ""]

    def open_details(self, summary: str, open_: bool = False) -> None:
        self.lines += [f"### {summary}", ""]

    def close_details(self) -> None:
        pass

    def document(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"


def _md(text: str) -> str:
    return re.sub(r"([*_`\[\]<>|])", r"\\\1", str(text))


def _md_cell(text: str) -> str:
    return _md(text).replace("\n", " ")


# ======================================================================= exporters
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
        doc = _HtmlDoc(chart_format)
        _compose(doc, rep)
        write_atomic(path, doc.document(rep.title))
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
        doc = _MdDoc(path.parent / rel, rel, scale)
        _compose(doc, rep)
        write_atomic(path, doc.document())
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
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
        write_atomic(path, buf.getvalue())
        return path


def _no_options(name: str, options: Mapping[str, Any]) -> None:
    if options:
        raise TypeError(f"The {name} exporter takes no option(s) {', '.join(map(repr, options))}.")


# ------------------------------------------------------------------------ registry
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


def get_exporter(name: str) -> Exporter:
    """An instance of exporter ``name``: registered here, else entry point, else built-in."""
    aliases = {"md": "markdown", "htm": "html"}
    name = aliases.get(name, name)
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
            import importlib

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
    p = Path(path).expanduser()
    name = format or exporter_for_path(p)
    exporter = get_exporter(name)
    res = _results(results)
    return Path(exporter.export(res, p, **options))

