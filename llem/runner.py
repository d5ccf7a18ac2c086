"""``llem.run(config, prompts=None) -> Result``: one experiment, measured.

The runner resolves the model and the prompts, loads the backend (found through the
``llem.backends`` entry-point group, with a built-in fallback table), makes the batches,
runs the warmup passes (not measured), waits out the thermal floor when the profile asks
for it, then makes ``repeats`` measured runs, each a pass over every prompt inside one
energy window (:func:`llem.energy.window.measure`). The backend marks the ``prefill`` and
``decode`` phases in that window, so energy splits by phase. Around each measured pass it
reads ``/proc/stat`` once at the start and once at the end (the share of the CPUs other
processes used); the result's validity flags (:mod:`llem.results.flags`) are checked from
those shares and what the runs kept.

It never imports IPython: the notebook layer drives a progress bar through ``progress``
and a live power plot through ``on_sample``.

Batching strategies (``pytorch.batching_strategy``):

- ``static``: consecutive groups of ``batch_size`` prompts, in the given order;
- ``sorted_static``: the same after sorting prompts by length, longest first, so each
  batch holds prompts of similar length and pads less;
- ``dynamic``: consecutive prompts, each batch grown while ``rows x (longest prompt +
  max_new_tokens)`` stays within ``max_tokens_per_batch`` (a token budget that bounds the
  KV cache a batch needs);
- ``sorted_dynamic``: the same after sorting by length.

A ``KeyboardInterrupt`` (the notebook's stop button) stops the samplers, releases the
model and raises :class:`~llem.errors.RunInterrupted` whose ``partial`` is the
:class:`~llem.results.Result` so far, marked incomplete. One that lands after the last
measured run (while the model is released, say) loses nothing: ``partial`` is then the
complete Result, with a note saying where the interrupt landed.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llem import plugins, spec
from llem._version import __version__
from llem.backends import loadsteps
from llem.backends.base import PhaseMarks
from llem.backends.phases import run_phases
from llem.config import ExperimentConfig
from llem.energy.conditions import cpu_times, other_cpu_share
from llem.energy.memory import PeakMemory, reader_for
from llem.energy.power_limit import RunPowerLimit
from llem.energy.window import measure
from llem.errors import ConfigError, LlemError, RunInterrupted, unknown_name
from llem.machine import (
    Gpu,
    Machine,
    cuda_order_is_certain,
    get_machine,
    gpu_record,
    nvml_gpus_for_cuda,
    visible_gpus,
)
from llem.models import check_hub_access
from llem.progress import ProgressCallback, SampleForwarder, live_window, reporters
from llem.prompts import Prompt, load_prompts, synthetic_prompts
from llem.results import RequestRecord, Result, RunMeasurement, now_iso, plain
from llem.results.flags import result_flags
from llem.spec.model import BACKENDS
from llem.spec.tiers import tier_for

#: Batching strategies the runner knows (the choices of ``pytorch.batching_strategy``).
STRATEGIES: tuple[str, ...] = tuple(spec.param("pytorch.batching_strategy").choices or ())

#: Token budget of a dynamic batch when ``max_tokens_per_batch`` is unset (the row's default).
DEFAULT_MAX_TOKENS_PER_BATCH: int = spec.param("pytorch.max_tokens_per_batch").library_default["pytorch"]



# ------------------------------------------------------------------- backends
def backend_names() -> list[str]:
    """Names of the backends that can be asked for (:func:`llem.plugins.names`)."""
    return plugins.names("backend")


def get_backend_class(name: str) -> type:
    """The class of backend ``name`` (:func:`llem.plugins.get`)."""
    return plugins.get("backend", name)


# --------------------------------------------------------------------- config
def as_config(config: Any) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a config, a dict, a YAML/JSON path, or None (defaults)."""
    if config is None:
        return ExperimentConfig()
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return ExperimentConfig.load(os.fspath(config))
    if isinstance(config, dict):
        return ExperimentConfig.from_dict(config)
    raise ConfigError(
        f"llem.run needs an ExperimentConfig, a dict or a config file path, not "
        f"{type(config).__name__}. Fix: build one with llem.ExperimentConfig(...)."
    )


