"""Checks of features that may not be in this llem yet: the GPU power limit and validity flags.

Each looks for its feature first (``experiment.gpu_power_limit_w`` with
``llem.energy.power_limit``; ``Result.flags``) and reports ``skip`` with the reason
``not in this llem version`` when it is absent. The power limit is read back with pynvml
directly, independently of llem's own code, and only set where this process may
(a write of the current value succeeds); elsewhere the check expects llem's clear refusal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import llem.gpucheck.runs as runs
from llem import spec
from llem.errors import LlemError
from llem.gpucheck.kit import Skip, check, outcome
from llem.results import Result
from llem.runner import run

NOT_HERE = "not in this llem version"

POWER_LIMIT_PATH = "experiment.gpu_power_limit_w"


# ------------------------------------------------------------------ power limit
def _power_limit_feature() -> bool:
    try:
        found = importlib.util.find_spec("llem.energy.power_limit") is not None
    except (ImportError, ValueError):
        found = False
    return found and POWER_LIMIT_PATH in spec.all_paths()


class _Limits:
    """The power limit of one GPU read with pynvml itself (mW), independent of llem."""

    def __init__(self, nvml_index: int) -> None:
        import pynvml

        self.nv = pynvml
        pynvml.nvmlInit()
        self.h = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)

    def now_w(self) -> float:
        return float(self.nv.nvmlDeviceGetPowerManagementLimit(self.h)) / 1000.0

    def enforced_w(self) -> float | None:
        try:
            return float(self.nv.nvmlDeviceGetEnforcedPowerLimit(self.h)) / 1000.0
        except self.nv.NVMLError:
            return None

    def bounds_w(self) -> tuple[float, float]:
        lo, hi = self.nv.nvmlDeviceGetPowerManagementLimitConstraints(self.h)
        return float(lo) / 1000.0, float(hi) / 1000.0

    def set_w(self, watts: float) -> None:
        self.nv.nvmlDeviceSetPowerManagementLimit(self.h, int(round(watts * 1000)))

    def may_set(self) -> tuple[bool, str]:
        """Whether this process may write the limit: a write of the current value, and why not."""
        try:
            self.set_w(self.now_w())
        except self.nv.NVMLError as exc:
            return False, str(exc)
        return True, ""

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


@check("power-limit", "experiment.gpu_power_limit_w: applied during the run, read back, restored "
       "(set only where permitted)", limit_s=120, issue="16.3")
def power_limit(ctx: Any) -> dict[str, Any]:
    """Where permitted, a run at 80% of the limit, read back during and after; else llem's refusal."""
    if not _power_limit_feature():
        raise Skip(NOT_HERE)
    if ctx.simulate or not ctx.cuda:
        cfg = runs.config(ctx, "tiny-random-llama", **{POWER_LIMIT_PATH: 200.0, "repeats": 1})
        try:
            run(cfg)
        except LlemError as exc:
            return outcome("pass", f"no real GPU here: llem refused the setting: {str(exc)[:300]}")
        raise Skip("no real GPU here and llem accepted the setting; reading it back needs a GPU")
    ctx.need_gpu()
    limits = _Limits(int(ctx.nvml_index or 0))
    try:
        original = limits.now_w()
        lo, hi = limits.bounds_w()
        permitted, why_not = limits.may_set()
        target = max(lo, round(original * 0.8))
        seen: list[float] = []

        def during(sample: Any) -> None:
            seen.append(limits.now_w())

        cfg = runs.config(ctx, "tiny-random-llama", **{POWER_LIMIT_PATH: target, "repeats": 1})
        numbers: dict[str, Any] = dict(original_w=original, min_w=lo, max_w=hi, asked_w=target,
                                       permitted=permitted, why_not=why_not, root=_is_root(),
                                       enforced_w=limits.enforced_w())
        try:
            result = run(cfg, on_sample=during)
        except LlemError as exc:
            if permitted:
                return outcome("fail", f"writing the limit is permitted here, yet llem refused {target:g} W: "
                               f"{str(exc)[:300]}", **numbers)
            said = str(exc).lower()
            clear = isinstance(exc, PermissionError) or any(
                w in said for w in ("permi", "root", "privilege", "admin"))
            how = "" if clear else " without saying it is a matter of permission"
            return outcome("pass" if clear else "fail",
                           f"not permitted here ({why_not}): llem refused the setting{how}: {str(exc)[:300]}",
                           **numbers)
        finally:
            after = limits.now_w()
            if after != original and permitted:
                limits.set_w(original)  # llem did not restore it: put it back ourselves
        numbers.update(during_w=sorted(set(seen)), after_w=after,
                       recorded=result.effective_config.get(POWER_LIMIT_PATH))
        if not permitted:
            return outcome("fail", f"not permitted here ({why_not}), yet llem ran without refusing the limit "
                           f"(limit during the run: {sorted(set(seen))} W)", **numbers)
        ok = bool(seen) and all(abs(w - target) < 1 for w in seen) and abs(after - original) < 1
        return outcome("pass" if ok else "fail", f"asked {target:g} W (allowed {lo:g}..{hi:g}); during "
                       f"the run {sorted(set(seen))} W; after {after:g} W (was {original:g} W)", **numbers)
    finally:
        limits.close()


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------ validity flags
def _flags_feature() -> bool:
    return "flags" in {f.name for f in dataclasses.fields(Result)} or isinstance(
        getattr(Result, "flags", None), property)


