"""Validity flags: when a result's figures should not be trusted as they stand.

One :class:`FlagKind` per condition llem checks, in the table :data:`FLAG_KINDS` (its id,
severity, threshold, what fires it and what to do about it), the way the figure table
(:mod:`llem.results.figures`) lists every reported number. :func:`result_flags` checks a
:class:`~llem.results.Result` against every kind and returns the :class:`Flag` records that
fire: ``result.flags``. A flagged result is still a result; its flags say what to doubt.

The checks read what the run kept: the runs' figures (spread across repeats), each
window's :class:`~llem.energy.measurement.Measurement` (samples, duration, the counter's
update period, the idle baseline, the GPU conditions the NVML meter read at the window's
start and end: processes, clock event reasons, temperature, MIG mode), the profile and
warmup, plus what the runner measured around each window: the share of the machine's CPU
time other processes used (:func:`llem.energy.conditions.other_cpu_share`).

``docs/energy.md`` ("Validity flags") lists each flag, its threshold and the fix.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llem import spec
from llem._input import check_fields
from llem.errors import unknown_name
from llem.results.figures import figure

#: How much a flag matters: ``warning`` (the figures may be wrong) or ``info`` (read them
#: knowing this).
SEVERITIES: tuple[str, ...] = ("info", "warning")


@dataclass(frozen=True)
class Flag:
    """One validity flag on a result.

    Attributes
    ----------
    id : str
        The kind's id (``machine-busy``), a row of :data:`FLAG_KINDS`.
    severity : str
        ``warning`` or ``info``.
    message : str
        One line a person understands, with the figure in it.
    value : float or None
        The number behind it (a share 0..1, a count, degrees C, a bit mask), None when the
        flag has no number.
    """

    id: str
    severity: str
    message: str
    value: float | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"Flag {self.id!r}: severity {self.severity!r} is not one of {SEVERITIES}.")

    @property
    def warning(self) -> bool:
        """True for a ``warning``."""
        return self.severity == "warning"

    def __str__(self) -> str:
        return f"{self.severity} {self.id}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"id": self.id, "severity": self.severity, "message": self.message, "value": self.value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Flag:
        """Rebuild from :meth:`to_dict` output (:class:`~llem._input.FieldError` for a wrong type)."""
        check_fields(cls, d)
        return cls(str(d["id"]), str(d["severity"]), str(d["message"]), d.get("value"))


@dataclass(frozen=True)
class FlagKind:
    """One condition llem checks every result for.

    Attributes
    ----------
    id : str
        The flag's id.
    severity : str
        ``warning`` or ``info``.
    threshold : float or None
        Where it fires (in ``unit``), None when any occurrence fires it.
    unit : str
        What ``threshold`` and the flag's ``value`` count.
    fires : str
        When it fires, in words.
    advice : str
        What to do about it.
    """

    id: str
    severity: str
    threshold: float | None
    unit: str
    fires: str
    advice: str

    def flag(self, message: str, value: float | None) -> Flag:
        """A :class:`Flag` of this kind."""
        return Flag(self.id, self.severity, message, value)


#: Clock event reasons (NVML's ``nvmlClocksEventReason*`` bits) that mean the clocks were
#: slowed by heat or hardware; the power cap is :data:`POWER_CAP_BIT`, an ``info``.
SLOWDOWN_BITS: Mapping[int, str] = {
    0x8: "HW slowdown", 0x20: "SW thermal slowdown", 0x40: "HW thermal slowdown",
    0x80: "HW power brake",
}

#: ``nvmlClocksEventReasonSwPowerCap``: the clocks are held down to stay within the power limit.
POWER_CAP_BIT = 0x4

FLAG_KINDS: tuple[FlagKind, ...] = (
    FlagKind("machine-busy", "warning", 0.2, "share of the machine's CPU time",
             "other processes (plus a VM's steal time) used more than this share of all CPUs' "
             "time during a measured run (/proc/stat at the window's start and end, minus this "
             "process and its children)",
             "close other programs, or measure on a quieter machine; on a shared VM, expect noise"),
    FlagKind("runs-disagree", "warning", 0.1, "coefficient of variation",
             "the repeats' energy per token or throughput varies more than this (standard "
             "deviation over mean, two runs or more)",
             "look for what else ran (machine-busy), raise warmup passes, use profile='publication', "
             "raise repeats"),
    FlagKind("short-window", "warning", 10, "power samples",
             "a measured run's window holds fewer samples than this, or is shorter than the "
             "energy counter's update period",
             "give each run more work (more prompts, longer outputs) or lower "
             "experiment.sampling_interval_s"),
    FlagKind("gpu-shared", "warning", None, "other processes",
             "another process had a compute context on a measured GPU (NVML's running "
             "processes at the window's start or end); NVML's energy is the whole GPU's",
             "measure on a GPU nothing else uses (nvidia-smi lists its processes)"),
    FlagKind("mig-whole-gpu", "warning", None, "GPUs in MIG mode",
             "MIG is enabled on a measured GPU: NVML's energy counts every slice's work, not "
             "this run's slice",
             "compare runs on the same slice layout only, or measure on a GPU without MIG"),
    FlagKind("throttled", "warning", None, "NVML clock event reasons (bit mask)",
             "a measured GPU reported a thermal or hardware slowdown at a window's start or end",
             "cool the GPU (airflow, a longer thermal floor), check nvidia-smi -q -d PERFORMANCE"),
    FlagKind("thermal-drift", "warning", 5.0, "degrees C",
             "a measured GPU ended a later run this much warmer than the first",
             "wait longer before measuring (warmup.thermal_floor_s, profile='publication')"),
    FlagKind("noisy-baseline", "warning", None, "spread over mean (baseline.max_spread)",
             "the idle baseline's spread is above baseline.max_spread of its mean, so figures "
             "above idle are unreliable",
             "measure a longer baseline (baseline.seconds) on a quieter machine"),
    FlagKind("warmup-unsettled", "warning", None, "coefficient of variation",
             "the adaptive warmup reached warmup.max_runs without its latencies settling "
             "below warmup.cv_threshold",
             "raise warmup.max_runs, or find what keeps the latency moving"),
    FlagKind("power-capped", "info", None, "NVML clock event reasons (bit mask)",
             "a measured GPU held its clocks down to stay within its power limit",
             "nothing, if the limit is the one you mean to measure"),
    FlagKind("quick-profile", "info", None, "warmup passes",
             "measured with the 'quick' profile: one warmup pass and no thermal wait",
             "use profile='publication' for figures you cite"),
)

_KINDS = {k.id: k for k in FLAG_KINDS}


def flag_kind(flag_id: str) -> FlagKind:
    """The :class:`FlagKind` with id ``flag_id`` (a did-you-mean error for an unknown one)."""
    try:
        return _KINDS[flag_id]
    except KeyError:
        raise unknown_name("validity flag", flag_id, list(_KINDS)) from None


# ------------------------------------------------------------------------ helpers
def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _measured_runs(result: Any) -> list[tuple[int, Any]]:
    return [(r.index, r.measurement) for r in result.runs if r.measurement is not None]


def _run_words(index: int, n: int) -> str:
    return f" (run {index + 1} of {n})" if n > 1 else ""


def _gpu_readings(result: Any) -> dict[str, list[Mapping[str, Any]]]:
    """GPU device -> the conditions its NVML meter read (start and end of each window), in order."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for _i, m in _measured_runs(result):
        for d in m.devices:
            cond = d.model_inputs.get("conditions") if d.kind == "gpu" else None
            if isinstance(cond, Mapping):
                out.setdefault(d.device, []).extend(
                    c for c in (cond.get("start"), cond.get("end")) if isinstance(c, Mapping))
    return out