# -------------------------------------------------------------------- batches
def make_batches(
    lengths: Sequence[int],
    strategy: str = "static",
    batch_size: int = 1,
    max_tokens_per_batch: int | None = None,
    max_new_tokens: int = 0,
) -> list[list[int]]:
    """Group prompt indexes into batches.

    Parameters
    ----------
    lengths : sequence of int
        Prompt lengths in tokens (after truncation).
    strategy : {"static", "sorted_static", "dynamic", "sorted_dynamic"}
    batch_size : int
        Rows per batch for the static strategies; ignored by the dynamic ones.
    max_tokens_per_batch : int, optional
        Token budget of a dynamic batch: ``rows * (longest prompt + max_new_tokens)``.
        A prompt that alone exceeds it gets a batch of its own.
    max_new_tokens : int
        Output length counted in the budget.

    Returns
    -------
    list of list of int
        Indexes into ``lengths``.
    """
    if strategy not in STRATEGIES:
        raise unknown_name("batching strategy", strategy, STRATEGIES)
    order = list(range(len(lengths)))
    if strategy.startswith("sorted"):
        order.sort(key=lambda i: (-lengths[i], i))
    if strategy.endswith("static"):
        size = max(1, int(batch_size))
        return [order[i:i + size] for i in range(0, len(order), size)]
    budget = int(max_tokens_per_batch or DEFAULT_MAX_TOKENS_PER_BATCH)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and (len(current) + 1) * (new_longest + max_new_tokens) > budget:
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


# --------------------------------------------------------------- environment
def environment(info: Any, backend: Any, meas: Any = None, config_hash: str = "",
                machine: Machine | None = None, metered: Sequence[Gpu] | None = None) -> dict[str, Any]:
    """Versions, hardware, tier and meter of this run, as a JSON-safe dict.

    The hardware comes from :func:`llem.machine.get_machine` (NVML; CUDA is not touched).
    ``metered`` are the GPUs the model was placed on and the meter read
    (``metered_gpus``; the tier and ``gpu`` are theirs); None: not known.
    """
    import platform
    import sys

    m = machine or get_machine()
    device = str(getattr(info, "device", None) or "cpu")
    on_gpu = (bool(metered) if metered is not None else device.startswith("cuda")) and bool(m.gpus)
    env: dict[str, Any] = {
        "llem": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": m.cpu.model,
        "cpu_count": m.cpu.threads,
        "backend": getattr(backend, "name", type(backend).__name__),
        "device": getattr(info, "device", None),
        "config_hash": config_hash,
    }
    env.update({f"{k}_version": v for k, v in (getattr(info, "versions", {}) or {}).items()})
    if metered is not None:
        env["metered_gpus"] = [gpu_record(g) for g in metered]
    cc = m.cc_of([g.index for g in metered]) if metered else m.cc
    if m.gpus:
        env["gpu"] = metered[0].name if metered else m.gpus[0].name
        env["gpu_count"] = m.gpu_count
        env["compute_capability"] = f"{cc:.1f}"
        env["driver"] = m.driver
        torch = sys.modules.get("torch")
        cuda = getattr(getattr(torch, "version", None), "cuda", None)
        if cuda:
            env["cuda"] = cuda
    else:
        env["gpu"] = None
    env["tier"] = tier_for(cc).name if on_gpu else "cpu"
    env["machine"] = m.to_dict()
    chat = getattr(backend, "chat", None)  # experiment.chat_template: applied or not, and why
    if chat is not None and hasattr(chat, "record"):
        env["chat_template"] = chat.record
    if meas is not None:
        env["meter"] = getattr(meas, "meter", "") or ""
        env["energy_method"] = getattr(meas, "method", "")
        env["energy_source"] = getattr(meas, "source", "")
    return env


# ------------------------------------------------------------------ the run
@dataclass
class _Plan:
    prompts: list[Prompt]
    lengths: list[int]
    batches: list[list[int]]
    gen_kw: list[dict[str, Any]]


class _RunState:
    """What measured run ``index`` has produced so far (for partial results)."""

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.records: list[RequestRecord] = []
        self.batches: list[Any] = []
        self.t_start: float | None = None
        self.t_end: float | None = None


def _accepts(fn: Callable[..., Any]) -> set[str]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {"max_new_tokens", "min_new_tokens", "seed", "on_sample"}
    return set(params)


