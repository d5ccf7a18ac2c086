"""A small power-over-time chart as inline SVG: light enough to redraw live during a run.

Pure functions, no plotting library: the live plot of a run must not pay altair's or
matplotlib's import time, and it must render in any front end (Lab, Notebook, VS Code, a
static HTML export). The finished run's full charts come from :mod:`llem.plots`; both
take their phase and device colours from :mod:`llem.results.palette`, so a phase looks the
same live and in the report.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

from llem.results.palette import DEVICE_COLOURS, PHASE_COLOURS, PHASE_OPACITY, device_colour, phase_colours

#: Line colours per device, in order of first appearance (the report's timeline uses the same).
LINE_COLOURS = DEVICE_COLOURS

#: Theme colours: (JupyterLab CSS variable, the light fallback). Inline in a page (the live
#: widget) the variable gives the theme's colour, dark or light; where no variable is
#: defined (the SVG as an image in a saved notebook, a PNG, another front end) the fallback
#: draws a light chart on its own opaque background, which reads in either theme.
THEME = {
    "background": ("--jp-layout-color0", "#ffffff"),
    "text": ("--jp-ui-font-color1", "#222222"),
    "muted": ("--jp-ui-font-color2", "#555555"),
    "border": ("--jp-border-color1", "#999999"),
}


def themed(prop: str, role: str, css_vars: bool = True) -> str:
    """SVG attributes setting ``prop`` (``fill``, ``stroke``, ``color``) to a theme colour.

    With ``css_vars`` the style takes the JupyterLab variable where the page defines one,
    and its light fallback elsewhere; without, the plain light colour (for an image and
    for renderers without CSS variables, such as the PNG converter).
    """
    var, fallback = THEME[role]
    return f'{prop}="{fallback}"' + (f' style="{prop}:var({var}, {fallback})"' if css_vars else "")


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp  # pragma: no cover


def _thin(points: list[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    n = len(points)
    if n <= max_points or max_points < 2:
        return points
    step = (n - 1) / (max_points - 1)
    return [points[round(i * step)] for i in range(max_points)]


def power_svg(
    series: Mapping[str, Sequence[tuple[float, float | None]]],
    spans: Sequence[tuple[str, float, float]] = (),
    *,
    width: int = 640,
    height: int = 220,
    title: str = "",
    note: str = "",
    max_points: int = 600,
    css_vars: bool = True,
) -> str:
    """Render power lines (W over s) with shaded phase bands as an ``<svg>`` string.

    Parameters
    ----------
    series : mapping
        Device name -> ``[(t_s, power_w), ...]``; points with a None power are skipped.
    spans : sequence
        ``(phase name, t_start_s, t_end_s)`` bands drawn behind the lines.
    width, height : int
        Size in px.
    title : str
        Shown top left.
    note : str
        Shown top right (for example how the power was obtained: ``estimated``).
    max_points : int
        Points drawn per device at most; a longer series is thinned evenly (its first and
        last points kept), so a long run stays a light page.
    css_vars : bool
        Colours from JupyterLab's theme variables (text, background, borders), so the chart
        reads in a dark theme when drawn inline (the live widget); False for a static image
        (plain light colours on an opaque background).
    """
    esc = html.escape
    left, right, top, bottom = 48, 12, 24, 30
    pw, ph = width - left - right, height - top - bottom
    pts = {d: _thin([(t, p) for t, p in s if p is not None and math.isfinite(p)], max_points)
           for d, s in series.items()}
    ts = [t for s in pts.values() for t, _ in s] + [x for _, a, b in spans for x in (a, b)]
    t_max = max(ts, default=1.0)
    t_min = min(ts, default=0.0)
    t_min = min(t_min, 0.0)
    if t_max - t_min <= 0:
        t_max = t_min + 1.0
    p_max = _nice_max(max((p for s in pts.values() for _, p in s), default=0.0) * 1.05)

    def x(t: float) -> float:
        return left + (t - t_min) / (t_max - t_min) * pw

    def y(p: float) -> float:
        return top + ph - (p / p_max) * ph

    text_var, text_fallback = THEME["text"]

    def th(prop: str, role: str) -> str:
        return themed(prop, role, css_vars)

    out = [
        f'<svg class="llem-power-plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title or "power over time")}" font-family="sans-serif" font-size="11px" '
        f'color="{text_fallback}" fill="currentColor" style="'
        + (f"color:var({text_var}, {text_fallback});" if css_vars else "")
        + 'font-family:sans-serif;font-size:11px">',
        f'<rect class="llem-background" width="{width}" height="{height}" {th("fill", "background")}/>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" {th("stroke", "border")}/>',
    ]
    colours = phase_colours(name for name, _a, _b in spans)
    for name, a, b in spans:
        xa, xb = x(max(a, t_min)), x(min(b, t_max))
        if xb - xa <= 0:
            continue
        out.append(f'<rect class="llem-phase" x="{xa:.1f}" y="{top}" width="{xb - xa:.1f}" height="{ph}" '
                   f'fill="{colours[name]}" fill-opacity="{PHASE_OPACITY}">'
                   f'<title>{esc(name)}: {a:.2f}-{b:.2f} s</title></rect>')
        if xb - xa > 30:
            out.append(f'<text x="{xa + 3:.1f}" y="{top + 12}" {th("fill", "muted")}>{esc(name)}</text>')
    for frac in (0.0, 0.5, 1.0):
        py = y(p_max * frac)
        out.append(f'<line x1="{left - 4}" x2="{left}" y1="{py:.1f}" y2="{py:.1f}" '
                   f'{th("stroke", "border")}/>')
        out.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{p_max * frac:g}</text>')
    for frac in (0.0, 0.5, 1.0):
        tx = t_min + (t_max - t_min) * frac
        out.append(f'<text x="{x(tx):.1f}" y="{top + ph + 14}" text-anchor="middle">{tx:.3g}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 3}" text-anchor="middle" '
               f'{th("fill", "muted")}>time (s)</text>')
    out.append(f'<text x="12" y="{top + ph / 2:.1f}" transform="rotate(-90 12 {top + ph / 2:.1f})" '
               'text-anchor="middle" '
               f'{th("fill", "muted")}>power (W)</text>')
    legend_x = left + 4
    for i, (device, s) in enumerate(pts.items()):
        colour = device_colour(i)
        if s:
            path = " ".join(f"{x(t):.1f},{y(p):.1f}" for t, p in s)
            out.append(f'<polyline class="llem-power-line" fill="none" stroke="{colour}" stroke-width="1.6" '
                       f'points="{path}"><title>{esc(device)}</title></polyline>')
        out.append(f'<rect x="{legend_x}" y="{top + ph - 14}" width="10" height="3" fill="{colour}"/>')
        out.append(f'<text x="{legend_x + 13}" y="{top + ph - 10}" fill="currentColor">{esc(device)}</text>')
        legend_x += 32 + 7 * len(device)
    if title:
        out.append(f'<text x="{left}" y="15" font-weight="bold">{esc(title)}</text>')
    if note:
        out.append(f'<text x="{width - right}" y="15" text-anchor="end" '
                   f'{th("fill", "muted")}>{esc(note)}</text>')
    if not any(pts.values()):
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" text-anchor="middle" '
                   f'{th("fill", "muted")}>waiting for power samples...</text>')
    out.append("</svg>")
    return "".join(out)


def measurement_svg(measurement: object, *, title: str = "power over time", width: int = 640,
                    height: int = 220, css_vars: bool = True) -> str:
    """The SVG of a finished :class:`llem.energy.measurement.Measurement`, phases shaded.

    ``css_vars=False`` for a static image (see :func:`power_svg`).
    """
    names = getattr(measurement, "device_names", ()) or ()
    series = {d: measurement.power_series(d) for d in names}  # type: ignore[attr-defined]
    spans = measurement.phase_spans() if hasattr(measurement, "phase_spans") else []
    method = getattr(measurement, "method", "")
    return power_svg(series, spans, width=width, height=height, title=title,
                     note=f"energy {method}" if method else "", css_vars=css_vars)


__all__ = ["LINE_COLOURS", "PHASE_COLOURS", "THEME", "measurement_svg", "power_svg", "themed"]