def _bits(mask: int, names: Mapping[int, str]) -> str:
    return ", ".join(name for bit, name in names.items() if mask & bit)


# ------------------------------------------------------------------------- checks
def _machine_busy(result: Any, shares: Sequence[Any]) -> Flag | None:
    kind = _KINDS["machine-busy"]
    known = [(i, s) for i, s in enumerate(shares) if s is not None]
    if not known:
        return None
    i, worst = max(known, key=lambda p: p[1])
    if worst <= (kind.threshold or 0.0):
        return None
    return kind.flag(f"other processes used {_pct(worst)} of the CPUs while measuring"
                     + _run_words(i, len(shares)), round(worst, 4))


def _runs_disagree(result: Any, shares: Sequence[Any]) -> Flag | None:
    kind = _KINDS["runs-disagree"]
    runs = [r for r in result.runs if r.complete]
    attrs = ["tokens_per_s"]
    if any(r.energy_per_token_j is not None for r in runs):
        attrs.insert(0, "energy_per_token_j")
    worst: tuple[float, str] | None = None
    for attr in attrs:
        vals = [v for v in (getattr(r, attr) for r in runs) if v is not None]
        mean = statistics.fmean(vals) if len(vals) >= 2 else 0.0
        if mean > 0:
            cv = statistics.stdev(vals) / mean
            if worst is None or cv > worst[0]:
                worst = (cv, attr)
    if worst is None or worst[0] <= (kind.threshold or 0.0):
        return None
    cv, attr = worst
    return kind.flag(f"{figure(attr).label} varies by {_pct(cv)} across the {len(runs)} runs "
                     f"(coefficient of variation; above {_pct(kind.threshold or 0.0)})", round(cv, 4))


