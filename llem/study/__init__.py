"""``llem.sweep(base, grid=...)``: many runs over a grid of settings, as one study.

A sweep expands a base config over a grid (the cartesian product of the listed values,
plus explicit variants), drops the combinations that cannot run (the table refuses them,
or the GPU tier cannot run them) with the reason, and runs the rest ``study.cycles``
times in the ``study.order`` chosen (sequential, interleaved or shuffled). Trials that
share their load-time settings reuse one loaded model (through the backend's
``reconfigure``). Every result is saved to one results folder as soon as it is measured,
so an interrupted sweep resumes where it stopped; a run that fails is recorded with its
error and the sweep goes on.

One job per module:

- :mod:`~llem.study.grid`: grid expansion, labels, run and load keys;
- :mod:`~llem.study.plan`: the study settings and the order of the runs;
- :mod:`~llem.study.reuse`: :class:`KeptBackend`, the model kept across runs;
- :mod:`~llem.study.outcome`: :class:`SweepResult`, :class:`CycleStat`, failures, progress;
- :mod:`~llem.study.store`: the results folder, resume, and the bookkeeping of each run;
- :mod:`~llem.study.executors`: local, cold start (``python -m llem.study --one``) and Ray;
- :mod:`~llem.study.sweepfile`: the ``sweep:`` block of a config file, ``llem sweep FILE``;
- :mod:`~llem.study.api`: :func:`sweep` itself.

This package never imports IPython; in a notebook the progress widget lives in
:mod:`llem.widgets.sweep` (the one import upward, made only in a running notebook).
"""

from __future__ import annotations

from llem.study.api import sweep
from llem.study.executors import NODE_RESOURCE, LocalExecutor, RayExecutor, gpus_needed
from llem.study.grid import (
    Skipped,
    Trial,
    combinations,
    expand,
    flatten_grid,
    label_of,
    load_key,
    load_time_paths,
    run_key,
)
from llem.study.outcome import (
    FIGURES,
    CycleStat,
    Failure,
    SweepInterrupted,
    SweepProgress,
    SweepResult,
    sweep_info,
)
from llem.study.plan import ORDERS, PlannedRun, Study, count_loads, load_groups, plan, study_seed
from llem.study.reuse import KeptBackend
from llem.study.sweepfile import SweepFile, load_sweep, parse_sweep, sweep_command

__all__ = ["FIGURES", "NODE_RESOURCE", "ORDERS", "CycleStat", "Failure", "KeptBackend",
           "LocalExecutor", "PlannedRun", "RayExecutor", "Skipped", "Study", "SweepFile",
           "SweepInterrupted", "SweepProgress", "SweepResult", "Trial", "combinations",
           "count_loads", "expand", "flatten_grid", "gpus_needed", "label_of", "load_groups",
           "load_key", "load_sweep", "load_time_paths", "parse_sweep", "plan", "run_key",
           "study_seed", "sweep", "sweep_command", "sweep_info"]
