"""The model a notebook keeps loaded between ``%%llem`` cells, and what an interrupted cell says.

Loading a model takes seconds to a minute; a notebook user runs cell after cell with the
same model and other decoding settings. :class:`CellModel` keeps the last loaded model in
the kernel through the sweep's reuse room (:class:`llem.study.reuse.KeptBackend`, the
backend protocol's ``reconfigure`` / ``ReloadNeeded``): a cell whose load-time settings
(:func:`llem.backends.base.load_time_values`) are the previous cell's starts generating at
once, and its result's notes say "Model reused from the previous cell". A cell with other
load-time settings releases the kept model and loads its own. ``%%llem --fresh`` loads
again; ``%llem release`` frees the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: Where a reused model came from, in the result's note and the live view's step.
REUSED_FROM = "the previous cell"


class CellModel:
    """The backend kept loaded between cells (one model at most).

    Attributes
    ----------
    backend : KeptBackend or None
        The kept backend (None before the first cell and after :meth:`release`).
    reused : bool
        Whether the last cell reused the kept model.
    """

    def __init__(self) -> None:
        self.backend: Any = None
        self.reused = False
        self.label = ""

    @property
    def loaded(self) -> bool:
        """True when a model is kept loaded."""
        return self.backend is not None and self.backend.inner is not None

    @contextlib.contextmanager
    def run(self, cfg: Any) -> Iterator[Any]:
        """The backend to hand :func:`llem.run` for ``cfg`` (it keeps its model after the run).

        A load that fails or is interrupted keeps nothing (the backend releases what it
        half-loaded); a failure after the load keeps the loaded model.
        """
        from llem.study.reuse import KeptBackend

        if self.backend is None:
            self.backend = KeptBackend(reused_from=REUSED_FROM)
        kept = self.backend
        reuses = kept.reuses
        self.reused = False
        try:
            yield kept
        finally:
            self.reused = kept.reuses > reuses
            if kept.inner is not None:
                self.label = f"{cfg.model} on {cfg.backend}"

    def said(self, result: Any) -> str:
        """The line a cell shows when it reused the kept model ("" when it loaded its own)."""
        if not self.reused:
            return ""
        load_s = getattr(result, "load_s", None)
        took = f" (its settings applied in {load_s:.2f} s)" if isinstance(load_s, (int, float)) else ""
        return (f"Model reused from {REUSED_FROM}{took}: same load-time settings. "
                "%%llem --fresh loads it again; %llem release frees it.")

    def release(self) -> str:
        """Free the kept model; return what was done, in words."""
        backend, label = self.backend, self.label
        self.backend, self.reused, self.label = None, False, ""
        if backend is None or backend.inner is None:
            return "No model is kept loaded."
        backend.release()
        return f"Released the kept model ({label})."


def _stage_words(stage: str) -> str:
    if stage == "load":
        return "the model's load"
    if stage in ("warmup", "thermal"):
        return {"warmup": "the warmup", "thermal": "the thermal wait"}[stage]
    if stage.startswith("run ") and "/" in stage:
        n, _, of = stage[4:].partition("/")
        return f"measured run {n} of {of}"
    return stage or "the run"


def interrupted_message(partial: Any, out: str | None, kept: CellModel | None, stage: str = "") -> str:
    """What an interrupted ``%%llem`` cell says: where it stopped, what was kept and where it is.

    ``partial`` is the runner's partial Result (:class:`llem.errors.RunInterrupted`'s),
    ``out`` the cell's ``-o`` variable, ``kept`` the kept model.
    """
    where = _stage_words(stage)
    runs = getattr(partial, "runs", None)
    if runs is not None and not runs:
        return (f"Interrupted during {where}: nothing was measured, so no result is kept "
                "(`%llem last` is unchanged).")
    head = f"Interrupted during {where}."
    if runs:
        full = sum(1 for r in runs if getattr(r, "complete", True))
        if getattr(partial, "complete", False):
            head = f"Interrupted after the last measured run ({where}): the result is complete."
        else:
            head += f" {full} measured run(s) complete"
            last = runs[-1]
            if not getattr(last, "complete", True):
                head += (f"; run {len(runs)} stopped after {getattr(last, 'num_requests', 0)} "
                         "request(s), kept as partial")
            head += "."
    names = "`%llem last`" + (f" and {out!r}" if out else "") + " (and `_llem_partial`)"
    text = f"{head} The partial result is in {names}; it is marked incomplete."
    if getattr(partial, "complete", False):
        text = f"{head} It is in {names}."
    if kept is not None and kept.loaded:
        text += " The model stays loaded for the next cell (%llem release frees it)."
    return text


__all__ = ["REUSED_FROM", "CellModel", "interrupted_message"]