def _resolve_prompts(cfg: ExperimentConfig, prompts: Any, backend: Any,
                     notes: list[str], effective: dict[str, Any], info: Any = None) -> list[Prompt]:
    source = prompts if prompts is not None else cfg.prompts
    seed = int(effective.get("decoder.seed", cfg.decoder.seed))
    if source == "synthetic":
        tok = getattr(backend, "tokenizer", None)
        if tok is None:
            raise ConfigError(
                f"Synthetic prompts need the model's tokenizer; the {backend.name!r} backend "
                "does not expose one. Use a prompt set instead."
            )
        ds = cfg.dataset
        ctx = getattr(info, "max_context_tokens", None)
        if ctx and ds.input_len + ds.output_len > ctx:  # checked before a token is made
            fix = (f"lower dataset.input_len to at most {ctx - ds.output_len} (or "
                   "dataset.output_len)" if ds.output_len < ctx else
                   f"lower dataset.output_len below {ctx}, then dataset.input_len to fit")
            raise ConfigError(
                f"dataset.input_len={ds.input_len} plus dataset.output_len={ds.output_len} is "
                f"{ds.input_len + ds.output_len} tokens, more than the model's context of {ctx} "
                f"tokens. Fix: {fix}.")
        count = cfg.num_prompts or ds.count
        out = synthetic_prompts(tok, count=count, input_len=ds.input_len, output_len=ds.output_len,
                                seed=seed, count_tokens=backend.count_tokens)
        effective.update({"dataset.count": count, "dataset.input_len": ds.input_len,
                          "dataset.output_len": ds.output_len})
        notes.append(f"{count} synthetic prompts of exactly {ds.input_len} tokens (seed "
                     f"decoder.seed={seed}), each generating exactly {ds.output_len} tokens "
                     "(min_new_tokens = max_new_tokens).")
        return out
    # prompts given to run() are used as given; num_prompts sizes config sources
    n = None if prompts is not None else cfg.num_prompts
    return load_prompts(source, n, order=cfg.dataset.order, seed=seed)


def _plan(cfg: ExperimentConfig, prompts: list[Prompt], backend: Any, info: Any, effective: dict,
          skipped: dict, notes: list[str]) -> _Plan:
    max_in = cfg.max_input_tokens
    max_new = effective.get("decoder.max_new_tokens") or cfg.decoder.max_new_tokens
    ctx = getattr(info, "max_context_tokens", None)
    raw_lengths = [backend.count_tokens(p.text) for p in prompts]
    lengths = []
    for p, n in zip(prompts, raw_lengths):
        use = min(n, max_in) if max_in else n
        out_len = p.max_new_tokens or max_new
        if ctx and use + out_len > ctx:
            if max_in and n > max_in:
                fix = f"lower max_input_tokens to {max(1, ctx - out_len)} or less"
            else:
                fix = (f"set max_input_tokens (at most {max(1, ctx - out_len)}) to truncate it, "
                       "shorten the prompt, or lower decoder.max_new_tokens")
            raise ConfigError(
                f"Prompt {p.id or '?'!r} is {n} tokens"
                + (f" ({use} after truncation)" if use != n else "")
                + f"; with {out_len} new tokens that exceeds the model's context of {ctx} "
                f"tokens. {fix[0].upper() + fix[1:]}."
            )
        lengths.append(use)
    n_trunc = sum(1 for n in raw_lengths if max_in and n > max_in)
    if n_trunc:
        notes.append(f"{n_trunc} prompt(s) longer than max_input_tokens={max_in} were truncated "
                     "(their end was cut).")

    bname = cfg.backend
    section = cfg.backend_section
    if section is None or "batch_size" not in section._rows:
        # an engine with its own scheduler (vLLM, TensorRT-LLM): submit every prompt at once
        batches = [list(range(len(prompts)))]
        notes.append(f"The {bname} engine schedules requests itself: all {len(prompts)} prompts "
                     "were submitted together (no runner-side batching).")
    else:
        strategy = getattr(section, "batching_strategy", None) or STRATEGIES[0]
        batch_size = int(cfg.get(f"{bname}.batch_size"))
        budget = getattr(section, "max_tokens_per_batch", None)
        cap = getattr(info, "max_batch_size", None)
        if cap is not None and (batch_size > cap or strategy.endswith("dynamic")):
            skipped[f"{bname}.batch_size"] = (
                f"the backend runs at most {cap} prompt(s) per batch in this setting (see the "
                f"notes); batches of {cap} were used")
            strategy, batch_size = "static", cap
        if strategy.endswith("static") and budget is not None:
            skipped[f"{bname}.max_tokens_per_batch"] = (
                f"only used by the dynamic strategies (batching_strategy is {strategy!r})")
        batches = make_batches(lengths, strategy, batch_size, budget, int(max_new))
        effective[f"{bname}.batching_strategy"] = strategy
        if strategy.endswith("dynamic"):
            effective[f"{bname}.max_tokens_per_batch"] = int(budget or DEFAULT_MAX_TOKENS_PER_BATCH)
            effective[f"{bname}.batch_size"] = max(len(b) for b in batches)
        else:
            effective[f"{bname}.batch_size"] = batch_size
    effective["experiment.max_input_tokens"] = max_in
    effective["experiment.num_prompts"] = len(prompts)

    accepted = _accepts(backend.generate)
    seed = effective.get("decoder.seed", cfg.decoder.seed)
    gen_kw = []
    for b, idx in enumerate(batches):
        kw: dict[str, Any] = {}
        outs = {prompts[i].max_new_tokens for i in idx}
        if len(outs) == 1 and None not in outs:
            (out_len,) = outs
            if "max_new_tokens" in accepted:
                kw["max_new_tokens"] = out_len
            if "min_new_tokens" in accepted:
                kw["min_new_tokens"] = out_len
        if seed is not None and "seed" in accepted:
            kw["seed"] = int(seed) + b
        gen_kw.append(kw)
    return _Plan(prompts, lengths, batches, gen_kw)


