"""``llem.sweep(base, grid=...)``: many runs over a grid of settings, as one study.

A sweep expands a base config over a grid (the cartesian product of the listed values,
plus explicit variants), drops the combinations that cannot run (the table refuses them,
or the GPU tier cannot run them) with the reason, and runs the rest ``study.cycles``
times in the ``study.order`` chosen:

- ``sequential``: every cycle of a configuration back to back (A A B B). The model is
  loaded once per load-time setting (dtype, quantization, attention, compile...) and
  reused across the decode-time settings (batch size, sampling, lengths...).
- ``interleaved``: one run of each configuration per cycle (A B A B), so slow drift
  (temperature, clocks, other load) spreads over every configuration alike; the model is
  loaded once per load-time setting per cycle.
- ``shuffled``: a fresh random order in every cycle, seeded from a hash of the study so a
  rerun repeats it; the fairest against drift, and the model is reloaded whenever two
  neighbours differ in a load-time setting.

Every result is saved to one results folder as soon as it is measured (atomically, see
:meth:`llem.results.Result.save`) and tagged with its configuration key and cycle, so a
sweep that was interrupted or crashed resumes where it stopped. A run that fails (out of
memory, a missing package, any exception) is recorded with its error and the sweep goes
on. ``study.cold_start`` runs each measurement in a fresh Python process instead
(``python -m llem.sweep --one CONFIG.json --out RESULT.json``).

Two executors: ``local`` (default) runs trials one after another in this process, since
two energy measurements on one device must never overlap; ``ray`` sends each trial to a
Ray cluster as a task that reserves the GPUs it measures (on CPU-only nodes, the whole
node), and saves results here as they come back; a trial whose worker died is retried.

This module never imports IPython; in a notebook the progress widget lives in
:mod:`llem.widgets.sweep`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llem._files import write_atomic
from llem.errors import (
    ConfigError,
    LlemError,
    RunInterrupted,
    UnknownNameError,
    import_optional,
    missing_dependency,
)

#: The study orders, see the module docstring.
ORDERS = ("sequential", "interleaved", "shuffled")

#: Folder (inside the results folder) for the study record and failed runs. Result files
#: sit directly in the results folder, where :func:`llem.results.load_results` reads them.
META_DIR = "_sweep"

#: Config fields that say how a study is run or where it is stored, not what is measured;
#: they are left out of a run's identity, so a sweep can resume with more cycles or gaps.
_NOT_IDENTITY = ("study", "output_dir")

#: Figures summarised over cycles (the same ones :func:`llem.compare` lines up).
FIGURES = ("tokens_per_s", "ttft_p50_s", "itl_p50_s", "energy_per_token_j", "peak_memory_mib")

ProgressCallback = Callable[["SweepProgress"], None]


class SweepInterrupted(RunInterrupted):
    """A sweep was stopped; ``partial`` is the :class:`SweepResult` of what was saved.

    Rerun the same sweep (``resume=True``, the default) to run only what is missing.
    """


# ============================================================================ the plan
@dataclass(frozen=True)
class Trial:
    """One configuration of the sweep (run once per cycle).

    Attributes
    ----------
    label : str
        Short name made from the settings, e.g. ``"batch_size=4, dtype=float16"``.
    settings : dict
        ``section.field`` -> value: what this trial changes from the base config.
    config : ExperimentConfig
        The full config of the trial.
    key : str
        Identity of the trial's measurement: a hash of its config without the study
        settings and output folder (those say how the study runs, not what it measures).
    load_key : str
        Hash of the load-time settings; trials that share it reuse one loaded model.
    """

    label: str
    settings: Mapping[str, Any]
    config: Any = field(compare=False, repr=False)
    key: str = ""
    load_key: str = ""


@dataclass(frozen=True)
class Skipped:
    """A combination of the grid that is not run, and why.

    ``kind`` is ``"refused"`` (the table refuses the combination), ``"tier"`` (the GPU
    tier of this machine or the declared target cannot run it) or ``"duplicate"``.
    """

    label: str
    settings: Mapping[str, Any]
    reason: str
    kind: str = "refused"


@dataclass(frozen=True)
class PlannedRun:
    """One measurement of the study: a trial in a cycle, and the pause before it."""

    trial: Trial
    cycle: int
    position: int
    gap_before_s: float = 0.0


@dataclass(frozen=True)
class Failure:
    """A run that raised; the sweep went on without it."""

    label: str
    settings: Mapping[str, Any]
    key: str
    cycle: int
    error: str
    traceback: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"label": self.label, "settings": _jsonable(self.settings), "key": self.key,
                "cycle": self.cycle, "error": self.error, "traceback": self.traceback}


@dataclass(frozen=True)
class SweepProgress:
    """Where a sweep stands; handed to the ``progress`` callback at every step.

    Attributes
    ----------
    stage : str
        ``"start"``, ``"run"`` (a run begins), ``"result"``, ``"failed"``, ``"done"`` or
        ``"interrupted"``.
    done, failed, total : int
        Runs finished (including those found saved from an earlier attempt), runs that
        failed, and all runs of the study.
    resumed : int
        Runs found already saved and not run again.
    current : str
        Label of the run that starts or just ended, with its cycle.
    eta_s : float or None
        Estimated seconds to the end, from this session's pace.
    elapsed_s : float
        Seconds since the sweep started.
    result : Result or None
        The result that just landed (stage ``"result"``).
    error : str
        The error of a failed run (stage ``"failed"``).
    """

    stage: str
    done: int
    failed: int
    total: int
    resumed: int = 0
    current: str = ""
    eta_s: float | None = None
    elapsed_s: float = 0.0
    result: Any = None
    error: str = ""

    @property
    def remaining(self) -> int:
        """Runs still to go."""
        return max(0, self.total - self.done - self.failed)

    def line(self) -> str:
        """One line for a terminal: ``"3/12 runs, 1 failed, ETA 0:42 - batch_size=4 (cycle 2)"``."""
        text = f"{self.done}/{self.total} runs"
        if self.failed:
            text += f", {self.failed} failed"
        if self.eta_s is not None and self.remaining:
            text += f", ETA {_clock(self.eta_s)}"
        if self.current:
            text += f" - {self.current}"
        return text


@dataclass(frozen=True)
class Study:
    """How a sweep is run, from the config's ``study`` section."""

    cycles: int = 1
    order: str = "sequential"
    gap_s: float = 0.0
    cycle_gap_s: float = 0.0
    cold_start: bool = False

    @classmethod
    def of(cls, cfg: Any) -> Study:
        """The study settings of ``cfg`` (its ``study`` section)."""
        s = getattr(cfg, "study", None)

        def get(name: str, default: Any) -> Any:
            value = getattr(s, name, None) if s is not None else None
            return default if value is None else value

        order = str(get("order", "sequential"))
        if order not in ORDERS:
            raise ConfigError(f"study.order must be one of {', '.join(ORDERS)}, not {order!r}.")
        return cls(cycles=int(get("cycles", 1)), order=order, gap_s=float(get("gap_s", 0.0)),
                   cycle_gap_s=float(get("cycle_gap_s", 0.0)),
                   cold_start=bool(get("cold_start", False)))


