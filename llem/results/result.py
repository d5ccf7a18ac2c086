"""What a run produces: :class:`Result`, its runs (:class:`RunMeasurement`) and requests.

A :class:`Result` is frozen plain data with units in its field names. It keeps every
measured run (each with its energy :class:`~llem.energy.measurement.Measurement` and its
per-request records) and derives a summary across runs: the mean with a 95% confidence
interval from Student's t distribution (:class:`~llem.results.stats.Stat`) of every figure
the figure table (:mod:`llem.results.figures`) lists for the ``summary`` view.

``Result.to_dict()`` / ``Result.from_dict()`` round-trip through JSON without loss;
``Result.save(folder)`` writes one JSON file atomically (:func:`llem._files.write_atomic`).

Rich display stays light: HTML built from strings, no plotting library is imported
here, and every display method falls back to text instead of raising. Its rows, labels and
number formats come from the figure table, as do those of every other display.
"""

from __future__ import annotations

import html
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from llem._files import write_atomic
from llem._input import build_each, build_within, check_fields
from llem.energy.measurement import METHODS, NO_METHOD, Measurement, weakest_method
from llem.exporter_registry import exporter_for
from llem.results.figures import Figure, figure, figures_for, format_stat
from llem.results.flags import Flag, flags_html, flags_text
from llem.results.palette import method_word
from llem.results.rows import frame, result_rows
from llem.results.stats import Stat, is_finite_number, percentile
from llem.timing import TokenTimes

#: Version tag written by :meth:`Result.to_dict`.
SCHEMA = "llem.result/1"

#: Attributes summarised over the runs (``Result.summary``, ``result.<attr>``).
_SUMMARY: tuple[str, ...] = tuple(f.attr for f in figures_for("summary"))


@dataclass(frozen=True)
class RequestRecord(TokenTimes):
    """One prompt's outcome within one run.

    Times are seconds; ``token_times_s`` are from the start of the request's batch, and
    ``batch_start_s`` places that batch in the run (seconds since the run started).
    """

    prompt_id: str
    prompt: str
    text: str
    input_tokens: int
    output_tokens: int
    batch: int
    batch_start_s: float
    token_times_s: tuple[float, ...] = ()
    truncated: bool = False
    source: str = ""

    @property
    def latency_s(self) -> float | None:
        """Time from the batch start to the request's last token, s."""
        return self.token_times_s[-1] if self.token_times_s else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["token_times_s"] = list(self.token_times_s)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RequestRecord:
        """Rebuild from :meth:`to_dict` output (:class:`~llem._input.FieldError` for a wrong type)."""
        check_fields(cls, d)
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["token_times_s"] = tuple(d.get("token_times_s") or ())
        return cls(**kw)


