"""What a run shows while it runs: its stage, a progress bar and the live power plot.

The elapsed time ticks on its own (a timer thread redraws the status line every
:data:`TICK_S`), so a long model load never looks frozen; the load says what it is doing
(the steps :mod:`llem.backends.loadsteps` tells), and the live plot shows the power
sampled from the start of the load.
"""

from __future__ import annotations

import html
import threading
import time
import weakref
from typing import Any

from llem.widgets.controls import require_ipywidgets
from llem.widgets.power import PowerPlot

_w = require_ipywidgets()

#: Seconds between two redraws of the status line while a run is going.
TICK_S = 0.5

#: The live plot is redrawn every this many ticks.
PLOT_EVERY = 4


def _tick(ref: weakref.ReferenceType[RunView], stop: threading.Event, every_s: float) -> None:
    """Redraw the view's status until ``stop`` is set or the view is gone."""
    while not stop.wait(every_s):
        view = ref()
        if view is None:
            return
        try:
            view.refresh()
        except Exception:  # noqa: BLE001 - a closed front end must not raise in a thread
            return
        del view


class RunView(_w.VBox):  # type: ignore[misc, name-defined]
    """Progress and live power of one run; pass :meth:`progress` and :meth:`on_sample` to llem.run.

    ``llem.run(cfg, progress=view.progress, on_sample=view.on_sample)`` drives it; call
    :meth:`done` (or :meth:`failed`) at the end.
    """

    def __init__(self, title: str = "llem run", tick_s: float = TICK_S, **kwargs: Any) -> None:
        self.title = title
        self.step: str | None = None
        self.status = _w.HTML(value=self._status_html("starting"))
        self.bar = _w.IntProgress(value=0, min=0, max=1, description="", bar_style="info",
                                  layout=_w.Layout(width="440px"))
        self.plot = PowerPlot(title="live power")
        self.stage: str | None = None
        self.done_count = 0
        self.total: int | None = None
        self._t0 = time.perf_counter()
        self.state = "starting"
        self.ticks = 0
        super().__init__(children=[self.status, self.bar, self.plot], **kwargs)
        self.add_class("llem-run")
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if tick_s > 0:
            self._ticker = threading.Thread(target=_tick, args=(weakref.ref(self), self._stop, float(tick_s)),
                                            name="llem-runview-tick", daemon=True)
            self._ticker.start()

    def elapsed_s(self) -> float:
        """Seconds since the view was made."""
        return time.perf_counter() - self._t0

    def refresh(self) -> None:
        """Redraw the status line with the elapsed time (the timer thread calls this)."""
        if self._stop.is_set():
            return
        self.ticks += 1
        self.status.value = self._status_html(self._running_text())
        if self.ticks % PLOT_EVERY == 0:
            self.plot.redraw()  # the current phase's band grows also while no sample comes

    def _running_text(self) -> str:
        step = f": {self.step}" if self.step else ""
        return f"{self.state}{step}  ({self.elapsed_s():.1f} s)"

    def stop_ticking(self) -> None:
        """Stop the timer thread (done, failed and close call this)."""
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=2)

    def close(self) -> None:
        """Stop ticking and close the widgets."""
        self.stop_ticking()
        super().close()

    def _status_html(self, text: str) -> str:
        return f"<b>{html.escape(self.title)}</b>: {html.escape(text)}"

    # -- callbacks for llem.run ------------------------------------------------------------------
    def progress(self, stage: str, done: int | None = None, total: int | None = None,
                 step: str | None = None) -> None:
        """Report that ``done`` of ``total`` steps of ``stage`` are finished.

        ``step`` says what the stage is doing now (``"reading the weights from the GGUF
        file"``); it is shown until the stage changes or another step comes.
        """
        if stage != self.stage:
            self.stage = stage
            self.step = None
            self.plot.mark(stage)
        if step is not None:
            self.step = str(step)
        self.done_count = int(done or 0)
        self.total = int(total) if total else None
        if self.total:
            self.bar.max = max(self.total, 1)
            self.bar.value = min(self.done_count, self.bar.max)
        if stage == "load":
            text = "model loaded" if self.total and self.done_count >= self.total else "loading the model"
        else:
            text = f"{stage} {self.done_count}/{self.total}" if self.total else str(stage)
        self.state = text
        self.status.value = self._status_html(self._running_text())

    def on_sample(self, sample: Any) -> None:
        """A live power sample from the sampler (may be called from its thread)."""
        self.plot.add_sample(sample)

    # -- the end ---------------------------------------------------------------------------------
    def done(self, result: Any = None) -> None:
        """Mark the run finished; show its measured timeline when the result has one."""
        self.stop_ticking()
        self.bar.bar_style = "success"
        self.bar.value = self.bar.max
        self.plot.finish()
        elapsed = time.perf_counter() - self._t0
        self.state = f"done in {elapsed:.1f} s"
        self.status.value = self._status_html(self.state)

    def failed(self, message: str, hide_plot: bool = False) -> None:
        """Mark the run failed with a short message; ``hide_plot`` hides the bar and the plot.

        The magic hides them when the error is shown below the view, so the message is
        read once and no half-drawn plot stands between.
        """
        self.stop_ticking()
        self.bar.bar_style = "danger"
        self.plot.finish()
        if hide_plot:
            self.bar.layout.display = "none"
            self.plot.layout.display = "none"
        self.state = f"failed: {message}"
        self.status.value = self._status_html(self.state)

    def __repr__(self) -> str:
        return f"RunView({self.title}: {self.state}; {self.plot.summary()})"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            data["text/plain"] = f"{self.title}: {self.state}\n{self.plot.summary()}"
        return data


__all__ = ["RunView"]
