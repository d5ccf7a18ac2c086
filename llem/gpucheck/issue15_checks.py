"""Checks of issue 15's items 3, 4, 5, 9, 10 and 12: engines, peak memory, versions, NVML handling.

Each is quick (seconds) where it runs, and a ``skip`` with the reason (the install command
for a missing engine) where it cannot. The engine checks (TensorRT-LLM beam search, the
vLLM prefill/decode split) need the engine and CUDA; in ``--simulate`` they check llem's own
counting and phase marking over made-up engine outputs instead, and say so.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import llem.gpucheck.runs as runs
from llem.backends.loadsteps import library_bars_as_steps
from llem.backends.phases import PhaseTracker
from llem.config import ExperimentConfig
from llem.errors import LlemError
from llem.gpucheck.kit import Skip, check, outcome
from llem.runner import run

_MIB = 2**20

#: How each engine is installed (llem's own extras).
INSTALL = {"tensorrt_llm": "pip install 'llem[tensorrt]'", "vllm": "pip install 'llem[vllm]'"}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _need_engine(ctx: Any, module: str, what: str) -> None:
    """Raise Skip unless ``module`` is importable and torch has CUDA here."""
    if not _importable(module):
        raise Skip(f"{what} needs {module}, which is not installed here ({INSTALL[module]})")
    ctx.need_cuda(what)


def engine_config(backend: str, **extra: Any) -> ExperimentConfig:
    """A short greedy run of tiny-random-llama on ``backend`` (vllm, tensorrt)."""
    d: dict[str, Any] = {
        "backend": backend, "model": "tiny-random-llama", "prompts": runs.PROMPTS, "num_prompts": 2,
        "repeats": 1, "warmup.runs": 0, "baseline.seconds": 0.0, "meter": "auto",
        "max_input_tokens": 64, "decoder.max_new_tokens": 8, "decoder.min_new_tokens": 8,
    }
    d.update(extra)
    return ExperimentConfig.from_dict(d)


# ------------------------------------------------------------------ issue 15 item 3
def _fake_beams(width: int, tokens: int) -> list[Any]:
    return [SimpleNamespace(token_ids=list(range(tokens - b))) for b in range(width)]


@check("trt-beam-best-only", "TensorRT-LLM beam search counts the best beam only", limit_s=240,
       issue="15.3")
def trt_beam_best_only(ctx: Any) -> dict[str, Any]:
    """A 2-prompt, 3-beam run: output_tokens must be max_new_tokens x prompts, not x beams."""
    from llem.backends.tensorrt import returned_tokens

    beams, prompts, tokens = 3, 2, 8
    if ctx.simulate:
        got = sum(returned_tokens(_fake_beams(beams, tokens), True) for _ in range(prompts))
        ok = got == tokens * prompts
        return outcome("pass" if ok else "fail", f"simulated (no engine): llem counts {got} tokens for "
                       f"{prompts} prompts x {beams} beams of {tokens} (expected {tokens * prompts})",
                       counted=got, expected=tokens * prompts, beams=beams)
    _need_engine(ctx, "tensorrt_llm", "a TensorRT-LLM beam-search run")
    cfg = engine_config("tensorrt", **{"decoder.num_beams": beams, "num_prompts": prompts,
                                      "decoder.max_new_tokens": tokens, "decoder.min_new_tokens": tokens})
    result = run(cfg)
    got = sum(r.output_tokens for r in result.runs)
    want = tokens * prompts * len(result.runs)
    numbers = dict(output_tokens=got, expected=want, beams=beams, prompts=prompts, max_new_tokens=tokens,
                   tensorrt_llm=result.environment.get("tensorrt_llm_version"))
    words = f"{prompts} prompts, {beams} beams, {tokens} new tokens: output_tokens {got}, expected {want}"
    if got == want * beams:
        words += " (every beam was counted)"
    return outcome("pass" if got == want else "fail", words, **numbers)


# ------------------------------------------------------------------ issue 15 item 4
def _simulated_split(slots: int, prompts: int, tokens: int = 4) -> tuple[str, bool]:
    """PhaseTracker over a continuous-batching schedule of ``slots`` at a time: (no_split, decoded)."""
    counts = {i: 0 for i in range(prompts)}
    tracker = PhaseTracker(lambda phase: None, counts)
    t = 0.0
    while any(n < tokens for n in counts.values()):
        running = [i for i, n in counts.items() if 0 < n < tokens]
        admitted = [i for i, n in counts.items() if n == 0][: max(0, slots - len(running))]
        for i in running + admitted:
            counts[i] += 1
        t += 0.01
        tracker.observe(t, {i: counts[i] for i in running + admitted},
                        [i for i in running + admitted if counts[i] >= tokens])
    return tracker.no_split, tracker.phase == "decode"


@check("engine-phase-split", "vLLM: more prompts than max_num_seqs reports no prefill/decode split; "
       "a batch that fits keeps it", limit_s=240, issue="15.4")
def engine_phase_split(ctx: Any) -> dict[str, Any]:
    """Two vLLM runs with max_num_seqs=2: 6 prompts (no split, no phase energy) and 2 (a split)."""
    if ctx.simulate:
        over_why, _ = _simulated_split(2, 6)
        fits_why, _ = _simulated_split(2, 2)
        ok = bool(over_why) and not fits_why
        return outcome("pass" if ok else "fail", "simulated (no engine): llem's phase tracker over a "
                       f"2-slot schedule: 6 prompts -> {'no split' if over_why else 'a split'}, 2 prompts -> "
                       f"{'no split' if fits_why else 'a split'}", over_no_split=over_why,
                       fits_no_split=fits_why)
    _need_engine(ctx, "vllm", "a vLLM run")
    base = {"vllm.max_num_seqs": 2, "vllm.enforce_eager": True, "vllm.gpu_memory_utilization": 0.3}
    over = run(engine_config("vllm", **base, num_prompts=6)).runs[0]  # each run loads and releases
    fits = run(engine_config("vllm", **base, num_prompts=2)).runs[0]
    numbers = dict(over_prefill_j=over.prefill_energy_j, over_decode_j=over.decode_energy_j,
                   fits_prefill_j=fits.prefill_energy_j, fits_decode_j=fits.decode_energy_j,
                   over_prefill_s=over.prefill_s, fits_prefill_s=fits.prefill_s)
    problems = []
    if over.prefill_energy_j is not None or over.decode_energy_j is not None:
        problems.append("6 prompts over max_num_seqs=2 still report prefill/decode energy")
    if fits.prefill_energy_j is None or fits.decode_energy_j is None:
        problems.append("2 prompts within max_num_seqs=2 report no prefill/decode energy")
    words = (f"6 prompts: prefill {over.prefill_energy_j} J, decode {over.decode_energy_j} J; "
             f"2 prompts: prefill {fits.prefill_energy_j} J, decode {fits.decode_energy_j} J")
    return outcome("fail" if problems else "pass", "; ".join(problems) or words, **numbers)


# ------------------------------------------------------------------ issue 15 item 5
@check("peak-memory", "Peak memory: torch allocator over the model's devices on a GPU, RSS on the CPU",
       limit_s=150, issue="15.5")
def peak_memory(ctx: Any) -> dict[str, Any]:
    """From tiny-random-llama's run: each run's peak and run peak, their source, their bounds."""
    result, extra = runs.llem_run(ctx, "tiny-random-llama")
    rs = result.runs
    on_gpu = str(extra["device"]).startswith("cuda")
    source = rs[0].memory_source
    peaks = [r.peak_memory_mib for r in rs]
    rises = [r.run_peak_memory_mib for r in rs]
    gpu = next((g for g in ctx.machine.gpus if g.index == ctx.nvml_index), None)
    total = gpu.memory_total_mib if gpu is not None and on_gpu else None
    numbers = dict(device=extra["device"], source=source, peak_mib=peaks, run_peak_mib=rises,
                   nvml_memory_total_mib=total)
    problems = []
    if any(p is None or p <= 0 for p in peaks):
        problems.append("a run has no positive peak_memory_mib")
    if any(q is None for q in rises):
        problems.append("a run has no run_peak_memory_mib")
    elif any(p is not None and q is not None and q > p for p, q in zip(peaks, rises)):
        problems.append("run_peak_memory_mib is above peak_memory_mib")
    if on_gpu:
        if "torch allocator" not in source or str(extra["device"]) not in source:
            problems.append(f"the source does not name the torch allocator over {extra['device']}")
        if any(q is not None and q <= 0 for q in rises):
            problems.append("run_peak_memory_mib is not positive on the GPU")
        if total and any(p is not None and p > total for p in peaks):
            problems.append(f"the peak is above the GPU's {total:.0f} MiB (NVML)")
    elif "RSS" not in source:
        problems.append("a CPU run's peak is not the process RSS")
    words = (f"on {extra['device']}: peak {_mib(peaks)} MiB, run peak {_mib(rises)} MiB ({source})"
             + (f"; GPU memory {total:.0f} MiB" if total else ""))
    return outcome("fail" if problems else "pass", "; ".join(problems + [words]), **numbers)


def _mib(values: list[float | None]) -> str:
    return "/".join("-" if v is None else f"{v:.0f}" for v in values)


# ------------------------------------------------------------------ issue 15 item 9
def declared_floor() -> tuple[int, ...] | None:
    """The transformers floor in llem's installed metadata (None: not installed, or no floor)."""
    try:
        reqs = importlib.metadata.requires("llem") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for r in reqs:
        m = re.match(r"\s*transformers\s*>=\s*([\d.]+)", r)
        if m:
            return tuple(int(x) for x in m[1].split(".") if x)
    return None


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


