"""A :class:`~llem.report.content.Report` written as a document: HTML or Markdown.

The report is composed once (:func:`_compose`) against a small document interface
(headings, paragraphs, banners, tables, charts, details), which each format implements.
The HTML document needs no network to be read: its charts are SVG (or PNG) images inside
the file (``data:`` URIs), its style is inline, and it holds no script. The Markdown
document writes its charts as PNG files in a folder beside it.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llem._version import __version__
from llem.plots import to_png, to_svg
from llem.report.content import (
    Report,
    capability_notes,
    config_rows,
    energy_methods,
    key_figures,
    measurements,
    profile_of,
    run_rows,
    show_value,
)
from llem.results import compare
from llem.results.figures import format_number as num
from llem.results.palette import PHASES

_FIGURE_HEAD = ["figure", "value (mean ± 95% CI)", "what it is"]
_SHADED = ("prefill", "decode", "host")


def render_html(rep: Report, chart_format: str = "svg", scale: float = 1.5) -> str:
    """The report as one self-contained HTML document (charts as ``data:`` images)."""
    doc = _HtmlDoc(chart_format, scale)
    _compose(doc, rep)
    return doc.document(rep.title)


def render_markdown(rep: Report, folder: Path, rel: str, scale: float = 1.5) -> str:
    """The report as Markdown; its charts are written as PNG files in ``folder`` (linked as ``rel``)."""
    doc = _MdDoc(folder, rel, scale)
    _compose(doc, rep)
    return doc.document()


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
    "timeline": "Power of each device over the measured runs, phases shaded ("
                + "; ".join(f"{p.name}: {p.meaning}" for p in PHASES if p.name in _SHADED)
                + ").",
    "energy_per_token": "Energy per output token: bar = mean over runs, whisker = 95% confidence "
                        "interval, dots = single runs.",
    "energy_vs_latency": "Energy per token against median request latency; red points are the Pareto "
                         "front (nothing else is both faster and cheaper).",
    "energy_vs_throughput": "Energy per token against throughput; red points are the Pareto front.",
    "phase_energy": "Where the energy of a run goes: prefill, decode and host work between batches.",
}


def _compose(doc: _Doc, rep: Report) -> None:
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
        doc.table(_FIGURE_HEAD, key_figures(r), "figures")
        env = r.environment
        where = env.get("gpu") or env.get("cpu") or env.get("device") or "?"
        doc.para(f"{r.model} on {r.backend}, {where} (tier {env.get('tier', '?')}); "
                 f"profile '{profile_of(r)}'; energy method: {r.method}"
                 + (f" ({r.energy_source})" if r.energy_source else "") + ".", "meta")

    if rep.charts or rep.chart_error:
        doc.heading(2, "Charts", "charts")
        if rep.chart_error:
            doc.banner("info", f"Charts left out: {rep.chart_error}")
        for name, chart in rep.charts.items():
            kind = name.split(":")[0]
            doc.chart(name, chart, _CHART_CAPTIONS.get(kind, ""))

    if multi:
        head, body = compare(rep.results).cells()
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
    ("scope", "what a figure covers: NVML and RAPL counters read the whole device, every process on "
              "it; the estimate covers this process (experiment.energy_scope='process': its CPU time "
              "and resident memory) or the whole machine ('system': busy CPU time of all processes and "
              "used memory, as codecarbon counts)"),
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
        doc.table(_FIGURE_HEAD, key_figures(r), "figures")

    doc.heading(3, "Energy: how each figure was obtained")
    devs = energy_methods(r)
    if devs:
        doc.table(["device", "kind", "energy per run (J, mean)", "method", "source"],
                  [[d["device"], d["kind"], num(d["energy_j"]), d["method"], d["source"]] for d in devs])
    else:
        doc.para("No energy meter was used (meter='none').")
    ms = measurements(r)
    if ms:
        m0 = ms[0]
        bits = [f"meter {m0.meter!r}", f"sampling every {num(m0.interval_s)} s"]
        if m0.baseline_power_w is not None:
            bits.append(f"idle baseline {num(m0.baseline_power_w)} W ± {num(m0.baseline_spread_w or 0)} W "
                        f"over {num(m0.baseline_duration_s)} s (subtracted in the 'above idle' figures)")
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
        doc.table(list(rows[0]), [[_cell(v) for v in row.values()] for row in rows], "runs")
    else:
        doc.para("No run finished.")

    doc.open_details(f"Configuration ({r.config_hash or 'no hash'})")
    doc.table(["setting", "value", "effective", "unit", "what it does"],
              [[c["setting"], c["value"], c["effective"], c["unit"], c["help"]] for c in config_rows(r)],
              "config")
    doc.close_details()
    doc.open_details("Environment")
    doc.table(["", ""], [[k, show_value(v)] for k, v in r.environment.items() if v not in (None, "")])
    doc.close_details()
    if r.warmup:
        doc.open_details("Warmup")
        doc.table(["", ""], [[k, show_value(v)] for k, v in r.warmup.items()])
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
        return num(v)
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
        alt_text = _chart_alt(name, chart)
        try:
            if self.chart_format == "png":
                data = base64.b64encode(to_png(chart, scale=self.scale)).decode("ascii")
                src = f"data:image/png;base64,{data}"
            else:
                svg = to_svg(chart)
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
        self.lines += ["#" * level + " " + _md_cell(text), ""]

    def para(self, text: str, cls: str = "") -> None:
        self.lines += [("*" + _md_cell(text) + "*") if cls == "meta" else _md_cell(text), ""]

    def banner(self, level: str, text: str) -> None:
        mark = {"danger": "**⚠ ", "warn": "**⚠ ", "info": "**"}.get(level, "**")
        first, _, rest = text.partition(":")
        body = f"{mark}{_md_cell(first)}:** {_md_cell(rest.strip())}" if rest else f"{mark}{_md_cell(text)}**"
        self.lines += ["> " + body, ""]

    def table(self, head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> None:
        h = [str(x) or " " for x in head]
        self.lines.append("| " + " | ".join(_md_cell(x) for x in h) + " |")
        self.lines.append("|" + "---|" * len(h))
        for row in rows:
            self.lines.append("| " + " | ".join(_md_cell(_cell(v)) for v in row) + " |")
        self.lines.append("")

    def chart(self, name: str, chart: Any, caption: str) -> None:
        fname = _slug(name) + ".png"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / fname
            path.write_bytes(to_png(chart, scale=self.scale))
        except Exception as exc:  # noqa: BLE001
            self.chart_errors.append(f"{name}: {exc}")
            self.banner("info", f"Chart {name!r} could not be drawn: {exc}")
            return
        self.files.append(path)
        self.lines += [f"![{_md_cell(_chart_alt(name, chart))}]({self.rel}/{fname})", "",
                       f"*{_md_cell(caption)}*", ""]

    def pre(self, text: str) -> None:
        self.lines += ["```text", text.replace("```", "'''"), "```", ""]

    def open_details(self, summary: str, open_: bool = False) -> None:
        self.heading(3, summary)

    def close_details(self) -> None:
        pass

    def document(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"


def _md(text: str) -> str:
    """``text`` with every character Markdown would read as markup escaped."""
    return re.sub(r"([*_`\[\]<>|#])", r"\\\1", str(text))


def _md_cell(text: str) -> str:
    """:func:`_md` on one line: a line break cannot start a new block (a heading, a list, a quote)."""
    return re.sub(r"\s*[\r\n]+\s*", " ", _md(text))


__all__ = ["render_html", "render_markdown"]