# ---------------------------------------------------------------- keys and hashes
def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_key(cfg: Any) -> str:
    """Identity of what ``cfg`` measures: its config hash without study and output fields.

    A saved result with this key and a cycle index counts as done when a sweep resumes.
    """
    d = cfg.to_dict()
    for name in _NOT_IDENTITY:
        d.pop(name, None)
    return _digest(d)


def load_time_paths(backend: str) -> list[str]:
    """The load-time settings of ``backend`` (rows with ``load_time=True`` in llem.spec)."""
    from llem import spec

    return [f"{p.section}.{p.name}" for p in spec.params()
            if p.load_time and p.section in ("experiment", backend)]


def load_key(cfg: Any) -> str:
    """Hash of the settings that decide what is loaded: trials sharing it share a model.

    The load-time rows of llem.spec for the config's backend, plus ``passthrough`` (its
    ``load`` part goes to the loader).
    """
    values = {p: cfg.get(p) for p in load_time_paths(cfg.backend)}
    values["experiment.passthrough"] = cfg.get("experiment.passthrough")
    return _digest(values)


# -------------------------------------------------------------------- expansion
def _normalise_key(key: str) -> str:
    from llem import spec

    path = key if "." in key else f"experiment.{key}"
    return spec.resolve_path(path)[0]


def flatten_grid(grid: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """``{"pytorch.batch_size": [1, 4]}`` or nested ``{"pytorch": {"batch_size": [1, 4]}}``.

    Returns dotted paths (aliases resolved) mapped to the list of values to try.

    Raises
    ------
    ConfigError
        A value that is not a list, an unknown field (with a suggestion), or a ``study``
        field (the study describes the sweep itself).
    """
    out: dict[str, list[Any]] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping) and "." not in str(k) and not prefix:
                walk(f"{k}.", v)
                continue
            if not isinstance(v, (list, tuple)):
                raise ConfigError(
                    f"sweep grid entry {key!r} must list the values to try, not "
                    f"{type(v).__name__} {v!r}. Write {key}: [{v!r}] for a single value, or "
                    "set it in the base config.")
            if not v:
                raise ConfigError(f"sweep grid entry {key!r} lists no values.")
            try:
                path = _normalise_key(key)
            except UnknownNameError as exc:
                raise UnknownNameError(f"sweep grid: {exc}") from None
            if path.startswith("study."):
                raise ConfigError(
                    f"sweep grid entry {key!r}: the study settings describe the sweep itself "
                    "(cycles, order, gaps, cold start); set them in the config's study section.")
            out[path] = list(v)

    walk("", dict(grid or {}))
    return out


