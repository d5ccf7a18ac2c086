"""``llem.run(config, prompts=None) -> Result``: one experiment, measured.

The runner resolves the model and the prompts, loads the backend (found through the
``llem.backends`` entry-point group, with a built-in fallback table), makes the batches,
runs the warmup passes (not measured), waits out the thermal floor when the profile asks
for it, then makes ``repeats`` measured runs, each a pass over every prompt inside one
energy window (:func:`llem.energy.window.measure`). The backend marks the ``prefill`` and
``decode`` phases in that window, so energy splits by phase.

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
:class:`~llem.results.Result` so far, marked incomplete.
"""

from __future__ import annotations

import importlib
import inspect
import os
import platform
import statistics
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from llem.errors import ConfigError, RunInterrupted, unknown_name
from llem.prompts import Prompt, load_prompts, synthetic_prompts
from llem.results import RequestRecord, Result, RunMeasurement, _plain, now_iso

#: Built-in backends, used when the entry points are not installed (a source checkout).
BUILTIN_BACKENDS = {
    "pytorch": "llem.backends.pytorch:PyTorchBackend",
    "vllm": "llem.backends.vllm:VLLMBackend",
    "tensorrt": "llem.backends.tensorrt:TensorRTBackend",
}

#: Batching strategies the runner knows.
STRATEGIES = ("static", "sorted_static", "dynamic", "sorted_dynamic")

#: Token budget of a dynamic batch when ``max_tokens_per_batch`` is unset (llem's choice).
DEFAULT_MAX_TOKENS_PER_BATCH = 4096

ProgressCallback = Callable[[str, int, int], None]


# ------------------------------------------------------------------- backends
def backend_names() -> list[str]:
    """Names of the backends that can be asked for."""
    names = set(BUILTIN_BACKENDS)
    try:
        names.update(ep.name for ep in entry_points(group="llem.backends"))
    except Exception:  # noqa: BLE001 - broken metadata must not hide the built-ins
        pass
    return sorted(names)


def get_backend_class(name: str) -> type:
    """The class of backend ``name``: entry point first, then the built-in table."""
    target = None
    try:
        for ep in entry_points(group="llem.backends"):
            if ep.name == name:
                target = ep.value
                break
    except Exception:  # noqa: BLE001
        target = None
    target = target or BUILTIN_BACKENDS.get(name)
    if target is None:
        raise unknown_name("backend", name, backend_names())
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    missing = [m for m in ("load", "generate", "count_tokens", "release") if not hasattr(cls, m)]
    if missing:
        raise TypeError(f"Backend {name!r} ({target}) lacks {', '.join(missing)}.")
    return cls


# --------------------------------------------------------------------- config
def _as_config(config: Any) -> Any:
    if config is None:
        from llem.config import ExperimentConfig

        return ExperimentConfig()
    if isinstance(config, (str, os.PathLike)):
        from llem.config import ExperimentConfig

        return ExperimentConfig.load(os.fspath(config))
    if isinstance(config, dict):
        from llem.config import ExperimentConfig

        return ExperimentConfig.from_dict(config)
    return config


def _get(cfg: Any, path: str, default: Any = None) -> Any:
    """``cfg.get("section.field")`` for a real config, attribute access for stand-ins."""
    section, _, name = path.partition(".")
    obj = cfg if section == "experiment" else getattr(cfg, section, None)
    value = getattr(obj, name, None) if obj is not None else None
    return default if value is None else value


def _method(cfg: Any) -> dict[str, Any]:
    resolved = getattr(cfg, "resolved_method", None)
    if callable(resolved):
        return dict(resolved())
    profile = _get(cfg, "experiment.profile", "quick")
    runs = 5 if profile == "publication" else 1
    floor = 60.0 if profile == "publication" else 0.0
    return {
        "warmup.runs": _get(cfg, "warmup.runs", runs),
        "warmup.adaptive": _get(cfg, "warmup.adaptive"),
        "warmup.cv_threshold": _get(cfg, "warmup.cv_threshold", 0.05),
        "warmup.window": _get(cfg, "warmup.window", 5),
        "warmup.max_runs": _get(cfg, "warmup.max_runs", 20),
        "warmup.thermal_floor_s": _get(cfg, "warmup.thermal_floor_s", floor),
    }