@check("transformers-floor", "The installed transformers meets llem's floor and from_pretrained takes dtype=",
       limit_s=60, issue="15.9")
def transformers_floor(ctx: Any) -> dict[str, Any]:
    """The floor (llem's metadata and the backend's constant), the version, a load with dtype=."""
    from llem.backends.pytorch.loading import TRANSFORMERS_MIN, check_transformers
    from llem.models import resolve_model

    if ctx.torch is None or not _importable("transformers"):
        raise Skip("torch or transformers is not installed")
    import transformers

    version = str(transformers.__version__)
    meta = declared_floor()
    numbers: dict[str, Any] = dict(transformers=version, backend_floor=".".join(map(str, TRANSFORMERS_MIN)),
                                   metadata_floor=None if meta is None else ".".join(map(str, meta)))
    problems = []
    if meta is not None and meta[:2] != TRANSFORMERS_MIN:
        problems.append(f"llem's metadata asks transformers>={numbers['metadata_floor']}, the backend "
                        f"{numbers['backend_floor']}")
    if _version_tuple(version)[:2] < TRANSFORMERS_MIN:
        problems.append(f"transformers {version} is below the floor {numbers['backend_floor']}")
    try:
        check_transformers(version)
    except LlemError as exc:
        numbers["refusal"] = str(exc)[:200]
    dtype = ctx.torch.bfloat16
    with library_bars_as_steps():  # no progress bar in the kit's output
        model = transformers.AutoModelForCausalLM.from_pretrained(
            resolve_model("tiny-random-llama").id_or_path, dtype=dtype)
    got = next(model.parameters()).dtype
    del model
    numbers["loaded_dtype"] = str(got).removeprefix("torch.")
    if got != dtype:
        problems.append(f"from_pretrained(dtype=bfloat16) loaded {numbers['loaded_dtype']}")
    words = (f"transformers {version}; floor {numbers['backend_floor']} (metadata: "
             f"{numbers['metadata_floor'] or 'llem not installed'}); from_pretrained(dtype=bfloat16) "
             f"loaded {numbers['loaded_dtype']}")
    return outcome("fail" if problems else "pass", "; ".join(problems) or words, **numbers)


