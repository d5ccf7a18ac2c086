"""What a run tells while it runs: its progress (with the load's steps) and its live samples.

The runner (:func:`llem.run`) reports ``progress(stage, done, total)``; a callback that
also takes a ``step`` keyword hears what the stage is doing (:func:`reporters`). Live power
samples reach ``on_sample`` from a thread (:class:`SampleForwarder`), from the start of the
load (:func:`live_window`, a window of its own whose measurement is not kept) and then from
each measured run's window.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

#: ``progress(stage, done, total)`` as :func:`llem.run` calls it.
ProgressCallback = Callable[[str, int, int], None]

#: ``tell(stage, done, total, text, n=None, of=None)``: a step of ``stage`` (see :func:`reporters`).
StepTeller = Callable[..., None]


def takes_step(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a ``step`` keyword (or any keyword)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "step" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def reporters(progress: Callable[..., Any] | None) -> tuple[ProgressCallback, StepTeller]:
    """``report(stage, done, total)`` and ``tell(stage, done, total, text, n, of)`` for ``progress``.

    ``tell`` reaches only a callback that takes a ``step`` keyword; it sends ``text`` with
    its count (``"Loading weights 12/30"``) as ``step``. Callbacks of three arguments hear
    only ``report``.
    """
    if progress is None:
        return (lambda stage, done, total: None), (lambda *a, **k: None)
    report: ProgressCallback = progress
    if not takes_step(progress):
        return report, (lambda *a, **k: None)

    def tell(stage: str, done: int, total: int, text: str, n: int | None = None,
             of: int | None = None) -> None:
        count = f" {n}/{of}" if n is not None and of else ""
        progress(stage, done, total, step=f"{text}{count}")

    return report, tell


#: The forwarder hands on what arrived at most this often (s): a live plot needs no more,
#: and each wakeup of its thread beside the model's costs the model time.
FORWARD_EVERY_S = 0.25


class SampleForwarder:
    """Hand each new live sample of an open window to ``on_sample``, from a thread.

    Every :data:`FORWARD_EVERY_S` (or the sampling interval, when longer) the samples that
    arrived since the last time are handed on, in order, each once. The callback runs on
    this thread; an exception in it stops the forwarding (noted in the result) but never
    the run.
    """

    def __init__(self, win: Any, on_sample: Callable[[Any], None], interval_s: float) -> None:
        self.win, self.on_sample = win, on_sample
        self.interval_s = max(FORWARD_EVERY_S, float(interval_s))
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llem-live", daemon=True)

    def _flush(self) -> None:
        new = self.win.live_samples(self.sent)  # only what is new: a long run's rows are many
        for s in new:
            self.on_sample(s)
        self.sent += len(new)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._flush()
            except Exception as exc:  # noqa: BLE001 - a display callback must not stop a run
                self.error = exc
                return

    def start(self) -> None:
        """Start forwarding."""
        self._thread.start()

    def stop(self) -> None:
        """Stop forwarding, after handing on what arrived since the last poll."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.error is None:
            try:
                self._flush()  # what arrived since the last poll, and the closing reading
            except Exception as exc:  # noqa: BLE001
                self.error = exc


@contextlib.contextmanager
def live_window(win: Any, on_sample: Callable[[Any], None] | None, interval_s: float) -> Iterator[None]:
    """Open ``win`` (a measurement window) for the block; its samples go only to ``on_sample``.

    For the stretches of a run that have no measured window (the load, the warmup, the
    thermal wait): a live plot shows power from the start. The window's measurement is not
    kept. Without ``on_sample`` nothing opens; a meter that cannot open here leaves the block
    without live samples (the measured window then says why).
    """
    if on_sample is None:
        yield
        return
    try:
        m = win.begin()
    except Exception:  # noqa: BLE001 - the measured window reports a meter that cannot open
        yield
        return
    live = SampleForwarder(m, on_sample, interval_s)
    live.start()
    try:
        yield
    finally:
        live.stop()
        with contextlib.suppress(Exception):
            win.end()


__all__ = ["FORWARD_EVERY_S", "ProgressCallback", "SampleForwarder", "StepTeller", "live_window", "reporters",
           "takes_step"]