@dataclass(frozen=True)
class RunMeasurement:
    """One measured run (a pass over all prompts) and what it cost.

    Energy figures come from ``measurement`` (None when no meter was used); the
    ``*_per_token_j`` figures divide by output tokens. ``dynamic_*`` figures subtract
    the idle baseline and are None without one. ``peak_memory_mib`` is the highest memory
    in use while measuring, of the memory the model sits in (``memory_source`` says which);
    ``run_peak_memory_mib`` is that peak minus what was in use when the run started.
    ``flops_estimate`` is
    ``2 * num_parameters * (input_tokens + output_tokens)``: the usual approximation of a
    decoder's forward pass (a multiply and an add per parameter per token), ignoring
    attention over the context and the work spent on padding. ``prefill_s``/``decode_s``
    are None when a batch showed no first token (vLLM beam search); ``prefill_energy_j``
    and ``decode_energy_j`` are None too when a batch had no prefill/decode split (an
    engine overlapped them: the result's notes say so).
    """

    index: int
    duration_s: float
    prefill_s: float | None
    decode_s: float | None
    num_requests: int
    input_tokens: int
    output_tokens: int
    padding_tokens: int
    decode_waste_tokens: int
    num_batches: int
    tokens_per_s: float | None
    requests_per_s: float | None
    energy_j: float | None
    dynamic_energy_j: float | None
    prefill_energy_j: float | None
    decode_energy_j: float | None
    energy_per_token_j: float | None
    dynamic_energy_per_token_j: float | None
    energy_per_request_j: float | None
    dynamic_energy_per_request_j: float | None
    peak_memory_mib: float | None
    memory_source: str
    flops_estimate: float | None
    start_s: float = 0.0
    requests: tuple[RequestRecord, ...] = ()
    measurement: Any = None
    complete: bool = True
    run_peak_memory_mib: float | None = None

    @property
    def padding_fraction(self) -> float | None:
        """Share of the prompt tokens fed to the model that were padding."""
        total = self.padding_tokens + self.input_tokens
        return self.padding_tokens / total if total else None

    @property
    def ttfts_s(self) -> list[float]:
        """Time to first token of every request that produced one, s."""
        return [r.ttft_s for r in self.requests if r.ttft_s is not None]

    @property
    def itls_s(self) -> list[float]:
        """Every inter-token latency of every request, s."""
        return [x for r in self.requests for x in r.itl_s]

    @property
    def ttft_p50_s(self) -> float | None:
        """Median time to first token, s."""
        return percentile(self.ttfts_s, 50)

    @property
    def ttft_p90_s(self) -> float | None:
        """90th percentile of time to first token, s."""
        return percentile(self.ttfts_s, 90)

    @property
    def itl_p50_s(self) -> float | None:
        """Median inter-token latency, s."""
        return percentile(self.itls_s, 50)

    @property
    def itl_p90_s(self) -> float | None:
        """90th percentile of inter-token latency, s."""
        return percentile(self.itls_s, 90)

    @property
    def latency_p50_s(self) -> float | None:
        """Median time from a request's batch start to its last token, s."""
        return percentile([r.latency_s for r in self.requests if r.latency_s is not None], 50)

    @property
    def mean_power_w(self) -> float | None:
        """Mean power over the run (all devices read), W; None without a meter."""
        return getattr(self.measurement, "mean_power_w", None)

    @property
    def carbon_g(self) -> float | None:
        """Carbon of the run, g CO2e, when a grid intensity was known."""
        return getattr(self.measurement, "carbon_g", None)

    @property
    def carbon_source(self) -> str:
        """Where the grid carbon intensity came from."""
        return str(getattr(self.measurement, "carbon_source", None) or "")

    @property
    def method(self) -> str:
        """How the energy was obtained (``measured``/``sampled``/``estimated``/``none``)."""
        return getattr(self.measurement, "method", None) or NO_METHOD

    @property
    def texts(self) -> list[str]:
        """Generated text of each request."""
        return [r.text for r in self.requests]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "requests":
                v = [r.to_dict() for r in v]
            elif f.name == "measurement":
                v = v.to_dict() if v is not None else None
            d[f.name] = v
        d["derived"] = {k: getattr(self, k) for k in (
            "ttft_p50_s", "ttft_p90_s", "itl_p50_s", "itl_p90_s", "padding_fraction")}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunMeasurement:
        """Rebuild from :meth:`to_dict` output (:class:`~llem._input.FieldError` for a wrong type)."""
        check_fields(cls, d)
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["requests"] = tuple(build_each(RequestRecord.from_dict, d.get("requests") or (), "requests"))
        m = d.get("measurement")
        if m is not None:
            kw["measurement"] = build_within("measurement", Measurement.from_dict, m)
        return cls(**kw)


