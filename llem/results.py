"""What a run produces: :class:`Result`, its runs and requests, and a small results store.

A :class:`Result` is frozen plain data with units in its field names. It keeps every
measured run (:class:`RunMeasurement`, each with its energy
:class:`~llem.energy.measurement.Measurement` and its per-request records) and derives a
summary across runs: the mean with a 95% confidence interval from Student's t
distribution (:class:`Stat`).

``Result.to_dict()`` / ``Result.from_dict()`` round-trip through JSON without loss;
``Result.save(folder)`` writes one JSON file atomically (a temporary file, then
``os.replace``); :func:`load_result` reads one file and :func:`load_results` a folder,
where a corrupt file is reported and skipped, never stopping the others from loading.
:func:`compare` lines results up by the settings that differ between them.

Rich display stays light: HTML built from strings, no plotting library is imported
here, and every display method falls back to text instead of raising.
"""

from __future__ import annotations

import html
import json
import math
import os
import statistics
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from llem._files import write_atomic
from llem.backends.base import TokenTimes
from llem.errors import LlemError

#: Version tag written by :meth:`Result.to_dict`.
SCHEMA = "llem.result/1"

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

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        """Summarise ``values`` (None entries are left out)."""
        vals = tuple(float(v) for v in values if v is not None and not _isnan(v))
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
        """``"12.3 ms ± 0.4 (95% CI, n=3)"``, or ``"n/a"``."""
        if self.mean is None:
            return "n/a"
        u = f" {unit}" if unit else ""
        text = f"{_g(self.mean * scale, digits)}{u}"
        if self.ci95_half is not None:
            text += f" ± {_g(self.ci95_half * scale, 2)} (95% CI, n={self.n})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (derived; not read back by :meth:`Result.from_dict`)."""
        ci = self.ci95
        return {"mean": self.mean, "std": self.std, "n": self.n, "ci95_half": self.ci95_half,
                "ci95_low": ci[0] if ci else None, "ci95_high": ci[1] if ci else None}


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
        """Rebuild from :meth:`to_dict` output."""
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["token_times_s"] = tuple(d.get("token_times_s") or ())
        return cls(**kw)


@dataclass(frozen=True)
class RunMeasurement:
    """One measured run (a pass over all prompts) and what it cost.

    Energy figures come from ``measurement`` (None when no meter was used); the
    ``*_per_token_j`` figures divide by output tokens. ``dynamic_*`` figures subtract
    the idle baseline and are None without one. ``flops_estimate`` is
    ``2 * num_parameters * (input_tokens + output_tokens)``: the usual approximation of a
    decoder's forward pass (a multiply and an add per parameter per token), ignoring
    attention over the context and the work spent on padding.
    """

    index: int
    duration_s: float
    prefill_s: float
    decode_s: float
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
    def method(self) -> str:
        """How the energy was obtained (``measured``/``sampled``/``estimated``/``none``)."""
        return getattr(self.measurement, "method", None) or "none"

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
        """Rebuild from :meth:`to_dict` output."""
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["requests"] = tuple(RequestRecord.from_dict(r) for r in d.get("requests") or ())
        m = d.get("measurement")
        if m is not None:
            from llem.energy.measurement import Measurement

            kw["measurement"] = Measurement.from_dict(m)
        return cls(**kw)