# ------------------------------------------------------------------ issue 15 item 10
def _is_raw_nvml(exc: BaseException) -> bool:
    return type(exc).__name__.startswith("NVMLError") or "pynvml" in type(exc).__module__


def _read_gpu(library: Any, index: int) -> dict[str, Any]:
    """Power and memory of one GPU through llem's wrapper, and its NVML meter's probe."""
    from llem.energy.nvml import NvmlMeter

    rec: dict[str, Any] = {"index": index}
    library.init()
    try:
        dev = library.device(index)
        for name, fn in (("power_mw", dev.power_mw), ("memory_used_bytes", dev.memory_used_bytes),
                         ("energy_mj", dev.total_energy_mj)):
            try:
                rec[name] = fn()
            except LlemError as exc:
                rec[name] = None
                rec.setdefault("llem_errors", []).append(str(exc)[:200])
            except Exception as exc:  # noqa: BLE001 - what escaped is the finding
                rec.setdefault("raw", []).append(f"{name}: {type(exc).__name__}: {exc}"[:200])
    finally:
        library.shutdown()
    p = NvmlMeter([index], library=library).probe()
    rec["probe_ok"], rec["probe"] = p.available, p.reason[:300]
    return rec


def _fake_without_power() -> dict[str, Any]:
    """A fake GPU without power readings, and one with neither power nor counter, through llem."""
    import llem.testing as testing
    from llem.energy.base import MeterUnavailableError
    from llem.energy.nvml import NvmlMeter, PynvmlLibrary

    gpu = testing.FakeNvmlGpu
    fake = testing.FakePynvml([gpu(power_supported=False), gpu(power_supported=False, energy_counter=False)],
                              clock=lambda: 0.0)
    out: dict[str, Any] = {}
    with testing.use_fake_pynvml(fake):
        lib = PynvmlLibrary()
        out["no_power"] = _read_gpu(lib, 0)
        try:  # the meter's whole window on the GPU without power readings
            m0 = NvmlMeter([0], library=lib)
            m0.start()
            m0.sample()
            m0.stop()
            out["no_power"]["start"] = "started, sampled, stopped"
        except LlemError as exc:
            out["no_power"]["start"] = f"llem: {exc}"[:300]
        except Exception as exc:  # noqa: BLE001 - what escaped is the finding
            out["no_power"].setdefault("raw", []).append(f"meter: {type(exc).__name__}: {exc}"[:200])
        meter = NvmlMeter([1], library=lib)
        probe = meter.probe()
        out["neither"] = {"probe_ok": probe.available, "probe": probe.reason[:300]}
        try:
            meter.start()
            meter.stop()
            out["neither"]["start"] = "started"
        except MeterUnavailableError as exc:
            out["neither"]["start"] = f"llem: {exc}"[:300]
        except Exception as exc:  # noqa: BLE001
            out["neither"]["raw"] = f"{type(exc).__name__}: {exc}"[:200]
    out["refcount_after"] = fake.refcount
    return out


