"""What a model load is doing, told as steps; the libraries' own progress bars kept quiet.

A load takes seconds to minutes (a GGUF file is read, dequantized and converted); a
display that only hears "load 0/1" and then "load 1/1" looks frozen. A backend tells each
step of its load with :func:`step` (``step("reading the tokenizer")``); whoever drives the
load (the runner) listens with :func:`reporting`. Nothing listens by default and
:func:`step` costs nothing then.

The libraries a backend loads with draw progress bars of their own (transformers'
"Loading weights", the GGUF converter's "Converting and de-quantizing GGUF tensors...",
the hub's download bars). Inside :func:`library_bars_as_steps` they draw nothing: each bar
becomes a step (its description, its count and total) told to the listener, so llem's own
progress shows what the library is doing. :func:`library_bars_shown` lets them draw as
usual (the magic's ``LlemMagics.quiet_libraries = False``).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: ``on_step(text, done, total)``: ``done``/``total`` are None for a step without a count.
StepCallback = Callable[[str, "int | None", "int | None"], None]

_listener: contextvars.ContextVar[StepCallback | None] = contextvars.ContextVar(
    "llem_load_step", default=None)
_show_bars: contextvars.ContextVar[bool] = contextvars.ContextVar("llem_library_bars", default=False)

#: Shortest time between two reports of one library bar's count, s (its end always reports).
BAR_REPORT_S = 0.2

#: The module of transformers that draws the GGUF conversion bar with tqdm itself.
GGUF_MODULE = "transformers.modeling_gguf_pytorch_utils"


def step(text: str, done: int | None = None, total: int | None = None) -> None:
    """Tell the listener (if any) that the load is now doing ``text`` (``done`` of ``total``).

    A listener that raises an Exception is forgotten for the rest of the load: a display
    never stops a load. A KeyboardInterrupt goes through.
    """
    on_step = _listener.get()
    if on_step is None:
        return
    try:
        on_step(str(text), done, total)
    except Exception:  # noqa: BLE001 - a display must not stop a load
        _listener.set(None)


@contextlib.contextmanager
def reporting(on_step: StepCallback | None) -> Iterator[None]:
    """Send the :func:`step` calls made inside the block (in this thread) to ``on_step``."""
    token = _listener.set(on_step)
    try:
        yield
    finally:
        _listener.reset(token)


@contextlib.contextmanager
def library_bars_shown() -> Iterator[None]:
    """Let the libraries draw their own progress bars inside the block."""
    token = _show_bars.set(True)
    try:
        yield
    finally:
        _show_bars.reset(token)


class StepBar:
    """A stand-in for a library's tqdm bar: it draws nothing and tells its count as a step.

    Takes tqdm's arguments (``iterable``, ``desc``, ``total``; the others are ignored)
    and offers the parts of tqdm the libraries use (iteration, ``update``, ``close``,
    ``set_description``, ``set_postfix``, ``refresh``, use as a context manager).
    """

    def __init__(self, iterable: Iterable[Any] | None = None, desc: str | None = None,
                 total: float | None = None, *args: Any, **kwargs: Any) -> None:
        self.iterable = iterable
        self.desc = str(desc or kwargs.get("unit") or "working").strip().rstrip(".:").strip()
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = int(total) if total is not None else None
        self.n = int(kwargs.get("initial") or 0)
        self.disable = bool(kwargs.get("disable"))
        self._last = 0.0
        self._tell(force=True)

    def _tell(self, force: bool = False) -> None:
        now = time.perf_counter()
        if self.disable or not (force or now - self._last >= BAR_REPORT_S
                                or (self.total is not None and self.n >= self.total)):
            return
        self._last = now
        step(self.desc, self.n, self.total)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Advance the count by ``n``."""
        self.n += int(n or 0)
        self._tell()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Rename the step."""
        self.desc = str(desc or self.desc)
        self._tell(force=True)

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        """Rename the step."""
        self.set_description(desc, refresh)

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Ignored (a bar's postfix is not a step)."""

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        """Ignored."""

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        """Tell the count now."""
        self._tell(force=True)

    def reset(self, total: float | None = None) -> None:
        """Start the count again (of ``total``)."""
        self.n = 0
        if total is not None:
            self.total = int(total)
        self._tell(force=True)

    def clear(self, *args: Any, **kwargs: Any) -> None:
        """Nothing is drawn: nothing to clear."""

    def close(self) -> None:
        """The bar ends (its last count was told)."""

    @classmethod
    def write(cls, *args: Any, **kwargs: Any) -> None:
        """Ignored (a library's message written between bars)."""

    @classmethod
    def get_lock(cls) -> Any:
        """A lock, as tqdm's (the libraries take it around their bars)."""
        import threading

        return threading.RLock()

    @classmethod
    def set_lock(cls, lock: Any) -> None:
        """Ignored."""


def _hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepBar:
    return StepBar(*args, **kwargs)


@contextlib.contextmanager
def library_bars_as_steps() -> Iterator[None]:
    """Inside the block, transformers' and the hub's progress bars draw nothing; they are steps.

    transformers' own bars (``transformers.utils.logging.tqdm``) go through its tqdm hook
    where it has one (transformers 5), and are switched off where not; the GGUF converter,
    which draws with tqdm directly, gets :class:`StepBar` for the block; the hub's download
    bars are switched off. Everything is put back after the block. Within
    :func:`library_bars_shown` this does nothing.
    """
    if _show_bars.get() or importlib.util.find_spec("transformers") is None:
        yield
        return
    undo: list[Callable[[], None]] = []
    try:
        try:
            from transformers.utils import logging as hf_logging

            set_hook = getattr(hf_logging, "set_tqdm_hook", None)
            if callable(set_hook):
                previous = set_hook(_hook)
                undo.append(lambda: set_hook(previous))
            if hf_logging.is_progress_bar_enabled():
                # off for the hub's download bars (and transformers' bars without the hook)
                hf_logging.disable_progress_bar()
                undo.append(hf_logging.enable_progress_bar)
            if importlib.util.find_spec("gguf") is not None:
                module: Any = sys.modules.get(GGUF_MODULE) or importlib.import_module(GGUF_MODULE)
                if hasattr(module, "tqdm"):
                    drawn = module.tqdm
                    module.tqdm = StepBar
                    undo.append(lambda: setattr(module, "tqdm", drawn))
        except Exception:  # noqa: BLE001 - quieting is cosmetic: a library without these parts draws
            pass
        yield
    finally:
        for fn in reversed(undo):
            fn()


__all__ = ["StepBar", "StepCallback", "library_bars_as_steps", "library_bars_shown", "reporting", "step"]
