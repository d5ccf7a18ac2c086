"""Checks of llem's PyTorch path on the GPU: runs, its cost, the tier, memory, CUDA start-up.

Issue 15's items a GPU can show each have a check: here, which GPUs the meter read (item 1),
the first inter-token gap (item 2), that GPU detection leaves CUDA alone (item 7) and that
``release()`` frees the model (item 8); the NVML counter (item 6) in
:mod:`llem.gpucheck.nvml_checks`; items 3, 4, 5, 9, 10 and 12 in
:mod:`llem.gpucheck.issue15_checks`.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import weakref
from typing import Any

import llem.gpucheck.runs as runs
from llem import spec
from llem.backends.pytorch.backend import PyTorchBackend
from llem.errors import ConfigError, LlemError, MissingDependencyError
from llem.gpucheck.kit import Skip, check, outcome
from llem.runner import run

_MIB = 2**20


# ------------------------------------------------------------------ issue 15 item 7
_CHILD = r"""
import json, sys
import torch
import llem.backends.tensorrt
import llem.backends.vllm
from llem import machine
from llem.gpucheck.context import first_cuda_gpu, simulated_nvml
m = machine.get_machine()
gpu = first_cuda_gpu(m)
if sys.argv[1] == "1":
    with simulated_nvml():
        m = machine.get_machine()
        gpu = first_cuda_gpu(m)
print(json.dumps({"initialized": torch.cuda.is_initialized(), "gpus": m.gpu_count,
                  "first_gpu": gpu.name if gpu else None, "torch": torch.__version__}))