def combinations(grid: Mapping[str, Any] | None = None,
                 variants: Iterable[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The settings of every point: the cartesian product of ``grid``, then each variant.

    A variant is a dict of settings applied to the base config on its own (not crossed
    with the grid). With neither, the one point is the base config itself (``{}``).
    """
    flat = flatten_grid(grid)
    points: list[dict[str, Any]] = []
    if flat:
        keys = list(flat)
        for values in itertools.product(*(flat[k] for k in keys)):
            points.append(dict(zip(keys, values)))
    for i, var in enumerate(variants or ()):
        if not isinstance(var, Mapping):
            raise ConfigError(f"sweep variant #{i + 1} must be a mapping of settings, not {var!r}.")
        nested = {k: v for k, v in var.items() if isinstance(v, Mapping) and "." not in str(k)
                  and k not in ("passthrough",)}
        point: dict[str, Any] = {}
        for section, fields_ in nested.items():
            for k, v in fields_.items():
                point[_normalise_key(f"{section}.{k}")] = v
        for k, v in var.items():
            if k not in nested:
                point[_normalise_key(str(k))] = v
        if any(p.startswith("study.") for p in point):
            raise ConfigError(f"sweep variant #{i + 1} sets study fields; set them in the "
                              "config's study section.")
        points.append(point)
    return points or [{}]


def label_of(settings: Mapping[str, Any]) -> str:
    """``"batch_size=4, dtype=float16"``: field names, or full paths where two share a name."""
    if not settings:
        return "base"
    names = [p.rsplit(".", 1)[-1] for p in settings]
    parts = []
    for path, value in settings.items():
        name = path.rsplit(".", 1)[-1]
        parts.append(f"{name if names.count(name) == 1 else path}={value}")
    return ", ".join(parts)


def _machine_cc() -> float | None:
    from llem.machine import get_machine

    return get_machine().cc


def expand(base: Any, grid: Mapping[str, Any] | None = None,
           variants: Iterable[Mapping[str, Any]] | None = None, *,
           target_gpu: str | float | None = None, check_tier: bool = True,
           machine_cc: Any = "auto") -> tuple[list[Trial], list[Skipped]]:
    """Expand ``base`` over ``grid`` and ``variants`` into trials, and what is skipped.

    Parameters
    ----------
    base : ExperimentConfig, dict or path
        The settings shared by every trial.
    grid, variants
        See :func:`combinations`.
    target_gpu : str or float, optional
        Check every trial against this GPU ('H100', '8.0', 'cpu') instead of this
        machine; ``base.target_gpu`` is used when unset.
    check_tier : bool
        Skip trials the tier cannot run (False: leave it to the backend, e.g. for a Ray
        cluster whose GPUs are not this machine's).
    machine_cc : float, None or "auto"
        This machine's compute capability (None: CPU); "auto" asks NVML.

    Returns
    -------
    trials : list of Trial
        In the order of the grid, grouped so trials sharing a load key are neighbours.
    skipped : list of Skipped
        Refused, beyond the tier, or duplicates, each with the reason.
    """
    from llem import spec

    base = _as_config(base)
    trials: list[Trial] = []
    skipped: list[Skipped] = []
    seen: dict[str, str] = {}
    target = target_gpu if target_gpu is not None else base.target_gpu
    cc: Any = None
    where = ""
    if check_tier:
        if target is not None:
            cc, where = spec.parse_target(target), f"the target {target!r}"
        else:
            cc = _machine_cc() if machine_cc == "auto" else machine_cc
            where = "this machine"
    for settings in combinations(grid, variants):
        label = label_of(settings)
        cfg = base.copy()
        try:
            cfg.update(settings)
            cfg.validate()
        except (ConfigError, ValueError) as exc:
            skipped.append(Skipped(label, settings, _one_paragraph(exc), "refused"))
            continue
        if check_tier:
            problems = cfg.tier_problems(cc)
            if problems:
                tier = spec.tier_for(cc)
                reason = (f"cannot run on {where} (tier {tier.name}): "
                          + "; ".join(f"{k}: {v}" for k, v in problems.items()))
                skipped.append(Skipped(label, settings, reason, "tier"))
                continue
        key = run_key(cfg)
        if key in seen:
            skipped.append(Skipped(label, settings, f"same settings as {seen[key]!r}", "duplicate"))
            continue
        seen[key] = label
        trials.append(Trial(label, dict(settings), cfg, key, load_key(cfg)))
    # group by load key, keeping the grid's order inside a group and between groups
    first: dict[str, int] = {}
    for i, t in enumerate(trials):
        first.setdefault(t.load_key, i)
    trials.sort(key=lambda t: first[t.load_key])
    return trials, skipped


def _one_paragraph(exc: BaseException) -> str:
    text = str(exc).strip()
    for prefix in ("Invalid configuration:\n- ", "refused: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return " ".join(line.strip(" -") for line in text.splitlines() if line.strip())


def study_seed(trials: Sequence[Trial], study: Study) -> int:
    """Seed of the shuffled order: a hash of the study (its trials' keys and cycles).

    The same study gives the same seed, so a rerun repeats its order; another grid or
    another number of cycles gives another.
    """
    return int(_digest({"trials": sorted(t.key for t in trials), "cycles": study.cycles}), 16)


def plan(trials: Sequence[Trial], study: Study) -> list[PlannedRun]:
    """The runs of the study in the order they are made, each with its pause before.

    ``gap_s`` is waited between two runs; ``cycle_gap_s`` instead when the next run starts
    a new cycle (in sequential order: the next cycle of the same configuration).
    """
    order: list[tuple[Trial, int]] = []
    if study.order == "sequential":
        order = [(t, c) for t in trials for c in range(study.cycles)]
    elif study.order == "interleaved":
        order = [(t, c) for c in range(study.cycles) for t in trials]
    else:
        rng = random.Random(study_seed(trials, study))
        for c in range(study.cycles):
            perm = list(trials)
            rng.shuffle(perm)
            order.extend((t, c) for t in perm)
    runs = []
    for i, (t, c) in enumerate(order):
        gap = 0.0
        if i:
            prev_t, prev_c = order[i - 1]
            new_cycle = c != prev_c and (study.order != "sequential" or prev_t is t)
            gap = study.cycle_gap_s if new_cycle else study.gap_s
        runs.append(PlannedRun(t, c, i, gap))
    return runs


def count_loads(runs: Sequence[PlannedRun]) -> int:
    """Model loads the local executor makes for ``runs`` (one per change of load key)."""
    n, last = 0, None
    for r in runs:
        if r.trial.load_key != last:
            n, last = n + 1, r.trial.load_key
    return n


# ==================================================================== model reuse
def _reconfigure_pytorch(inner: Any, cfg: Any, base: dict[str, Any]) -> Any:
    """Apply ``cfg``'s decode-time settings to a loaded :class:`PyTorchBackend`.

    Recomputes the generation settings with the backend's own method (the second half of
    its ``load``) and keeps what loading resolved. ``base`` holds the load-time part of
    the first load's LoadInfo and the pass-through generate arguments.
    """
    import torch

    from llem.backends.base import LoadInfo
    from llem.models import resolve_model

    t0 = time.perf_counter()
    effective: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    gen_cfg, extra = inner._generation_config(
        cfg, cfg.resolved_decoder(), cfg.pytorch, skipped, effective, notes,
        torch.cuda.is_available(), resolve_model(cfg.model))
    gen_cfg.disable_compile = base["disable_compile"]
    extra.update(base["generate_extra"])
    inner._gen_config, inner._gen_extra = gen_cfg, extra
    inner.max_input_tokens = cfg.max_input_tokens
    info0 = base["info"]
    inner.info = LoadInfo(
        model_id=info0.model_id, num_parameters=info0.num_parameters,
        load_s=time.perf_counter() - t0,
        effective={**base["effective"], **effective}, skipped={**base["skipped"], **skipped},
        versions=dict(info0.versions), device=info0.device,
        max_context_tokens=info0.max_context_tokens,
        max_batch_size=1 if gen_cfg.prompt_lookup_num_tokens is not None else None,
        notes=(*base["notes"], *notes), model_path=info0.model_path)
    return inner.info


def _pytorch_base(inner: Any, cfg: Any, info: Any) -> dict[str, Any] | None:
    """Split the first load's LoadInfo into its load-time part (kept across reuses)."""
    if cfg.pytorch.assistant_model:
        return None  # the draft model is loaded with the generation settings: no reuse
    import torch

    from llem.models import resolve_model

    effective: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    inner._generation_config(cfg, cfg.resolved_decoder(), cfg.pytorch, skipped, effective,
                             notes, torch.cuda.is_available(), resolve_model(cfg.model))
    return {
        "info": info,
        "effective": {k: v for k, v in info.effective.items() if k not in effective},
        "skipped": {k: v for k, v in info.skipped.items() if k not in skipped},
        "notes": tuple(n for n in info.notes if n not in notes),
        "disable_compile": getattr(inner._gen_config, "disable_compile", False),
        "generate_extra": dict(inner._gen_extra),
    }


#: backend name -> (split the first load, apply a later config): reuse for built-ins that
#: have no ``reconfigure`` method of their own.
_REUSE = {"pytorch": (_pytorch_base, _reconfigure_pytorch)}


class KeptBackend:
    """A backend that stays loaded across runs whose load-time settings agree.

    Passed to :func:`llem.run` as ``backend=``; the runner calls :meth:`load` for
    every run. The first call (or one whose :func:`load_key` differs) loads the model;
    a later call with the same load key only applies the decode-time settings: through
    the backend's own ``reconfigure(config) -> LoadInfo`` when it has one, through a
    built-in adapter for the pytorch backend, else by loading again. Everything else
    (``generate``, ``tokenizer``, ``name``...) is the loaded backend's.

    Attributes
    ----------
    loads : int
        Models loaded so far.
    reuses : int
        Runs that reused a loaded model.
    """

    def __init__(self) -> None:
        self.inner: Any = None
        self.key: str | None = None
        self.loads = 0
        self.reuses = 0
        self._base: Any = None

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def load(self, cfg: Any) -> Any:
        """Load ``cfg``'s model, or reuse the loaded one when its load-time settings agree."""
        key = load_key(cfg)
        if self.inner is not None and key == self.key:
            t0 = time.perf_counter()
            info = self._reconfigure(cfg)
            if info is not None:
                self.reuses += 1
                note = (f"Model reused from the previous run of this sweep (same load-time "
                        f"settings); applying this run's settings took "
                        f"{time.perf_counter() - t0:.3f} s.")
                return dataclasses.replace(info, notes=(*info.notes, note))
        self.release()
        from llem.runner import get_backend_class

        inner = get_backend_class(cfg.backend)()
        info = inner.load(cfg)
        self.inner, self.key = inner, key
        self.loads += 1
        self._base = None
        split = _REUSE.get(cfg.backend)
        if split is not None and not hasattr(inner, "reconfigure"):
            try:
                self._base = split[0](inner, cfg, info)
            except Exception:  # noqa: BLE001 - no reuse, loads again next time
                self._base = None
        return info

    def _reconfigure(self, cfg: Any) -> Any:
        inner = self.inner
        try:
            if hasattr(inner, "reconfigure"):
                return inner.reconfigure(cfg)
            adapter = _REUSE.get(cfg.backend)
            if adapter is not None and self._base is not None:
                return adapter[1](inner, cfg, self._base)
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - fall back to a fresh load
            return None
        return None

    def release(self) -> None:
        """Release the loaded model, if any."""
        inner, self.inner, self.key, self._base = self.inner, None, None, None
        if inner is not None:
            inner.release()


# ====================================================================== results
@dataclass(frozen=True)
class CycleStat:
    """One figure of one configuration over the cycles of a study.

    ``spread`` is max - min; ``ci95`` the 95% interval of the mean (Student's t over the
    per-cycle means, as :class:`llem.results.Stat`); None below two cycles.
    """

    median: float | None
    min: float | None
    max: float | None
    mean: float | None
    ci95: tuple[float, float] | None
    n: int
    values: tuple[float, ...] = ()

    @property
    def spread(self) -> float | None:
        """The range over cycles (max - min)."""
        return None if self.min is None or self.max is None else self.max - self.min

    @classmethod
    def of(cls, values: Iterable[float | None]) -> CycleStat:
        """Summarise per-cycle values (None entries are left out)."""
        import statistics

        from llem.results import Stat

        vals = tuple(float(v) for v in values if v is not None and v == v)
        if not vals:
            return cls(None, None, None, None, None, 0)
        s = Stat.of(vals)
        return cls(statistics.median(vals), min(vals), max(vals), s.mean, s.ci95, len(vals), vals)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"median": self.median, "min": self.min, "max": self.max, "spread": self.spread,
                "mean": self.mean, "ci95_low": self.ci95[0] if self.ci95 else None,
                "ci95_high": self.ci95[1] if self.ci95 else None, "n": self.n}


@dataclass
class SweepResult:
    """What a sweep produced: its results, failures and skipped combinations.

    Attributes
    ----------
    results : list of Result
        Every result of the study in the results folder (resumed ones included), in plan
        order; ``result.name`` is the trial's label with its cycle, and
        :func:`sweep_info` (``result.environment["sweep"]``) gives its label, key, cycle
        and position.
    failures : list of Failure
        Runs that raised, with the error.
    skipped : list of Skipped
        Combinations not run, with the reason.
    trials : list of Trial
        The configurations that ran.
    runs : list of PlannedRun
        The planned order.
    study : Study
    results_dir : Path
    complete : bool
        False when the sweep was interrupted.
    loads : int or None
        Models the local executor loaded in this session.
    """

    results: list[Any]
    failures: list[Failure]
    skipped: list[Skipped]
    trials: list[Trial]
    runs: list[PlannedRun]
    study: Study
    results_dir: Path
    complete: bool = True
    loads: int | None = None
    resumed: int = 0
    notes: list[str] = field(default_factory=list)

    def by_trial(self) -> dict[str, list[Any]]:
        """Trial label -> its results, by cycle."""
        out: dict[str, list[Any]] = {t.label: [] for t in self.trials}
        for r in sorted(self.results, key=lambda r: sweep_info(r).get("cycle", 0)):
            out.setdefault(sweep_info(r).get("label") or r.name or "?", []).append(r)
        return out

    def summary(self, figures: Sequence[str] = FIGURES) -> list[dict[str, Any]]:
        """Per configuration: settings, cycles run, and each figure's :class:`CycleStat`.

        The per-cycle value is the mean over that cycle's measured repeats.
        """
        rows = []
        groups = self.by_trial()
        for t in self.trials:
            res = groups.get(t.label, [])
            row: dict[str, Any] = {"label": t.label, **{k: v for k, v in t.settings.items()},
                                   "cycles": len(res)}
            for f in figures:
                row[f] = CycleStat.of(r.summary[f].mean for r in res)
            methods = {r.method for r in res}
            row["method"] = ", ".join(sorted(methods)) if methods else "none"
            row["failed"] = sum(1 for x in self.failures if x.key == t.key)
            rows.append(row)
        return rows

    def to_pandas(self) -> Any:
        """The summary as a DataFrame: ``figure_median``, ``figure_spread``, ``figure_ci95_low``..."""
        pd = import_optional("pandas", "data", "SweepResult.to_pandas")
        flat = []
        for row in self.summary():
            out = {}
            for k, v in row.items():
                if isinstance(v, CycleStat):
                    out.update({f"{k}_{n}": x for n, x in v.to_dict().items()})
                else:
                    out[k] = v
            flat.append(out)
        return pd.DataFrame(flat)

    def compare(self) -> Any:
        """:func:`llem.compare` over every result (one row per run of each cycle)."""
        from llem.results import compare

        return compare(self.results)

    def report(self, path: str | os.PathLike[str] | None = None, **options: Any) -> Any:
        """The comparison report of the sweep.

        Without ``path``: this object, which displays the summary over cycles (median,
        95% interval, spread per configuration). With ``path``: the full report of every
        result, written by :func:`llem.report.export` (the format follows the suffix;
        ``options`` go to the exporter); where llem.report is not available, this
        summary as an HTML file. Returns the path written.
        """
        if path is None:
            return self
        if self.results:
            from llem.report import export

            return export(self.results, path, **options)
        p = Path(path)
        p.write_text("<!doctype html><meta charset='utf-8'><title>llem sweep</title>"
                     + self._repr_html_(), encoding="utf-8")
        return p

    def report_html(self) -> str | None:
        """The full report (llem.report's HTML) as text; None without llem.report or results."""
        try:
            from llem.report import export
        except ImportError:
            return None
        if not self.results:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            out = export(self.results, Path(tmp) / "report.html")
            return Path(out).read_text(encoding="utf-8")

    # ----------------------------------------------------------------- display
    def _cells(self) -> tuple[list[str], list[list[str]]]:
        from llem.results import SUMMARY_FIGURES, _g

        head = ["configuration", "cycles"]
        for f in FIGURES:
            name, unit, _ = SUMMARY_FIGURES[f]
            head.append(f"{name} ({unit}) median [95% CI] spread")
        body = []
        for row in self.summary():
            cells = [row["label"], str(row["cycles"])]
            for f in FIGURES:
                st: CycleStat = row[f]
                _, _, scale = SUMMARY_FIGURES[f]
                if st.median is None:
                    cells.append("n/a")
                    continue
                text = _g(st.median * scale)
                if st.ci95 is not None:
                    text += f" [{_g(st.ci95[0] * scale, 3)}, {_g(st.ci95[1] * scale, 3)}]"
                if st.n > 1 and st.spread is not None:
                    text += f" ±{_g(st.spread * scale / 2, 2)}"
                if f == "energy_per_token_j" and "estimated" in row["method"]:
                    text += " (estimated)"
                cells.append(text)
            body.append(cells)
        return head, body

    def _footer(self) -> list[str]:
        lines = [f"{len(self.results)} result(s) in {self.results_dir}; "
                 f"{self.study.cycles} cycle(s), {self.study.order} order"
                 + ("" if self.complete else "; INTERRUPTED (rerun to resume)")]
        lines += [f"failed: {f.label} (cycle {f.cycle + 1}): {f.error}" for f in self.failures]
        lines += [f"skipped ({s.kind}): {s.label}: {s.reason}" for s in self.skipped]
        return lines

    def __repr__(self) -> str:
        try:
            head, body = self._cells()
            widths = [max(len(c) for c in col) for col in zip(head, *body)]
            lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [head, *body]]
            return "\n".join(lines + self._footer())
        except Exception as exc:  # noqa: BLE001 - display never raises
            return f"<llem SweepResult: {len(self.results)} results; display failed: {exc!r}>"

    def _repr_html_(self) -> str:
        import html

        try:
            head, body = self._cells()
            e = html.escape
            th = "".join(f"<th>{e(c)}</th>" for c in head)
            trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body)
            foot = "".join(f"<li>{e(x)}</li>" for x in self._footer())
            return (f"<div class='llem-sweep'><table><tr>{th}</tr>{trs}</table>"
                    f"<p>median over cycles, [95% interval of the mean], ± half the spread "
                    f"(max - min)</p><ul>{foot}</ul></div>")
        except Exception:  # noqa: BLE001
            return f"<pre>{html.escape(repr(self))}</pre>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