#: Figures summarised across runs: attribute -> (label, unit, scale for display)
SUMMARY_FIGURES: dict[str, tuple[str, str, float]] = {
    "tokens_per_s": ("throughput", "tok/s", 1.0),
    "requests_per_s": ("requests", "req/s", 1.0),
    "ttft_p50_s": ("TTFT p50", "ms", 1e3),
    "ttft_p90_s": ("TTFT p90", "ms", 1e3),
    "itl_p50_s": ("ITL p50", "ms", 1e3),
    "itl_p90_s": ("ITL p90", "ms", 1e3),
    "duration_s": ("duration", "s", 1.0),
    "prefill_s": ("prefill time", "s", 1.0),
    "decode_s": ("decode time", "s", 1.0),
    "energy_j": ("energy", "J", 1.0),
    "dynamic_energy_j": ("energy above idle", "J", 1.0),
    "prefill_energy_j": ("prefill energy", "J", 1.0),
    "decode_energy_j": ("decode energy", "J", 1.0),
    "energy_per_token_j": ("energy/token", "mJ", 1e3),
    "dynamic_energy_per_token_j": ("energy/token above idle", "mJ", 1e3),
    "energy_per_request_j": ("energy/request", "J", 1.0),
    "dynamic_energy_per_request_j": ("energy/request above idle", "J", 1.0),
    "peak_memory_mib": ("peak memory", "MiB", 1.0),
    "output_tokens": ("output tokens", "", 1.0),
    "flops_estimate": ("FLOPs (estimate)", "GFLOP", 1e-9),
}


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

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    # ------------------------------------------------------------------ summary
    @cached_property
    def summary(self) -> dict[str, Stat]:
        """Mean and 95% CI over the runs of each figure in :data:`SUMMARY_FIGURES`."""
        return {k: Stat.of(getattr(r, k) for r in self.runs) for k in SUMMARY_FIGURES}

    def __getattr__(self, name: str) -> Any:
        # result.tokens_per_s etc. -> the Stat over runs
        if name in SUMMARY_FIGURES:
            return self.summary[name]
        raise AttributeError(f"'Result' object has no attribute {name!r}")

    @property
    def method(self) -> str:
        """Weakest energy method over the runs (``none`` when no energy was read)."""
        order = ("measured", "sampled", "estimated")
        seen = [r.method for r in self.runs if r.method in order]
        return max(seen, key=order.index) if seen else "none"

    @property
    def energy_source(self) -> str:
        """Where the energy figures came from (the first run's measurement source)."""
        for r in self.runs:
            src = getattr(r.measurement, "source", None)
            if src:
                return str(src)
        return ""

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
            elif isinstance(v, Mapping):
                v = _plain(v)
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
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["runs"] = tuple(RunMeasurement.from_dict(r) for r in d.get("runs") or ())
        kw["notes"] = tuple(d.get("notes") or ())
        if d.get("thermal") is not None:
            from llem.energy.measurement import Measurement

            kw["thermal"] = Measurement.from_dict(d["thermal"])
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

    def export(self, path: str | os.PathLike[str], **kw: Any) -> Path:
        """Write a report of this result; the suffix picks the format (see :func:`llem.report.export`)."""
        from llem.report import export

        return export(self, path, **kw)

    # ------------------------------------------------------------------ display
    def summary_rows(self) -> list[tuple[str, str]]:
        """``(label, value)`` rows of the headline figures, as shown in the display."""
        s = self.summary
        rows = [("throughput", s["tokens_per_s"].format("tok/s")),
                ("requests", s["requests_per_s"].format("req/s"))]
        rows.append(("TTFT", f"p50 {s['ttft_p50_s'].format('ms', 1e3)}, "
                             f"p90 {s['ttft_p90_s'].format('ms', 1e3)}"))
        rows.append(("ITL", f"p50 {s['itl_p50_s'].format('ms', 1e3)}, "
                            f"p90 {s['itl_p90_s'].format('ms', 1e3)}"))
        method = self.method
        if method == "none":
            rows.append(("energy/token", "not measured (no meter)"))
        else:
            label = {"estimated": "ESTIMATED", "sampled": "sampled", "measured": "measured"}
            src = self.energy_source
            rows.append(("energy/token", f"{s['energy_per_token_j'].format('mJ', 1e3)} — "
                                         f"{label.get(method, method)}"
                                         + (f" ({src})" if src else "")))
            if s["dynamic_energy_per_token_j"].mean is not None:
                rows.append(("  above idle", s["dynamic_energy_per_token_j"].format("mJ", 1e3)))
            rows.append(("energy/request", s["energy_per_request_j"].format("J")))
            pe, de = s["prefill_energy_j"].mean, s["decode_energy_j"].mean
            if pe is not None and de is not None:
                rows.append(("prefill / decode", f"{_g(pe, 3)} J / {_g(de, 3)} J per run"))
        mem_src = self.runs[0].memory_source if self.runs else ""
        rows.append(("peak memory", s["peak_memory_mib"].format("MiB")
                     + (f" ({mem_src})" if mem_src else "")))
        if self.runs:
            pad = [r.padding_fraction for r in self.runs if r.padding_fraction is not None]
            if pad:
                rows.append(("padding", f"{100 * statistics.fmean(pad):.1f}% of prompt tokens"))
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
        lines = [self._headline()]
        for label, value in self.summary_rows():
            lines.append(f"  {label:<17} {value}")
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
        parts = [f"<div class='llem-result'><b>{e(self._headline())}</b>",
                 f"<table>{rows}</table>"]
        if self.method == "estimated":
            parts.append("<p style='color:#a60'>Energy is <b>estimated</b> from a model, not "
                         "read from a hardware counter.</p>")
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


# ---------------------------------------------------------------------- store
class ResultList(list):
    """A list of results; ``errors`` maps each file that could not be read to why."""

    def __init__(self, items: Iterable[Result] = (), errors: Mapping[str, str] | None = None):
        super().__init__(items)
        self.errors: dict[str, str] = dict(errors or {})


class ResultFileError(LlemError, ValueError):
    """A results file could not be read as a llem result."""