@check("nvml-probe", "Every GPU gives power and memory through llem's NVML wrapper, or llem says why",
       limit_s=30, issue="15.10")
def nvml_probe(ctx: Any) -> dict[str, Any]:
    """Each GPU of the machine probe: power, memory, energy and the meter's probe; no raw pynvml error."""
    ctx.need_gpu("the NVML probe")
    gpus = [_read_gpu(ctx.library, g.index) for g in ctx.machine.gpus]
    numbers: dict[str, Any] = {"gpus": gpus}
    problems = [f"gpu:{g['index']}: a raw pynvml error escaped: {g['raw'][0]}" for g in gpus if g.get("raw")]
    for g in gpus:
        silent = g.get("power_mw") is None and not g["probe_ok"] and not g["probe"]
        if silent:
            problems.append(f"gpu:{g['index']}: no power reading and no reason")
    if ctx.simulate:
        fakes = _fake_without_power()
        numbers["fake"] = fakes
        nop, nei = fakes["no_power"], fakes["neither"]
        if nop.get("raw") or nei.get("raw"):
            problems.append(f"a fake GPU without power readings raised a raw pynvml error: "
                            f"{(nop.get('raw') or [nei.get('raw')])[0]}")
        if nop.get("start") != "started, sampled, stopped":
            problems.append(f"the meter on a fake GPU without power readings: {nop.get('start')}")
        if nop.get("power_mw") is not None or not nop["probe_ok"] or "no power reading" not in nop["probe"]:
            problems.append(f"the fake GPU without power readings was not probed as such: {nop['probe']}")
        if nei["probe_ok"] or not str(nei.get("start", "")).startswith("llem: "):
            problems.append(f"the fake GPU with neither reading was not refused by llem: {nei}")
        if fakes["refcount_after"] != 0:
            problems.append(f"NVML left initialised {fakes['refcount_after']} time(s) on the fake")
    read = "; ".join(f"gpu:{g['index']} {_w(g.get('power_mw'))}, {_mb(g.get('memory_used_bytes'))}"
                     for g in gpus)
    fakes_said = "; fake GPUs without power readings: llem's probe notes and refusal"
    words = read + (fakes_said if ctx.simulate else "")
    return outcome("fail" if problems else "pass", "; ".join(problems) or words, **numbers)


