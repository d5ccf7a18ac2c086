"""The background thread that reads a meter every interval.

One daemon thread per window, named ``llem-sampler``. Ticks are scheduled on a fixed grid
(``t0 + k * interval_s``) so they do not drift; a tick that falls behind (a long GC pause,
a busy machine) skips to the next grid point rather than bunching up. The thread waits on
an :class:`threading.Event`, so stopping wakes it at once; :meth:`Sampler.stop` joins it,
and keeps joining through a KeyboardInterrupt, so no sampler outlives its window.

Other periodic readings of a run (its peak memory) ride on the same ticks (``also``)
instead of a thread of their own: on a machine whose cores the model's threads fill, every
extra wakeup takes a core from them, so one thread wakes once per interval for everything.

The thread doing the measured work can take the ticks itself: :meth:`Sampler.poke`, called
between its steps (the PyTorch backend's token clock does on a CPU), reads the meter when a
grid point has passed and otherwise only compares two numbers. While pokes come at least
every two intervals, the thread leaves the ticks to them and checks back every
:data:`POKE_SLACK_S` instead of waking at every grid point (samples then fall at step
boundaries: one interval apart, or one step when a step is longer); when the pokes stop (a
long prefill, the end of a batch) it takes over, at most that late, and ticks on the grid
again. On a 2-core machine a wakeup beside torch's threads costs the model ~0.5 ms (the
core it takes and the GIL handed over and back), ten times the ~50 µs of the reading
itself, which the poking thread does in passing.
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

#: While pokes take the ticks, the thread checks back this often (s); a tick falls at most
#: this late when the pokes stop.
POKE_SLACK_S = 1.0


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
    poke_slack_s : float
        How long the thread leaves a due tick to :meth:`poke` before taking it.

    :attr:`ticks` counts every reading, :attr:`poked_ticks` those a poke took.
    """

    def __init__(self, meter: Any, interval_s: float, t0_perf: float, clock: Any = time.perf_counter,
                 also: Sequence[Callable[[], Any]] = (), poke_slack_s: float = POKE_SLACK_S) -> None:
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
        self.poked_ticks = 0
        self.poke_slack_s = float(poke_slack_s)
        self._next = t0_perf + self.interval_s  # the next grid point, perf_counter seconds
        self._poked_at = float("-inf")  # when poke() was last called
        self._poke_gap = float("inf")  # and the time between its last two calls
        self._lock = threading.Lock()  # one tick at a time: the thread's or a poke's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> float:
        """Read the meter once now; return the tick's time in window seconds."""
        with self._lock:
            return self._tick()

    def poke(self) -> None:
        """Take the tick now if a grid point has passed; call it from the thread doing the work.

        Cheap when none is due (a clock read and a comparison). A meter that raises here
        ends the sampling as it would on the thread (:attr:`error`); nothing is raised into
        the caller's work.
        """
        now = self._clock()
        self._poke_gap, self._poked_at = now - self._poked_at, now
        if now < self._next or self._stop.is_set() or not self._lock.acquire(blocking=False):
            return  # not due, stopped, or the thread is ticking right now
        try:
            if now >= self._next:
                self._tick()
                self.poked_ticks += 1
                self._advance(now)
        except Exception as exc:
            self._fail(exc)
        finally:
            self._lock.release()

    def _advance(self, now: float) -> None:
        """Move the next tick to the first grid point after ``now`` (a late tick skips, not bunches)."""
        t0, interval = self.t0_perf, self.interval_s
        self._next = t0 + (int((now - t0) / interval) + 1) * interval

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self.error_t_s = self._clock() - self.t0_perf
        self._stop.set()

    def _tick(self) -> float:
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
        slack, clock, wait = self.poke_slack_s, self._clock, self._stop.wait
        deferring = False  # pokes are taking the ticks: check back after slack, not every grid point
        while True:
            if wait(max(0.0, self._next + (slack if deferring else 0.0) - clock())):
                return
            with self._lock:
                now = clock()
                deferring = self._pokes_keep_up(now)
                if now < self._next or (deferring and now < self._next + slack):
                    continue  # a poke took it, or will
                try:
                    self._tick()
                except Exception as exc:  # the window reports it; the thread ends
                    self._fail(exc)
                    return
                self._advance(now)

    def _pokes_keep_up(self, now: float) -> bool:
        """Whether pokes come often enough to take the ticks (the last one and its gap under 2 intervals)."""
        most = 2.0 * self.interval_s
        return now - self._poked_at < most and self._poke_gap < most

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