def _config_dict(cfg: Any) -> dict[str, Any]:
    to_dict = getattr(cfg, "to_dict", None)
    if callable(to_dict):
        return _plain(to_dict())
    out: dict[str, Any] = {}
    for k, v in vars(cfg).items():
        out[k] = _plain(vars(v)) if hasattr(v, "__dict__") else _plain(v)
    return out


def _config_hash(cfg: Any, as_dict: dict[str, Any]) -> str:
    fn = getattr(cfg, "config_hash", None)
    if callable(fn):
        return str(fn())
    import hashlib
    import json

    return hashlib.sha256(json.dumps(as_dict, sort_keys=True, default=str).encode()).hexdigest()[:12]


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


# --------------------------------------------------------------------- memory
class _MemorySampler:
    """Peak memory during a run: the CUDA allocator's peak on a GPU, else sampled RSS."""

    def __init__(self, device: str, interval_s: float) -> None:
        self.cuda = device.startswith("cuda")
        self.interval_s = max(0.005, float(interval_s))
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = "cuda allocator peak" if self.cuda else "process RSS peak, sampled"

    def _read(self) -> None:
        try:
            import psutil

            rss = psutil.Process().memory_info().rss
            self.peak_bytes = max(self.peak_bytes, rss)
        except Exception:  # noqa: BLE001
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            return
        self._read()
        self._thread = threading.Thread(target=self._loop, name="llem-memory", daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        """Stop sampling; return the peak in MiB."""
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._read()
        return self.peak_bytes / 2**20 if self.peak_bytes else None


# --------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(info: Any, backend: Any, meas: Any = None, config_hash: str = "") -> dict[str, Any]:
    """Versions, hardware, tier and meter of this run, as a JSON-safe dict."""
    from llem import __version__

    env: dict[str, Any] = {
        "llem": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "backend": getattr(backend, "name", type(backend).__name__),
        "device": getattr(info, "device", None),
        "config_hash": config_hash,
    }
    env.update({f"{k}_version": v for k, v in (getattr(info, "versions", {}) or {}).items()})
    cc = None
    try:
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            idx = torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(idx)
            cc = major + minor / 10
            env["gpu"] = torch.cuda.get_device_name(idx)
            env["gpu_count"] = torch.cuda.device_count()
            env["cuda"] = torch.version.cuda
            env["compute_capability"] = f"{major}.{minor}"
            try:
                import pynvml

                pynvml.nvmlInit()
                drv = pynvml.nvmlSystemGetDriverVersion()
                env["driver"] = drv.decode() if isinstance(drv, bytes) else drv
            except Exception:  # noqa: BLE001
                pass
        else:
            env["gpu"] = None
    except Exception:  # noqa: BLE001
        pass
    try:
        from llem.spec.tiers import tier_for

        env["tier"] = tier_for(cc).name
    except Exception:  # noqa: BLE001
        env["tier"] = "cpu" if cc is None else f"cc {cc:.1f}"
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
    """What the current measured run has produced so far (for partial results)."""

    def __init__(self) -> None:
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


def _resolve_prompts(cfg: Any, prompts: Any, backend: Any, seed: int | None,
                     notes: list[str], effective: dict[str, Any]) -> list[Prompt]:
    source = prompts if prompts is not None else _get(cfg, "experiment.prompts", "qa-short")
    n = _get(cfg, "experiment.num_prompts")
    order = _get(cfg, "dataset.order", "interleaved")
    synthetic = bool(_get(cfg, "dataset.synthetic")) or source == "synthetic"
    if synthetic and prompts is None or source == "synthetic":
        tok = getattr(backend, "tokenizer", None)
        if tok is None:
            raise ConfigError(
                f"Synthetic prompts need the model's tokenizer; the {backend.name!r} backend "
                "does not expose one. Use a prompt set instead."
            )
        count = n or _get(cfg, "dataset.count", 8)
        input_len = _get(cfg, "dataset.input_len", 512)
        output_len = _get(cfg, "dataset.output_len", 128)
        dseed = _get(cfg, "dataset.seed", seed if seed is not None else 42)
        out = synthetic_prompts(tok, count=count, input_len=input_len, output_len=output_len,
                                seed=dseed, count_tokens=backend.count_tokens)
        effective.update({"dataset.count": count, "dataset.input_len": input_len,
                          "dataset.output_len": output_len, "dataset.seed": dseed})
        notes.append(f"{count} synthetic prompts of exactly {input_len} tokens, each generating "
                     f"exactly {output_len} tokens (min_new_tokens = max_new_tokens).")
        return out
    if prompts is not None:
        n = None  # prompts given to run() are used as given; num_prompts sizes config sources
    return load_prompts(source, n, order=order, seed=seed if seed is not None else 42)


def _plan(cfg: Any, prompts: list[Prompt], backend: Any, info: Any, effective: dict,
          skipped: dict, notes: list[str]) -> _Plan:
    max_in = _get(cfg, "experiment.max_input_tokens")
    max_new = effective.get("decoder.max_new_tokens") or _get(cfg, "decoder.max_new_tokens") or 0
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

    bname = _get(cfg, "experiment.backend", "pytorch")
    section = cfg.backend_section if hasattr(cfg, "backend_section") else getattr(cfg, bname, None)
    if section is None or not hasattr(section, "batch_size"):
        # an engine with its own scheduler (vLLM, TensorRT-LLM): submit every prompt at once
        batches = [list(range(len(prompts)))]
        notes.append(f"The {bname} engine schedules requests itself: all {len(prompts)} prompts "
                     "were submitted together (no runner-side batching).")
    else:
        strategy = getattr(section, "batching_strategy", None) or "static"
        batch_size = getattr(section, "batch_size", None) or 1
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
    seed = effective.get("decoder.seed", _get(cfg, "decoder.seed"))
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
                     mem_source: str, n_params: int | None, complete: bool) -> RunMeasurement:
    outs = [o for _, o in state.batches]
    records = sorted(state.records, key=lambda r: (r.batch, r.batch_start_s))
    duration = ((state.t_end or 0.0) - (state.t_start or 0.0)) if state.t_start else 0.0
    out_tokens = sum(r.output_tokens for r in records)
    in_tokens = sum(r.input_tokens for r in records)
    n = len(records)
    prefill_s = sum(o.prefill_s for o in outs)
    decode_s = sum(o.duration_s - o.prefill_s for o in outs)
    waste = sum(getattr(o, "decode_steps", 0) * len(o.requests)
                - sum(r.output_tokens for r in o.requests) for o in outs)
    energy = getattr(meas, "energy_j", None)
    dyn = getattr(meas, "dynamic_energy_j", None)
    pe = de = None
    if meas is not None and energy is not None:
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
    )