def _short_window(result: Any, shares: Sequence[Any]) -> Flag | None:
    kind = _KINDS["short-window"]
    measured = [(i, m) for i, m in _measured_runs(result) if m.energy_j is not None]
    n = len(result.runs)
    for i, m in measured:
        period = getattr(m, "counter_period_s", None)
        if period and m.duration_s < period:
            return kind.flag(f"the measured window{_run_words(i, n)} lasted {m.duration_s:.3g} s, "
                             f"less than the energy counter's update period ({period:.3g} s)",
                             round(m.duration_s, 6))
    counts = [(len({s.t_s for s in m.timeline}), i, m) for i, m in measured]
    if not counts:
        return None
    samples, i, m = min(counts, key=lambda c: c[0])
    if samples >= (kind.threshold or 0):
        return None
    return kind.flag(f"the measured window{_run_words(i, n)} holds only {samples} power samples "
                     f"({m.duration_s:.3g} s at {m.interval_s:g} s; fewer than {kind.threshold:g})",
                     float(samples))


def _gpu_shared(result: Any, shares: Sequence[Any]) -> Flag | None:
    readings = _gpu_readings(result)
    with_pids = {dev: [c for c in cs if "pids" in c] for dev, cs in readings.items()}
    seen_ours = any(c.get("own_pids") for cs in with_pids.values() for c in cs)
    on_cuda = str(result.environment.get("device") or "").startswith("cuda")
    # NVML lists host process ids; inside a container (another PID namespace) none is
    # ours even though this run uses the GPU: then one process per GPU is taken as ours
    foreign_ns = on_cuda and not seen_ours and any(c["pids"] for cs in with_pids.values() for c in cs)
    worst: tuple[int, str] | None = None
    for dev, cs in with_pids.items():
        for c in cs:
            others = set(c["pids"]) - set(c.get("own_pids") or ())
            count = len(others) - (1 if foreign_ns and c["pids"] else 0)
            if count > 0 and (worst is None or count > worst[0]):
                worst = (count, dev)
    if worst is None:
        return None
    count, dev = worst
    extra = (" (NVML's process ids are from another PID namespace, as in a container: one per GPU "
             "is taken to be this run)" if foreign_ns else "")
    return _KINDS["gpu-shared"].flag(
        f"{count} other process{'es' if count > 1 else ''} had compute contexts on {dev} while "
        f"measuring; its energy is in the GPU's figure{extra}", float(count))


def _mig_whole_gpu(result: Any, shares: Sequence[Any]) -> Flag | None:
    devs = [dev for dev, cs in _gpu_readings(result).items() if any(c.get("mig") for c in cs)]
    if not devs:
        return None
    return _KINDS["mig-whole-gpu"].flag(
        f"MIG is on for {', '.join(devs)}: NVML's energy is the whole GPU's (every slice's work), "
        "not this run's slice", float(len(devs)))


