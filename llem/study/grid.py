"""The grid of a sweep: its points, their labels, and the keys that identify them.

A grid maps settings to the values to try (``{"pytorch.batch_size": [1, 4]}``, or nested
by section); :func:`combinations` makes its cartesian product plus explicit variants, and
:func:`expand` turns each point into a :class:`Trial` (the base config with the point's
settings) or a :class:`Skipped` with the reason (the table refuses it, the GPU tier cannot
run it, or it repeats another point).

Two keys identify a trial: :func:`run_key` (what it measures, so a resumed sweep finds
its saved results) and :func:`load_key` (what it loads, so trials sharing it share one
loaded model).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llem import spec
from llem.backends.base import load_time_paths, load_time_values
from llem.config import ExperimentConfig
from llem.errors import ConfigError, UnknownNameError
from llem.machine import get_machine
from llem.spec.flat import given_once, nested_spelling

#: Config fields that say how a study is run or where it is stored, not what is measured;
#: they are left out of a run's identity, so a sweep can resume with more cycles or gaps.
_NOT_IDENTITY = ("study", "output_dir")


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


# ---------------------------------------------------------------- keys and hashes
def jsonable(v: Any) -> Any:
    """``v`` as plain JSON types (what a study record stores)."""
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def digest(obj: Any) -> str:
    """A short stable hash of ``obj``'s JSON form (12 hex digits)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_key(cfg: Any) -> str:
    """Identity of what ``cfg`` measures: its config hash without study and output fields.

    A saved result with this key and a cycle index counts as done when a sweep resumes.
    """
    d = cfg.to_dict()
    for name in _NOT_IDENTITY:
        d.pop(name, None)
    return digest(d)


def load_key(cfg: Any) -> str:
    """Hash of the settings that decide what is loaded: trials sharing it share a model.

    The load-time rows of llem.spec for the config's backend, plus ``passthrough`` (its
    ``load`` part goes to the loader): :func:`llem.backends.base.load_time_values`.
    """
    return digest(load_time_values(cfg))


def as_config(config: Any) -> ExperimentConfig:
    """A sweep's base config from an ExperimentConfig (copied), a dict, a path or None."""
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


# -------------------------------------------------------------------- expansion
def _normalise_key(key: str) -> str:
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
    seen: dict[str, str] = {}

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
            spelling = nested_spelling(*key.split(".", 1)) if prefix else key
            try:
                given_once(seen, path, spelling)
            except ConfigError as exc:
                raise ConfigError(f"sweep grid: {exc}") from None
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
        points.append(_variant_point(var, i + 1))
    return points or [{}]


#: Most trials :func:`llem.study.sweep` plans unless its caller allows more (``max_trials=``).
MAX_TRIALS = 1000


def count_points(grid: Mapping[str, Any] | None = None,
                 variants: Iterable[Mapping[str, Any]] | None = None) -> tuple[int, str]:
    """How many points :func:`combinations` makes, from the grid's sizes alone, and how.

    Nothing is expanded: the count is the product of the grid's list lengths plus the
    variants, so a grid of a million points is counted in microseconds.

    Returns
    -------
    count : int
        Points of the grid (at least 1: the base config alone).
    words : str
        The count as a sum, ``"4 batch_size x 3 dtype + 2 variants"``.
    """
    flat = flatten_grid(grid)
    n_variants = len(list(variants or ()))
    product = math.prod(len(v) for v in flat.values()) if flat else 0
    parts = [" x ".join(f"{len(v)} {p.rsplit('.', 1)[-1]}" for p, v in flat.items())] if flat else []
    if n_variants:
        parts.append(f"{n_variants} variant{'s' if n_variants != 1 else ''}")
    return max(1, product + n_variants), " + ".join(parts) or "the base config"


def check_count(count: int, words: str, max_trials: int | None) -> None:
    """Refuse a sweep of ``count`` trials above ``max_trials`` (None: no limit), before planning.

    Raises
    ------
    ConfigError
        With the count, how it arises, and the two fixes: a smaller grid, or a larger
        ``max_trials`` (``llem sweep FILE --max-trials N``).
    """
    if max_trials is not None and count > max_trials:
        raise ConfigError(
            f"This sweep has {count:,} trials ({words}), more than max_trials={max_trials:,}; "
            "nothing was planned or run. Fix: narrow the grid, or confirm the size with "
            f"llem.sweep(..., max_trials={count}) (on the command line: llem sweep FILE "
            f"--max-trials {count}).")


def plan_words(count: int, words: str, cycles: int = 1) -> str:
    """``"12 trials (4 batch_size x 3 dtype), 3 cycles each: 36 runs"``: what a sweep plans."""
    text = f"{count:,} trial{'s' if count != 1 else ''} ({words})"
    if cycles != 1:
        text += f", {cycles} cycles each: {count * cycles:,} runs"
    return text


def _variant_point(var: Any, n: int) -> dict[str, Any]:
    """The settings of variant number ``n``: its nested sections and dotted keys as paths."""
    if not isinstance(var, Mapping):
        raise ConfigError(f"sweep variant #{n} must be a mapping of settings, not {var!r}.")
    nested = {k: v for k, v in var.items() if isinstance(v, Mapping) and "." not in str(k)
              and k not in ("passthrough",)}
    given = [(f"{section}.{k}", nested_spelling(section, str(k)), v)
             for section, fields_ in nested.items() for k, v in fields_.items()]
    given += [(str(k), str(k), v) for k, v in var.items() if k not in nested]
    point: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, spelling, value in given:
        path = _normalise_key(key)
        try:
            given_once(seen, path, spelling)
        except ConfigError as exc:
            raise ConfigError(f"sweep variant #{n}: {exc}") from None
        point[path] = value
    if any(p.startswith("study.") for p in point):
        raise ConfigError(f"sweep variant #{n} sets study fields; set them in the "
                          "config's study section.")
    return point


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
        This machine's compute capability (None: CPU); "auto" asks :func:`llem.machine.get_machine`.

    Returns
    -------
    trials : list of Trial
        In the order of the grid, grouped so trials sharing a load key are neighbours.
    skipped : list of Skipped
        Refused, beyond the tier, or duplicates, each with the reason.
    """
    base = as_config(base)
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
            cc = get_machine().cc if machine_cc == "auto" else machine_cc
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


__all__ = ["MAX_TRIALS", "Skipped", "Trial", "as_config", "check_count", "combinations", "count_points",
           "digest", "expand", "flatten_grid", "plan_words",
           "jsonable", "label_of", "load_key", "load_time_paths", "run_key"]