def _w(mw: Any) -> str:
    return "no power reading" if mw is None else f"{mw / 1000:.0f} W"


def _mb(b: Any) -> str:
    return "no memory reading" if b is None else f"{b / _MIB:.0f} MiB used"


# ------------------------------------------------------------------ issue 15 item 12
NVML_PAIR = ("nvmlInit", "nvmlShutdown")


@contextmanager
def counting_nvml() -> Iterator[dict[str, int]]:
    """Count the ``nvmlInit``/``nvmlShutdown`` calls made through the ``pynvml`` module inside.

    Each is wrapped on the module (llem looks them up at each call) and put back after.
    """
    import pynvml

    counts = {n: 0 for n in NVML_PAIR}
    before = {n: getattr(pynvml, n) for n in NVML_PAIR}
    own = {n for n in NVML_PAIR if n in vars(pynvml)}  # a module's functions; not a fake's methods

    def wrap(name: str) -> Any:
        real = before[name]

        def call(*a: Any, **kw: Any) -> Any:
            out = real(*a, **kw)
            counts[name] += 1  # counted only when it succeeded
            return out
        return call

    for n in NVML_PAIR:
        setattr(pynvml, n, wrap(n))
    try:
        yield counts
    finally:
        for n in NVML_PAIR:
            if n in own:
                setattr(pynvml, n, before[n])
            else:
                delattr(pynvml, n)


def _still_initialised(pynvml: Any) -> bool | None:
    """After a fresh init and one shutdown, whether NVML still answers (someone holds an init)."""
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001
        return None
    pynvml.nvmlShutdown()
    try:
        pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:
        return False
    return True


@check("nvml-init-balanced", "nvmlInit and nvmlShutdown pair up in llem's machine probe, environment "
       "record and run", limit_s=90, issue="15.12")