def _clock_reasons(result: Any) -> list[tuple[str, int]]:
    out = []
    for dev, cs in _gpu_readings(result).items():
        mask = 0
        for c in cs:
            try:
                mask |= int(c.get("clock_event_reasons") or 0)
            except (TypeError, ValueError):
                continue
        out.append((dev, mask))
    return out


def _throttled(result: Any, shares: Sequence[Any]) -> Flag | None:
    hit = [(dev, mask) for dev, mask in _clock_reasons(result) if mask & sum(SLOWDOWN_BITS)]
    if not hit:
        return None
    dev, mask = hit[0]
    return _KINDS["throttled"].flag(f"{dev}'s clocks were slowed while measuring: "
                                    f"{_bits(mask, SLOWDOWN_BITS)}", float(mask))


def _power_capped(result: Any, shares: Sequence[Any]) -> Flag | None:
    hit = [(dev, mask) for dev, mask in _clock_reasons(result) if mask & POWER_CAP_BIT]
    if not hit:
        return None
    dev, mask = hit[0]
    return _KINDS["power-capped"].flag(f"{dev} held its clocks down to stay within its power limit "
                                       "while measuring", float(mask))


def _thermal_drift(result: Any, shares: Sequence[Any]) -> Flag | None:
    kind = _KINDS["thermal-drift"]
    ends: dict[str, list[float]] = {}
    for _i, m in _measured_runs(result):
        for d in m.devices:
            cond = d.model_inputs.get("conditions") if d.kind == "gpu" else None
            end = cond.get("end") if isinstance(cond, Mapping) else None
            if isinstance(end, Mapping) and isinstance(end.get("temperature_c"), (int, float)):
                ends.setdefault(d.device, []).append(float(end["temperature_c"]))
    worst: tuple[float, str, float, float] | None = None
    for dev, temps in ends.items():
        if len(temps) < 2:
            continue
        rise = max(temps[1:]) - temps[0]
        if worst is None or rise > worst[0]:
            worst = (rise, dev, temps[0], max(temps[1:]))
    if worst is None or worst[0] < (kind.threshold or 0.0):
        return None
    rise, dev, first, hottest = worst
    return kind.flag(f"{dev} warmed from {first:.0f} °C to {hottest:.0f} °C across the "
                     f"{len(ends[dev])} runs (+{rise:.0f} °C)", round(rise, 2))


def _max_spread(result: Any) -> float:
    base = result.config.get("baseline") if isinstance(result.config, Mapping) else None
    value = base.get("max_spread") if isinstance(base, Mapping) else None
    if value is None:  # the row's default
        value = spec.param("baseline.max_spread").default
    return float(value)


def _noisy_baseline(result: Any, shares: Sequence[Any]) -> Flag | None:
    measured = _measured_runs(result)
    if not measured:
        return None
    m = measured[0][1]
    power, spread = m.baseline_power_w, m.baseline_spread_w
    if not power or spread is None:
        return None
    share, limit = spread / power, _max_spread(result)
    if share <= limit:
        return None
    return _KINDS["noisy-baseline"].flag(
        f"the idle baseline is noisy: its spread ({spread:.3g} W) is {_pct(share)} of its mean "
        f"({power:.3g} W), above baseline.max_spread={limit:g}; figures above idle (dynamic "
        "energy) are unreliable", round(share, 4))


def _warmup_unsettled(result: Any, shares: Sequence[Any]) -> Flag | None:
    w = result.warmup
    if not (w.get("adaptive") and w.get("converged") is False):
        return None
    cv, thr = w.get("final_cv"), w.get("cv_threshold")
    said = (f": the last passes still varied {_pct(cv)}" + (f" (threshold {_pct(thr)})" if thr else "")
            if isinstance(cv, (int, float)) else "")
    return _KINDS["warmup-unsettled"].flag(
        f"the adaptive warmup stopped after {w.get('passes', '?')} passes without settling{said}",
        float(cv) if isinstance(cv, (int, float)) else None)


