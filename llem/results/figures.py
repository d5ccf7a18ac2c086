"""The figure table: every number llem reports, with its label, unit and where it is shown.

One :class:`Figure` per reported number. Its ``attr`` is the attribute of
:class:`~llem.results.RunMeasurement` that holds it in SI units (the unit is in the name:
``ttft_p50_s``, ``energy_per_token_j``); ``label``, ``unit``, ``scale`` and ``digits`` say
how it is written (``TTFT p50``, ``ms``, ``1e3``, 4 significant digits); ``views`` says
where it appears. Every display reads this table: the Result's text and HTML, ``compare()``,
the sweep's summary, the report's key figures and run tables, the charts' axis titles. A
label is therefore the same wherever a figure is shown.

The one number formatter is here too: :func:`format_number` (significant digits, ``n/a``
for a missing value), :func:`format_value` (scaled, with the unit), :func:`format_stat`
(a mean with its 95% confidence interval) and :func:`format_interval`.

Views
-----
``summary``
    Summarised over the runs in ``Result.summary`` (and ``result.<attr>``).
``display``
    Rows of the Result's own text and HTML display.
``compare``
    Columns of :func:`llem.compare`'s table.
``sweep``
    Columns of a sweep's summary over cycles.
``report``
    The report's key figures.
``runs``
    The report's table of runs (one row per measured run).
``csv``
    Columns of the CSV report and ``Result.to_dataframe()`` (raw values, SI units).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

from llem.errors import unknown_name

#: Where a figure can appear (see the module's docstring).
VIEWS: tuple[str, ...] = ("summary", "display", "compare", "sweep", "report", "runs", "csv")

_ALL = frozenset(VIEWS)


@dataclass(frozen=True)
class Figure:
    """One reported number: how it is named, scaled and written, and where it is shown.

    Attributes
    ----------
    attr : str
        Attribute of a run (:class:`~llem.results.RunMeasurement`) holding the value in SI
        units; also the key of ``Result.summary``.
    label : str
        The name shown for it, the same in every view.
    unit : str
        The unit it is shown in, after ``scale`` (``""`` for a count).
    scale : float
        Shown value = stored value x ``scale`` (``1e3`` for seconds shown in ms).
    digits : int
        Significant digits of the shown value.
    meaning : str
        One line: what the number is (the report's "what it is" column).
    views : frozenset of str
        Where it appears (:data:`VIEWS`).
    energy : bool
        An energy figure: written with its method (``measured`` / ``sampled`` /
        ``ESTIMATED``), and not shown at all when nothing was measured.
    optional : bool
        Left out of a display when it has no value (``above idle`` without a baseline).
    ci : bool
        Show the 95% confidence interval after the mean (False for counts fixed by the
        prompts, such as the output tokens of a run).
    part_of : str or None
        Another figure's ``attr`` this one is a part of; the display adds the share.
    source : str or None
        Attribute of a run naming where the value came from, shown after it
        (``memory_source``: ``process RSS peak, sampled``).
    unit_words : str
        The unit spelled out for a chart's axis title (default: ``unit``).
    """

    attr: str
    label: str
    unit: str = ""
    scale: float = 1.0
    digits: int = 4
    meaning: str = ""
    views: frozenset[str] = _ALL
    energy: bool = False
    optional: bool = False
    ci: bool = True
    part_of: str | None = None
    source: str | None = None
    unit_words: str = ""

    @property
    def heading(self) -> str:
        """``label (unit)``: a column heading."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def axis_title(self, note: str = "") -> str:
        """``label (unit spelled out[, note])``: a chart axis title (``note``: ``estimated``)."""
        inside = ", ".join(x for x in (self.unit_words or self.unit, note) if x)
        return f"{self.label} ({inside})" if inside else self.label

    def display(self, value: float | None) -> float | None:
        """``value`` in the unit shown (None stays None)."""
        return None if value is None else value * self.scale

    def __post_init__(self) -> None:
        for v in self.views:
            if v not in VIEWS:
                raise unknown_name(f"view of figure {self.attr!r}", v, VIEWS)

    def shown_in(self, view: str) -> bool:
        """True when the figure appears in ``view``."""
        return view in self.views


def _v(*names: str) -> frozenset[str]:
    return frozenset(names)


_RUNS = ("summary", "runs", "csv")

#: Every reported figure, in the order the displays list them.
FIGURES: tuple[Figure, ...] = (
    Figure("energy_per_token_j", "energy per output token", "mJ", 1e3,
           meaning="energy of a whole run divided by the tokens it generated", energy=True),
    Figure("dynamic_energy_per_token_j", "energy per output token above idle", "mJ", 1e3,
           meaning="the same after subtracting idle power x run time", energy=True, optional=True,
           views=_v("summary", "display", "report", "csv")),
    Figure("energy_per_request_j", "energy per request", "J",
           meaning="energy of a run divided by its prompts", energy=True,
           views=_v("summary", "display", "report", "csv")),
    Figure("dynamic_energy_per_request_j", "energy per request above idle", "J",
           meaning="the same after subtracting idle power x run time", energy=True, optional=True,
           views=_v("summary")),
    Figure("energy_j", "energy per run", "J",
           meaning="one pass over every prompt, all devices read", energy=True,
           views=_v("summary", "report", "runs", "csv")),
    Figure("dynamic_energy_j", "energy per run above idle", "J",
           meaning="the same after subtracting idle power x run time", energy=True, optional=True,
           views=_v("summary", "csv")),
    Figure("mean_power_w", "mean power", "W", meaning="energy per run / run time", energy=True,
           views=_v("summary", "report")),
    Figure("prefill_energy_j", "prefill energy per run", "J", digits=3,
           meaning="energy from each batch's start to its first token", energy=True,
           part_of="energy_j", views=_v("summary", "display", "report", "runs", "csv")),
    Figure("decode_energy_j", "decode energy per run", "J", digits=3,
           meaning="energy from each batch's first token to its last", energy=True,
           part_of="energy_j", views=_v("summary", "display", "report", "runs", "csv")),
    Figure("carbon_g", "carbon per run", "g CO2e", meaning="energy x grid carbon intensity",
           optional=True, source="carbon_source", views=_v("summary", "report")),
    Figure("tokens_per_s", "throughput", "tok/s", unit_words="output tokens/s",
           meaning="output tokens per second of run time"),
    Figure("requests_per_s", "request rate", "req/s", meaning="prompts answered per second",
           views=_v("summary", "display", "report", "csv")),
    Figure("latency_p50_s", "request latency p50", "ms", 1e3,
           meaning="median time from a batch's start to a request's last token", views=_v("summary")),
    Figure("ttft_p50_s", "TTFT p50", "ms", 1e3,
           meaning="time to first token, from a batch's start: the median over a run's requests"),
    Figure("ttft_p90_s", "TTFT p90", "ms", 1e3, meaning="the 90th percentile of the same",
           views=_v("summary", "display", "report", "csv")),
    Figure("itl_p50_s", "ITL p50", "ms", 1e3,
           meaning="inter-token latency, the time between consecutive tokens: the median"),
    Figure("itl_p90_s", "ITL p90", "ms", 1e3, meaning="the 90th percentile of the same",
           views=_v("summary", "display", "report", "csv")),
    Figure("peak_memory_mib", "peak memory", "MiB", source="memory_source",
           meaning="highest memory in use while measuring, of the memory the model sits in (the source "
                   "says which: process RSS, torch allocator over the model's GPUs, or NVML per GPU)"),
    Figure("run_peak_memory_mib", "run's own peak memory", "MiB", source="memory_source", optional=True,
           meaning="the same peak minus what was in use when the run started (weights, the CUDA "
                   "context and what earlier notebook cells left are not in it)",
           views=_v("summary", "display", "report", "runs", "csv")),
    Figure("duration_s", "run duration", "s", meaning="wall time of one pass over the prompts",
           views=_v(*_RUNS)),
    Figure("prefill_s", "prefill time", "s", meaning="time from batch starts to first tokens, summed",
           views=_v("summary", "csv")),
    Figure("decode_s", "decode time", "s", meaning="time from first to last tokens, summed",
           views=_v("summary", "csv")),
    Figure("num_requests", "requests per run", meaning="prompts in one pass", views=_v("runs", "csv")),
    Figure("input_tokens", "input tokens per run", meaning="prompt tokens, padding excluded",
           views=_v("csv")),
    Figure("output_tokens", "output tokens per run", digits=6, ci=False,
           meaning="tokens generated in one pass over the prompts", views=_v("summary", "report", *_RUNS)),
    Figure("padding_tokens", "padding tokens per run", meaning="pad tokens added to the prompts",
           views=_v("csv")),
    Figure("padding_fraction", "padding", "% of prompt tokens", 100.0, digits=3, ci=False,
           meaning="share of the prompt tokens fed to the model that were padding",
           views=_v("summary", "display")),
    Figure("num_batches", "batches per run", meaning="batches in one pass", views=_v("csv")),
    Figure("flops_estimate", "FLOPs (estimate)", "GFLOP", 1e-9,
           meaning="2 x parameters x (input + output tokens)", views=_v("summary", "csv")),
)

_BY_ATTR: dict[str, Figure] = {f.attr: f for f in FIGURES}


def figure(attr: str) -> Figure:
    """The figure whose attribute is ``attr``; an unknown name lists the known ones."""
    try:
        return _BY_ATTR[attr]
    except KeyError:
        raise unknown_name("figure", attr, _BY_ATTR) from None


def figures_for(view: str) -> tuple[Figure, ...]:
    """The figures shown in ``view`` (one of :data:`VIEWS`), in table order."""
    if view not in VIEWS:
        raise unknown_name("figure view", view, VIEWS)
    return tuple(f for f in FIGURES if view in f.views)


def attrs(view: str) -> tuple[str, ...]:
    """The attributes of :func:`figures` ``(view)``."""
    return tuple(f.attr for f in figures_for(view))


# ----------------------------------------------------------------------- formatting
def format_number(x: float | None, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits; whole numbers past that with thousands commas.

    ``None``, NaN and infinity are ``n/a``.

    >>> format_number(0.0123456), format_number(12345.6), format_number(None)
    ('0.01235', '12,346', 'n/a')
    """
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def _with_unit(text: str, unit: str) -> str:
    if not unit or text == "n/a":
        return text
    return f"{text}{unit}" if unit.startswith("%") else f"{text} {unit}"


def format_value(x: float | None, fig: Figure | str, *, unit: bool = True) -> str:
    """One value of ``fig`` (a Figure or its attribute) as shown: scaled, with its unit.

    >>> format_value(0.0123, "ttft_p50_s")
    '12.3 ms'
    """
    f = fig if isinstance(fig, Figure) else figure(fig)
    text = format_number(f.display(x), f.digits)
    return _with_unit(text, f.unit) if unit else text


def format_stat(stat: Any, fig: Figure | str) -> str:
    """A :class:`~llem.results.Stat` of ``fig``: ``"12.3 ms ± 0.4 (95% CI, n=3)"``, or ``"n/a"``."""
    f = fig if isinstance(fig, Figure) else figure(fig)
    if stat is None or getattr(stat, "mean", None) is None:
        return "n/a"
    return format_mean(stat.mean, stat.ci95_half if f.ci else None, stat.n, unit=f.unit,
                       scale=f.scale, digits=f.digits)


def format_mean(mean: float | None, ci95_half: float | None, n: int, *, unit: str = "",
                scale: float = 1.0, digits: int = 4) -> str:
    """A mean with its 95% CI half-width: ``"12.3 ms ± 0.4 (95% CI, n=3)"`` (``n/a`` for None)."""
    if mean is None:
        return "n/a"
    text = _with_unit(format_number(mean * scale, digits), unit)
    if ci95_half is not None:
        text += f" ± {format_number(ci95_half * scale, 2)} (95% CI, n={n})"
    return text


def format_interval(interval: tuple[float, float] | None, fig: Figure | str, digits: int = 3) -> str:
    """A ``(low, high)`` interval of ``fig``'s values, shown scaled: ``"[11.9, 12.7]"``; ``""`` for None."""
    if interval is None:
        return ""
    f = fig if isinstance(fig, Figure) else figure(fig)
    lo, hi = (format_number(f.display(v), digits) for v in interval)
    return f"[{lo}, {hi}]"


def text_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a plain-text table: columns padded to their widest cell, two spaces apart."""
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]


def html_table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML ``<table>`` of text cells (escaped), with a heading row."""
    e = html.escape
    th = "".join(f"<th>{e(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    c = f" class='{e(cls)}'" if cls else ""
    return f"<table{c}><tr>{th}</tr>{trs}</table>"


# ------------------------------------------------------------ the first version's names
#: attribute -> (label, unit, scale) of the figures summarised over runs; read-only view
#: of :data:`FIGURES` for code written against the first version.
SUMMARY_FIGURES: dict[str, tuple[str, str, float]] = {
    f.attr: (f.label, f.unit, f.scale) for f in figures_for("summary")}

#: The figures :func:`llem.compare` shows (attributes), from :data:`FIGURES`.
COMPARE_FIGURES: tuple[str, ...] = attrs("compare")


__all__ = [
    "COMPARE_FIGURES", "FIGURES", "SUMMARY_FIGURES", "VIEWS", "Figure", "attrs", "figure", "figures_for",
    "format_interval", "format_mean", "format_number", "format_stat", "format_value", "html_table",
    "text_table",
]
