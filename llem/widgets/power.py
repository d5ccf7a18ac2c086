"""The live power plot: an HTML widget holding an SVG chart, redrawn as samples arrive."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from llem.widgets.controls import require_ipywidgets
from llem.widgets.svg import measurement_svg, power_svg

_w = require_ipywidgets()


class PowerPlot(_w.HTML):  # type: ignore[misc, name-defined]
    """Power over time, drawn live from a run's samples, with the run's stages shaded.

    Feed it with :meth:`add_sample` (safe to call from the sampler's thread; redraws are
    throttled to one per ``redraw_s``) and :meth:`mark` (a stage begins). After the run,
    :meth:`show_measurement` replaces the live trace with the measured timeline.

    Parameters
    ----------
    title : str
        Shown above the chart.
    redraw_s : float
        Shortest time between two redraws, s.
    max_points : int
        Points kept per device; older ones are thinned so a long run stays light.
    """

    def __init__(self, title: str = "live power", redraw_s: float = 0.25, max_points: int = 1500,
                 width: int = 640, height: int = 220, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.redraw_s = float(redraw_s)
        self.max_points = int(max_points)
        self.size = (int(width), int(height))
        self.note = ""
        self.series: dict[str, list[tuple[float, float | None]]] = {}
        self.marks: list[tuple[float, str]] = []
        self.t_end: float | None = None
        self._t0 = time.perf_counter()
        self._last_draw = 0.0
        self._lock = threading.Lock()
        self.add_class("llem-power")
        self.redraw()

    # -- feeding ---------------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the plot started (the live plot's time axis)."""
        return time.perf_counter() - self._t0

    def add_sample(self, sample: Any) -> None:
        """Add a power reading: a :class:`llem.energy.measurement.Sample`, a dict or a tuple.

        Live samples are placed at their arrival time, so the windows of several passes
        (warmup, measured runs) line up on one axis.
        """
        device, power = _device_power(sample)
        if device is None:
            return
        self.add(device, power)

    def add(self, device: str, power_w: float | None, t_s: float | None = None) -> None:
        """Add ``power_w`` for ``device`` at ``t_s`` (default: now); redraw when due."""
        t = self.now() if t_s is None else float(t_s)
        with self._lock:
            pts = self.series.setdefault(str(device), [])
            pts.append((t, None if power_w is None else float(power_w)))
            if len(pts) > self.max_points:
                del pts[1:-1:2]  # keep the ends, halve the middle
        if time.perf_counter() - self._last_draw >= self.redraw_s:
            self.redraw()

    def mark(self, phase: str, t_s: float | None = None) -> None:
        """Phase ``phase`` begins at ``t_s`` (default: now)."""
        with self._lock:
            self.marks.append((self.now() if t_s is None else float(t_s), str(phase)))
        self.redraw()

    def spans(self) -> list[tuple[str, float, float]]:
        """``(phase, start_s, end_s)`` of the marked phases."""
        end = self.t_end if self.t_end is not None else self.now()
        marks = sorted(self.marks)
        return [(name, t, marks[i + 1][0] if i + 1 < len(marks) else end)
                for i, (t, name) in enumerate(marks)]

    def finish(self) -> None:
        """Stop the clock (the last phase ends now) and draw."""
        self.t_end = self.now()
        self.redraw()

    # -- drawing ---------------------------------------------------------------------------------
    def svg(self) -> str:
        """The chart as it stands, as SVG text."""
        with self._lock:
            series = {d: list(s) for d, s in self.series.items()}
        return power_svg(series, self.spans(), width=self.size[0], height=self.size[1], title=self.title,
                         note=self.note)

    def redraw(self) -> None:
        """Send the current chart to the front end."""
        self._last_draw = time.perf_counter()
        self.value = self.svg()

    def show_measurement(self, measurement: Any, title: str | None = None) -> None:
        """Show a finished measurement's timeline (its phases shaded) instead of the live trace."""
        self.value = measurement_svg(measurement, title=title or self.title, width=self.size[0],
                                     height=self.size[1])
        self.series = {d: list(measurement.power_series(d)) for d in measurement.device_names}
        self.marks = [(a, name) for name, a, _b in measurement.phase_spans()]

    # -- text ------------------------------------------------------------------------------------
    def summary(self) -> str:
        """One line: samples, devices, time span and the last reading of each device."""
        with self._lock:
            series = {d: list(s) for d, s in self.series.items()}
        n = sum(len(s) for s in series.values())
        if not n:
            return f"{self.title}: no power samples yet"
        span = max(t for s in series.values() for t, _ in s)
        last = ", ".join(
            f"{d} {s[-1][1]:.1f} W" if s and s[-1][1] is not None else f"{d} -" for d, s in series.items()
        )
        phases = " > ".join(dict.fromkeys(name for _, name in sorted(self.marks)))
        return (f"{self.title}: {n} samples over {span:.1f} s; last: {last}"
                + (f"; phases: {phases}" if phases else ""))

    def __repr__(self) -> str:
        return f"PowerPlot({self.summary()})"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            data["text/plain"] = self.summary()
        return data


def _device_power(sample: Any) -> tuple[str | None, float | None]:
    if isinstance(sample, dict):
        return sample.get("device"), sample.get("power_w")
    if hasattr(sample, "device"):
        return sample.device, getattr(sample, "power_w", None)
    if isinstance(sample, Sequence) and len(sample) >= 3:
        return sample[1], sample[2]  # (t_s, device, power_w, ...) as the sampler's rows
    return None, None


__all__ = ["PowerPlot"]