def _quick_profile(result: Any, shares: Sequence[Any]) -> Flag | None:
    profile = result.config.get("profile") or result.effective_config.get("experiment.profile")
    if profile != "quick":
        return None
    passes = result.warmup.get("passes")
    said = [f"{passes} warmup pass{'' if passes == 1 else 'es'}"] if isinstance(passes, int) else []
    said += ["no thermal wait"] if result.thermal is None else []
    return _KINDS["quick-profile"].flag(
        "measured with the quick profile" + (f" ({', '.join(said)})" if said else "")
        + ": not for publication", float(passes) if isinstance(passes, (int, float)) else None)


_CHECKS: Mapping[str, Callable[[Any, Sequence[Any]], Flag | None]] = {
    "machine-busy": _machine_busy, "runs-disagree": _runs_disagree, "short-window": _short_window,
    "gpu-shared": _gpu_shared, "mig-whole-gpu": _mig_whole_gpu, "throttled": _throttled,
    "thermal-drift": _thermal_drift, "noisy-baseline": _noisy_baseline,
    "warmup-unsettled": _warmup_unsettled, "power-capped": _power_capped,
    "quick-profile": _quick_profile,
}


def result_flags(result: Any, cpu_shares: Iterable[float | None] = ()) -> tuple[Flag, ...]:
    """Every flag that fires on ``result``: warnings first, then the table's order.

    Parameters
    ----------
    result : Result
        A result (its runs, measurements, config, warmup and environment are read).
    cpu_shares : iterable of float or None
        Per measured run, the share (0..1) of the machine's CPU time other processes used
        (:func:`llem.energy.conditions.other_cpu_share`); None where it was not read.
    """
    shares = list(cpu_shares)
    out = []
    for kind in FLAG_KINDS:
        try:
            flag = _CHECKS[kind.id](result, shares)
        except Exception:  # noqa: BLE001 - a check that cannot read a result flags nothing
            flag = None
        if flag is not None:
            out.append(flag)
    return tuple(sorted(out, key=lambda f: not f.warning))


# ------------------------------------------------------------------------ display
def advice_for(flag_id: str) -> str:
    """What to do about a flag of kind ``flag_id`` ("" for a kind this llem does not know)."""
    kind = _KINDS.get(flag_id)
    return kind.advice if kind is not None else ""


def warning_ids(flags: Iterable[Flag]) -> list[str]:
    """The ids of the warnings among ``flags``, in order."""
    return [f.id for f in flags if f.warning]


def flags_text(flags: Iterable[Flag], indent: str = "  ") -> list[str]:
    """One line per flag: ``WARNING machine-busy: other processes used 63% ...``."""
    return [f"{indent}{'WARNING' if f.warning else 'info'} {f.id}: {f.message}" for f in flags]


def flags_html(flags: Sequence[Flag]) -> str:
    """The flags as an HTML block (warnings in an amber box); empty without flags."""
    if not flags:
        return ""
    e = html.escape
    warn = [f for f in flags if f.warning]
    info = [f for f in flags if not f.warning]
    parts = []
    if warn:
        items = "".join(f"<li><b>{e(f.id)}</b>: {e(f.message)}</li>" for f in warn)
        parts.append("<div class='llem-flags' style='background:#fff4e0;border-left:5px solid #e08a00;"
                     f"padding:4px 10px;margin:4px 0'><b>{len(warn)} validity warning"
                     f"{'s' if len(warn) > 1 else ''}</b><ul style='margin:2px 0'>{items}</ul></div>")
    if info:
        items = "".join(f"<li><b>{e(f.id)}</b>: {e(f.message)}</li>" for f in info)
        parts.append(f"<div class='llem-flags-info' style='color:#1d3b5c'><ul style='margin:2px 0'>{items}"
                     "</ul></div>")
    return "".join(parts)


__all__ = ["FLAG_KINDS", "POWER_CAP_BIT", "SEVERITIES", "SLOWDOWN_BITS", "Flag", "FlagKind", "advice_for",
           "flag_kind", "flags_html", "flags_text", "result_flags", "warning_ids"]