def _run_batches(backend: Any, plan: _Plan, state: _RunState, mark: Callable[[str], None],
                 progress: Callable[[int], None]) -> None:
    state.t_start = time.perf_counter()
    for b, idx in enumerate(plan.batches):
        texts = [plan.prompts[i].text for i in idx]
        out = backend.generate(texts, mark, **plan.gen_kw[b])
        mark("host")
        state.batches.append((idx, out))
        t0 = out.t0_perf if getattr(out, "t0_perf", None) is not None else time.perf_counter()
        for i, req in zip(idx, out.requests):
            p = plan.prompts[i]
            state.records.append(RequestRecord(
                prompt_id=p.id, prompt=p.text, text=req.text, input_tokens=req.input_tokens,
                output_tokens=req.output_tokens, batch=b, batch_start_s=t0 - state.t_start,
                token_times_s=tuple(req.token_times_s), truncated=req.truncated,
                source=p.source,
            ))
        state.t_end = time.perf_counter()
        progress(b + 1)


def _run_measurement(index: int, state: _RunState, meas: Any, peak_mib: float | None,
                     mem_source: str, n_params: int | None, complete: bool,
                     run_peak_mib: float | None = None) -> RunMeasurement:
    outs = [o for _, o in state.batches]
    records = sorted(state.records, key=lambda r: (r.batch, r.batch_start_s))
    duration = ((state.t_end or 0.0) - (state.t_start or 0.0)) if state.t_start else 0.0
    out_tokens = sum(r.output_tokens for r in records)
    in_tokens = sum(r.input_tokens for r in records)
    n = len(records)
    prefill_s, decode_s, no_split = run_phases(outs)  # no split is made up where a batch has none
    waste = sum(getattr(o, "decode_steps", 0) * len(o.requests)
                - sum(r.output_tokens for r in o.requests) for o in outs)
    energy = getattr(meas, "energy_j", None)
    dyn = getattr(meas, "dynamic_energy_j", None)
    pe = de = None
    if meas is not None and energy is not None and no_split is None:
        try:
            phases = meas.phase_energy_j()
            pe, de = phases.get("prefill", 0.0), phases.get("decode", 0.0)
        except Exception:  # noqa: BLE001
            pass
    start_s = 0.0
    if meas is not None and state.t_start is not None:
        start_s = state.t_start - getattr(meas, "t0_perf", state.t_start)

    def per(x: float | None, d: int) -> float | None:
        return x / d if x is not None and d else None

    return RunMeasurement(
        index=index, duration_s=duration, prefill_s=prefill_s, decode_s=decode_s,
        num_requests=n, input_tokens=in_tokens, output_tokens=out_tokens,
        padding_tokens=sum(o.padding_tokens for o in outs), decode_waste_tokens=max(0, waste),
        num_batches=len(outs),
        tokens_per_s=out_tokens / duration if duration > 0 else None,
        requests_per_s=n / duration if duration > 0 else None,
        energy_j=energy, dynamic_energy_j=dyn, prefill_energy_j=pe, decode_energy_j=de,
        energy_per_token_j=per(energy, out_tokens), dynamic_energy_per_token_j=per(dyn, out_tokens),
        energy_per_request_j=per(energy, n), dynamic_energy_per_request_j=per(dyn, n),
        peak_memory_mib=peak_mib, memory_source=mem_source,
        flops_estimate=2.0 * n_params * (in_tokens + out_tokens) if n_params else None,
        start_s=start_s, requests=tuple(records), measurement=meas, complete=complete,
        run_peak_memory_mib=run_peak_mib,
    )