def load_result(path: str | os.PathLike[str]) -> Result:
    """Read one result file written by :meth:`Result.save`.

    Raises
    ------
    ResultFileError
        Naming the file and what is wrong with it.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultFileError(f"Result file {str(p)!r} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"Result file {str(p)!r} could not be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultFileError(
            f"Result file {str(p)!r} is not valid JSON (line {exc.lineno}: {exc.msg}); it may "
            "have been cut short or edited."
        ) from None
    if not isinstance(data, dict) or "runs" not in data:
        raise ResultFileError(f"Result file {str(p)!r} does not hold a llem result.")
    try:
        return Result.from_dict(data)
    except Exception as exc:  # noqa: BLE001
        raise ResultFileError(
            f"Result file {str(p)!r} holds a result llem cannot rebuild: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def load_results(folder: str | os.PathLike[str] = "llem-results") -> ResultList:
    """Read every ``*.json`` result in ``folder``, oldest first.

    A file that cannot be read is reported (a warning naming the file and the problem, and
    an entry in the returned list's ``errors``) and skipped; the others still load.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ResultFileError(f"Results folder {str(root)!r} does not exist.")
    results, errors = [], {}
    for p in sorted(root.glob("*.json")):
        if p.name.startswith(".tmp-"):
            continue
        try:
            results.append(load_result(p))
        except ResultFileError as exc:
            errors[str(p)] = str(exc)
            warnings.warn(str(exc), stacklevel=2)
    results.sort(key=lambda r: r.created_at)
    return ResultList(results, errors)


# ------------------------------------------------------------------- compare
def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and k not in ("passthrough", "max_memory", "device_map"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


#: figures shown by :func:`compare`
COMPARE_FIGURES = ("tokens_per_s", "ttft_p50_s", "itl_p50_s", "energy_per_token_j",
                   "peak_memory_mib")


@dataclass(frozen=True)
class Comparison:
    """Results lined up by the settings that differ between them."""

    results: tuple[Result, ...]
    varying: tuple[str, ...]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per result: its label, the differing settings, then mean figures."""
        out = []
        for i, r in enumerate(self.results):
            flat = _flatten(r.config)
            row: dict[str, Any] = {"result": r.name or f"#{i + 1}"}
            for k in self.varying:
                row[k] = flat.get(k)
            for k in COMPARE_FIGURES:
                row[k] = r.summary[k].mean
                row[k + "_ci95"] = r.summary[k].ci95_half
            row["method"] = r.method
            row["complete"] = r.complete
            out.append(row)
        return out

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        from llem.errors import import_optional

        return import_optional("pandas", "data", "Comparison.to_pandas").DataFrame(self.rows())

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        head = ["result", *self.varying] + [SUMMARY_FIGURES[k][0] for k in COMPARE_FIGURES]
        body = []
        for i, r in enumerate(self.results):
            flat = _flatten(r.config)
            cells = [r.name or f"#{i + 1}"] + [str(flat.get(k)) for k in self.varying]
            for k in COMPARE_FIGURES:
                _, unit, scale = SUMMARY_FIGURES[k]
                text = r.summary[k].format(unit, scale)
                if k == "energy_per_token_j" and r.method == "estimated":
                    text += " (estimated)"
                cells.append(text)
            body.append(cells)
        return head, body

    def __repr__(self) -> str:
        try:
            head, body = self._cells()
            widths = [max(len(c) for c in col) for col in zip(head, *body)]
            lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [head, *body]]
            if not self.varying:
                lines.append("(no setting differs between these results)")
            return "\n".join(lines)
        except Exception as exc:  # noqa: BLE001
            return f"<llem Comparison of {len(self.results)} results; display failed: {exc!r}>"

    def _repr_html_(self) -> str:
        try:
            head, body = self._cells()
            e = html.escape
            th = "".join(f"<th>{e(c)}</th>" for c in head)
            trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body)
            return f"<table class='llem-compare'><tr>{th}</tr>{trs}</table>"
        except Exception:  # noqa: BLE001
            return f"<pre>{html.escape(repr(self))}</pre>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


def compare(results: Sequence[Result] | Iterable[Result]) -> Comparison:
    """Line results up by the config settings that differ between them.

    Parameters
    ----------
    results : iterable of Result

    Returns
    -------
    Comparison
        ``rows()`` gives one dict per result (label, differing settings, mean figures with
        their 95% CI half-widths, energy method); it displays as a table.
    """
    res = tuple(results)
    if not res:
        raise ValueError("compare() needs at least one result.")
    flats = [_flatten(r.config) for r in res]
    keys: list[str] = []
    for f in flats:
        keys.extend(k for k in f if k not in keys)
    varying = tuple(k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str)
                                             for f in flats}) > 1)
    return Comparison(res, varying)


# -------------------------------------------------------------------- helpers
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


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and (math.isnan(v) or math.isinf(v))


def _g(x: float, digits: int = 4) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def _plain(v: Any) -> Any:
    """A JSON-safe copy: tuples to lists, non-finite floats to None, other objects to str."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_plain(x) for x in v]
    if isinstance(v, float):
        return None if _isnan(v) else v
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def now_iso() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = [
    "Comparison",
    "RequestRecord",
    "Result",
    "ResultFileError",
    "ResultList",
    "RunMeasurement",
    "Stat",
    "compare",
    "load_result",
    "load_results",
    "percentile",
    "t_critical_95",
]
