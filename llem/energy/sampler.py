"""The background thread that reads a meter every interval.

One daemon thread per window, named ``llem-sampler``. Ticks are scheduled on a fixed grid
(``t0 + k * interval_s``) so they do not drift; a tick that falls behind (a long GC pause,
a busy machine) skips to the next grid point rather than bunching up. The thread waits on
an :class:`threading.Event`, so stopping wakes it at once; :meth:`Sampler.stop` joins it,
and keeps joining through a KeyboardInterrupt, so no sampler outlives its window.

Other periodic readings of a run (its peak memory) ride on the same ticks (``also``)
instead of a thread of their own: on a machine whose cores the model's threads fill, every
extra wakeup takes a core from them, so one thread wakes once per interval for everything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Row kept per device per tick: (t_s, device, power_w, energy_j, memory_mib).
Row = tuple[float, str, "float | None", float, "float | None"]

#: Shortest interval accepted, s (below this the thread's own cost dominates).
MIN_INTERVAL_S = 0.001


class Sampler:
    """Read ``meter.sample()`` every ``interval_s`` on a background thread.

    Parameters
    ----------
    meter : meter
        Already started.
    interval_s : float
        Seconds between ticks.
    t0_perf : float
        ``time.perf_counter()`` value that timeline times are relative to.
    also : sequence of callables
        Called with no argument on every tick, after the meter is read. One that raises
        is dropped (its error kept in :attr:`also_errors`); the meter's ticks go on.
    """

    def __init__(self, meter: Any, interval_s: float, t0_perf: float, clock: Any = time.perf_counter,
                 also: Sequence[Callable[[], Any]] = ()) -> None:
        if not interval_s >= MIN_INTERVAL_S:
            raise ValueError(f"interval_s must be at least {MIN_INTERVAL_S} s, not {interval_s!r}.")
        self.meter = meter
        self.interval_s = float(interval_s)
        self.t0_perf = t0_perf
        self._clock = clock
        self.rows: list[Row] = []
        self.error: BaseException | None = None
        self.error_t_s: float | None = None
        self.ticks = 0
        self.also = list(also)
        self.also_errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> float:
        """Read the meter once now; return the tick's time in window seconds."""
        rows = self.meter.sample()
        t = self._clock() - self.t0_perf
        append = self.rows.append
        for device, power_w, energy_j, memory_mib in rows:
            append((t, device, power_w, energy_j, memory_mib))
        self.ticks += 1
        for fn in tuple(self.also):
            try:
                fn()
            except Exception as exc:  # a side reading never stops the energy samples
                self.also.remove(fn)
                self.also_errors.append(exc)
        return t

    def start(self) -> None:
        """Start the thread."""
        if self._thread is not None:
            raise RuntimeError("Sampler already started.")
        self._thread = threading.Thread(target=self._run, name="llem-sampler", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        interval, t0, clock, wait = self.interval_s, self.t0_perf, self._clock, self._stop.wait
        k = 1
        while True:
            delay = t0 + k * interval - clock()
            if delay < 0:  # fell behind: skip to the next grid point
                k = int((clock() - t0) / interval) + 1
                delay = max(0.0, t0 + k * interval - clock())
            if wait(delay):
                return
            try:
                self.tick()
            except Exception as exc:  # the window reports it; the thread ends
                self.error = exc
                self.error_t_s = clock() - t0
                return
            k += 1

    def stop(self, timeout_s: float = 5.0) -> tuple[bool, bool]:
        """Stop and join the thread.

        Returns
        -------
        (stopped, interrupted) : tuple of bool
            ``stopped`` is False only if the thread failed to end within ``timeout_s``;
            ``interrupted`` is True when a KeyboardInterrupt arrived while joining (it is
            held back so the thread is joined first; the caller re-raises it).
        """
        self._stop.set()
        interrupted = False
        th = self._thread
        if th is None:
            return True, False
        deadline = time.monotonic() + timeout_s
        while th.is_alive() and time.monotonic() < deadline:
            try:
                th.join(max(0.0, deadline - time.monotonic()))
            except KeyboardInterrupt:
                interrupted = True
        return not th.is_alive(), interrupted