def _window(cfg: ExperimentConfig, baseline: bool = True, devices: Sequence[int] | None = None,
            also_each_tick: Sequence[Callable[[], Any]] = ()) -> Any:
    """An energy window for ``cfg`` over GPUs ``devices`` (NVML indices; None: all).

    With the idle baseline unless ``baseline`` is False; ``also_each_tick`` runs on the
    sampler's thread at each tick (the run's memory readings: one thread, not two).
    """
    return measure(
        meter=cfg.meter,
        interval_s=cfg.sampling_interval_s,
        baseline_s=cfg.baseline.seconds if baseline else 0.0,
        baseline_cache_ttl_s=cfg.baseline.cache_ttl_s,
        grid_intensity_g_per_kwh=cfg.grid_intensity_g_per_kwh,
        devices=None if devices is None else list(devices), scope=cfg.energy_scope,
        also_each_tick=also_each_tick,
    )


def _metered_gpus(info: Any, machine: Machine, notes: list[str]) -> tuple[Gpu, ...]:
    """The GPUs the backend placed the model on (``LoadInfo.cuda_devices``, as NVML records)."""
    cuda = tuple(getattr(info, "cuda_devices", ()) or ())
    if not cuda and str(getattr(info, "device", "")).startswith("cuda"):
        cuda = (0,)  # a backend that says only "cuda" runs on CUDA's device 0
    if not cuda:
        return ()
    try:
        gpus = nvml_gpus_for_cuda(cuda, machine.gpus)
    except LlemError as exc:
        notes.append(f"No GPU energy was read: the model's GPUs could not be matched ({exc})")
        return ()
    if len(gpus) < len(visible_gpus(machine.gpus)) and not cuda_order_is_certain(machine.gpus):
        notes.append("The GPUs differ and CUDA_DEVICE_ORDER is not PCI_BUS_ID: which GPU CUDA "
                     "numbers first is llem's guess (fastest first). Set CUDA_DEVICE_ORDER=PCI_BUS_ID "
                     "to be sure the metered GPUs are the model's.")
    if any(g.mig for g in gpus):
        notes.append("The model runs on a MIG slice: NVML reads energy and power of the whole GPU, "
                     "so other slices' work is counted too.")
    return gpus


