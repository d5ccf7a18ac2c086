"""Charts of what a run cost: power over time, energy per token, trade-offs, phase split.

Every chart is an :mod:`altair` chart, interactive in a notebook (tooltips, zoom on the
timeline, a legend that selects), and turned into a static PNG, SVG or PDF for reports by
:func:`to_png`, :func:`to_svg` and :func:`save` (through ``vl-convert``, offline; no
browser and no network).

The charts take what llem produces: a :class:`~llem.results.Result`, a list of them, a
:class:`~llem.results.RunMeasurement`, or a bare :class:`~llem.energy.measurement.Measurement`
(for instance a replay from :mod:`llem.testing`).

Honesty rules the charts keep:

- every axis title carries its unit (``power (W)``, ``time (s)``,
  ``energy per output token (mJ)``);
- a figure that was *estimated* (a model, not a counter) says ``estimated`` on the chart
  itself: in the axis title when every figure shown is estimated, beside each estimated
  bar or point otherwise, in the timeline's legend per device, and in the subtitle; a
  synthetic recording says ``SYNTHETIC`` in the subtitle;
- means carry their 95% confidence interval (Student's t over the repeated runs) as an
  error bar, and each run's own value is drawn as a dot beside it.

altair and vl-convert are imported on first use, never when ``llem`` is imported.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llem.energy.measurement import UNMARKED, Measurement
from llem.errors import missing_dependency, unknown_name
from llem.results import Result, RunMeasurement, Stat, compare
from llem.results.figures import figure, format_number
from llem.results.palette import (
    DEVICE_COLOURS,
    METHOD_COLOURS,
    PHASE_COLOURS,
    PHASE_OPACITY,
    PHASE_PARTS,
    part_colours,
    phase_colours,
    phase_part,
)
from llem.spec.flat import flatten

__all__ = [
    "PHASE_COLORS",
    "energy_per_token",
    "energy_vs_latency",
    "pareto_front",
    "phase_energy",
    "power_timeline",
    "report_charts",
    "save",
    "to_png",
    "to_svg",
]

#: Shading of the phases the runner and the energy layer mark (:mod:`llem.results.palette`,
#: shared with the live power plot).
PHASE_COLORS: dict[str, str] = PHASE_COLOURS
#: Most points drawn per device on a timeline (more are averaged into buckets).
MAX_POINTS = 1500
_WIDTH = 640


# ------------------------------------------------------------------------- imports
def _alt() -> Any:
    try:
        import altair as alt
    except ImportError:
        raise missing_dependency("altair", "plots", "llem's charts") from None
    return alt


def _vlc() -> Any:
    try:
        import vl_convert as vlc
    except ImportError:
        raise missing_dependency("vl-convert-python", "plots", "static PNG/SVG charts") from None
    return vlc


# -------------------------------------------------------------------- source helpers
def _as_results(results: Any) -> list[Any]:
    """A list of Results from one Result, a list, or a ResultList."""
    if isinstance(results, Result):
        return [results]
    out = list(results)
    for r in out:
        if not isinstance(r, Result):
            raise TypeError(f"Expected llem Result objects, got {type(r).__name__}.")
    if not out:
        raise ValueError("No results to plot.")
    return out


def _is_synthetic(meas: Any) -> bool:
    text = " ".join([str(getattr(meas, "source", "")), *map(str, getattr(meas, "notes", ()) or ())])
    return "SYNTHETIC" in text


def _timeline_windows(source: Any, run: int | None) -> tuple[list[tuple[str, Any, float]], str]:
    """``[(label, measurement, offset_s)]`` laid end to end, and a name for the title."""
    if isinstance(source, Measurement):
        return [("", source, 0.0)], ""
    if hasattr(source, "measurement") and isinstance(getattr(source, "measurement", None), Measurement) \
            and not isinstance(source, RunMeasurement):
        return [("", source.measurement, 0.0)], str(getattr(source, "name", ""))  # a Recording
    if isinstance(source, RunMeasurement):
        if source.measurement is None:
            raise ValueError("This run has no energy measurement (meter='none'); nothing to plot.")
        return [(f"run {source.index + 1}", source.measurement, 0.0)], ""
    if isinstance(source, Result):
        runs = [r for r in source.runs if r.measurement is not None]
        if not runs:
            raise ValueError(f"Result {source.model!r} holds no energy measurement (meter='none'?); "
                             "there is no power timeline to plot.")
        if run is not None:
            chosen = [r for r in runs if r.index == run]
            if not chosen:
                raise ValueError(f"Result has no measured run {run}; runs: {[r.index for r in runs]}.")
            runs = chosen
        out, offset = [], 0.0
        for r in runs:
            out.append((f"run {r.index + 1}", r.measurement, offset))
            offset += max(r.measurement.duration_s, 0.0)
        return out, f"{source.model} on {source.backend}"
    raise TypeError(
        f"power_timeline() takes a Result, RunMeasurement, Measurement or replay Recording, "
        f"not {type(source).__name__}."
    )


def _device_series(meas: Any, max_points: int) -> dict[str, list[tuple[float, float]]]:
    """Per device ``(t_s, power_w)``; long series are averaged into buckets (dE/dt)."""
    by_dev: dict[str, list[Any]] = {}
    for s in meas.timeline:
        by_dev.setdefault(s.device, []).append(s)
    out: dict[str, list[tuple[float, float]]] = {}
    for dev, samples in by_dev.items():
        samples.sort(key=lambda s: s.t_s)
        pts: list[tuple[float, float]] = []
        if len(samples) <= max_points:
            prev = None
            for s in samples:
                p = s.power_w
                if p is None and prev is not None and s.t_s > prev.t_s:
                    p = (s.energy_j - prev.energy_j) / (s.t_s - prev.t_s)
                if p is not None and math.isfinite(p):
                    pts.append((s.t_s, p))
                prev = s
        else:
            step = math.ceil(len(samples) / max_points)
            kept = samples[::step]
            if kept[-1] is not samples[-1]:
                kept.append(samples[-1])
            for a, b in zip(kept, kept[1:]):
                if b.t_s > a.t_s:
                    pts.append(((a.t_s + b.t_s) / 2, (b.energy_j - a.energy_j) / (b.t_s - a.t_s)))
        out[dev] = pts
    return out


def _merged_spans(meas: Any) -> list[tuple[str, float, float]]:
    """Phase spans with consecutive spans of the same name joined."""
    spans: list[tuple[str, float, float]] = []
    for name, a, b in meas.phase_spans():
        if b <= a:
            continue
        if spans and spans[-1][0] == name and abs(spans[-1][2] - a) < 1e-9:
            spans[-1] = (name, spans[-1][1], b)
        else:
            spans.append((name, a, b))
    return spans


def _method_scale(alt: Any, methods: Iterable[str]) -> Any:
    present = [m for m in METHOD_COLOURS if m in set(methods)]
    return alt.Scale(domain=present, range=[METHOD_COLOURS[m] for m in present])


def _title(alt: Any, text: str, subtitle: Sequence[str]) -> Any:
    sub = [s for s in subtitle if s]
    return alt.TitleParams(text, subtitle=sub or None, anchor="start",
                           subtitleColor="#8a4b08" if any("ESTIMATED" in s for s in sub) else "#555")


def _method_note(methods: Iterable[str], synthetic: bool = False) -> list[str]:
    ms = set(methods)
    lines = []
    if synthetic:
        lines.append("SYNTHETIC recording: illustrative, not a measurement")
    if "estimated" in ms:
        lines.append("ESTIMATED energy: a model (CPU time x W/thread, RAM size x W/GiB), "
                     "not a hardware counter")
    if "none" in ms and len(ms) == 1:
        lines.append("no energy was measured (meter='none')")
    return lines


# ------------------------------------------------------------------- power timeline
def power_timeline(
    source: Any,
    *,
    run: int | None = None,
    devices: Sequence[str] | None = None,
    total: bool | None = None,
    max_points: int = MAX_POINTS,
    width: int = _WIDTH,
    height: int = 260,
) -> Any:
    """Power of each device over time, with the run's phases shaded behind it.

    Parameters
    ----------
    source : Result, RunMeasurement, Measurement or replay Recording
        What to draw. A Result's measured runs are laid end to end (a dashed rule marks
        where each starts) unless ``run`` picks one.
    run : int, optional
        Index of the run to draw (0-based, as ``RunMeasurement.index``).
    devices : list of str, optional
        Devices to draw (default: all in the timeline).
    total : bool, optional
        Also draw the sum over devices (default: when there are several devices).
    max_points : int
        Most points per device; longer series are averaged into buckets, each bucket's
        power being its energy over its duration (so the area stays exact).
    width, height : int
        Size in pixels.

    Returns
    -------
    altair.LayerChart
        Power in W against time in s. A device whose figure is estimated is labelled
        ``(estimated)`` in the legend, and the subtitle says so.
    """
    alt = _alt()
    windows, name = _timeline_windows(source, run)
    power_rows: list[dict[str, Any]] = []
    phase_rows: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    methods: dict[str, str] = {}
    synthetic = False
    for label, meas, offset in windows:
        synthetic = synthetic or _is_synthetic(meas)
        for r in meas.devices:
            methods.setdefault(r.device, r.method)
        series = _device_series(meas, max(2, max_points // max(1, len(windows))))
        wanted = [d for d in series if devices is None or d in devices]
        if devices is not None:
            missing = [d for d in devices if d not in series]
            if missing:
                raise ValueError(f"No samples of device(s) {missing}; the timeline has {sorted(series)}.")
        for dev in wanted:
            method = methods.get(dev, meas.method)
            for t, p in series[dev]:
                power_rows.append({"t_s": t + offset, "power_w": p, "device": f"{dev} ({method})",
                                   "run": label})
        draw_total = total if total is not None else len(wanted) > 1
        if draw_total and len(wanted) > 1:
            # total at the instants of the first device, others interpolated from their energy
            ref = series[wanted[0]]
            grid = [t for t, _ in ref]
            for a, b in zip(grid, grid[1:]):
                if b <= a:
                    continue
                e = sum(meas.energy_between(a, b, d) for d in wanted)
                power_rows.append({"t_s": (a + b) / 2 + offset, "power_w": e / (b - a),
                                   "device": "total", "run": label})
        for ph, a, b in _merged_spans(meas):
            if ph == UNMARKED:
                continue
            phase_rows.append({"start_s": a + offset, "end_s": b + offset, "phase": ph, "run": label,
                               "duration_s": b - a})
        if len(windows) > 1:
            starts.append({"t_s": offset, "run": label})
    if not power_rows:
        raise ValueError("The timeline holds no power readings to plot.")

    dev_methods = sorted({row["device"] for row in power_rows})
    sub = []
    if len(windows) > 1:
        sub.append(f"{len(windows)} measured runs laid end to end; shading: phase")
    sub += _method_note(methods.values() or ["none"], synthetic)
    title = "Power over time" + (f": {name}" if name else "")
    legend_sel = alt.selection_point(fields=["device"], bind="legend")
    x = alt.X("t_s:Q", title="time (s)", scale=alt.Scale(nice=False))
    shading = phase_colours(p["phase"] for p in phase_rows)
    layers = []
    if phase_rows:
        layers.append(
            alt.Chart(alt.Data(values=phase_rows)).mark_rect(opacity=PHASE_OPACITY).encode(
                x=alt.X("start_s:Q", title="time (s)"),
                x2="end_s:Q",
                color=alt.Color("phase:N", title="phase",
                                scale=alt.Scale(domain=list(shading), range=list(shading.values())),
                                legend=alt.Legend(orient="right")),
                tooltip=[alt.Tooltip("phase:N"), alt.Tooltip("run:N"),
                         alt.Tooltip("start_s:Q", title="start (s)", format=".3f"),
                         alt.Tooltip("duration_s:Q", title="duration (s)", format=".3f")],
            )
        )
    line = alt.Chart(alt.Data(values=power_rows)).mark_line(strokeWidth=1.5, interpolate="linear").encode(
        x=x,
        y=alt.Y("power_w:Q", title="power (W)" + (", estimated" if set(methods.values()) == {"estimated"}
                                                  else "")),
        color=alt.Color("device:N", title="device (method)", scale=alt.Scale(range=list(DEVICE_COLOURS)),
                        legend=alt.Legend(orient="right", labelLimit=260)),
        opacity=alt.condition(legend_sel, alt.value(1.0), alt.value(0.15)),
        tooltip=[alt.Tooltip("device:N"), alt.Tooltip("run:N"),
                 alt.Tooltip("t_s:Q", title="time (s)", format=".3f"),
                 alt.Tooltip("power_w:Q", title="power (W)", format=".2f")],
    ).add_params(legend_sel)
    layers.append(line)
    if starts:
        rule = alt.Chart(alt.Data(values=starts))
        layers.append(rule.mark_rule(strokeDash=[4, 3], color="#333").encode(
            x="t_s:Q", tooltip=[alt.Tooltip("run:N")]))
        layers.append(rule.mark_text(align="left", baseline="top", dx=3, dy=3, color="#333").encode(
            x="t_s:Q", y=alt.value(0), text="run:N"))
    if any("(estimated)" in d for d in dev_methods):
        # the word on the plot area itself, not only in the legend
        layers.append(alt.Chart(alt.Data(values=[{"label": "estimated"}])).mark_text(
            align="right", baseline="top", dx=-4, dy=4, color=METHOD_COLOURS["estimated"],
            fontWeight="bold", fontSize=12).encode(
            x=alt.value(width), y=alt.value(0), text="label:N"))
    chart = alt.layer(*layers).resolve_scale(color="independent").properties(
        width=width, height=height, title=_title(alt, title, sub))
    return chart.interactive(bind_y=False)


# ----------------------------------------------------------------- labels of results
def _short(path: str, all_paths: Sequence[str]) -> str:
    tail = path.split(".")[-1]
    return tail if sum(p.split(".")[-1] == tail for p in all_paths) == 1 else path


def result_labels(results: Sequence[Any]) -> list[str]:
    """A short label per result: its name, else the settings that differ, else the model."""
    varying: tuple[str, ...] = ()
    if len(results) > 1:
        varying = compare(results).varying
    labels = []
    for r in results:
        if r.name:
            labels.append(str(r.name))
            continue
        flat = flatten(r.config)
        if varying:
            labels.append(", ".join(f"{_short(k, varying)}={flat.get(k)}" for k in varying))
        else:
            labels.append(f"{r.model} ({r.backend})")
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):
        if labels.count(lab) > 1:
            seen[lab] = seen.get(lab, 0) + 1
            labels[i] = f"{lab} #{seen[lab]}"
    return labels


def _energy_key(dynamic: bool) -> str:
    return "dynamic_energy_per_token_j" if dynamic else "energy_per_token_j"


# --------------------------------------------------------------- energy per token
def energy_per_token(
    results: Any, *, dynamic: bool = False, labels: Sequence[str] | None = None,
    width: int = _WIDTH, bar_height: int = 28,
) -> Any:
    """Mean energy per output token of each result, with its 95% confidence interval.

    Parameters
    ----------
    results : Result or list of Result
    dynamic : bool
        Use the energy above the idle baseline (results without a baseline are left out).
    labels : list of str, optional
        One label per result (default: :func:`result_labels`).

    Returns
    -------
    altair.LayerChart
        Horizontal bars in mJ per output token; the error bar is the 95% CI over runs
        (none with a single run), dots are the runs. Estimated bars say ``estimated``.
    """
    alt = _alt()
    res = _as_results(results)
    labs = list(labels) if labels is not None else result_labels(res)
    key = _energy_key(dynamic)
    bars, dots = [], []
    clipped = False
    for lab, r in zip(labs, res):
        st = Stat.of(getattr(run, key) for run in r.runs)
        if st.mean is None:
            continue
        ci = st.ci95
        lo = (ci[0] if ci else st.mean) * 1e3
        clipped = clipped or lo < 0
        bars.append({
            "config": lab, "mj": st.mean * 1e3,
            "lo": max(lo, 0.0), "hi": (ci[1] if ci else st.mean) * 1e3,
            "n": st.n, "method": r.method,
            "tag": "estimated" if r.method == "estimated" else "",
            "ci": (f"± {format_number(st.ci95_half * 1e3, 3)} mJ (95% CI, n={st.n})"
                   if st.ci95_half is not None else f"n={st.n}: no interval"),
        })
        dots += [{"config": lab, "mj": v * 1e3, "method": r.method} for v in st.values]
    if not bars:
        what = "energy above idle (no baseline measured)" if dynamic else "energy (meter='none')"
        raise ValueError(f"None of these results has {what}; nothing to plot.")
    methods = {b["method"] for b in bars}
    all_est = methods == {"estimated"}
    axis = figure(key).axis_title("estimated" if all_est else "")
    sub = ["bar: mean over runs; whisker: 95% CI (Student's t)"
           + (", cut at 0" if clipped else "") + "; dots: single runs"]
    sub += _method_note(methods, any(_is_synthetic(run.measurement) for r in res for run in r.runs
                                     if run.measurement is not None))
    order = [b["config"] for b in bars]
    y = alt.Y("config:N", title=None, sort=order, axis=alt.Axis(labelLimit=320))
    base = alt.Chart(alt.Data(values=bars))
    tip = [alt.Tooltip("config:N"), alt.Tooltip("mj:Q", title="mJ/token", format=".4g"),
           alt.Tooltip("ci:N", title="interval"), alt.Tooltip("method:N")]
    layers = [
        base.mark_bar(height={"band": 0.7}).encode(
            y=y, x=alt.X("mj:Q", title=axis, scale=alt.Scale(zero=True)),
            color=alt.Color("method:N", title="method", scale=_method_scale(alt, methods)),
            tooltip=tip),
        base.mark_rule(color="black", strokeWidth=1.5).encode(y=y, x="lo:Q", x2="hi:Q", tooltip=tip),
        alt.Chart(alt.Data(values=dots)).mark_point(color="black", size=18, filled=True, opacity=0.6)
        .encode(y=y, x="mj:Q", tooltip=[alt.Tooltip("config:N"),
                                        alt.Tooltip("mj:Q", title="run mJ/token", format=".4g")]),
        base.mark_text(align="left", dx=6, fontWeight="bold", color=METHOD_COLOURS["estimated"]).encode(
            y=y, x="hi:Q", text="tag:N"),
    ]
    return alt.layer(*layers).properties(
        width=width, height=max(60, bar_height * len(bars)),
        title=_title(alt, "Energy per output token", sub))


# ---------------------------------------------------------------- pareto front
def pareto_front(points: Sequence[tuple[float, float]], *, maximize_x: bool = False) -> list[int]:
    """Indices of the points no other point beats on both axes (y is always minimized).

    A point is dominated when another is at least as good on both axes and strictly
    better on one. ``maximize_x`` for throughput (more is better), else x is minimized
    (latency). Points with a None or non-finite coordinate are never on the front.
    Returned in order of x (best first).
    """
    ok = [i for i, (x, y) in enumerate(points)
          if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]

    def better_eq(a: tuple[float, float], b: tuple[float, float]) -> bool:
        ax = -a[0] if maximize_x else a[0]
        bx = -b[0] if maximize_x else b[0]
        return ax <= bx and a[1] <= b[1] and (ax < bx or a[1] < b[1])

    front = [i for i in ok if not any(better_eq(points[j], points[i]) for j in ok if j != i)]
    return sorted(front, key=lambda i: -points[i][0] if maximize_x else points[i][0])


#: x choices of :func:`energy_vs_latency`: key -> (figure of the table, more is better)
_X_CHOICES = {
    "latency": ("latency_p50_s", False),
    "ttft": ("ttft_p50_s", False),
    "itl": ("itl_p50_s", False),
    "throughput": ("tokens_per_s", True),
}


def energy_vs_latency(
    results: Any, *, x: str = "latency", dynamic: bool = False,
    labels: Sequence[str] | None = None, width: int = 520, height: int = 320,
) -> Any:
    """Energy per token against latency (or throughput), with the Pareto front marked.

    Parameters
    ----------
    results : Result or list of Result
    x : {"latency", "ttft", "itl", "throughput"}
        ``latency``: median time from a request's batch start to its last token;
        ``ttft`` / ``itl``: median time to first token / between tokens; ``throughput``:
        output tokens per second (more is better).
    dynamic : bool
        Energy above the idle baseline.
    labels : list of str, optional

    Returns
    -------
    altair.LayerChart
        One point per result at its means, whiskers for the 95% CIs on both axes; the
        points no other result beats on both axes are filled, ringed and joined.
    """
    alt = _alt()
    if x not in _X_CHOICES:
        raise unknown_name("x axis", x, _X_CHOICES)
    attr, maximize = _X_CHOICES[x]
    xfig = figure(attr)
    xtitle, xscale = xfig.axis_title(), xfig.scale
    res = _as_results(results)
    labs = list(labels) if labels is not None else result_labels(res)
    key = _energy_key(dynamic)
    rows = []
    clipped = False
    for lab, r in zip(labs, res):
        ys = Stat.of(getattr(run, key) for run in r.runs)
        xs = Stat.of(getattr(run, xfig.attr) for run in r.runs)
        if ys.mean is None or xs.mean is None:
            continue
        yci, xci = ys.ci95 or (ys.mean, ys.mean), xs.ci95 or (xs.mean, xs.mean)
        clipped = clipped or xci[0] < 0 or yci[0] < 0
        rows.append({"config": lab, "x": xs.mean * xscale, "x_lo": max(xci[0], 0.0) * xscale,
                     "x_hi": xci[1] * xscale, "mj": ys.mean * 1e3, "mj_lo": max(yci[0], 0.0) * 1e3,
                     "mj_hi": yci[1] * 1e3, "method": r.method, "n": ys.n})
    if not rows:
        raise ValueError("None of these results has both an energy figure and a "
                         f"{x} figure; nothing to plot.")
    front = pareto_front([(r["x"], r["mj"]) for r in rows], maximize_x=maximize)
    x_lo, x_hi = min(r["x"] for r in rows), max(r["x"] for r in rows)
    for i, row in enumerate(rows):
        far_right = x_hi > x_lo and (row["x"] - x_lo) / (x_hi - x_lo) > 0.66
        row["side"] = "left" if far_right else "right"
        row["pareto"] = "on the front" if i in front else "dominated"
        row["tag"] = row["config"] + (" (estimated)" if row["method"] == "estimated" else "")
    methods = {r["method"] for r in rows}
    all_est = methods == {"estimated"}
    ytitle = figure(key).axis_title("estimated" if all_est else "")
    sub = [("lower-left is better" if not maximize else "lower-right is better")
           + "; red, joined points: Pareto front (no other result beats them on both axes)",
           "whiskers: 95% CI over runs" + (", cut at 0" if clipped else "")]
    sub += _method_note(methods, any(_is_synthetic(run.measurement) for r in res for run in r.runs
                                     if run.measurement is not None))
    base = alt.Chart(alt.Data(values=rows))
    xe = alt.X("x:Q", title=xtitle, scale=alt.Scale(zero=False, padding=24))
    ye = alt.Y("mj:Q", title=ytitle, scale=alt.Scale(zero=False, padding=24))
    tip = [alt.Tooltip("config:N"), alt.Tooltip("x:Q", title=xtitle, format=".4g"),
           alt.Tooltip("mj:Q", title="mJ/token", format=".4g"), alt.Tooltip("method:N"),
           alt.Tooltip("pareto:N", title="Pareto"), alt.Tooltip("n:Q", title="runs")]
    front_rows = [rows[i] for i in front]
    layers = [
        base.mark_rule(color="#888").encode(x="x_lo:Q", x2="x_hi:Q", y="mj:Q"),
        base.mark_rule(color="#888").encode(x="x:Q", y="mj_lo:Q", y2="mj_hi:Q"),
        alt.Chart(alt.Data(values=[{**r, "order": i} for i, r in enumerate(front_rows)]))
        .mark_line(color="#d62728", strokeDash=[5, 3]).encode(x=xe, y=ye, order="order:Q"),
        base.mark_point(size=90, strokeWidth=2).encode(
            x=xe, y=ye, tooltip=tip,
            fill=alt.condition("datum.pareto == 'on the front'", alt.value("#d62728"), alt.value("white")),
            color=alt.Color("method:N", title="method", scale=_method_scale(alt, methods))),
        # labels right of their point, or left of it in the right third (so they stay inside)
        base.transform_filter("datum.side == 'right'").mark_text(align="left", dx=8, dy=-8, fontSize=11)
        .encode(x=xe, y=ye, text="tag:N"),
        base.transform_filter("datum.side == 'left'").mark_text(align="right", dx=-8, dy=-8, fontSize=11)
        .encode(x=xe, y=ye, text="tag:N"),
    ]
    what = xfig.label
    chart = alt.layer(*layers).properties(
        width=width, height=height, title=_title(alt, f"Energy per token vs {what}", sub))
    return chart.interactive()


# ---------------------------------------------------------------- phase split
def phase_energy(
    results: Any, *, per_token: bool = False, labels: Sequence[str] | None = None,
    width: int = _WIDTH, bar_height: int = 28,
) -> Any:
    """How each result's energy splits between prefill, decode and the rest.

    The runner marks ``prefill`` when a batch starts and ``decode`` at its first token;
    time between batches (detokenising, bookkeeping) is the rest. Energy is the mean per
    run over the runs, in J (or mJ per output token with ``per_token``).

    Returns
    -------
    altair.Chart
        Stacked horizontal bars with each part's share in the tooltip.
    """
    alt = _alt()
    res = _as_results(results)
    labs = list(labels) if labels is not None else result_labels(res)
    rows = []
    methods = set()
    for lab, r in zip(labs, res):
        per_run: list[dict[str, float]] = []
        for run in r.runs:
            m = run.measurement
            if m is None or m.energy_j is None:
                continue
            parts: dict[str, float] = {}
            for name, e in m.phase_energy_j().items():
                g = phase_part(name)
                parts[g] = parts.get(g, 0.0) + e
            if per_token:
                if not run.output_tokens:
                    continue
                parts = {k: v / run.output_tokens * 1e3 for k, v in parts.items()}
            per_run.append(parts)
        if not per_run:
            continue
        methods.add(r.method)
        groups = sorted({g for p in per_run for g in p},
                        key=lambda g: PHASE_PARTS.index(g) if g in PHASE_PARTS[:2] else 2)
        means = {g: sum(p.get(g, 0.0) for p in per_run) / len(per_run) for g in groups}
        total = sum(means.values())
        for order, g in enumerate(groups):
            rows.append({"config": lab, "part": g, "value": means[g], "order": order,
                         "share": means[g] / total if total else 0.0, "method": r.method})
    if not rows:
        raise ValueError("None of these results has a phase-marked energy timeline; nothing to plot.")
    unit = "mJ per output token" if per_token else "J per run"
    all_est = methods == {"estimated"}
    sub = ["mean over runs; prefill: batch start to first token; decode: first to last token"]
    sub += _method_note(methods, any(_is_synthetic(run.measurement) for r in res for run in r.runs
                                     if run.measurement is not None))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    dom = list(PHASE_PARTS)
    dom += sorted({r["part"] for r in rows} - set(dom))
    colors = part_colours(dom)
    base = alt.Chart(alt.Data(values=rows))
    y = alt.Y("config:N", title=None, sort=configs, axis=alt.Axis(labelLimit=320))
    bars = base.mark_bar(height={"band": 0.7}).encode(
        y=y,
        x=alt.X("value:Q", stack="zero",
                title=f"energy ({unit}{', estimated' if all_est else ''})"),
        color=alt.Color("part:N", title="phase", sort=dom,
                        scale=alt.Scale(domain=dom, range=[colors[d] for d in dom])),
        order=alt.Order("order:Q"),
        tooltip=[alt.Tooltip("config:N"), alt.Tooltip("part:N", title="phase"),
                 alt.Tooltip("value:Q", title=unit, format=".4g"),
                 alt.Tooltip("share:Q", title="share", format=".1%"), alt.Tooltip("method:N")],
    )
    labels_layer = base.transform_filter("datum.share >= 0.08").mark_text(
        color="white", fontWeight="bold", align="center").encode(
        y=y, x=alt.X("value:Q", stack="zero", bandPosition=0.5), order=alt.Order("order:Q"),
        text=alt.Text("share:Q", format=".0%"),
    )
    return alt.layer(bars, labels_layer).properties(
        width=width, height=max(60, bar_height * len(configs)),
        title=_title(alt, "Energy by phase", sub))


# ------------------------------------------------------------------ all charts
def report_charts(results: Any, *, max_timelines: int = 4) -> dict[str, Any]:
    """The charts a report shows for ``results``, by name; a chart that cannot be made is left out.

    Names: ``timeline:<label>`` (first ``max_timelines`` results), ``energy_per_token``,
    ``energy_vs_latency`` (and ``energy_vs_throughput``), ``phase_energy``.
    """
    res = _as_results(results)
    labs = result_labels(res)
    out: dict[str, Any] = {}
    for lab, r in list(zip(labs, res))[:max_timelines]:
        try:
            out[f"timeline:{lab}"] = power_timeline(r)
        except ValueError:
            pass
    for name, make in (
        ("energy_per_token", lambda: energy_per_token(res, labels=labs)),
        ("energy_vs_latency", lambda: energy_vs_latency(res, labels=labs)),
        ("energy_vs_throughput", lambda: energy_vs_latency(res, x="throughput", labels=labs)),
        ("phase_energy", lambda: phase_energy(res, labels=labs)),
    ):
        try:
            out[name] = make()
        except ValueError:
            pass
    return out


# --------------------------------------------------------------------- static output
def _spec(chart: Any) -> str:
    return chart.to_json() if hasattr(chart, "to_json") else json.dumps(chart)


def to_png(chart: Any, *, scale: float = 2.0, ppi: int | None = None) -> bytes:
    """The chart as PNG bytes (vl-convert, offline)."""
    vlc = _vlc()
    kw: dict[str, Any] = {"scale": scale}
    if ppi is not None:
        kw["ppi"] = ppi
    return bytes(vlc.vegalite_to_png(_spec(chart), **kw))


def to_svg(chart: Any) -> str:
    """The chart as SVG text (vl-convert, offline)."""
    return str(_vlc().vegalite_to_svg(_spec(chart)))


def to_pdf(chart: Any) -> bytes:
    """The chart as PDF bytes (vl-convert, offline)."""
    return bytes(_vlc().vegalite_to_pdf(_spec(chart)))


def save(chart: Any, path: str | os.PathLike[str], *, scale: float = 2.0) -> Path:
    """Write the chart to ``path``; the suffix picks the format (``.png``, ``.svg``, ``.pdf``, ``.json``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".png":
        p.write_bytes(to_png(chart, scale=scale))
    elif suffix == ".svg":
        p.write_text(to_svg(chart), encoding="utf-8")
    elif suffix == ".pdf":
        p.write_bytes(to_pdf(chart))
    elif suffix in (".json", ".vl.json"):
        p.write_text(_spec(chart), encoding="utf-8")
    else:
        raise unknown_name("chart format", suffix or "(no suffix)", [".png", ".svg", ".pdf", ".json"])
    return p