def nvml_init_balanced(ctx: Any) -> dict[str, Any]:
    """Wrap pynvml's init/shutdown, then probe the machine, record an environment, run 2 prompts."""
    from llem import machine as machine_room
    from llem.runner import environment

    ctx.need_gpu("NVML's init/shutdown pairing")
    if not _importable("pynvml") and not ctx.simulate:
        raise Skip("pynvml is not installed (pip install nvidia-ml-py)")
    fake = sys.modules.get("pynvml") if ctx.simulate else None
    ref0 = getattr(fake, "refcount", None)
    steps: dict[str, Any] = {}
    cfg = runs.config(ctx, "tiny-random-llama", **{
        "repeats": 1, "warmup.runs": 0, "num_prompts": 2, "pytorch.batch_size": 2,
        "decoder.max_new_tokens": 4, "decoder.min_new_tokens": 4, "baseline.seconds": 0.0})
    with counting_nvml() as counts:
        for step, fn in (("get_machine(refresh=True)", lambda: machine_room.get_machine(refresh=True)),
                         ("probe()", machine_room.probe),
                         ("environment()", lambda: environment(SimpleNamespace(device="cpu"), None)),
                         ("llem.run", lambda: run(cfg))):
            was = dict(counts)
            fn()
            steps[step] = {n: counts[n] - was[n] for n in NVML_PAIR}
    import pynvml

    numbers: dict[str, Any] = {"steps": steps, "inits": counts["nvmlInit"],
                               "shutdowns": counts["nvmlShutdown"]}
    if fake is not None:
        numbers["fake_refcount_before"], numbers["fake_refcount_after"] = ref0, fake.refcount
    numbers["nvml_held_after_one_shutdown"] = _still_initialised(pynvml)
    bad = [s for s, c in steps.items() if c["nvmlInit"] != c["nvmlShutdown"]]
    if fake is not None and fake.refcount != ref0:
        bad.append(f"the fake's refcount went {ref0} -> {fake.refcount}")
    cpu = " (the run was on the CPU, so it metered no GPU)" if not ctx.cuda else ""
    words = (f"{counts['nvmlInit']} inits, {counts['nvmlShutdown']} shutdowns over "
             f"{', '.join(steps)}{cpu}; after a fresh init and one shutdown NVML "
             + {True: "still answers (another init is held in this process: torch's or an earlier check's)",
                False: "is shut", None: "could not start"}[numbers["nvml_held_after_one_shutdown"]])
    if bad:
        said = "; ".join(f"{s}: {steps[s]}" if s in steps else s for s in bad)
        return outcome("fail", f"unbalanced: {said}; {words}", **numbers)
    return outcome("pass", words, **numbers)


@check("vllm-seed-once", "decoder.seed goes to vLLM's engine once and to no request", limit_s=60,
       issue="15.12")
def vllm_seed_once(ctx: Any) -> dict[str, Any]:
    """The vLLM translation of a seed, and the installed vLLM's EngineArgs and SamplingParams of it."""
    from llem.backends.vllm import VLLMBackend, vllm_engine_kwargs, vllm_sampling_kwargs

    cfg = engine_config("vllm", **{"decoder.seed": 1234, "decoder.do_sample": True,
                                   "decoder.temperature": 0.7})
    engine_kw, _ = vllm_engine_kwargs(cfg)
    sampling_kw, _ = vllm_sampling_kwargs(cfg)
    per_batch = "seed" in inspect.signature(VLLMBackend.generate).parameters
    numbers: dict[str, Any] = dict(engine_seed=engine_kw.get("seed"), sampling_keys=sorted(sampling_kw),
                                   generate_takes_seed=per_batch)
    problems = []
    if engine_kw.get("seed") != 1234:
        problems.append(f"LLM(...) gets seed={engine_kw.get('seed')!r}, not 1234")
    if "seed" in sampling_kw:
        problems.append("SamplingParams gets a seed (vLLM's slower per-request sampler)")
    if per_batch:
        problems.append("VLLMBackend.generate takes a per-batch seed")
    if problems:
        return outcome("fail", "; ".join(problems), **numbers)
    if not _importable("vllm"):
        raise Skip(f"vllm is not installed here ({INSTALL['vllm']}); llem's own translation passes "
                   "seed=1234 to LLM(...) once and none to SamplingParams, not checked against vLLM")
    import dataclasses

    import vllm

    args = vllm.EngineArgs(**{k: v for k, v in engine_kw.items()
                              if k in {f.name for f in dataclasses.fields(vllm.EngineArgs)}})
    params = vllm.SamplingParams(**sampling_kw)
    numbers.update(vllm=str(getattr(vllm, "__version__", "")), engine_args_seed=getattr(args, "seed", None),
                   sampling_params_seed=getattr(params, "seed", None))
    ok = numbers["engine_args_seed"] == 1234 and numbers["sampling_params_seed"] is None
    return outcome("pass" if ok else "fail", f"vLLM {numbers['vllm']}: EngineArgs.seed "
                   f"{numbers['engine_args_seed']}, SamplingParams.seed {numbers['sampling_params_seed']}",
                   **numbers)