def run(
    config: ExperimentConfig | dict[str, Any] | str | os.PathLike[str] | None = None,
    prompts: Any = None,
    *,
    progress: ProgressCallback | None = None,
    on_sample: Callable[[Any], None] | None = None,
    backend: Any = None,
) -> Result:
    """Run one experiment and measure it.

    Parameters
    ----------
    config : ExperimentConfig, dict, path, or None
        The experiment. A dict is read with ``ExperimentConfig.from_dict``, a path with
        ``ExperimentConfig.load``; None means every default of the table.
    prompts : str, path, list, optional
        Overrides ``config.prompts``: a built-in set name, a file, a list of prompt
        strings, or ``"synthetic"`` (see :func:`llem.prompts.load_prompts`).
    progress : callable, optional
        ``progress(stage, done, total)`` with stage ``"load"``, ``"warmup"``,
        ``"thermal"``, ``"run 1/3"``... and ``"done"``. A callback that also takes a
        ``step`` keyword hears what the load is doing (``step="reading the weights from the
        GGUF file"``, the libraries' progress bars as ``"Loading weights 12/30"``) and the
        start of each measured run (``done`` its first batch's count, ``step="starting"``).
        The libraries' own progress bars are not drawn during the load
        (:mod:`llem.backends.loadsteps`).
    on_sample : callable, optional
        Receives each live power sample from the energy sampler: from the start of the
        load (a window of its own, without baseline, covers the load and the warmup; its
        samples go only to ``on_sample``), then those of each measured run.
    backend : backend object, optional
        Use this backend instead of making one for ``config.backend``. The runner calls
        its ``load(config)`` as usual but does not release it at the end: the caller owns
        it (:func:`llem.study.sweep` passes one that keeps its model across runs).

    Returns
    -------
    Result

    Raises
    ------
    RunInterrupted
        On ``KeyboardInterrupt``; ``exc.partial`` is the incomplete Result, or the
        complete one (``exc.partial.complete``) when the interrupt landed after the last
        measured run.
    ModelNotFoundError, OutOfMemoryError, ConfigError, MissingDependencyError
        With the fix in the message.
    """
    cfg = as_config(config)
    report, tell = reporters(progress)
    created = now_iso()
    cfg_dict = plain(cfg.to_dict())
    cfg_hash = cfg.config_hash()
    machine = get_machine()
    notes: list[str] = []
    effective: dict[str, Any] = {}
    runs: list[RunMeasurement] = []
    cpu_shares: list[float | None] = []  # per run: other processes' share of the CPUs
    warm: dict[str, Any] = {}
    thermal = None
    info = None
    metered: tuple[Gpu, ...] | None = None  # the GPUs the model is on, once loaded
    owns_backend = backend is None  # a backend passed in is the caller's to release
    if cfg.backend in BACKENDS:  # llem's engines load hub ids: fail in seconds when offline
        check_hub_access(cfg.model, cfg.lora_adapter)
    if backend is None:
        backend = get_backend_class(cfg.backend)()
    state: _RunState | None = None
    win_holder: dict[str, Any] = {}
    stage = "load"
    done: Result | None = None  # the complete result, once the last run is measured
    stopped: str | None = None  # where an interrupt landed
    release_note = ""

    # skip rules on what the machine has (GPUs, compute capability, packages): the fields
    # they name are left unset for the load, so the backend never sees them
    facts = machine.facts()
    probe = getattr(backend, "probe_facts", None)  # what the checkpoint tells before loading
    if callable(probe):
        facts.update(probe(cfg) or {})
    table_skips = cfg.skipped(facts)
    load_cfg = _without(cfg, table_skips)
    backend_skips: dict[str, str] = {}

    def result(complete: bool) -> Result:
        meas0 = runs[0].measurement if runs else None
        env = environment(info, backend, meas0, cfg_hash, machine, metered)
        env["facts"] = plain(facts)
        limit.restore_and_record(env, notes)  # every GPU back at its limit before the result says so
        res = Result(
            model=cfg.model, backend=cfg.backend, runs=tuple(runs), config=cfg_dict,
            effective_config=plain(effective), skipped={**backend_skips, **table_skips},
            environment=plain(env), complete=complete, notes=tuple(notes),
            warmup=plain(warm), config_hash=cfg_hash, created_at=created,
            load_s=getattr(info, "load_s", 0.0) or 0.0,
            num_parameters=getattr(info, "num_parameters", None), thermal=thermal,
        )
        return dataclasses.replace(res, flags=result_flags(res, cpu_shares))

    limit = RunPowerLimit(cfg.gpu_power_limit_w, effective)  # refused here, before the load
    live_pre = live_window(_window(cfg, baseline=False), on_sample, cfg.sampling_interval_s)
    try:
        with live_pre:  # samples from the start of the load, for a live plot only
            report("load", 0, 1)
            with loadsteps.reporting(lambda text, d, t: tell("load", 0, 1, text, d, t)):
                info = backend.load(load_cfg)
            report("load", 1, 1)
            effective.update(info.effective)
            backend_skips.update(info.skipped)
            notes.extend(info.notes)
            metered = _metered_gpus(info, machine, notes)  # meter exactly the model's GPUs
            gpu_ids = [g.index for g in metered]
            # skip rules on what the load found (a failed compile, a checkpoint's quantization)
            facts.update(getattr(info, "facts", {}) or {})
            table_skips.update(cfg.skipped(facts))
            if "decoder.preset" not in effective and cfg.decoder.preset:
                effective["decoder.preset"] = cfg.decoder.preset

            plist = _resolve_prompts(cfg, prompts, backend, notes, effective, info)
            plan = _plan(cfg, plist, backend, info, effective, backend_skips, notes)
            method = cfg.resolved_method()
            effective.update(method)
            effective["experiment.repeats"] = cfg.repeats
            effective["experiment.profile"] = cfg.profile

            # warmup: passes over the first batch, not measured
            stage = "warmup"
            warm = _warmup(backend, plan, method, report)

        # thermal floor: wait with the sampler recording, so the settling shows
        floor = float(method.get("warmup.thermal_floor_s") or 0.0)
        if floor > 0:
            stage = "thermal"
            with live_window(_window(cfg, baseline=False), on_sample, cfg.sampling_interval_s):
                thermal = _thermal_wait(cfg, floor, notes, report, gpu_ids)

        repeats = cfg.repeats
        total = repeats * len(plan.batches)
        for r in range(repeats):
            stage = f"run {r + 1}/{repeats}"
            state = _RunState(r)
            interval = cfg.sampling_interval_s
            cuda = tuple(getattr(info, "cuda_devices", ()) or ())
            mem = PeakMemory(reader_for(cfg.backend, cuda), cuda_devices=cuda, nvml_indices=gpu_ids,
                             interval_s=interval)
            win_holder.clear()
            live = None
            tell(stage, r * len(plan.batches), total, "starting")
            mem.start(background=False)  # what it must sample, the window's sampler reads
            win = _window(cfg, devices=gpu_ids, also_each_tick=(mem.sample,) if mem.samples else ())
            try:
                with win as m:
                    win_holder["m"] = m
                    if on_sample is not None:
                        live = SampleForwarder(m, on_sample, interval)
                        live.start()
                    done0 = r * len(plan.batches)

                    def batch_done(b: int, s: str = stage, d: int = done0) -> None:
                        report(s, d + b, total)

                    cpu0 = cpu_times()  # read at the start and end only: measuring stays cheap
                    _run_batches(backend, plan, state, PhaseMarks(m.mark, m.poke), batch_done)
                    cpu_shares.append(other_cpu_share(cpu0, cpu_times()))
            finally:
                peak, own_peak = mem.stop()
                if live is not None:
                    live.stop()
                    if live.error is not None and not any("on_sample" in n for n in notes):
                        notes.append(f"Live samples stopped: on_sample raised {live.error!r}.")
            runs.append(_run_measurement(r, state, m.measurement, peak, mem.source,
                                         info.num_parameters, True, own_peak))
            notes.extend(n for n in run_phases([o for _, o in state.batches])[2:] if n and n not in notes)
            state = None
        # skip rules on what the outputs show (prompt lookup with nothing to copy)
        facts["prompt_overlap"] = prompt_overlap(runs[-1].requests) if runs else None
        if facts["prompt_overlap"] is None:
            del facts["prompt_overlap"]
        table_skips.update(cfg.skipped(facts))
        stage = "the end of the run"
        done = result(True)  # the work is done: from here an interrupt loses nothing
        report("done", total, total)
    except KeyboardInterrupt:
        stopped = stage
        if done is None and state is not None and state.records and len(runs) == state.index:
            m = win_holder.get("m")
            meas = getattr(m, "measurement", None) if m is not None else None
            runs.append(_run_measurement(len(runs), state, meas, None, "", getattr(
                info, "num_parameters", None), False))
    finally:
        stopped = limit.close(stopped)  # also after an error or an interrupt
        if owns_backend:
            try:
                backend.release()
            except KeyboardInterrupt:
                # an interrupt while the model is released: the figures are already taken
                stopped = stopped or "the release of the model"
                release_note = ("Interrupted while the model was released; the release may "
                                "not have finished (the process frees the memory when it exits).")
    if stopped is None and done is not None:
        return done
    if done is not None:
        # the interrupt landed after the last measured run: the result is complete
        extra = tuple(n for n in (release_note,) if n) + (
            f"Interrupted during {stopped}, after the last measured run; the result is complete.",)
        kept = dataclasses.replace(done, notes=done.notes + extra)
        raise RunInterrupted(
            f"The run was interrupted during {stopped}, after its last measured run; the "
            "result is complete and attached as exc.partial.", kept, stage=stopped or "")
    notes.append(f"Interrupted during {stopped}; {len(runs)} run(s) kept"
                 + (", the last one partial." if runs and not runs[-1].complete else "."))
    if release_note:
        notes.append(release_note)
    what = ("the partial result is attached as exc.partial (marked incomplete)." if runs else
            "nothing was measured (exc.partial holds the settings and no runs).")
    raise RunInterrupted(f"The run was interrupted during {stopped}; {what}", result(False),
                         stage=stopped or "")


