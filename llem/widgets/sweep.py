"""The sweep widget: progress, a chart that fills in as results arrive, then the report.

Progress says runs done/total, the current setting and the ETA; the comparison report
replaces nothing and appears under the chart when the sweep ends.

:func:`llem.study.sweep` shows one by itself in a notebook (``progress=None``). The chart
is drawn as SVG by this module (no plotting library needed): one row per configuration,
one dot per cycle, a tick at the median; estimated energy says so on the axis.
"""

from __future__ import annotations

import html
import statistics
import threading
from collections.abc import Sequence
from typing import Any

from llem.errors import missing_dependency
from llem.results import figure
from llem.study.outcome import clock, sweep_info
from llem.widgets.svg import themed

try:
    import ipywidgets as _w
except ImportError:  # pragma: no cover - depends on the environment
    _w = None

#: Figures the chart can show, in order of preference: (result attribute, title, unit, scale).
CHART_FIGURES: tuple[tuple[str, str, str, float], ...] = tuple(
    (f.attr, f.label, f.unit, f.scale) for f in map(figure, ("energy_per_token_j", "tokens_per_s"))
)


def _require() -> Any:
    if _w is None:
        raise missing_dependency("ipywidgets", "jupyter", "the sweep widget")
    return _w


def sweep_svg(points: dict[str, list[float]], labels: Sequence[str], title: str,
              width: int = 640, row_h: int = 22) -> str:
    """A dot chart as SVG text: a row per label, a dot per value, a tick at the median."""
    e = html.escape
    rows = list(labels) + [lb for lb in points if lb not in labels]
    values = [v for lb in rows for v in points.get(lb, [])]
    left, right, top = 230, 20, 26
    height = top + row_h * max(1, len(rows)) + 30
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"font-family='sans-serif' font-size='11' {themed('color', 'text')} fill='currentColor'>",
           f"<text x='{left}' y='14' font-weight='bold'>{e(title)}</text>"]
    if not values:
        out.append(f"<text x='{left}' y='{top + 14}' {themed('fill', 'muted')}>"
                   "waiting for the first result</text>")
        out.append("</svg>")
        return "".join(out)
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo * 0.9 if lo else -1.0, hi * 1.1 if hi else 1.0
    lo = min(lo, 0.0) if lo >= 0 and lo < (hi - lo) else lo
    span = hi - lo

    def x(v: float) -> float:
        return left + (width - left - right) * (v - lo) / span

    for i, lb in enumerate(rows):
        y = top + row_h * i + row_h / 2
        short = lb if len(lb) <= 36 else lb[:35] + "\u2026"
        out.append(f"<text x='{left - 6}' y='{y + 4}' text-anchor='end'><title>{e(lb)}</title>"
                   f"{e(short)}</text>")
        out.append(f"<line x1='{left}' x2='{width - right}' y1='{y}' y2='{y}' "
                   f"{themed('stroke', 'border')} stroke-opacity='0.35'/>")
        vals = points.get(lb, [])
        for v in vals:
            out.append(f"<circle cx='{x(v):.1f}' cy='{y:.1f}' r='4' fill='#4c78a8' "
                       f"fill-opacity='0.7'><title>{v:.4g}</title></circle>")
        if vals:
            m = statistics.median(vals)
            out.append(f"<line x1='{x(m):.1f}' x2='{x(m):.1f}' y1='{y - 7:.1f}' y2='{y + 7:.1f}' "
                       "stroke='#e45756' stroke-width='2'/>")
    base = top + row_h * len(rows) + 4
    out.append(f"<line x1='{left}' x2='{width - right}' y1='{base}' y2='{base}' "
               f"{themed('stroke', 'border')}/>")
    for k in range(5):
        v = lo + span * k / 4
        out.append(f"<text x='{x(v):.1f}' y='{base + 14}' text-anchor='middle'>{v:.3g}</text>")
    out.append("</svg>")
    return "".join(out)


