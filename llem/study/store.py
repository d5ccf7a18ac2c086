"""The results folder of a sweep, and the bookkeeping of each run as it lands.

Result files sit directly in the folder, where :func:`llem.results.load_results` reads
them; the study record and the failed runs go in its ``_sweep`` subfolder. Every result
is saved as soon as it is measured (atomically, see :meth:`llem.results.Result.save`)
and tagged with its configuration key and cycle (:func:`tag`), so a sweep that was
interrupted or crashed resumes where it stopped (:meth:`Store.saved`).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llem._files import write_atomic
from llem.results import load_results
from llem.study.grid import jsonable
from llem.study.outcome import Failure, ProgressCallback, SweepProgress, sweep_info
from llem.study.plan import PlannedRun

#: Folder (inside the results folder) for the study record and failed runs.
META_DIR = "_sweep"


class Store:
    """The results folder: result files, the study record and failed runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = root / META_DIR
        self.meta.mkdir(parents=True, exist_ok=True)

    def saved(self, keys: set[tuple[str, int]]) -> dict[tuple[str, int], Any]:
        """Complete results already in the folder for (key, cycle) pairs of this study."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged file is run again, not fatal
            found = load_results(self.root)
        out = {}
        for r in found:
            m = sweep_info(r)
            pair = (m.get("key"), m.get("cycle"))
            if r.complete and pair in keys:
                out[pair] = r
        return out

    def write_study(self, record: dict[str, Any]) -> None:
        """Write the study record (``_sweep/study.json``)."""
        write_atomic(self.meta / "study.json", json.dumps(jsonable(record), indent=1))

    def _failure_path(self, key: str, cycle: int) -> Path:
        return self.meta / f"failed-{key}-c{cycle}.json"

    def record_failure(self, f: Failure) -> None:
        """Keep a failed run's error in ``_sweep/failed-KEY-cCYCLE.json``."""
        write_atomic(self._failure_path(f.key, f.cycle), json.dumps(f.to_dict(), indent=1))

    def clear_failure(self, key: str, cycle: int) -> None:
        """Forget a failure once the run has succeeded."""
        try:
            self._failure_path(key, cycle).unlink()
        except FileNotFoundError:
            pass


def tag(result: Any, run: PlannedRun, study_id: str) -> Any:
    """``result`` named after its trial, with the sweep's bookkeeping in its environment."""
    env = dict(result.environment or {})
    env["sweep"] = {"study": study_id, "key": run.trial.key, "load_key": run.trial.load_key,
                    "cycle": run.cycle, "position": run.position, "label": run.trial.label,
                    "settings": jsonable(run.trial.settings)}
    return dataclasses.replace(result, name=f"{run.trial.label} (cycle {run.cycle + 1})",
                               environment=env)


def _current(run: PlannedRun) -> str:
    return f"{run.trial.label} (cycle {run.cycle + 1})"


class Driver:
    """Bookkeeping shared by the executors: save, record, report progress.

    An executor calls :meth:`starting` when a run begins, then :meth:`finished` with its
    Result or :meth:`failed_run` with its error; the driver saves, counts and tells the
    ``progress`` and ``on_result`` callbacks (a callback that raises never stops a sweep;
    its first errors are kept in ``callback_errors``).
    """

    def __init__(self, runs: list[PlannedRun], store: Store, study_id: str, done: int,
                 progress: ProgressCallback | None, on_result: Callable[[Any], None] | None):
        self.runs = runs
        self.store = store
        self.study_id = study_id
        self.progress = progress
        self.on_result = on_result
        self.total = len(runs)
        self.done = done
        self.resumed = done
        self.failed = 0
        self.results: dict[tuple[str, int], Any] = {}
        self.failures: list[Failure] = []
        self.t0 = time.perf_counter()
        self.finished_here = 0
        self.callback_errors: list[str] = []

    def eta(self) -> float | None:
        """Seconds to the end at this session's pace; None before the first run ends."""
        if not self.finished_here:
            return None
        elapsed = time.perf_counter() - self.t0
        remaining = self.total - self.done - self.failed
        return elapsed / self.finished_here * remaining

    def emit(self, stage: str, current: str = "", result: Any = None, error: str = "") -> None:
        """Tell the progress callback where the sweep stands."""
        if self.progress is None:
            return
        event = SweepProgress(stage, self.done, self.failed, self.total, self.resumed, current,
                              self.eta(), time.perf_counter() - self.t0, result, error)
        self._call(self.progress, event)

    def _call(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception as exc:  # noqa: BLE001 - a display callback never stops a sweep
            if len(self.callback_errors) < 5:
                self.callback_errors.append(f"{getattr(fn, '__name__', fn)!r} raised {exc!r}")

    def starting(self, run: PlannedRun) -> None:
        """A run begins."""
        self.emit("run", _current(run))

    def finished(self, run: PlannedRun, result: Any) -> Any:
        """A run ended with ``result``: tag it, save it, count it; returns the tagged result."""
        tagged = tag(result, run, self.study_id)
        tagged.save(self.store.root)
        self.store.clear_failure(run.trial.key, run.cycle)
        self.results[(run.trial.key, run.cycle)] = tagged
        self.done += 1
        self.finished_here += 1
        if self.on_result is not None:
            self._call(self.on_result, tagged)
        self.emit("result", _current(run), result=tagged)
        return tagged

    def failed_run(self, run: PlannedRun, error: str, tb: str = "") -> None:
        """A run raised ``error``: record it and go on."""
        f = Failure(run.trial.label, dict(run.trial.settings), run.trial.key, run.cycle, error, tb)
        self.store.record_failure(f)
        self.failures.append(f)
        self.failed += 1
        self.finished_here += 1
        self.emit("failed", _current(run), error=error)


__all__ = ["META_DIR", "Driver", "Store", "tag"]
