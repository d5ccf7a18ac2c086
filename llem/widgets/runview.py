"""What a run shows while it runs: its stage, a progress bar and the live power plot."""

from __future__ import annotations

import html
import time
from typing import Any

from llem.widgets.controls import require_ipywidgets
from llem.widgets.power import PowerPlot

_w = require_ipywidgets()


class RunView(_w.VBox):  # type: ignore[misc, name-defined]
    """Progress and live power of one run; pass :meth:`progress` and :meth:`on_sample` to llem.run.

    ``llem.run(cfg, progress=view.progress, on_sample=view.on_sample)`` drives it; call
    :meth:`done` (or :meth:`failed`) at the end.
    """

    def __init__(self, title: str = "llem run", **kwargs: Any) -> None:
        self.title = title
        self.status = _w.HTML(value=self._status_html("starting"))
        self.bar = _w.IntProgress(value=0, min=0, max=1, description="", bar_style="info",
                                  layout=_w.Layout(width="440px"))
        self.plot = PowerPlot(title="live power")
        self.stage: str | None = None
        self.done_count = 0
        self.total: int | None = None
        self._t0 = time.perf_counter()
        self.state = "starting"
        super().__init__(children=[self.status, self.bar, self.plot], **kwargs)
        self.add_class("llem-run")

    def _status_html(self, text: str) -> str:
        return f"<b>{html.escape(self.title)}</b>: {html.escape(text)}"

    # -- callbacks for llem.run ------------------------------------------------------------------
    def progress(self, stage: str, done: int | None = None, total: int | None = None) -> None:
        """Report that ``done`` of ``total`` steps of ``stage`` are finished."""
        if stage != self.stage:
            self.stage = stage
            self.plot.mark(stage)
        self.done_count = int(done or 0)
        self.total = int(total) if total else None
        if self.total:
            self.bar.max = max(self.total, 1)
            self.bar.value = min(self.done_count, self.bar.max)
        text = f"{stage} {self.done_count}/{self.total}" if self.total else str(stage)
        self.state = text
        self.status.value = self._status_html(f"{text}  ({time.perf_counter() - self._t0:.1f} s)")

    def on_sample(self, sample: Any) -> None:
        """A live power sample from the sampler (may be called from its thread)."""
        self.plot.add_sample(sample)

    # -- the end ---------------------------------------------------------------------------------
    def done(self, result: Any = None) -> None:
        """Mark the run finished; show its measured timeline when the result has one."""
        self.bar.bar_style = "success"
        self.bar.value = self.bar.max
        self.plot.finish()
        elapsed = time.perf_counter() - self._t0
        self.state = f"done in {elapsed:.1f} s"
        self.status.value = self._status_html(self.state)

    def failed(self, message: str) -> None:
        """Mark the run failed with a short message."""
        self.bar.bar_style = "danger"
        self.plot.finish()
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
