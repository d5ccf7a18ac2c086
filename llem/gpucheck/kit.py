"""The check registry, the runner with its time limits, and the two output files.

A check is a function ``fn(ctx) -> dict`` registered with :func:`check`. It returns
:func:`outcome` (a status, one line of detail, and the numbers behind it) or raises
:class:`Skip`. Whatever it raises otherwise becomes a ``fail`` with the exception's first
line; one failing check never stops the others. Each check runs under its own time limit
(a ``SIGALRM`` in the main thread interrupts Python code; a C call that hangs still holds
it until it returns), and the kit as a whole under a budget: a check that would start after
the budget is spent is skipped with that reason.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llem._files import write_atomic

#: What a check may report.
STATUSES = ("pass", "fail", "skip")

#: The whole kit's budget on one GPU, s (issue 16 asks for under 8 minutes).
DEFAULT_BUDGET_S = 450.0

#: Schema name of ``gpucheck.json``.
SCHEMA = "llem.gpucheck/1"


class Skip(Exception):
    """Raised by a check that cannot run here; the message is the reason."""


class CheckTimeout(BaseException):
    """A check ran past its time limit (a BaseException so ``except Exception`` lets it through)."""


@dataclass(frozen=True)
class CheckSpec:
    """One registered check.

    Attributes
    ----------
    name : str
        Stable id (``nvml-counter``), the ``name`` of its JSON record.
    title : str
        What it checks, for people.
    fn : callable
        ``fn(ctx) -> dict`` made by :func:`outcome`.
    limit_s : float
        Its time limit on a GPU, s (a simulated run gets the same).
    issue : str
        Where it comes from (``16.4``, ``15.2``...).
    """

    name: str
    title: str
    fn: Callable[[Any], dict[str, Any]]
    limit_s: float
    issue: str


#: Every check, in the order the kit runs them.
CHECKS: list[CheckSpec] = []


CheckFn = Callable[[Any], dict[str, Any]]


def check(name: str, title: str, *, limit_s: float = 60.0,
          issue: str = "16.4") -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as the check ``name`` (run in registration order)."""
    def add(fn: CheckFn) -> CheckFn:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"A gpucheck check named {name!r} is already registered.")
        CHECKS.append(CheckSpec(name, title, fn, float(limit_s), issue))
        return fn
    return add


def outcome(status: str, detail: str, **numbers: Any) -> dict[str, Any]:
    """A check's answer: ``status`` (pass, fail, skip), one line of ``detail``, its numbers."""
    if status not in STATUSES:
        raise ValueError(f"Check status {status!r} is not one of {', '.join(STATUSES)}.")
    return {"status": status, "detail": detail, "numbers": _json_safe(numbers)}


def _json_safe(value: Any) -> Any:
    """Numbers, strings, lists and dicts as JSON can hold them (NaN and inf as None)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CheckTimeout` in the main thread after ``seconds`` (no limit elsewhere)."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def ring(signum: int, frame: Any) -> None:
        raise CheckTimeout(f"ran past its time limit of {seconds:g} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_one(spec: CheckSpec, ctx: Any, limit_s: float | None = None) -> dict[str, Any]:
    """Run one check under its time limit; never raises (but for KeyboardInterrupt)."""
    limit = spec.limit_s if limit_s is None else limit_s
    t0 = time.perf_counter()
    try:
        with time_limit(limit):
            got = spec.fn(ctx)
        if not isinstance(got, dict) or got.get("status") not in STATUSES:
            got = outcome("fail", f"the check returned {type(got).__name__}, not an outcome()")
    except Skip as exc:
        got = outcome("skip", str(exc))
    except CheckTimeout as exc:
        got = outcome("fail", f"{spec.name} {exc}")
    except Exception as exc:  # noqa: BLE001 - one failing check never stops the others
        lines = traceback.format_exception_only(type(exc), exc)
        where = traceback.extract_tb(exc.__traceback__)[-1:]
        at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
        got = outcome("fail", f"raised {lines[-1].strip()[:400]}{at}")
    finally:
        cleanup = getattr(ctx, "after_check", None)
        if callable(cleanup):
            try:
                cleanup()
            except Exception:  # noqa: BLE001
                pass
    return {"name": spec.name, "title": spec.title, "issue": spec.issue, "status": got["status"],
            "detail": got["detail"], "seconds": round(time.perf_counter() - t0, 3),
            "numbers": got.get("numbers", {})}


def run_checks(ctx: Any, specs: list[CheckSpec] | None = None, budget_s: float = DEFAULT_BUDGET_S,
               progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run ``specs`` (all checks) in order within ``budget_s``; one record per check."""
    say = progress or (lambda line: None)
    start = time.perf_counter()
    out = []
    for spec in CHECKS if specs is None else specs:
        left = budget_s - (time.perf_counter() - start)
        if left < 5:
            rec = {"name": spec.name, "title": spec.title, "issue": spec.issue, "status": "skip",
                   "detail": f"the kit's budget of {budget_s:g} s was spent before this check",
                   "seconds": 0.0, "numbers": {}}
        else:
            say(f"{spec.name} ...")
            rec = run_one(spec, ctx, min(spec.limit_s, left))
        say(f"{spec.name}: {rec['status']} ({rec['seconds']:.1f} s) {rec['detail']}")
        out.append(rec)
    return out