def _without(cfg: ExperimentConfig, skipped: dict[str, str]) -> ExperimentConfig:
    """``cfg`` with the fields a skip rule named left unset (the same object when none)."""
    present = [p for p in skipped if cfg.get(p) not in (None, False)]
    if not present:
        return cfg
    out = cfg.copy()
    out.update({p: None for p in present if spec.param(p).allow_none})
    return out


#: Output n-grams this long that also stand in the prompt count as copied from it.
OVERLAP_NGRAM = 3

#: Below this share of copied n-grams, prompt-lookup decoding has nothing to reuse.
OVERLAP_MIN_SHARE = 0.1


def prompt_overlap(requests: Sequence[RequestRecord]) -> bool | None:
    """Whether the outputs copy word n-grams from their prompts (the ``env.prompt_overlap`` fact).

    True when at least :data:`OVERLAP_MIN_SHARE` of the outputs' word
    :data:`OVERLAP_NGRAM`-grams also occur in the prompt; None when no output is long
    enough to tell.
    """
    copied = total = 0
    for req in requests:
        words = re.findall(r"\w+", req.text.lower())
        grams = [tuple(words[i:i + OVERLAP_NGRAM]) for i in range(len(words) - OVERLAP_NGRAM + 1)]
        if not grams:
            continue
        p = re.findall(r"\w+", req.prompt.lower())
        source = {tuple(p[i:i + OVERLAP_NGRAM]) for i in range(len(p) - OVERLAP_NGRAM + 1)}
        copied += sum(g in source for g in grams)
        total += len(grams)
    if not total:
        return None
    return copied / total >= OVERLAP_MIN_SHARE


