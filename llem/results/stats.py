"""Statistics over repeated runs: the mean with its 95% confidence interval, percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llem.results.figures import format_mean, format_stat

# Two-sided 95% critical values of Student's t distribution, t(0.975, df), for df 1..30,
# then a few larger df; from the standard t table (values to 3 decimals).
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}


def t_critical_95(df: int) -> float:
    """Two-sided 95% critical value of Student's t with ``df`` degrees of freedom.

    Exact table values for df 1-30, 40, 60 and 120; between listed values the next
    smaller df is used (slightly wider, so conservative); 1.960 (normal) beyond 120.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, not {df}")
    if df in _T975:
        return _T975[df]
    if df > 120:
        return 1.960
    return _T975[max(k for k in _T975 if k <= df)]


def is_finite_number(v: Any) -> bool:
    """False for NaN and infinity, True for any other value (None included)."""
    return not (isinstance(v, float) and (math.isnan(v) or math.isinf(v)))


@dataclass(frozen=True)
class Stat:
    """Mean of one figure over repeated runs, with its 95% confidence interval.

    ``ci95_half`` is ``t(0.975, n-1) * std / sqrt(n)``; None with fewer than 2 values.
    """

    mean: float | None
    std: float | None
    n: int
    ci95_half: float | None
    values: tuple[float, ...] = ()
    #: The figure-table record of what this is (``Result.summary`` sets it); it gives the
    #: short repr its unit. Not part of equality or of :meth:`to_dict`.
    figure: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        """Summarise ``values`` (None, NaN and infinite entries are left out)."""
        vals = tuple(float(v) for v in values if v is not None and is_finite_number(v))
        n = len(vals)
        if n == 0:
            return cls(None, None, 0, None, ())
        mean = statistics.fmean(vals)
        if n < 2:
            return cls(mean, None, 1, None, vals)
        std = statistics.stdev(vals)
        return cls(mean, std, n, t_critical_95(n - 1) * std / math.sqrt(n), vals)

    @property
    def ci95(self) -> tuple[float, float] | None:
        """``(low, high)`` of the 95% interval, or None."""
        if self.mean is None or self.ci95_half is None:
            return None
        return (self.mean - self.ci95_half, self.mean + self.ci95_half)

    def format(self, unit: str = "", scale: float = 1.0, digits: int = 4) -> str:
        """``"12.3 ms ± 0.4 (95% CI, n=3)"``, or ``"n/a"``.

        A figure of the table is better written with
        :func:`llem.results.figures.format_stat`, which takes its unit and scale from there.
        """
        return format_mean(self.mean, self.ci95_half, self.n, unit=unit, scale=scale, digits=digits)

    def of_figure(self, fig: Any) -> Stat:
        """Return this Stat labelled as the figure-table record ``fig`` (for its short repr)."""
        return replace(self, figure=fig)

    def __repr__(self) -> str:
        """``144 mJ ± 1.5 (95% CI, n=3)`` for a labelled figure, else the mean, interval and n."""
        if self.figure is not None:
            return format_stat(self, self.figure)
        return f"Stat({format_mean(self.mean, self.ci95_half, self.n)}, n={self.n})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (derived; not read back by :meth:`Result.from_dict`)."""
        ci = self.ci95
        return {"mean": self.mean, "std": self.std, "n": self.n, "ci95_half": self.ci95_half,
                "ci95_low": ci[0] if ci else None, "ci95_high": ci[1] if ci else None}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


__all__ = ["Stat", "is_finite_number", "percentile", "t_critical_95"]