def sweep_info(result: Any) -> dict[str, Any]:
    """What a sweep recorded about ``result``: ``label``, ``cycle``, ``key``, ``settings``...

    Empty for a result that did not come from a sweep.
    """
    env = getattr(result, "environment", None) or {}
    meta = env.get("sweep") if isinstance(env, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


# ======================================================================= storage
class _Store:
    """The results folder: result files, the study record and failed runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = root / META_DIR
        self.meta.mkdir(parents=True, exist_ok=True)

    def saved(self, keys: set[tuple[str, int]]) -> dict[tuple[str, int], Any]:
        """Complete results already in the folder for (key, cycle) pairs of this study."""
        import warnings

        from llem.results import load_results

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
        write_atomic(self.meta / "study.json", json.dumps(_jsonable(record), indent=1))

    def _failure_path(self, key: str, cycle: int) -> Path:
        return self.meta / f"failed-{key}-c{cycle}.json"

    def record_failure(self, f: Failure) -> None:
        write_atomic(self._failure_path(f.key, f.cycle), json.dumps(f.to_dict(), indent=1))

    def clear_failure(self, key: str, cycle: int) -> None:
        try:
            self._failure_path(key, cycle).unlink()
        except FileNotFoundError:
            pass




# ======================================================================= driving
class _Driver:
    """Bookkeeping shared by the executors: save, record, report progress."""

    def __init__(self, runs: list[PlannedRun], store: _Store, study_id: str, done: int,
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
        if not self.finished_here:
            return None
        elapsed = time.perf_counter() - self.t0
        remaining = self.total - self.done - self.failed
        return elapsed / self.finished_here * remaining

    def emit(self, stage: str, current: str = "", result: Any = None, error: str = "") -> None:
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
        self.emit("run", _current(run))

    def finished(self, run: PlannedRun, result: Any) -> Any:
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
        f = Failure(run.trial.label, dict(run.trial.settings), run.trial.key, run.cycle, error, tb)
        self.store.record_failure(f)
        self.failures.append(f)
        self.failed += 1
        self.finished_here += 1
        self.emit("failed", _current(run), error=error)


def _current(run: PlannedRun) -> str:
    return f"{run.trial.label} (cycle {run.cycle + 1})"


def tag(result: Any, run: PlannedRun, study_id: str) -> Any:
    """``result`` named after its trial, with the sweep's bookkeeping in its environment."""
    env = dict(result.environment or {})
    env["sweep"] = {"study": study_id, "key": run.trial.key, "load_key": run.trial.load_key,
                    "cycle": run.cycle, "position": run.position, "label": run.trial.label,
                    "settings": _jsonable(run.trial.settings)}
    return dataclasses.replace(result, name=f"{run.trial.label} (cycle {run.cycle + 1})",
                               environment=env)


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


class LocalExecutor:
    """Trials one after another in this process (or one fresh process each, cold start).

    Energy measurements on one device never overlap. Trials that share load-time settings
    and follow each other reuse the loaded model (:class:`KeptBackend`).
    """

    name = "local"

    def __init__(self) -> None:
        self.backend = KeptBackend()

    def execute(self, runs: Sequence[PlannedRun], driver: _Driver, study: Study,
                prompts: Any) -> None:
        """Run ``runs`` in order, handing results and failures to ``driver``."""
        from llem.runner import run as run_one

        previous = False
        try:
            for r in runs:
                if previous and r.gap_before_s > 0:
                    time.sleep(r.gap_before_s)
                previous = True
                driver.starting(r)
                try:
                    if study.cold_start:
                        result = _cold_run(r.trial.config, prompts, driver.store.meta)
                    else:
                        result = run_one(r.trial.config, prompts, backend=self.backend)
                except (KeyboardInterrupt, RunInterrupted):
                    raise
                except Exception as exc:  # noqa: BLE001 - a failing run is recorded, not fatal
                    self.backend.release()  # its state is unknown (after an OOM, say)
                    driver.failed_run(r, _error_text(exc), traceback.format_exc())
                    continue
                driver.finished(r, result)
        finally:
            self.backend.release()


class _ColdRunError(LlemError):
    """A cold-start run failed in its own process."""


def _cold_run(cfg: Any, prompts: Any, tmp_root: Path) -> Any:
    """Run ``cfg`` in a fresh Python process; return its Result."""
    from llem.results import load_result

    with tempfile.TemporaryDirectory(prefix="cold-", dir=tmp_root) as tmp:
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(cfg.to_json(only_set=True), encoding="utf-8")
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "llem.sweep", "--one", str(cfg_path), "--out", str(out)]
        if prompts is not None:
            p = Path(tmp) / "prompts.json"
            p.write_text(json.dumps(prompts if isinstance(prompts, (list, str)) else str(prompts)),
                         encoding="utf-8")
            cmd += ["--prompts", str(p)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        error_file = out.with_suffix(".error.json")
        if error_file.exists():
            info = json.loads(error_file.read_text(encoding="utf-8"))
            raise _ColdRunError(info.get("error", "the run failed"))
        if proc.returncode != 0 or not out.exists():
            tail = (err or "").strip().splitlines()[-3:]
            raise _ColdRunError(f"the run's process exited with code {proc.returncode}: "
                                + " | ".join(tail))
        return load_result(out)


# ============================================================================ Ray
def _ray_trial(payload: dict[str, Any], run_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Body of one Ray task: wait the gap, run the trial, return its Result as a dict.

    An exception in the run comes back as ``{"ok": False, ...}`` (not retried: it would
    fail again); a worker that dies is retried by Ray.
    """
    import socket

    gap = float(payload.get("gap_s") or 0.0)
    if gap > 0:
        time.sleep(gap)
    try:
        from llem.config import ExperimentConfig

        cfg = ExperimentConfig.from_dict(payload["config"])
        if run_fn is None:
            from llem.runner import run as default_run

            run_fn = default_run
        result = run_fn(cfg, payload.get("prompts"))
        env = dict(result.environment or {})
        env["host"] = socket.gethostname()
        return {"ok": True, "result": dataclasses.replace(result, environment=env).to_dict()}
    except Exception as exc:  # noqa: BLE001 - reported to the driver as a failed run
        return {"ok": False, "error": _error_text(exc), "traceback": traceback.format_exc()}


def gpus_needed(cfg: Any) -> int:
    """GPUs one trial of ``cfg`` measures (tensor/pipeline parallel sizes, processes)."""
    b = cfg.backend
    if b == "vllm":
        return int(cfg.vllm.tensor_parallel_size or 1) * int(cfg.vllm.pipeline_parallel_size or 1)
    if b == "tensorrt":
        return int(cfg.tensorrt.tp_size or 1) * int(cfg.tensorrt.pp_size or 1)
    return int(cfg.pytorch.num_processes or 1)


#: Custom Ray resource a CPU node can offer (``ray start --resources='{"llem_node": 1}'``)
#: so one trial takes the node whatever its CPU count.
NODE_RESOURCE = "llem_node"


class RayExecutor:
    """Trials as Ray tasks, each holding the devices it measures; results saved here.

    Parameters
    ----------
    address : str, optional
        The cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts or
        joins a local Ray (or uses the one already initialised in this process).
    max_retries : int
        Times a trial is sent again when its worker dies (node lost, killed, crashed).
    resources : dict, optional
        Ray options for every task (``num_gpus``, ``num_cpus``, ``resources``) instead of
        the defaults: on a cluster with GPUs, ``num_gpus`` = the GPUs the trial measures
        (see ``whole_node``); on CPU nodes, ``{"llem_node": 1}`` when the nodes offer that
        custom resource, else ``num_cpus`` = the largest node's CPU count, so no two
        trials share a node.
    whole_node : bool
        On GPU nodes, give each trial a node of its own (default): a run reads every GPU
        that NVML sees on its node, so a trial on another GPU of the same node would add
        its energy to this one. The trial takes ``llem_node: 1`` and the GPUs it uses when
        the nodes offer that resource, else as many GPUs as the largest node has. False
        reserves only the GPUs the trial uses (:func:`gpus_needed`), for runs whose meter
        reads only their own GPUs.
    run : callable, optional
        What a task calls, ``run(config, prompts) -> Result`` (default :func:`llem.run`).
        It is shipped to the workers, so it must be picklable.
    init_kwargs : dict, optional
        Extra keyword arguments for ``ray.init``.
    """

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 3,
                 resources: Mapping[str, Any] | None = None, run: Callable[..., Any] | None = None,
                 init_kwargs: Mapping[str, Any] | None = None, whole_node: bool = True) -> None:
        self.address = address
        self.whole_node = bool(whole_node)
        self.max_retries = int(max_retries)
        self.resources = dict(resources) if resources is not None else None
        self.run = run
        self.init_kwargs = dict(init_kwargs or {})

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise missing_dependency("ray", "ray", "the Ray sweep executor") from None
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            ray.init(address=self.address, **kw)
        return ray

    def task_options(self, cfg: Any, ray: Any) -> dict[str, Any]:
        """Resource request of one trial of ``cfg``."""
        if self.resources is not None:
            return dict(self.resources)
        total = ray.cluster_resources()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if total.get("GPU", 0) > 0:
            need = gpus_needed(cfg)
            if self.whole_node and total.get(NODE_RESOURCE, 0) > 0:
                return {"num_gpus": need, "num_cpus": 1, "resources": {NODE_RESOURCE: 1}}
            if self.whole_node:  # every GPU of the largest node
                need = max([need, *(int(n.get("GPU", 0)) for n in nodes)])
            return {"num_gpus": need, "num_cpus": 1}
        if total.get(NODE_RESOURCE, 0) > 0:
            return {"resources": {NODE_RESOURCE: 1}, "num_cpus": 0}
        return {"num_cpus": max([n.get("CPU", 0) for n in nodes] or [1])}

    def execute(self, runs: Sequence[PlannedRun], driver: _Driver, study: Study,
                prompts: Any) -> None:
        """Submit every run, then save each result as it comes back."""
        ray = self._ray()
        remote = ray.remote(_ray_trial)
        pending: dict[Any, PlannedRun] = {}
        for r in runs:
            opts = self.task_options(r.trial.config, ray)
            opts.update(max_retries=self.max_retries, retry_exceptions=False)
            if study.cold_start:
                opts["max_calls"] = 1  # a fresh worker process per trial
            payload = {"config": r.trial.config.to_dict(only_set=True), "prompts": prompts,
                       "gap_s": r.gap_before_s if r.position else 0.0}
            ref = remote.options(**opts).remote(payload, self.run)
            pending[ref] = r
            driver.starting(r)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    r = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        error = _error_text(exc)
                        if isinstance(exc, ray.exceptions.WorkerCrashedError):
                            error += f" (the worker died; tried {self.max_retries + 1} times)"
                        driver.failed_run(r, error)
                        continue
                    if out.get("ok"):
                        from llem.results import Result

                        driver.finished(r, Result.from_dict(out["result"]))
                    else:
                        driver.failed_run(r, out.get("error", "failed"), out.get("traceback", ""))
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001
                    pass
            raise


# ========================================================================= sweep()
def _as_config(config: Any) -> Any:
    from llem.config import ExperimentConfig

    if config is None:
        return ExperimentConfig()
    if isinstance(config, ExperimentConfig):
        return config.copy()
    if isinstance(config, Mapping):
        return ExperimentConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return ExperimentConfig.load(Path(config))
    raise ConfigError(f"a sweep's base config must be an ExperimentConfig, a dict or a path, "
                      f"not {type(config).__name__}.")


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None) if ipython is not None else None
    shell = get() if callable(get) else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _text_progress(stream: Any = None) -> ProgressCallback:
    """A progress callback that writes one line per event to ``stream`` (stderr)."""
    out = stream or sys.stderr

    def show(ev: SweepProgress) -> None:
        if ev.stage in ("result", "failed", "start", "done", "interrupted"):
            extra = f" [{ev.error}]" if ev.stage == "failed" else ""
            print(f"llem sweep: {ev.line()}{extra}", file=out, flush=True)

    return show


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
        (:class:`RayExecutor`).
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

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepInterrupted
        On ``KeyboardInterrupt``; what was saved stays saved, ``exc.partial`` is the
        SweepResult so far; run the same sweep again to resume.
    ConfigError
        The base config or the grid is wrong (an unknown field, a value that is not a list).
    """
    base = _as_config(base_config)
    if ray_address is not None and executor == "local":
        executor = "ray"
    if isinstance(executor, str):
        if executor == "local":
            executor = LocalExecutor()
        elif executor == "ray":
            executor = RayExecutor(address=ray_address)
        else:
            raise ConfigError(f"Unknown sweep executor {executor!r}; use 'local' or 'ray'.")
    is_ray = isinstance(executor, RayExecutor)
    study = Study.of(base)
    declared = target_gpu if target_gpu is not None else base.target_gpu
    trials, skipped = expand(base, grid, variants, target_gpu=target_gpu,
                             check_tier=declared is not None or not is_ray)
    runs = plan(trials, study)
    grid_id = _digest(sorted(t.key for t in trials))
    study_id = _digest({"grid": grid_id, "cycles": study.cycles, "order": study.order})
    root = Path(results_dir) if results_dir is not None else Path(base.output_dir) / f"sweep-{grid_id}"
    store = _Store(root)
    store.write_study({
        "study_id": study_id, "study": dataclasses.asdict(study), "executor": executor.name,
        "base": base.to_dict(only_set=True), "grid": flatten_grid(grid),
        "variants": list(variants or ()),
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
        progress = _text_progress()
    elif progress is False:
        progress = None

    driver = _Driver(runs, store, study_id, len(saved), progress, on_result)
    driver.emit("start")

    def outcome(complete: bool) -> SweepResult:
        by_pair = {**saved, **driver.results}
        results = [by_pair[(r.trial.key, r.cycle)] for r in runs if (r.trial.key, r.cycle) in by_pair]
        notes = list(driver.callback_errors)
        if is_ray and declared is None:
            notes.append("Tier checks were left to the Ray workers; set target_gpu to check "
                         "every trial before sending it.")
        if not skipped and not trials:
            notes.append("No trial to run.")
        loads = executor.backend.loads if isinstance(executor, LocalExecutor) else None
        return SweepResult(results, list(driver.failures), skipped, trials, runs, study, root,
                           complete, loads, len(saved), notes)

    try:
        executor.execute(todo, driver, study, prompts)
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


def _chain(*fns: Callable[[Any], None] | None) -> Callable[[Any], None]:
    live = [f for f in fns if f is not None]

    def call(x: Any) -> None:
        for f in live:
            f(x)

    return call


# ====================================================================== YAML form
@dataclass
class SweepFile:
    """A config file with a ``sweep:`` block: the base config, grid, variants and folder."""

    base: Any
    grid: dict[str, Any]
    variants: list[dict[str, Any]]
    results_dir: str | None = None
    path: Path | None = None

    def run(self, **kwargs: Any) -> SweepResult:
        """:func:`sweep` over this file's grid (keyword arguments override the file's)."""
        kwargs.setdefault("results_dir", self.results_dir)
        return sweep(self.base, self.grid, self.variants, **kwargs)


_SWEEP_KEYS = ("grid", "variants", "results_dir")


def parse_sweep(data: Mapping[str, Any], path: Path | None = None) -> SweepFile:
    """Split a config mapping into its base config and its ``sweep:`` block."""
    from llem.config import ExperimentConfig
    from llem.errors import did_you_mean

    data = dict(data)
    block = data.pop("sweep", None) or {}
    if not isinstance(block, Mapping):
        raise ConfigError(f"the sweep block must be a mapping with {', '.join(_SWEEP_KEYS)}, "
                          f"not {block!r}.")
    unknown = [k for k in block if k not in _SWEEP_KEYS]
    if unknown:
        raise UnknownNameError(
            f"Unknown key {unknown[0]!r} in the sweep block.{did_you_mean(unknown[0], _SWEEP_KEYS)} "
            f"It takes {', '.join(_SWEEP_KEYS)}; study settings (cycles, order, gaps, "
            "cold_start) go in the config's study section.")
    variants = block.get("variants") or []
    if not isinstance(variants, list):
        raise ConfigError("sweep.variants must be a list of mappings of settings.")
    base = ExperimentConfig.from_dict(data)
    grid = dict(block.get("grid") or {})
    flatten_grid(grid)  # refuse a bad grid now, with the file named below
    rd = block.get("results_dir")
    if rd is not None and path is not None and not Path(rd).is_absolute():
        rd = str(path.parent / rd)
    return SweepFile(base, grid, list(variants), rd, path)


def load_sweep(path: str | os.PathLike[str]) -> SweepFile:
    """Read a YAML (or JSON) config file with a ``sweep:`` block.

    Example
    -------
    ::

        model: tiny-random-llama
        study: {cycles: 3, order: interleaved}
        sweep:
          grid:
            pytorch.batch_size: [1, 4]
            decoder.max_new_tokens: [16, 64]
          variants:
            - {pytorch.dtype: bfloat16, pytorch.batch_size: 8}
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"sweep file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{str(p)!r} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                          f"{exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{str(p)!r} must hold a mapping (a config), not {type(data).__name__}.")
    if "sweep" not in data:
        raise ConfigError(f"{str(p)!r} has no sweep block; add sweep: {{grid: {{...}}}} or use "
                          "`llem run` for a single experiment.")
    try:
        return parse_sweep(data, p)
    except ConfigError as exc:
        raise type(exc)(f"{p}: {exc}") from None


def sweep_command(path: str | os.PathLike[str], ray_address: str | None = None, *,
                  results_dir: str | None = None, resume: bool = True,
                  target_gpu: str | None = None, max_retries: int = 3,
                  progress: ProgressCallback | bool | None = True, out: Any = None) -> int:
    """``llem sweep FILE``: run a sweep file, print progress and the summary.

    Returns the exit status: 0 when every run succeeded, 1 when some failed, 2 for a bad
    file, 130 when interrupted (results so far are saved; run again to resume).
    """
    stream = out or sys.stdout
    try:
        spec = load_sweep(path)
    except ConfigError as exc:
        print(f"llem sweep: {exc}", file=sys.stderr)
        return 2
    executor: Any = RayExecutor(ray_address, max_retries=max_retries) if ray_address else "local"
    if progress is True and sys.stderr.isatty():
        progress = _tqdm_progress() or True
    try:
        res = spec.run(executor=executor, results_dir=results_dir or spec.results_dir,
                       resume=resume, progress=progress, target_gpu=target_gpu)
    except SweepInterrupted as exc:
        print(f"llem sweep: {exc}", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"llem sweep: {exc}", file=sys.stderr)
        return 2
    print(repr(res), file=stream)
    return 1 if res.failures else 0


def _tqdm_progress() -> ProgressCallback | None:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    bar: dict[str, Any] = {}

    def show(ev: SweepProgress) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=ev.total, initial=ev.done, unit="run", desc="llem sweep")
        b = bar["bar"]
        b.n = ev.done + ev.failed
        b.set_postfix_str(ev.current + (f" failed: {ev.failed}" if ev.failed else ""))
        if ev.stage in ("done", "interrupted"):
            b.close()

    return show


# ============================================================== one run, own process
def _one(argv: Sequence[str] | None = None) -> int:
    """``python -m llem.sweep --one CONFIG.json --out RESULT.json [--prompts P.json]``."""
    ap = argparse.ArgumentParser(prog="python -m llem.sweep",
                                 description="Run one experiment (a cold-start sweep run).")
    ap.add_argument("--one", required=True, help="config file (JSON or YAML)")
    ap.add_argument("--out", required=True, help="where to write the result JSON")
    ap.add_argument("--prompts", help="JSON file with the prompts argument of llem.run")
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        from llem.config import ExperimentConfig
        from llem.runner import run

        cfg = ExperimentConfig.load(args.one)
        prompts = (json.loads(Path(args.prompts).read_text(encoding="utf-8"))
                   if args.prompts else None)
        result = run(cfg, prompts)
        write_atomic(out, result.to_json())
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the parent through a file
        write_atomic(out.with_suffix(".error.json"), json.dumps(
            {"error": _error_text(exc), "traceback": traceback.format_exc()}))
        return 1


__all__ = ["FIGURES", "NODE_RESOURCE", "ORDERS", "CycleStat", "Failure", "KeptBackend",
           "LocalExecutor", "PlannedRun", "RayExecutor", "Skipped", "Study", "SweepFile",
           "SweepInterrupted", "SweepProgress", "SweepResult", "Trial", "combinations",
           "count_loads", "expand", "flatten_grid", "gpus_needed", "label_of", "load_key",
           "load_sweep", "load_time_paths", "parse_sweep", "plan", "run_key", "study_seed",
           "sweep", "sweep_command", "sweep_info"]


class _CallableModule(types.ModuleType):
    """Lets ``llem.sweep(...)`` work even when ``llem.sweep`` is this module.

    ``import llem.sweep`` (or ``from llem.sweep import x``) binds the module to the name
    ``sweep`` on the package; calling it then calls :func:`sweep`.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> SweepResult:
        return sweep(*args, **kwargs)


if __name__ == "__main__":
    raise SystemExit(_one())
else:
    sys.modules[__name__].__class__ = _CallableModule