"""


@check("cuda-not-initialised", "GPU detection (llem.machine, the vLLM/TensorRT-LLM backends) leaves "
       "CUDA uninitialised", limit_s=90, issue="15.7")
def cuda_not_initialised(ctx: Any) -> dict[str, Any]:
    """In a fresh process: import torch and both engine backends, ask get_machine(), then look."""
    if ctx.torch is None:
        raise Skip("torch is not installed")
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, "1" if ctx.simulate else "0"],
                              capture_output=True, text=True, timeout=80, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return outcome("fail", "the detection process did not finish in 80 s")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return outcome("fail", f"the detection process failed (exit {done.returncode}): {tail[0][:300]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    words = (f"after get_machine() saw {got['gpus']} GPU(s) (first visible: {got['first_gpu']}), "
             f"torch.cuda.is_initialized() is {got['initialized']}")
    if not ctx.cuda:
        words += " (torch has no CUDA device here, so this shows the code path only)"
    return outcome("fail" if got["initialized"] else "pass", words, **got)


# ------------------------------------------------------------------ runs of each model
def _run_check(model: str) -> Any:
    def body(ctx: Any) -> dict[str, Any]:
        result, extra = runs.llem_run(ctx, model)
        rs = result.runs
        gpu = runs.gpu_readings(result)
        tokens = sum(r.output_tokens for r in rs)
        gpu_j = sum(d.energy_j for d in gpu) if gpu else None
        methods = sorted({d.method for d in gpu})
        numbers = dict(
            device=extra["device"], runs=len(rs), output_tokens=tokens,
            tokens_per_s=statistics.fmean(r.tokens_per_s or 0 for r in rs),
            ttft_ms=_ms(statistics.median(x for r in rs for x in r.ttfts_s) if tokens else None),
            ttft_sync_ms=_ms(extra["ttft_sync_s"]),
            itl_ms=_ms(statistics.median(itls) if (itls := [x for r in rs for x in r.itls_s]) else None),
            gpu_energy_j=gpu_j, gpu_energy_method=",".join(methods) or None,
            gpu_energy_per_token_mj=gpu_j / tokens * 1000 if gpu_j is not None and tokens else None,
            energy_per_token_mj=_mj(result.runs[0].energy_per_token_j), energy_method=result.method,
            peak_memory_mib=max((r.peak_memory_mib or 0) for r in rs), memory_source=rs[0].memory_source,
            duration_s=sum(r.duration_s for r in rs), metered=runs.metered_gpus(result),
        )
        words = (f"{model} on {extra['device']}: {numbers['tokens_per_s']:.0f} tok/s, TTFT "
                 f"{_fmt(numbers['ttft_ms'])} ms (synchronised one-token generate: "
                 f"{_fmt(numbers['ttft_sync_ms'])} ms), peak {numbers['peak_memory_mib']:.0f} MiB "
                 f"({numbers['memory_source']})")
        if not result.complete or tokens == 0:
            return outcome("fail", words + "; the run made no tokens or is incomplete", **numbers)
        if not ctx.cuda:
            return outcome("pass", words + f"; energy {result.method} (no CUDA: not a GPU figure)", **numbers)
        words += (f"; GPU energy {_fmt(numbers['gpu_energy_per_token_mj'])} mJ/token "
                  f"({numbers['gpu_energy_method']})")
        problems = []
        if "measured" not in methods:
            problems.append("the GPU energy is not 'measured' by the NVML counter")
        if not gpu_j or gpu_j <= 0:
            problems.append("no GPU energy was read")
        if "cuda" not in numbers["memory_source"]:
            problems.append("peak memory does not come from the CUDA allocator")
        said = "".join(f"; {p}" for p in problems)
        return outcome("fail" if problems else "pass", words + said, **numbers)

    return body


def _ms(s: float | None) -> float | None:
    return None if s is None else s * 1000


def _mj(j: float | None) -> float | None:
    return None if j is None else j * 1000


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


for _model in runs.MODELS:
    check(f"llem-run-{_model}", f"A PyTorch run of {_model} through llem: tokens/s, TTFT, energy per "
          "token, peak memory", limit_s=150, issue="16.4")(_run_check(_model))


# ------------------------------------------------------------------ issue 15 item 2
@check("first-token-gap", "The first inter-token gap is a real decode step, not ~0", limit_s=150,
       issue="15.2")
def first_token_gap(ctx: Any) -> dict[str, Any]:
    """Per request: the first gap against the median of the later ones (tiny-random-llama's run)."""
    result, _ = runs.llem_run(ctx, "tiny-random-llama")
    ratios = []
    firsts = []
    for req in result.requests:
        itl = req.itl_s
        if len(itl) >= 3:
            rest = statistics.median(itl[1:])
            if rest > 0:
                ratios.append(itl[0] / rest)
                firsts.append(itl[0])
    if not ratios:
        raise Skip("no request made 4 or more tokens")
    ratio = statistics.median(ratios)
    numbers = dict(requests=len(ratios), first_gap_over_median=ratio, min_ratio=min(ratios),
                   first_gap_ms=statistics.median(firsts) * 1000)
    ok = ratio >= 0.5
    return outcome("pass" if ok else "fail",
                   f"first gap / median later gap = {ratio:.2f} (median over {len(ratios)} requests)"
                   + ("" if ok else ": the first gap is too short (the token clock stamps a step early)"),
                   **numbers)


# ------------------------------------------------------------------ issue 15 item 1
@check("meter-devices", "The meter reads exactly the GPU the model is on (none for a CPU run)",
       limit_s=150, issue="15.1")
def meter_devices(ctx: Any) -> dict[str, Any]:
    """From tiny-random-llama's run: which ``gpu:N`` the measurement holds, against where the model was."""
    result, extra = runs.llem_run(ctx, "tiny-random-llama")
    got = runs.metered_gpus(result)
    on_gpu = str(extra["device"]).startswith("cuda")
    want = [f"gpu:{ctx.nvml_index}"] if on_gpu and ctx.nvml_index is not None else []
    recorded = {k: v for k, v in result.environment.items() if "meter" in k.lower() and "gpu" in k.lower()}
    numbers = dict(device=extra["device"], metered=got, expected=want, nvml_gpus=ctx.machine.gpu_count,
                   recorded=recorded)
    words = (f"model on {extra['device']}; meter read {got or 'no GPU'}, expected {want or 'no GPU'} "
             f"(NVML sees {ctx.machine.gpu_count} GPU(s))")
    return outcome("pass" if got == want else "fail", words, **numbers)


# ------------------------------------------------------------------ llem against bare generate
def _versus_check(model: str) -> Any:
    def body(ctx: Any) -> dict[str, Any]:
        runs.model_present(ctx, model)
        n = runs.sizes(ctx, model)
        rounds = 2 if ctx.quick else (10 if model == "tiny-random-llama" else 5)
        cfg = runs.config(ctx, model, **{"repeats": rounds, "warmup.runs": 1})
        backend = PyTorchBackend()  # the caller's: kept loaded, the bare loop uses its model
        texts = runs.batches(ctx, model)

        def bare(clock: bool = False) -> float:
            return runs.bare_tokens_per_s(ctx, backend.model, backend.tokenizer, backend.device, texts,
                                          n["tokens"], clock=clock)

        try:
            got = runs.bracketed(cfg, backend, bare, also=lambda: {"clock": bare(clock=True)})
            device = backend.device
        finally:
            backend.release()
        paired = got.paired
        clock = statistics.median(c / b for c, b in zip(got.extra["clock"], got.bare))
        med = {"bare": statistics.median(got.bare), "clock": statistics.median(got.extra["clock"]),
               "llem": statistics.median(got.llem)}
        numbers = dict(model=model, device=device, rounds=rounds, batch=n["batch"], new_tokens=n["tokens"],
                       bare_tok_s=med["bare"], clock_tok_s=med["clock"], llem_tok_s=med["llem"],
                       llem_over_bare_paired=paired, llem_over_bare_medians=med["llem"] / med["bare"],
                       llem_over_bare_best=max(got.llem) / max(got.bare),
                       clock_over_bare_paired=clock,
                       per_round={"bare": got.bare, "clock": got.extra["clock"], "llem": got.llem})
        ok = paired >= 0.98
        words = (f"{model} on {device}, {rounds} rounds, each llem run between two bare passes: bare "
                 f"{med['bare']:.0f}, bare+token "
                 f"clock {med['clock']:.0f}, llem {med['llem']:.0f} tok/s; llem/bare paired median "
                 f"{paired:.3f} (clock alone {clock:.3f}); needs >= 0.98")
        if not ctx.cuda:
            words += " (CPU: not the GPU figure)"
        return outcome("pass" if ok else "fail", words, **numbers)

    return body


for _model in runs.MODELS:
    check(f"llem-vs-bare-{_model}", f"llem's tokens/s against a bare transformers generate loop, "
          f"{_model}, each measured run between two bare passes", limit_s=150,
          issue="16.4, 16.6")(_versus_check(_model))


# ------------------------------------------------------------------ the tier
#: What the tier check tries: (name, the capability row or None, the settings).
TIER_CASES: tuple[tuple[str, str | None, dict[str, Any]], ...] = (
    ("bfloat16", "bfloat16", {"pytorch.dtype": "bfloat16"}),
    ("sdpa", None, {"pytorch.attn_implementation": "sdpa", "pytorch.dtype": "bfloat16"}),
    ("flash_attention_2", "flash_attention_2", {"pytorch.attn_implementation": "flash_attention_2",
                                                "pytorch.dtype": "bfloat16"}),
    ("flash_attention_3", "flash_attention_3", {"pytorch.attn_implementation": "flash_attention_3",
                                                "pytorch.dtype": "bfloat16"}),
)


def _device_cc(ctx: Any) -> float | None:
    if not ctx.cuda:
        return None
    major, minor = ctx.torch.cuda.get_device_capability(0)
    return float(f"{major}.{minor}")


def _claim(cap: str | None, cc: float | None) -> tuple[str, str]:
    if cap is None:  # SDPA has no capability row: it is transformers' default attention
        return "yes", f"transformers' default ({spec.param('pytorch.attn_implementation').library_default})"
    return spec.capability_at(cap, "pytorch", cc)


def _try_case(ctx: Any, settings: dict[str, Any], cc: float | None) -> dict[str, Any]:
    """Check the tier, then run tiny-random-llama with ``settings``; what really ran."""
    cfg = runs.config(ctx, "tiny-random-llama", **{**settings, "repeats": 1, "warmup.runs": 0,
                                                   "num_prompts": 2, "pytorch.batch_size": 2,
                                                   "decoder.max_new_tokens": 4, "decoder.min_new_tokens": 4,
                                                   "meter": "none"})
    try:
        cfg.check_tier(machine_cc=cc)
    except ConfigError as exc:
        return {"outcome": "refused by the tier check", "why": str(exc).splitlines()[-2:]}
    backend = PyTorchBackend()
    try:
        result = run(cfg, backend=backend)
        model = backend.model
        attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        eff = {p: result.effective_config.get(p) for p in settings}
        skipped = {p: result.skipped[p] for p in settings if p in result.skipped}
        return {"outcome": "skipped by llem" if skipped else "ran", "attn_implementation": attn,
                "dtype": dtype, "effective": eff, "why": "; ".join(skipped.values())[:300]}
    except MissingDependencyError as exc:
        return {"outcome": "package missing", "why": str(exc)[:300]}
    except (LlemError, RuntimeError, ValueError, ImportError) as exc:
        return {"outcome": "failed", "why": f"{type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        backend.release()


def _agrees(level: str, settings: dict[str, Any], tried: dict[str, Any]) -> bool:
    if level in ("no", "not here"):
        return tried["outcome"] == "refused by the tier check"
    if tried["outcome"] == "package missing" or (
            tried["outcome"] == "skipped by llem" and "package" in tried.get("why", "")):
        return True  # the matrix says what the tier runs with the package installed
    if tried["outcome"] != "ran":
        return False
    want_attn = settings.get("pytorch.attn_implementation")
    return (want_attn is None or tried["attn_implementation"] == want_attn) and \
        tried["dtype"] == settings["pytorch.dtype"]


def _sdpa_kernels(ctx: Any) -> dict[str, bool]:
    """Which of torch's SDPA kernels run a causal bfloat16 attention on this GPU."""
    torch = ctx.torch
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return {}
    q = torch.randn(2, 8, 256, 64, device="cuda:0", dtype=torch.bfloat16)
    out = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        kind = getattr(SDPBackend, name, None)
        if kind is None:
            continue
        try:
            with sdpa_kernel(kind):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
            torch.cuda.synchronize()
            out[name.lower()] = True
        except Exception:  # noqa: BLE001 - a kernel that will not run here
            out[name.lower()] = False
    return out


def _kernels_of_one_forward(ctx: Any) -> list[str]:
    """Attention kernel names the CUDA profiler sees in one forward of tiny-random-llama (sdpa, bf16)."""
    torch = ctx.torch
    backend = PyTorchBackend()
    try:
        backend.load(runs.config(ctx, "tiny-random-llama", **{"pytorch.attn_implementation": "sdpa",
                                                                  "pytorch.dtype": "bfloat16"}))
        ids, mask, _, _ = runs.left_padded(backend.tokenizer, runs.batches(ctx, "tiny-random-llama")[0],
                                           runs.MAX_INPUT_TOKENS)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof, torch.inference_mode():
            backend.model(input_ids=ids.to(backend.device), attention_mask=mask.to(backend.device))
            torch.cuda.synchronize()
        names = {e.key for e in prof.key_averages()}
    finally:
        backend.release()
    words = ("flash", "fmha", "efficient", "attention", "cudnn", "sdpa")
    return sorted(n[:80] for n in names if any(w in n.lower() for w in words))


@check("tier-precision-attention", "bfloat16 and SDPA / FlashAttention: what llem's matrix claims for "
       "this tier against what really runs", limit_s=120, issue="16.4, 15.11")
def tier_precision_attention(ctx: Any) -> dict[str, Any]:
    """Each case: the matrix's claim at this device's compute capability, the tier check, a short run."""
    cc = _device_cc(ctx)
    cases: dict[str, Any] = {}
    wrong = []
    for name, cap, settings in TIER_CASES:
        level, why = _claim(cap, cc)
        tried = _try_case(ctx, settings, cc)
        agrees = _agrees(level, settings, tried)
        cases[name] = {"claim": level, "claim_note": why, **tried, "agrees": agrees}
        if not agrees:
            wrong.append(f"{name}: matrix says {level!r}, {tried['outcome']}")
    numbers: dict[str, Any] = {"compute_capability": cc, "cases": cases}
    if ctx.cuda:
        numbers["sdpa_kernels_bf16"] = _sdpa_kernels(ctx)
        try:
            numbers["attention_kernels_seen"] = _kernels_of_one_forward(ctx)
        except Exception as exc:  # noqa: BLE001 - the profiler is extra evidence only
            numbers["attention_kernels_seen"] = [f"profiler failed: {exc!r}"[:200]]
    where = f"compute capability {cc:g}" if cc is not None else "the CPU"
    summary = "; ".join(f"{n}: {c['claim']} -> {c['outcome']}" for n, c in cases.items())
    if wrong:
        return outcome("fail", f"on {where}: " + "; ".join(wrong), **numbers)
    return outcome("pass", f"on {where}: {summary}", **numbers)


# ------------------------------------------------------------------ issue 15 item 8
def _load_and_release(ctx: Any, compiled: bool) -> dict[str, Any]:
    torch = ctx.torch
    extra: dict[str, Any] = {"decoder.max_new_tokens": 4, "decoder.min_new_tokens": 4}
    if compiled:
        extra["pytorch.torch_compile"] = True
        if not ctx.cuda:
            extra["pytorch.torch_compile_backend"] = "eager"  # no C++ toolchain needed on a CPU
    cfg = runs.config(ctx, "tiny-random-llama", **extra)
    before = torch.cuda.memory_allocated() if ctx.cuda else None
    backend = PyTorchBackend()
    info = backend.load(cfg)
    weight = weakref.ref(next(backend.model.parameters()))
    loaded = torch.cuda.memory_allocated() if ctx.cuda else None
    backend.release()
    gc.collect()
    if ctx.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    after = torch.cuda.memory_allocated() if ctx.cuda else None
    return {"compile_failed": bool(info.facts.get("compile_failed")) if compiled else None,
            "weights_alive": weight() is not None,
            "before_mib": None if before is None else before / _MIB,
            "loaded_mib": None if loaded is None else loaded / _MIB,
            "after_mib": None if after is None else after / _MIB}


@check("release-frees-memory", "release() frees the model (eager and torch.compile'd)", limit_s=240,
       issue="15.8")
def release_frees_memory(ctx: Any) -> dict[str, Any]:
    """Load, release, collect: the weights must be gone (and their CUDA memory back)."""
    if ctx.torch is None:
        raise Skip("torch is not installed")
    cases = {"eager": _load_and_release(ctx, False), "compiled": _load_and_release(ctx, True)}
    bad = []
    for name, c in cases.items():
        if c["weights_alive"]:
            bad.append(f"{name}: the weights are still referenced after release()")
        if c["after_mib"] is not None and c["after_mib"] - c["before_mib"] > 1.0:
            bad.append(f"{name}: {c['after_mib'] - c['before_mib']:.1f} MiB still allocated on the GPU")
    words = "weights collected after release() (CPU: no CUDA memory to read)"
    if ctx.cuda:
        words = "; ".join(f"{n}: loaded {_fmt(c['loaded_mib'])} MiB, after release {_fmt(c['after_mib'])} MiB"
                          + (" (compile failed: eager fallback)" if c["compile_failed"] else "")
                          for n, c in cases.items())
    return outcome("fail" if bad else "pass", "; ".join(bad) if bad else words,
                   **{f"{n}_{k}": v for n, c in cases.items() for k, v in c.items()})