def write_outputs(out: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``gpucheck.json`` and ``gpucheck.md`` into the folder ``out`` (made if needed)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "gpucheck.json"
    md = folder / "gpucheck.md"
    write_atomic(js, json.dumps(report, indent=1, sort_keys=False) + "\n")
    write_atomic(md, markdown(report))
    return js, md


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _numbers_line(numbers: Mapping[str, Any], limit: int = 8) -> str:
    parts = []
    for k, v in numbers.items():
        if isinstance(v, (dict, list)):
            continue
        if isinstance(v, float):
            v = f"{v:.4g}"
        parts.append(f"{k}={v}")
        if len(parts) >= limit:
            break
    return ", ".join(parts)


def markdown(report: Mapping[str, Any]) -> str:
    """The readable table of ``report``: the machine, then one row per check."""
    m = report.get("machine", {})
    checks = report.get("checks", [])
    counts = {s: sum(1 for c in checks if c["status"] == s) for s in STATUSES}
    gpus = m.get("gpus") or []
    lines = [
        "# llem GPU check",
        "",
        f"- llem {report.get('llem', '?')}, mode **{report.get('mode', '?')}**, "
        f"{report.get('started_at', '')}, {report.get('seconds', 0):.0f} s",
        "- GPUs: " + (", ".join(f"{g.get('index')}: {g.get('name')} (cc {g.get('compute_capability')})"
                                for g in gpus) or "none"),
        f"- driver {m.get('driver') or '-'}; CPU {m.get('cpu', '?')} ({m.get('cpu_threads', '?')} threads)",
        f"- torch {report.get('versions', {}).get('torch', '-')}, transformers "
        f"{report.get('versions', {}).get('transformers', '-')}, nvidia-ml-py "
        f"{report.get('versions', {}).get('nvidia-ml-py', '-')}; torch device {report.get('device', '?')}",
        f"- **{counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip**",
        "",
    ]
    if report.get("mode") == "simulate":
        lines += ["> SIMULATED: the NVML figures come from llem's fake devices and the PyTorch runs "
                  "ran on the CPU. Nothing here is a GPU measurement.", ""]
    lines += ["| check | issue | status | s | detail | numbers |", "|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {_cell(c['name'])} | {_cell(c.get('issue', ''))} | **{c['status']}** | "
                     f"{c.get('seconds', 0):.1f} | {_cell(c['detail'])} | "
                     f"{_cell(_numbers_line(c.get('numbers', {})))} |")
    lines.append("")
    return "\n".join(lines)


__all__ = ["CHECKS", "DEFAULT_BUDGET_S", "SCHEMA", "STATUSES", "CheckSpec", "CheckTimeout", "Skip", "check",
           "markdown", "outcome", "run_checks", "run_one", "time_limit", "write_outputs"]
