"""``sweep(base, grid=...)``: expand, plan, run and gather a study in one call.

The only function here ties the other modules together: :mod:`~llem.study.grid` expands
the grid, :mod:`~llem.study.plan` orders the runs, :mod:`~llem.study.store` finds what an
earlier attempt saved, an executor (:mod:`~llem.study.executors`) makes the missing runs,
and :mod:`~llem.study.outcome` holds what came out.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from llem.errors import ConfigError, RunInterrupted
from llem.study.executors import LocalExecutor, RayExecutor
from llem.study.grid import (
    MAX_TRIALS,
    as_config,
    check_count,
    count_points,
    digest,
    expand,
    flatten_grid,
    plan_words,
)
from llem.study.outcome import ProgressCallback, SweepInterrupted, SweepProgress, SweepResult
from llem.study.plan import Study, plan
from llem.study.store import Driver, Store


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None) if ipython is not None else None
    shell = get() if callable(get) else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def text_progress(stream: Any = None) -> ProgressCallback:
    """A progress callback that writes one line per event to ``stream`` (stderr)."""
    out = stream or sys.stderr

    def show(ev: SweepProgress) -> None:
        if ev.stage in ("result", "failed", "start", "done", "interrupted"):
            extra = f" [{ev.error}]" if ev.stage == "failed" else ""
            print(f"llem sweep: {ev.line()}{extra}", file=out, flush=True)

    return show


def _chain(*fns: Callable[[Any], None] | None) -> Callable[[Any], None]:
    live = [f for f in fns if f is not None]

    def call(x: Any) -> None:
        for f in live:
            f(x)

    return call


def _executor(executor: Any, ray_address: str | None) -> LocalExecutor | RayExecutor:
    if ray_address is not None and executor == "local":
        executor = "ray"
    if not isinstance(executor, str):
        return executor
    if executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor(address=ray_address)
    raise ConfigError(f"Unknown sweep executor {executor!r}; use 'local' or 'ray', or pass a "
                      "LocalExecutor or RayExecutor object.")


def sweep(
    base_config: Any = None,
    grid: Mapping[str, Any] | None = None,
    variants: Iterable[Mapping[str, Any]] | None = None,
    *,
    executor: str | LocalExecutor | RayExecutor = "local",
    ray_address: str | None = None,
    results_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: ProgressCallback | bool | None = None,
    on_result: Callable[[Any], None] | None = None,
    target_gpu: str | float | None = None,
    prompts: Any = None,
    max_trials: int | None = MAX_TRIALS,
) -> SweepResult:
    """Run ``base_config`` over a grid of settings, as a study of ``study.cycles`` cycles.

    Parameters
    ----------
    base_config : ExperimentConfig, dict or path
        Settings shared by every run; its ``study`` section sets cycles, order, gaps and
        cold start.
    grid : dict, optional
        ``{"pytorch.batch_size": [1, 4, 16], "pytorch.dtype": ["float32", "bfloat16"]}``:
        every combination is a trial.
    variants : list of dict, optional
        More trials, each a dict of settings applied to the base on its own.
    executor : {"local", "ray"} or an executor object
        ``local`` runs trials one by one here; ``ray`` sends them to a Ray cluster
        (:class:`~llem.study.executors.RayExecutor`).
    ray_address : str, optional
        The Ray cluster to use (implies ``executor="ray"``).
    results_dir : path, optional
        Where results are saved; default ``<output_dir>/sweep-<hash of the grid>`` so the
        same sweep finds its folder again.
    resume : bool
        Skip runs whose result is already in ``results_dir`` (same key and cycle).
    progress : callable, bool or None
        Called with a :class:`SweepProgress` at every step. None: a live widget in a
        notebook, nothing elsewhere; True: one line per run on stderr; False: nothing.
    on_result : callable, optional
        Called with each new :class:`~llem.results.Result` as it is saved.
    target_gpu : str or float, optional
        Skip trials this GPU cannot run ('H100', '8.0', 'cpu'); default: the base's
        ``target_gpu``, else this machine (with the ``local`` executor).
    prompts : optional
        Prompts for every run (see :func:`llem.run`); default the config's.
    max_trials : int or None
        Most trials to plan (default 1000). The grid is counted from its sizes before
        anything is expanded; a larger sweep is refused with its count unless this allows
        it (None: no limit).

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepInterrupted
        On ``KeyboardInterrupt``; what was saved stays saved, ``exc.partial`` is the
        SweepResult so far; run the same sweep again to resume.
    ConfigError
        The base config or the grid is wrong (an unknown field, a value that is not a list),
        or the grid has more than ``max_trials`` trials.
    FolderInUseError
        Another sweep is running on the same results folder (a ConfigError naming its
        pid, host and start time); a stale lock is taken over instead, with a note.
    """
    variants = list(variants or ())
    count, words = count_points(grid, variants)
    check_count(count, words, max_trials)
    base = as_config(base_config)
    runner = _executor(executor, ray_address)
    is_ray = isinstance(runner, RayExecutor)
    study = Study.of(base)
    if progress is True:
        print(f"llem sweep: planning {plan_words(count, words, study.cycles)}", file=sys.stderr,
              flush=True)
    declared = target_gpu if target_gpu is not None else base.target_gpu
    trials, skipped = expand(base, grid, variants, target_gpu=target_gpu,
                             check_tier=declared is not None or not is_ray)
    runs = plan(trials, study)
    grid_id = digest(sorted(t.key for t in trials))
    study_id = digest({"grid": grid_id, "cycles": study.cycles, "order": study.order})
    root = Path(results_dir) if results_dir is not None else Path(base.output_dir) / f"sweep-{grid_id}"
    store = Store(root)
    with store.lock(study_id) as lock:  # one sweep at a time in a folder; released on every exit
        store.write_study({
            "study_id": study_id, "study": dataclasses.asdict(study), "executor": runner.name,
            "base": base.to_dict(only_set=True), "grid": flatten_grid(grid),
            "variants": variants,
            "trials": [{"label": t.label, "key": t.key, "load_key": t.load_key,
                        "settings": t.settings} for t in trials],
            "skipped": [dataclasses.asdict(s) for s in skipped],
            "order": [[r.trial.key, r.cycle] for r in runs],
        })

        saved = store.saved({(r.trial.key, r.cycle) for r in runs}) if resume else {}
        todo = [r for r in runs if (r.trial.key, r.cycle) not in saved]

        widget = None
        if progress is None and _in_notebook():
            try:
                # The one import upward in llem's layers (L7 -> L8): the notebook progress
                # hook. It is made only in a running notebook; llem.widgets.sweep imports
                # llem.study at its top, never the other way round.
                from llem.widgets.sweep import SweepWidget

                widget = SweepWidget(total=len(runs), trials=[t.label for t in trials],
                                     skipped=skipped)
                widget.show()
                progress, on_result = widget.update, _chain(widget.add_result, on_result)
                for r in saved.values():
                    widget.add_result(r)
            except Exception:  # noqa: BLE001 - no widget (no ipywidgets): run without one
                widget, progress = None, None
        elif progress is True:
            progress = text_progress()
        elif progress is False:
            progress = None

        driver = Driver(runs, store, study_id, len(saved), progress, on_result)
        driver.emit("start")

        def outcome(complete: bool) -> SweepResult:
            by_pair = {**saved, **driver.results}
            results = [by_pair[(r.trial.key, r.cycle)] for r in runs if (r.trial.key, r.cycle) in by_pair]
            notes = list(driver.callback_errors) + driver.notes + [n for n in (lock.note,) if n]
            if is_ray and declared is None:
                notes.append("Tier checks were left to the Ray workers; set target_gpu to check "
                             "every trial before sending it.")
            if not skipped and not trials:
                notes.append("No trial to run.")
            loads = getattr(runner, "loads", None)
            return SweepResult(results, list(driver.failures), skipped, trials, runs, study, root,
                               complete, loads, len(saved), notes)

        try:
            runner.execute(todo, driver, study, prompts)
        except (KeyboardInterrupt, RunInterrupted) as exc:
            partial = outcome(False)
            driver.emit("interrupted")
            if widget is not None:
                widget.finish(partial)
            raise SweepInterrupted(
                f"The sweep was interrupted after {driver.done} of {driver.total} runs; their "
                f"results are saved in {str(root)!r}. Run the same sweep again to resume.",
                partial) from (exc if not isinstance(exc, KeyboardInterrupt) else None)
        result = outcome(True)
        driver.emit("done")
        if widget is not None:
            widget.finish(result)
        return result


__all__ = ["sweep", "text_progress"]
