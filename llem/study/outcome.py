"""What a sweep produced: its results over cycles, failures, progress events.

:class:`SweepResult` holds every result of the study (resumed ones included), the runs
that failed (:class:`Failure`) and the combinations skipped, and summarises each figure
of each configuration over the cycles (:class:`CycleStat`: median, spread and the 95%
interval of the mean). :class:`SweepProgress` is what the ``progress`` callback gets at
every step; :func:`sweep_info` reads back what a sweep recorded on a result.
"""

from __future__ import annotations

import dataclasses
import html
import os
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llem.errors import RunInterrupted, import_optional
from llem.plots import energy_vs_latency
from llem.report import export
from llem.results import Stat, compare, figure, format_interval, format_number
from llem.results.figures import attrs, html_table, text_table
from llem.results.flags import warning_ids
from llem.study.grid import Skipped, Trial, jsonable
from llem.study.plan import PlannedRun, Study

#: Figures summarised over cycles: the figure table's ``sweep`` view (attributes; label,
#: unit and scale come from the same table, :func:`llem.results.figure`).
FIGURES: tuple[str, ...] = attrs("sweep")

ProgressCallback = Callable[["SweepProgress"], None]


def clock(seconds: float) -> str:
    """``"0:42"``, ``"12:05"`` or ``"1:02:03"``: a duration as a clock reads it."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def error_text(exc: BaseException) -> str:
    """``"OutOfMemoryError: Out of memory ..."``: the error's type and first line."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


class SweepInterrupted(RunInterrupted):
    """A sweep was stopped; ``partial`` is the :class:`SweepResult` of what was saved.

    Rerun the same sweep (``resume=True``, the default) to run only what is missing.
    """


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
        return {"label": self.label, "settings": jsonable(self.settings), "key": self.key,
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
            text += f", ETA {clock(self.eta_s)}"
        if self.current:
            text += f" - {self.current}"
        return text


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


def sweep_info(result: Any) -> dict[str, Any]:
    """What a sweep recorded about ``result``: ``label``, ``cycle``, ``key``, ``settings``...

    Empty for a result that did not come from a sweep.
    """
    env = getattr(result, "environment", None) or {}
    meta = env.get("sweep") if isinstance(env, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


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
        Models loaded in this session: by the local executor in this process, or inside
        the Ray actors (0 for a local cold start, where each run loads in its own process).
    resumed : int
        Runs found saved from an earlier attempt and not run again.
    notes : list of str
        Short sentences about how the sweep ran.
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
        """Per configuration: settings, cycles run, each figure's :class:`CycleStat`, and warnings.

        The per-cycle value is the mean over that cycle's measured repeats. ``warnings``
        maps the id of each validity warning its results carry to how many cycles carry it.
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
            warned: dict[str, int] = {}
            for r in res:
                for fid in dict.fromkeys(warning_ids(getattr(r, "flags", ()))):
                    warned[fid] = warned.get(fid, 0) + 1
            row["warnings"] = warned
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
        return compare(self.results)

    def pareto(self, x: str = "latency", *, dynamic: bool = False, **options: Any) -> Any:
        """Energy per token against latency, one point per configuration, Pareto front marked.

        Each configuration's point pools the measured runs of all its cycles (whiskers: the
        95% CI over those runs); the points no other configuration beats on both axes are
        filled and joined (:func:`llem.plots.energy_vs_latency`, whose ``x``, ``dynamic``
        and ``options`` these are). A sweep over ``experiment.gpu_power_limit_w`` gives the
        energy-vs-latency trade-off of power capping.
        """
        pooled, labels = [], []
        for label, res in self.by_trial().items():
            if res:
                pooled.append(dataclasses.replace(res[0], runs=tuple(run for r in res for run in r.runs)))
                labels.append(label)
        return energy_vs_latency(pooled, x=x, dynamic=dynamic, labels=labels, **options)

    def report(self, path: str | os.PathLike[str] | None = None, **options: Any) -> Any:
        """The comparison report of the sweep.

        Without ``path``: this object, which displays the summary over cycles (median,
        95% interval, spread per configuration). With ``path``: the full report of every
        result, written by :func:`llem.report.export` (the format follows the suffix;
        ``options`` go to the exporter); without results, this summary as an HTML file.
        Returns the path written.
        """
        if path is None:
            return self
        if self.results:
            return export(self.results, path, **options)
        p = Path(path)
        p.write_text("<!doctype html><meta charset='utf-8'><title>llem sweep</title>"
                     + self._repr_html_(), encoding="utf-8")
        return p

    def report_html(self) -> str | None:
        """The full report (llem.report's HTML) as text; None without results."""
        if not self.results:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            out = export(self.results, Path(tmp) / "report.html")
            return Path(out).read_text(encoding="utf-8")

    # ----------------------------------------------------------------- display
    def _cells(self) -> tuple[list[str], list[list[str]]]:
        head = ["configuration", "cycles"]
        for f in FIGURES:
            head.append(f"{figure(f).heading} median [95% CI] spread")
        body = []
        rows = self.summary()
        flagged = any(row["warnings"] for row in rows)
        if flagged:
            head.append("warnings")
        for row in rows:
            cells = [row["label"], str(row["cycles"])]
            for f in FIGURES:
                st: CycleStat = row[f]
                scale = figure(f).scale
                if st.median is None:
                    cells.append("n/a")
                    continue
                text = format_number(st.median * scale)
                if st.ci95 is not None:
                    text += " " + format_interval(st.ci95, f)
                if st.n > 1 and st.spread is not None:
                    text += f" ±{format_number(st.spread * scale / 2, 2)}"
                if figure(f).energy and "estimated" in row["method"]:
                    text += " (estimated)"
                cells.append(text)
            if flagged:
                warned = row["warnings"].items()
                cells.append(", ".join(f"{fid} ({n}/{row['cycles']} cycles)" for fid, n in warned) or "-")
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
            return "\n".join(text_table(*self._cells()) + self._footer())
        except Exception as exc:  # noqa: BLE001 - display never raises
            return f"<llem SweepResult: {len(self.results)} results; display failed: {exc!r}>"

    def _repr_html_(self) -> str:
        try:
            foot = "".join(f"<li>{html.escape(x)}</li>" for x in self._footer())
            return (f"<div class='llem-sweep'>{html_table(*self._cells())}"
                    f"<p>median over cycles, [95% interval of the mean], ± half the spread "
                    f"(max - min)</p><ul>{foot}</ul></div>")
        except Exception:  # noqa: BLE001
            return f"<pre>{html.escape(repr(self))}</pre>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


__all__ = ["FIGURES", "CycleStat", "Failure", "ProgressCallback", "SweepInterrupted",
           "SweepProgress", "SweepResult", "clock", "error_text", "sweep_info"]