class SweepWidget:
    """Progress, a live chart and, at the end, the comparison report of one sweep.

    Parameters
    ----------
    total : int
        Runs in the study.
    trials : sequence of str
        Configuration labels, in plan order (the chart's rows).
    skipped : sequence of Skipped, optional
        Combinations not run; listed under the progress line.

    Attributes
    ----------
    box : ipywidgets.VBox
        What is displayed.
    """

    def __init__(self, total: int, trials: Sequence[str] = (), skipped: Sequence[Any] = ()) -> None:
        w = _require()
        self.total = int(total)
        self.trials = list(trials)
        self.points: dict[str, dict[str, list[float]]] = {f[0]: {} for f in CHART_FIGURES}
        self.methods: set[str] = set()
        self._lock = threading.Lock()
        self.bar = w.IntProgress(value=0, min=0, max=max(1, self.total), description="runs",
                                 bar_style="info", layout=w.Layout(width="60%"))
        self.status = w.HTML(value=html.escape(f"0/{self.total} runs"))
        self.chart = w.HTML(value=self._svg())
        self.report = w.HTML(value="")
        notes = "".join(f"<li>{html.escape(s.label)}: {html.escape(s.reason)}</li>" for s in skipped)
        self.skipped = w.HTML(value=f"<details><summary>{len(skipped)} combination(s) skipped"
                                    f"</summary><ul>{notes}</ul></details>" if skipped else "")
        self.box = w.VBox([w.HBox([self.bar, self.status]), self.skipped, self.chart, self.report])

    # -- feeding ------------------------------------------------------------------------------
    def update(self, event: Any) -> None:
        """Take a :class:`llem.study.SweepProgress` (the sweep's ``progress`` callback)."""
        with self._lock:
            self.bar.max = max(1, event.total)
            self.bar.value = min(event.total, event.done + event.failed)
            text = f"{event.done}/{event.total} runs"
            if event.failed:
                text += f", {event.failed} failed"
            if event.resumed:
                text += f" ({event.resumed} found saved)"
            if event.eta_s is not None and event.remaining:
                text += f", ETA {clock(event.eta_s)}"
            if event.stage == "run":
                text += f" \u2014 running {event.current}"
            elif event.stage == "failed":
                text += f" \u2014 {event.current} failed: {event.error}"
            elif event.stage == "done":
                text += " \u2014 done"
                self.bar.bar_style = "success" if not event.failed else "warning"
            elif event.stage == "interrupted":
                text += " \u2014 interrupted (run the sweep again to resume)"
                self.bar.bar_style = "danger"
            self.status.value = html.escape(text)

    def add_result(self, result: Any) -> None:
        """Add a result's figures to the chart, on its configuration's row."""
        label = sweep_info(result).get("label") or result.name or "?"
        with self._lock:
            for key, *_ in CHART_FIGURES:
                try:
                    v = result.summary[key].mean
                except Exception:  # noqa: BLE001 - a result without the figure adds nothing
                    v = None
                if v is not None:
                    self.points[key].setdefault(label, []).append(float(v))
            self.methods.add(getattr(result, "method", "none"))
            if label not in self.trials:
                self.trials.append(label)
            self.chart.value = self._svg()

    def _svg(self) -> str:
        for key, title, unit, scale in CHART_FIGURES:
            pts = self.points.get(key) or {}
            if any(pts.values()):
                scaled = {k: [v * scale for v in vs] for k, vs in pts.items()}
                mark = " (estimated)" if key.startswith("energy") and "estimated" in self.methods else ""
                return sweep_svg(scaled, self.trials, f"{title}{mark}, {unit} - a dot per cycle, "
                                                      "red tick at the median")
        return sweep_svg({}, self.trials, "results appear here as runs finish")

    def finish(self, sweep_result: Any, full_report: bool = True) -> None:
        """Show the comparison of the finished (or interrupted) sweep.

        First the summary over cycles (median, 95% interval, spread per configuration),
        then, with ``full_report``, llem.report's report of every result in a frame.
        """
        try:
            parts = [sweep_result._repr_html_()]
        except Exception as exc:  # noqa: BLE001 - display never raises
            parts = [f"<pre>summary unavailable: {html.escape(repr(exc))}</pre>"]
        if full_report:
            try:
                doc = sweep_result.report_html()
                if doc:
                    parts.append(
                        "<details open><summary>report of every run (llem.report)</summary>"
                        f"<iframe srcdoc=\"{html.escape(doc, quote=True)}\" "
                        "style='width:100%;height:640px;border:1px solid #ddd'></iframe></details>")
            except Exception as exc:  # noqa: BLE001
                parts.append(f"<p>full report unavailable: {html.escape(repr(exc))}</p>")
        self.report.value = "".join(parts)

    # -- display ------------------------------------------------------------------------------
    def show(self) -> None:
        """Display the widget in the current notebook cell."""
        from IPython.display import display

        display(self.box)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        try:
            return self.box._repr_mimebundle_(**kwargs)
        except Exception:  # noqa: BLE001
            return {"text/plain": repr(self)}

    def __repr__(self) -> str:
        n = sum(len(v) for v in self.points[CHART_FIGURES[1][0]].values())
        return f"<SweepWidget {html.unescape(self.status.value)}; {n} result(s) charted>"


__all__ = ["CHART_FIGURES", "SweepWidget", "sweep_svg"]
