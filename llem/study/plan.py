"""The plan of a study: which run comes when, and the pause before it.

The study settings (the config's ``study`` section) say how many cycles, in what order
and with what gaps; :func:`plan` lays the trials out accordingly:

- ``sequential``: every cycle of a configuration back to back (A A B B);
- ``interleaved``: one run of each configuration per cycle (A B A B), so slow drift
  (temperature, clocks, other load) spreads over every configuration alike;
- ``shuffled``: a fresh random order in every cycle, seeded from a hash of the study
  (:func:`study_seed`) so a rerun repeats it.

A model is loaded again wherever two neighbours of the plan differ in their load key
(:func:`count_loads`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llem.errors import ConfigError
from llem.study.grid import Trial, digest

#: The study orders, see the module docstring.
ORDERS = ("sequential", "interleaved", "shuffled")


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


@dataclass(frozen=True)
class PlannedRun:
    """One measurement of the study: a trial in a cycle, and the pause before it."""

    trial: Trial
    cycle: int
    position: int
    gap_before_s: float = 0.0


def study_seed(trials: Sequence[Trial], study: Study) -> int:
    """Seed of the shuffled order: a hash of the study (its trials' keys and cycles).

    The same study gives the same seed, so a rerun repeats its order; another grid or
    another number of cycles gives another.
    """
    return int(digest({"trials": sorted(t.key for t in trials), "cycles": study.cycles}), 16)


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


def load_groups(runs: Sequence[PlannedRun]) -> list[list[PlannedRun]]:
    """``runs`` cut where the load key changes: each group can share one loaded model.

    In sequential order a group holds every run of one load key; in the other orders a
    group ends wherever the plan moves to another load key, so the order is kept.
    """
    groups: list[list[PlannedRun]] = []
    for r in runs:
        if groups and groups[-1][-1].trial.load_key == r.trial.load_key:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def count_loads(runs: Sequence[PlannedRun]) -> int:
    """Model loads the local executor makes for ``runs`` (one per change of load key)."""
    return len(load_groups(runs))


__all__ = ["ORDERS", "PlannedRun", "Study", "count_loads", "load_groups", "plan", "study_seed"]