def _window(cfg: Any, baseline: bool = True) -> Any:
    """An energy window for ``cfg`` (with its idle baseline unless ``baseline`` is False)."""
    from llem.energy.window import measure

    return measure(
        meter=_get(cfg, "experiment.meter", "auto"),
        interval_s=_get(cfg, "experiment.sampling_interval_s", 0.1),
        baseline_s=_get(cfg, "baseline.seconds", 0.0) if baseline else 0.0,
        baseline_cache_ttl_s=_get(cfg, "baseline.cache_ttl_s", 3600.0),
        grid_intensity_g_per_kwh=_get(cfg, "experiment.grid_intensity_g_per_kwh"),
    )


class _SampleForwarder:
    """Hand each new live sample of an open window to ``on_sample``, from a thread.

    The callback runs on this thread; an exception in it stops the forwarding (noted in
    the result) but never the run.
    """

    def __init__(self, win: Any, on_sample: Callable[[Any], None], interval_s: float) -> None:
        self.win, self.on_sample = win, on_sample
        self.interval_s = max(0.05, float(interval_s))
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llem-live", daemon=True)

    def _flush(self) -> None:
        samples = self.win.live_samples()
        for s in samples[self.sent:]:
            self.on_sample(s)
        self.sent = len(samples)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._flush()
            except Exception as exc:  # noqa: BLE001 - a display callback must not stop a run
                self.error = exc
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.error is None:
            try:
                self._flush()  # what arrived since the last poll, and the closing reading
            except Exception as exc:  # noqa: BLE001
                self.error = exc


