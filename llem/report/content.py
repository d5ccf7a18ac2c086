"""What a report says, whatever its format: :class:`Report` and its tables.

:func:`build_report` gathers, for one or several results: the banners a reader must see
first, the key figures (from the figure table's ``report`` view), the charts, the energy
method per device, the capability notes from :mod:`llem.spec`, the configuration, the
runs. The one-row-per-run table of the CSV report (:func:`table_rows`,
:func:`to_dataframe`) is :mod:`llem.results.table`'s, re-exported here.
:mod:`llem.report.render` writes a :class:`Report` as HTML or Markdown;
:mod:`llem.report.exporters` writes the files.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from llem import spec
from llem._version import __version__
from llem.energy.measurement import NO_METHOD
from llem.plots import report_charts, result_labels
from llem.results import now_iso
from llem.results.figures import figures_for, format_stat
from llem.results.flags import advice_for
from llem.results.palette import METHOD_WORDS, method_note
from llem.results.rows import profile_of, show_value
from llem.results.table import as_results, table_rows, to_dataframe
from llem.spec.flat import flatten

#: Version tag of the JSON report.
SCHEMA = "llem.report/1"


def measurements(r: Any) -> list[Any]:
    """The energy measurements of a result's runs (runs without a meter left out)."""
    return [run.measurement for run in r.runs if run.measurement is not None]


def is_synthetic(r: Any) -> bool:
    """True when a result's energy comes from a synthetic replay (:mod:`llem.testing`)."""
    for m in measurements(r):
        if "SYNTHETIC" in str(m.source) or any("SYNTHETIC" in str(n) for n in m.notes):
            return True
    return False


def key_figures(r: Any) -> list[tuple[str, str, str]]:
    """``(label, value, what it is)`` of one result's headline figures.

    The figures of the table's ``report`` view, in its order, with its labels: each value
    is the mean over the measured runs with its 95% confidence interval; an energy value
    names its method. A last row says how many runs the means come from.
    """
    rows = [(f.label, text, f.meaning) for f, text in r.figure_rows("report")]
    n = len(r.runs)
    rows.append(("measured runs", f"{n}" + ("" if r.complete else " (INCOMPLETE)"),
                 "repeats; each figure above is their mean with a 95% CI"))
    return rows


def energy_methods(r: Any) -> list[dict[str, Any]]:
    """Per device: mean energy per run (J), method and source, over the result's runs."""
    by_dev: dict[str, dict[str, Any]] = {}
    for m in measurements(r):
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


def capability_notes(r: Any) -> list[dict[str, str]]:
    """Notes from :mod:`llem.spec` on the settings this result used.

    For each setting the config set to something other than its default (plus the
    effective precision and attention), when the table has something to say about it: the
    GPU tier and package it needs and whether this run's tier has them, the related
    capability's support on this backend, and the table's note. A last row describes the
    machine's tier when it is ``cpu``. Settings that had no effect are in
    ``Result.skipped``.
    """
    backend = r.backend
    cc = _tier_cc(r)
    tier = str(r.environment.get("tier") or spec.tier_for(cc).name)
    flat = flatten(r.config)
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
    flat = flatten(r.config)
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
        rows.append({"setting": path, "value": "unset" if given is None else show_value(given),
                     "effective": show_value(effective), "unit": unit, "help": help_})
    return rows


def run_rows(r: Any) -> list[dict[str, Any]]:
    """One row per measured run of a result: the table's ``runs`` figures, shown scaled.

    Keys are the figures' headings (``TTFT p50 (ms)``): the unit is in the key, the value
    is in that unit. Then the run's energy ``method`` and ``complete`` (True when the run
    finished).
    """
    shown = figures_for("runs")
    return [{"run": run.index + 1, **{f.heading: f.display(getattr(run, f.attr)) for f in shown},
             "method": run.method, "complete": run.complete} for run in r.runs]


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
        return [profile_of(r) for r in self.results]

    @property
    def not_for_publication(self) -> bool:
        """True when any result was measured with the ``quick`` profile."""
        return any(p != "publication" for p in self.profiles)

    def overview_rows(self) -> list[dict[str, str]]:
        """One row per result: what ran, then the figures of the ``compare`` view, formatted."""
        rows = []
        for lab, r in zip(self.labels, self.results):
            row = {
                "result": lab, "model": r.model, "backend": r.backend,
                "device": str(r.environment.get("gpu") or r.environment.get("device") or ""),
                "runs": f"{len(r.runs)}" + ("" if r.complete else " (incomplete)"),
                "profile": profile_of(r), "method": r.method,
            }
            for f in figures_for("compare"):
                if f.energy and r.method == NO_METHOD:
                    row[f.label] = METHOD_WORDS[NO_METHOD]
                else:
                    note = method_note(r.method) if f.energy else ""
                    row[f.label] = format_stat(r.stat(f.attr), f) + note
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The report's tables as JSON-safe data, every result in full."""
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
                    "profile": profile_of(r),
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


#: Flags a banner above already says (the NOT FOR PUBLICATION banner is the quick profile's).
_SAID_BY_BANNERS = frozenset({"quick-profile"})


def flag_banners(results: list[Any], labels: list[str]) -> list[tuple[str, str]]:
    """One banner per kind of validity flag the results carry: its message, which results, the fix.

    Warnings are ``warn`` banners, the rest ``info``; they come in the order the flags do.
    """
    hits: dict[str, list[tuple[str, Any]]] = {}
    for lab, r in zip(labels, results):
        for f in getattr(r, "flags", ()):
            if f.id not in _SAID_BY_BANNERS:
                hits.setdefault(f.id, []).append((lab, f))
    out = []
    for fid, found in hits.items():
        said = ("; ".join(f"{lab}: {f.message}" for lab, f in found) if len(results) > 1
                else found[0][1].message)
        advice = advice_for(fid)
        out.append(("warn" if found[0][1].warning else "info",
                    f"{fid}: {said}." + (f" What to do: {advice}." if advice else "")))
    return out


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
    res = as_results(results)
    labels = result_labels(res)
    if title is None:
        title = (f"llem report: {res[0].model} on {res[0].backend}" if len(res) == 1
                 else f"llem report: {len(res)} results")
    rep = Report(res, labels, title, now_iso())
    quick = [lab for lab, r in zip(labels, res) if profile_of(r) != "publication"]
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
    if any(is_synthetic(r) for r in res):
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
    rep.banners.extend(flag_banners(res, labels))
    if charts:
        try:
            rep.charts = report_charts(res, max_timelines=max_timelines)
        except ImportError as exc:
            rep.chart_error = str(exc)
    return rep


__all__ = [
    "SCHEMA", "Report", "as_results", "build_report", "capability_notes", "config_rows", "energy_methods",
    "flag_banners",
    "is_synthetic", "key_figures", "measurements", "profile_of", "run_rows", "show_value", "table_rows",
    "to_dataframe",
]