def _flag_ids(result: Any) -> list[str]:
    out = []
    for f in getattr(result, "flags", None) or ():
        fid = f.get("id") if isinstance(f, dict) else getattr(f, "id", None)
        out.append(str(fid if fid is not None else f))
    return out


_LOADER = r"""
import sys, time
seconds, on_gpu = float(sys.argv[1]), sys.argv[2] == "1"
if on_gpu:
    import torch
    a = torch.randn(4096, 4096, device="cuda:0")
    torch.cuda.synchronize()
print("ready", flush=True)
end = time.time() + seconds
while time.time() < end:
    if on_gpu:
        a = torch.tanh(a @ a)
        torch.cuda.synchronize()
"""


#: Starts a command and exits at once, printing its pid: the command is then no child of
#: the kit's (llem counts its own children's CPU time as its own, not as another process's).
_DETACH = "import subprocess, sys; print(subprocess.Popen(sys.argv[1:]).pid, flush=True)"


@contextmanager
def _other_process(on_gpu: bool, seconds: float) -> Iterator[None]:
    """Another process busy on the GPU (holding a CUDA context) or, without one, on a CPU.

    It is started detached (its parent exits at once), so llem sees it as another
    process, not as one of its own children.
    """
    starter = subprocess.Popen(
        [sys.executable, "-c", _DETACH, sys.executable, "-c", _LOADER, str(seconds), "1" if on_gpu else "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pid = None
    try:
        pid = int((starter.stdout.readline() if starter.stdout else "").strip() or 0) or None
        line = starter.stdout.readline() if starter.stdout else ""  # the loader shares the pipe
        if pid is None or "ready" not in line:
            raise RuntimeError("the loading process did not start")
        starter.wait(timeout=10)
        time.sleep(0.5)
        yield
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if starter.poll() is None:
            starter.kill()
        if starter.stdout:
            starter.stdout.close()


@check("validity-flags", "result.flags on an idle GPU and on one another process loads", limit_s=150,
       issue="16.1")
def validity_flags(ctx: Any) -> dict[str, Any]:
    """An idle run, then a run beside a busy process: gpu-shared (GPU) or machine-busy expected."""
    if not _flags_feature():
        raise Skip(NOT_HERE)
    # long enough (over a second of generation) for the CPU-load reading to tell: it gives
    # nothing for a window under llem.energy.conditions.MIN_WINDOW_S_PER_CPU
    cfg = runs.config(ctx, "tiny-random-llama", **{
        "repeats": 1, "num_prompts": 8, "pytorch.batch_size": 1,
        "decoder.max_new_tokens": 64, "decoder.min_new_tokens": 64})
    idle = _flag_ids(run(cfg))
    expected = "gpu-shared" if ctx.cuda else "machine-busy"
    with _other_process(ctx.cuda, 120.0):
        loaded = _flag_ids(run(cfg))
    numbers = dict(idle_flags=idle, loaded_flags=loaded, expected_when_loaded=expected)
    problems = []
    if expected not in loaded:
        problems.append(f"the run beside a busy process lacks {expected!r}")
    if ctx.cuda and "gpu-shared" in idle:
        problems.append("the idle run says gpu-shared")
    words = f"idle run: {idle or 'no flags'}; beside a busy process: {loaded or 'no flags'}"
    return outcome("fail" if problems else "pass", words + ("; " + "; ".join(problems) if problems else ""),
                   **numbers)