def run(
    config: Any = None,
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
        ``ExperimentConfig.load``; None means all defaults (``tiny-random-llama`` on
        ``qa-short``).
    prompts : str, path, list, optional
        Overrides ``config.prompts``: a built-in set name, a file, a list of prompt
        strings, or ``"synthetic"`` (see :func:`llem.prompts.load_prompts`).
    progress : callable, optional
        ``progress(stage, done, total)`` with stage ``"load"``, ``"warmup"``,
        ``"thermal"``, ``"run 1/3"``... and ``"done"``.
    on_sample : callable, optional
        Receives each live power sample from the energy sampler.
    backend : backend object, optional
        Use this backend instead of making one for ``config.backend``. The runner calls
        its ``load(config)`` as usual but does not release it at the end: the caller owns
        it (:func:`llem.sweep.sweep` passes one that keeps its model across runs).

    Returns
    -------
    Result

    Raises
    ------
    RunInterrupted
        On ``KeyboardInterrupt``; ``exc.partial`` is the incomplete Result.
    ModelNotFoundError, OutOfMemoryError, ConfigError, MissingDependencyError
        With the fix in the message.
    """
    cfg = _as_config(config)
    report = progress or (lambda stage, done, total: None)
    created = now_iso()
    cfg_dict = _config_dict(cfg)
    cfg_hash = _config_hash(cfg, cfg_dict)
    backend_name = _get(cfg, "experiment.backend", "pytorch")
    model_name = str(_get(cfg, "experiment.model", "tiny-random-llama"))
    notes: list[str] = []
    skipped: dict[str, str] = {}
    effective: dict[str, Any] = {}
    runs: list[RunMeasurement] = []
    warm: dict[str, Any] = {}
    thermal = None
    info = None
    owns_backend = backend is None  # a backend passed in is the caller's to release
    if backend is None:
        backend = get_backend_class(backend_name)()
    state: _RunState | None = None
    win_holder: dict[str, Any] = {}
    stage = "load"

    cfg_skipped = getattr(cfg, "skipped", None)
    if callable(cfg_skipped):
        try:
            skipped.update(cfg_skipped())
        except Exception:  # noqa: BLE001 - rule evaluation must not stop a run
            pass

    def result(complete: bool) -> Result:
        meas0 = runs[0].measurement if runs else None
        env = environment(info, backend, meas0, cfg_hash)
        return Result(
            model=model_name, backend=backend_name, runs=tuple(runs), config=cfg_dict,
            effective_config=_plain(effective), skipped=dict(skipped), environment=_plain(env),
            complete=complete, notes=tuple(notes),
            warmup=_plain(warm), config_hash=cfg_hash, created_at=created,
            load_s=getattr(info, "load_s", 0.0) or 0.0,
            num_parameters=getattr(info, "num_parameters", None), thermal=thermal,
        )

    try:
        report("load", 0, 1)
        info = backend.load(cfg)
        report("load", 1, 1)
        effective.update(info.effective)
        skipped.update(info.skipped)
        notes.extend(info.notes)
        if "decoder.preset" not in effective and _get(cfg, "decoder.preset"):
            effective["decoder.preset"] = _get(cfg, "decoder.preset")

        seed = effective.get("decoder.seed", _get(cfg, "decoder.seed"))
        plist = _resolve_prompts(cfg, prompts, backend, seed, notes, effective)
        plan = _plan(cfg, plist, backend, info, effective, skipped, notes)
        method = _method(cfg)
        effective.update({k: v for k, v in method.items()})
        repeats = int(_get(cfg, "experiment.repeats", 3))
        effective["experiment.repeats"] = repeats
        effective["experiment.profile"] = _get(cfg, "experiment.profile", "quick")

        # warmup: passes over the first batch, not measured
        stage = "warmup"
        warm = _warmup(backend, plan, method, report)

        # thermal floor: wait with the sampler recording, so the settling shows
        floor = float(method.get("warmup.thermal_floor_s") or 0.0)
        if floor > 0:
            stage = "thermal"
            thermal = _thermal_wait(cfg, floor, notes, report)

        total = repeats * len(plan.batches)
        for r in range(repeats):
            stage = f"run {r + 1}/{repeats}"
            state = _RunState()
            interval = _get(cfg, "experiment.sampling_interval_s", 0.1)
            mem = _MemorySampler(info.device, interval)
            win = _window(cfg)
            win_holder.clear()
            live = None
            mem.start()
            try:
                with win as m:
                    win_holder["m"] = m
                    if on_sample is not None:
                        live = _SampleForwarder(m, on_sample, interval)
                        live.start()
                    done0 = r * len(plan.batches)

                    def batch_done(b: int, s: str = stage, d: int = done0) -> None:
                        report(s, d + b, total)

                    _run_batches(backend, plan, state, m.mark, batch_done)
            finally:
                peak = mem.stop()
                if live is not None:
                    live.stop()
                    if live.error is not None and not any("on_sample" in n for n in notes):
                        notes.append(f"Live samples stopped: on_sample raised {live.error!r}.")
            runs.append(_run_measurement(r, state, m.measurement, peak, mem.source,
                                         info.num_parameters, True))
            state = None
            if r == 0:
                _check_baseline(m.measurement, _get(cfg, "baseline.max_spread", 0.2), notes)
        report("done", total, total)
    except KeyboardInterrupt:
        if state is not None and state.records:
            m = win_holder.get("m")
            meas = getattr(m, "measurement", None) if m is not None else None
            runs.append(_run_measurement(len(runs), state, meas, None, "", getattr(
                info, "num_parameters", None), False))
        notes.append(f"Interrupted during {stage}; {len(runs)} run(s) kept"
                     + (", the last one partial." if runs and not runs[-1].complete else "."))
        partial = result(False)
        raise RunInterrupted(
            f"The run was interrupted during {stage}; the partial result is attached as "
            "exc.partial (marked incomplete).", partial) from None
    finally:
        if owns_backend:
            backend.release()
    return result(True)


def _check_baseline(meas: Any, max_spread: float, notes: list[str]) -> None:
    """Note when the idle baseline is too noisy to subtract (spread over mean > max_spread)."""
    power = getattr(meas, "baseline_power_w", None)
    spread = getattr(meas, "baseline_spread_w", None)
    if not power or spread is None:
        return
    share = spread / power
    if share > max_spread:
        notes.append(
            f"The idle baseline is noisy: its spread ({spread:.3g} W) is {100 * share:.0f}% of "
            f"its mean ({power:.3g} W), above baseline.max_spread={max_spread:g}; figures "
            "above idle (dynamic energy) are unreliable. Measure a longer baseline on a "
            "quieter machine."
        )


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


def _thermal_wait(cfg: Any, seconds: float, notes: list[str], report: ProgressCallback) -> Any:
    # the wait's own window needs no idle baseline: measuring one would use up the wait
    win = _window(cfg, baseline=False)
    with win as m:
        t0 = time.perf_counter()
        m.mark("thermal")
        while (elapsed := time.perf_counter() - t0) < seconds:
            report("thermal", int(elapsed), int(seconds))
            time.sleep(min(0.5, seconds - elapsed))
    report("thermal", int(seconds), int(seconds))
    notes.append(f"Waited {seconds:g} s after warmup before measuring (thermal floor).")
    return m.measurement


__all__ = ["BUILTIN_BACKENDS", "STRATEGIES", "backend_names", "environment",
           "get_backend_class", "make_batches", "run"]


class _CallableModule(types.ModuleType):
    """Make this module callable as :func:`run`.

    The package exports the function ``llem.run``; importing this module (``llem.run``)
    binds the module to that same attribute of the package. Making the module callable
    keeps ``llem.run(config)`` working whichever happened first.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Result:
        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
