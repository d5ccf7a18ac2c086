"""The sweep file: a config file with a ``sweep:`` block, and ``llem sweep FILE``.

::

    model: tiny-random-llama
    study: {cycles: 3, order: interleaved}
    sweep:
      grid:
        pytorch.batch_size: [1, 4]
        decoder.max_new_tokens: [16, 64]
      variants:
        - {pytorch.dtype: bfloat16, pytorch.batch_size: 8}
      results_dir: out

:class:`~llem.config.ExperimentConfig` ignores the block, so the same file is also a
plain config.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llem._input import load_json, load_yaml, read_text
from llem.config import ExperimentConfig
from llem.errors import ConfigError, UnknownNameError, did_you_mean
from llem.results.store import ResultsFolderError
from llem.study.api import sweep
from llem.study.executors import RayExecutor
from llem.study.grid import MAX_TRIALS, count_points, flatten_grid, plan_words
from llem.study.outcome import ProgressCallback, SweepInterrupted, SweepProgress, SweepResult
from llem.study.plan import Study

_SWEEP_KEYS = ("grid", "variants", "results_dir")


@dataclass
class SweepFile:
    """A config file with a ``sweep:`` block: the base config, grid, variants and folder."""

    base: Any
    grid: dict[str, Any]
    variants: list[dict[str, Any]]
    results_dir: str | None = None
    path: Path | None = None

    def run(self, **kwargs: Any) -> SweepResult:
        """:func:`llem.study.sweep` over this file's grid (keyword arguments override the file's)."""
        kwargs.setdefault("results_dir", self.results_dir)
        return sweep(self.base, self.grid, self.variants, **kwargs)


def parse_sweep(data: Mapping[str, Any], path: Path | None = None) -> SweepFile:
    """Split a config mapping into its base config and its ``sweep:`` block."""
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
    """Read a YAML (or JSON) config file with a ``sweep:`` block (see the module docstring).

    Raises
    ------
    ConfigError
        The file is missing, not valid YAML/JSON, not a mapping, has no sweep block, or
        its config or grid is wrong (the message names the file).
    """
    p = Path(path)
    text = read_text(p, "sweep file")
    what = f"sweep file {str(p)!r}"
    data = load_json(text, what) if p.suffix == ".json" else load_yaml(text, what)
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
                  progress: ProgressCallback | bool | None = True, out: Any = None,
                  max_trials: int | None = MAX_TRIALS) -> int:
    """``llem sweep FILE``: run a sweep file, print progress and the summary.

    Returns the exit status: 0 when every run succeeded, 1 when some failed, 2 for a bad
    file, a grid of more than ``max_trials`` trials or a results folder that cannot be used
    (not writable, or another sweep's), 130 when interrupted (results so far are saved;
    run again to resume).
    """
    stream = out or sys.stdout
    try:
        spec = load_sweep(path)
    except ConfigError as exc:
        print(f"llem sweep: {exc}", file=sys.stderr)
        return 2
    executor: Any = RayExecutor(ray_address, max_retries=max_retries) if ray_address else "local"
    if progress is True and sys.stderr.isatty():
        bar = _tqdm_progress()
        if bar is not None:  # sweep() announces the plan only for its own text progress
            count, words = count_points(spec.grid, spec.variants)
            if max_trials is None or count <= max_trials:
                cycles = Study.of(spec.base).cycles
                print(f"llem sweep: planning {plan_words(count, words, cycles)}", file=sys.stderr,
                      flush=True)
            progress = bar
    try:
        res = spec.run(executor=executor, results_dir=results_dir or spec.results_dir,
                       resume=resume, progress=progress, target_gpu=target_gpu,
                       max_trials=max_trials)
    except SweepInterrupted as exc:
        print(f"llem sweep: {exc}", file=sys.stderr)
        return 130
    except (ConfigError, ResultsFolderError) as exc:  # a bad file, a folder in use or not writable
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


__all__ = ["SweepFile", "load_sweep", "parse_sweep", "sweep_command"]