@dataclass(frozen=True, eq=True)
class Result:
    """Everything one experiment produced.

    Attributes
    ----------
    model, backend : str
        What ran.
    runs : tuple of RunMeasurement
        The measured runs, in order (warmup passes are not here).
    config : dict
        The settings as the user's config held them (``ExperimentConfig.to_dict()``).
    effective_config : dict
        ``section.field`` -> the value the backend actually used (defaults resolved).
    skipped : dict
        ``section.field`` -> why that setting had no effect.
    environment : dict
        Versions, hardware, tier, meter and config hash.
    complete : bool
        False when the run was interrupted or failed part way; the runs here are then
        what was measured before it stopped (the last one possibly partial).
    notes : tuple of str
        Things a reader should know (choices made on the user's behalf, interruptions).
    warmup : dict
        Warmup passes, their latencies, and whether an adaptive warmup converged.
    config_hash : str
        Short hash of the full config.
    created_at : str
        ISO 8601 UTC time the run started.
    load_s : float
        Time to load the model, s.
    num_parameters : int or None
        Model parameters (logical count for quantized weights).
    thermal : Measurement or None
        The power record of the thermal wait before measuring, when there was one.
    name : str or None
        A label for comparisons.
    flags : tuple of Flag
        Validity flags (:mod:`llem.results.flags`): what to doubt in these figures, each
        with its id, severity (``warning`` / ``info``), message and value. A result from
        an llem that did not check them has none.
    """

    model: str
    backend: str
    runs: tuple[RunMeasurement, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    effective_config: Mapping[str, Any] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    complete: bool = True
    notes: tuple[str, ...] = ()
    warmup: Mapping[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    created_at: str = ""
    load_s: float = 0.0
    num_parameters: int | None = None
    thermal: Any = None
    name: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    flags: tuple[Flag, ...] = ()

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    # ------------------------------------------------------------------ summary
    @cached_property
    def summary(self) -> dict[str, Stat]:
        """Mean and 95% CI over the runs of each figure of the ``summary`` view."""
        return {k: Stat.of(getattr(r, k) for r in self.runs).of_figure(figure(k)) for k in _SUMMARY}

    def __getattr__(self, name: str) -> Any:
        # result.tokens_per_s etc. -> the Stat over runs
        if name in _SUMMARY:
            return self.summary[name]
        raise AttributeError(f"'Result' object has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        """The attributes, and the summary figures (``energy_per_token_j``...) for tab completion."""
        return sorted({*super().__dir__(), *_SUMMARY})

    @property
    def method(self) -> str:
        """Weakest energy method over the runs (``none`` when no energy was read)."""
        return weakest_method(r.method for r in self.runs if r.method in METHODS)

    @property
    def energy_source(self) -> str:
        """Where the energy figures came from (the first run's measurement source)."""
        for r in self.runs:
            src = getattr(r.measurement, "source", None)
            if src:
                return str(src)
        return ""

    @property
    def warnings(self) -> tuple[Flag, ...]:
        """The flags of severity ``warning``."""
        return tuple(f for f in self.flags if f.warning)

    @property
    def texts(self) -> list[str]:
        """Generated texts of the last measured run."""
        return self.runs[-1].texts if self.runs else []

    @property
    def requests(self) -> tuple[RequestRecord, ...]:
        """Requests of the last measured run."""
        return self.runs[-1].requests if self.runs else ()

    # ------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; :meth:`from_dict` rebuilds an equal Result."""
        d: dict[str, Any] = {"schema": SCHEMA}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "runs":
                v = [r.to_dict() for r in v]
            elif f.name == "thermal":
                v = v.to_dict() if v is not None else None
            elif f.name == "notes":
                v = list(v)
            elif f.name == "flags":
                v = [x.to_dict() for x in v]
            elif isinstance(v, Mapping):
                v = plain(v)
            d[f.name] = v
        d["summary"] = {k: s.to_dict() for k, s in self.summary.items()}
        d["method"] = self.method
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        """Rebuild a Result from :meth:`to_dict` output (derived figures are recomputed)."""
        schema = d.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise ValueError(f"Cannot read a result with schema {schema!r}; this llem reads {SCHEMA!r}.")
        check_fields(cls, d)
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["runs"] = tuple(build_each(RunMeasurement.from_dict, d.get("runs") or (), "runs"))
        kw["notes"] = tuple(d.get("notes") or ())
        kw["flags"] = tuple(build_each(Flag.from_dict, d.get("flags") or (), "flags"))
        if d.get("thermal") is not None:
            kw["thermal"] = build_within("thermal", Measurement.from_dict, d["thermal"])
        for k in ("config", "effective_config", "skipped", "environment", "warmup"):
            kw[k] = dict(d.get(k) or {})
        return cls(**kw)

    def to_json(self, indent: int | None = 1) -> str:
        """The :meth:`to_dict` form as JSON text (NaN and infinity are not written)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, folder: str | os.PathLike[str] | None = None) -> Path:
        """Write this result as one JSON file in ``folder``, atomically; return its path.

        ``folder`` defaults to the config's ``output_dir`` (``llem-results``). The file
        is written to a temporary name in the same folder, flushed, then renamed with
        ``os.replace``, so a reader never sees half a file.
        """
        folder = Path(folder if folder is not None else self.config.get("output_dir")
                      or "llem-results")
        folder.mkdir(parents=True, exist_ok=True)
        stamp = (self.created_at or "").replace(":", "").replace("-", "")[:15] or "result"
        model = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)[-40:]
        path = folder / f"{stamp}-{model}-{self.config_hash or 'nohash'}-{self.id}.json"
        return write_atomic(path, self.to_json(), tmp_suffix=".json")

    def export(self, path: str | os.PathLike[str], *, format: str | None = None, **options: Any) -> Path:
        """Write a report of this result; the suffix picks the format (as :func:`llem.report.export`).

        The exporter is found in the exporter registry (``llem.exporters`` entry points).
        """
        exporter, p = exporter_for(path, format)
        return Path(exporter.export([self], p, **options))

    def to_dataframe(self) -> Any:
        """A pandas DataFrame with a row per measured run (needs pandas).

        The columns are those of :func:`llem.results.rows.result_rows`: the run's identity,
        every config setting (``config.pytorch.batch_size``), every figure of the figure
        table's ``csv`` view under its attribute name, whose suffix is the unit
        (``energy_per_token_j``, ``ttft_p50_s``; raw SI values), then the energy method and
        completeness. ``df.attrs["units"]`` maps each figure column to its label and unit.
        For several results: ``llem.to_dataframe(results)``.
        """
        return frame(result_rows(self), "Result.to_dataframe()")

    # ------------------------------------------------------------------ display
    def stat(self, attr: str) -> Stat:
        """The :class:`Stat` over the runs of figure ``attr`` (any run attribute)."""
        if attr in _SUMMARY:
            return self.summary[attr]
        return Stat.of(getattr(r, attr) for r in self.runs)

    def figure_rows(self, view: str = "display") -> list[tuple[Figure, str]]:
        """``(figure, value)`` of each figure of ``view`` (``display`` or ``report``), as shown.

        Each value is the mean over the runs with its 95% confidence interval, from the
        figure table's unit, scale and digits. An energy figure carries its method
        (``ESTIMATED`` for an estimate); without a meter only the first energy figure is
        shown, saying so. A part (prefill energy) carries its share of the whole; a figure
        with a source (peak memory) names it.
        """
        method = self.method
        rows: list[tuple[Figure, str]] = []
        said_none = False
        for f in figures_for(view):
            if f.energy and method == NO_METHOD:
                if not said_none:
                    rows.append((f, "not measured (meter='none')"))
                    said_none = True
                continue
            st = self.stat(f.attr)
            if f.optional and st.mean is None:
                continue
            text = format_stat(st, f)
            if f.part_of and st.mean is not None:
                whole = self.stat(f.part_of).mean
                if whole:
                    text += f" ({100 * st.mean / whole:.0f}% of {figure(f.part_of).label})"
            if f.energy:
                text += f" — {method_word(method)}"
            if f.source:
                src = next((str(getattr(r, f.source)) for r in self.runs if getattr(r, f.source, "")), "")
                text += f" ({src})" if src else ""
            rows.append((f, text))
        return rows

    def summary_rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` rows of the headline figures, as shown in the display."""
        rows = [(f.label, text) for f, text in self.figure_rows("display")]
        if self.method != NO_METHOD:
            src = self.energy_source
            rows.append(("energy method", method_word(self.method) + (f" ({src})" if src else "")))
        return rows

    def _headline(self) -> str:
        env = self.environment
        where = env.get("device") or env.get("tier") or ""
        state = "complete" if self.complete else "INCOMPLETE"
        n = len(self.runs)
        profile = self.config.get("profile")
        tag = " — quick profile, not for publication" if profile == "quick" else ""
        return (f"llem result: {self.model} on {self.backend}"
                + (f" ({where})" if where else "") + f", {n} run{'s' if n != 1 else ''}, "
                + state + tag)

    def __repr__(self) -> str:
        try:
            return self._text()
        except Exception as exc:  # noqa: BLE001 - display never raises
            return f"<llem Result {self.model!r} ({len(self.runs)} runs); display failed: {exc!r}>"

    def _text(self) -> str:
        lines = [self._headline(), *flags_text(self.flags)]
        rows = self.summary_rows()
        width = max((len(label) for label, _ in rows), default=0)
        lines.extend(f"  {label:<{width}}  {value}" for label, value in rows)
        if self.skipped:
            lines.append("  skipped:")
            lines.extend(f"    {k}: {v}" for k, v in self.skipped.items())
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        try:
            return self._html()
        except Exception as exc:  # noqa: BLE001
            return f"<pre>{html.escape(repr(self))}\n(HTML display failed: {html.escape(repr(exc))})</pre>"

    def _html(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{e(k)}</th><td>{e(v)}</td></tr>"
            for k, v in self.summary_rows()
        )
        parts = [f"<div class='llem-result'><b>{e(self._headline())}</b>", flags_html(self.flags),
                 f"<table>{rows}</table>"]
        if self.method == "estimated":
            parts.append("<p style='color:var(--jp-warn-color0, #a60)'>Energy is <b>estimated</b> "
                         "from a model, not read from a hardware counter.</p>")
        if self.skipped:
            items = "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in self.skipped.items())
            parts.append(f"<details><summary>skipped settings ({len(self.skipped)})</summary>"
                         f"<ul>{items}</ul></details>")
        if self.notes:
            items = "".join(f"<li>{e(n)}</li>" for n in self.notes)
            parts.append(f"<details><summary>notes ({len(self.notes)})</summary><ul>{items}</ul>"
                         "</details>")
        texts = self.texts[:3]
        if texts:
            items = "".join(f"<li><pre style='white-space:pre-wrap'>{e(t[:500])}</pre></li>"
                            for t in texts)
            parts.append(f"<details><summary>generated text (first {len(texts)})</summary>"
                         f"<ol>{items}</ol></details>")
        parts.append("</div>")
        return "".join(parts)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        bundle = {"text/plain": repr(self)}
        try:
            bundle["text/html"] = self._repr_html_()
        except Exception:  # noqa: BLE001
            pass
        return bundle


class ResultList(list):
    """A list of results; ``errors`` maps each file that could not be read to why."""

    def __init__(self, items: Iterable[Result] = (), errors: Mapping[str, str] | None = None):
        super().__init__(items)
        self.errors: dict[str, str] = dict(errors or {})

    def to_dataframe(self) -> Any:
        """A pandas DataFrame with a row per measured run of every result (as :meth:`Result.to_dataframe`)."""
        return frame([row for r in self for row in result_rows(r)], "ResultList.to_dataframe()")


def plain(v: Any) -> Any:
    """A JSON-safe copy: tuples to lists, non-finite floats to None, other objects to str."""
    if isinstance(v, Mapping):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [plain(x) for x in v]
    if isinstance(v, float):
        return v if is_finite_number(v) else None
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def now_iso() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["SCHEMA", "RequestRecord", "Result", "ResultList", "RunMeasurement", "now_iso", "plain"]