def _warmup(backend: Any, plan: _Plan, method: dict[str, Any],
            report: ProgressCallback) -> dict[str, Any]:
    runs = int(method.get("warmup.runs") or 0)
    adaptive = bool(method.get("warmup.adaptive"))
    threshold = float(method.get("warmup.cv_threshold") or 0.05)
    window = int(method.get("warmup.window") or 5)
    cap = int(method.get("warmup.max_runs") or 20)
    latencies: list[float] = []
    if not plan.batches:
        return {"passes": 0, "latencies_s": [], "adaptive": adaptive, "converged": None}
    texts = [plan.prompts[i].text for i in plan.batches[0]]
    limit = max(runs, cap) if adaptive else runs
    converged = None
    cv = None
    i = 0
    while i < limit:
        report("warmup", i, limit if adaptive else runs)
        t = time.perf_counter()
        backend.generate(texts, None, **plan.gen_kw[0])
        latencies.append(time.perf_counter() - t)
        i += 1
        if adaptive and i >= max(runs, window):
            tail = latencies[-window:]
            mean = statistics.fmean(tail)
            cv = statistics.stdev(tail) / mean if len(tail) > 1 and mean > 0 else 0.0
            if cv <= threshold:
                converged = True
                break
    if adaptive and converged is None:
        converged = False
    report("warmup", i, i)
    return {"passes": i, "latencies_s": latencies, "adaptive": adaptive,
            "converged": converged, "final_cv": cv, "cv_threshold": threshold if adaptive else None,
            "pass": "first batch, full length"}


def _thermal_wait(cfg: ExperimentConfig, seconds: float, notes: list[str], report: ProgressCallback,
                  devices: Sequence[int] | None = None) -> Any:
    # the wait's own window needs no idle baseline: measuring one would use up the wait
    win = _window(cfg, baseline=False, devices=devices)
    with win as m:
        t0 = time.perf_counter()
        m.mark("thermal")
        while (elapsed := time.perf_counter() - t0) < seconds:
            report("thermal", int(elapsed), int(seconds))
            time.sleep(min(0.5, seconds - elapsed))
    report("thermal", int(seconds), int(seconds))
    notes.append(f"Waited {seconds:g} s after warmup before measuring (thermal floor).")
    return m.measurement


__all__ = ["DEFAULT_MAX_TOKENS_PER_BATCH", "STRATEGIES", "as_config", "backend_names", "environment",
           "get_backend_class", "make_batches", "prompt_overlap", "run"]
