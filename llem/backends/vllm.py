"""The vLLM backend: llem's configuration translated to vLLM's own arguments, and a runner.

The module has two layers:

- pure translation functions (:func:`vllm_engine_kwargs`, :func:`vllm_sampling_kwargs`,
  :func:`vllm_beam_search_kwargs`) that turn an experiment configuration into the exact
  keyword arguments of ``vllm.LLM`` / ``vllm.EngineArgs``, ``vllm.SamplingParams`` and
  ``vllm.sampling_params.BeamSearchParams``. Each returns ``(kwargs, skipped)``, where
  ``skipped`` maps ``section.field`` to the reason a set field has no effect. They import
  nothing beyond llem's table and are unit-tested without vLLM;
- :class:`VLLMBackend`, thin run code that imports vLLM on first use.

Argument names, where each goes (``llm``, ``speculative_config``, ``attention_config``,
``sampling``, ``beam``) and where vLLM keeps the resolved value come from the table's rows
(``spec.engine_args("vllm")``); the few special cases (greedy decoding, the n-gram drafter)
are the code below. Facts and sources: ``docs/engines.md``. A field left ``None`` means
"vLLM's default" and is never passed.

The table's rules decide what has no effect: :func:`llem.run` leaves every field a skip
rule names unset (``decoder.top_p`` under greedy decoding, ``length_penalty`` with one
beam...) and reports the rule; config validation refuses the combinations a rule refuses
(``kv_cache_memory_bytes`` with ``gpu_memory_utilization``...). The translation does not
decide them again: called directly, it passes every set field to its target as asked
(vLLM then ignores top_p at temperature 0, or gpu_memory_utilization beside
kv_cache_memory_bytes). Two cases follow from the engine's shape: ``do_sample=False``
is sent as ``temperature=0``, which replaces a temperature given with it; and a field whose
target is not the one in use (a beam-search field when sampling) is not passed. What
``skipped`` reports is what the table does not state: a field vLLM has no argument for,
a draft setting without a draft model, LoRA, an argument the installed vLLM lacks.

The GPU is found through :func:`llem.machine.get_machine` (NVML); CUDA is never initialised
in this process, so vLLM's workers need not be spawned and GPU 0 holds no memory for it.

Timing: vLLM's ``RequestOutput.metrics`` (V1: ``RequestStateStats``, with queued,
scheduled, first- and last-token times) is filled only when stats logging is on, which
``LLM`` turns off by default. The backend therefore drives the engine one step at a time
and stamps every delivered token with ``time.perf_counter``; tokens that one engine step
delivers together share that step's time (``LoadInfo.effective["llem.token_timing"]``
says so). Those per-request counts also mark the phases
(:class:`llem.backends.phases.PhaseTracker`): with more prompts than vLLM runs at once
(``max_num_seqs``), requests are admitted while others decode, and the batch is then
marked ``prefill+decode`` and reported without a prefill/decode split. Beam search runs
through ``LLM.beam_search``, which returns only at the end: its requests carry no
per-token times and its batch no split.
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llem import spec
from llem.backends.base import BatchOutput, LoadInfo, PhaseCallback, RequestOutput, parallel_devices
from llem.backends.phases import MIXED, PhaseTracker
from llem.backends.table import (
    decoder_of,
    engine_kwargs,
    field,
    nested_kwargs,
    read_effective,
    readback_map,
)
from llem.errors import (
    BackendUnavailableError,
    ConfigError,
    LlemError,
    missing_dependency,
)
from llem.machine import get_machine, visible_gpus
from llem.prompts.chat import ChatPrompting, chat_prompting, truncate_ids

__all__ = [
    "VLLMBackend",
    "vllm_engine_kwargs",
    "vllm_sampling_kwargs",
    "vllm_beam_search_kwargs",
    "vllm_uses_beam_search",
    "token_times_from_counts",
    "truncate_ids",
    "read_back",
    "known_fields",
]

Kwargs = dict[str, Any]
Skipped = dict[str, str]

#: decoder.seed seeds the engine once (``LLM(seed=...)``, global, like ``torch.manual_seed``
#: in the PyTorch backend) and no request is seeded: vLLM samples seeded requests with
#: per-request generators, a slower path that would change what is being measured. So
#: :meth:`VLLMBackend.generate` takes no per-batch ``seed`` (the runner passes one only to a
#: backend whose ``generate`` names it).
SEEDING = ("decoder.seed seeds the engine once (LLM(seed=...)); no request is seeded, since "
           "seeded requests go through vLLM's slower per-request sampler")

#: Why a beam-search batch has no prefill/decode split.
BEAM_NO_SPLIT = ("vLLM's beam search (LLM.beam_search) returns only at the end of the batch, so no "
                 "first token is observable")

#: Spelling of the n-gram (prompt lookup) drafter in older vLLM and in llem configs.
_NGRAM_NAMES = ("ngram", "[ngram]")

#: What ``BeamSearchParams.max_tokens`` gets when ``decoder.max_new_tokens`` is unset: the
#: field is required there, and 16 is ``SamplingParams.max_tokens``'s own default.
BEAM_DEFAULT_MAX_TOKENS = 16


# --------------------------------------------------------------------------------------
# Reading a configuration (real ExperimentConfig or a stand-in with the same attributes)
# --------------------------------------------------------------------------------------


def _section(cfg: Any, name: str) -> Any:
    return getattr(cfg, name, None)


def _get(section: Any, name: str) -> Any:
    """A field's value, or None when the section or the field is absent (unset)."""
    return field(section, name)


def _passthrough(cfg: Any) -> Mapping[str, Any]:
    extra = getattr(cfg, "passthrough", None)
    return dict(extra) if extra else {}


def _skip_lora(cfg: Any, skipped: Skipped, engine: str) -> None:
    """Report LoRA fields as skipped: llem's engine backends do not apply adapters yet."""
    for name in ("lora_adapter", "lora_merge"):
        if getattr(cfg, name, None) is not None:
            skipped[f"experiment.{name}"] = (
                f"llem's {engine} backend does not apply LoRA adapters yet; use "
                "backend='pytorch', or merge the adapter into the model first"
            )


def _merge_passthrough(kwargs: Kwargs, extra: Mapping[str, Any], engine: str) -> None:
    """Add pass-through keyword arguments, refusing one that a named field already set."""
    for key, value in extra.items():
        if key in kwargs:
            raise ConfigError(
                f"The pass-through argument {key!r} for {engine} is also set by a named llem "
                f"field (to {kwargs[key]!r}). Set it in one place only: remove {key!r} from "
                "passthrough, or unset the llem field that produces it."
            )
        kwargs[key] = value


# --------------------------------------------------------------------------------------
# Translation: pure functions, no vLLM import
# --------------------------------------------------------------------------------------


def vllm_uses_beam_search(cfg: Any) -> bool:
    """True when the configuration asks for beam search (``decoder.num_beams`` > 1)."""
    beams = _get(decoder_of(cfg), "num_beams")
    return beams is not None and beams > 1


def vllm_engine_kwargs(cfg: Any, model: str | None = None) -> tuple[Kwargs, Skipped]:
    """Translate a configuration into ``vllm.LLM`` / ``EngineArgs`` keyword arguments.

    Parameters
    ----------
    cfg : ExperimentConfig or stand-in
        Reads ``cfg.model``, ``cfg.vllm.*``, ``cfg.decoder.seed`` and ``cfg.passthrough``.
    model : str, optional
        What to load instead of ``cfg.model`` (a resolved local path).

    Returns
    -------
    kwargs : dict
        vLLM's argument names and values; unset fields are absent.
    skipped : dict
        ``section.field`` -> why the set field is not passed.

    Raises
    ------
    ConfigError
        When a pass-through key repeats an argument a named field already sets.
    """
    kwargs: Kwargs = {"model": model if model is not None else cfg.model}
    skipped: Skipped = {}
    kwargs.update(engine_kwargs(cfg, "vllm", "llm"))
    kwargs.update(nested_kwargs(cfg, "vllm", "llm"))

    draft = spec.engine_arg("vllm", "vllm.speculative_model")
    speculative = kwargs.get(draft.targets[0])
    if speculative is not None:
        if draft.name not in speculative:
            del kwargs[draft.targets[0]]
            skipped["vllm.num_speculative_tokens"] = (
                "no speculative_model is set, so there is no draft to propose tokens"
            )
        elif str(speculative[draft.name]).strip().lower() in _NGRAM_NAMES:
            del speculative[draft.name]  # the n-gram drafter is a method, not a model
            speculative["method"] = "ngram"

    _skip_lora(cfg, skipped, "vLLM")

    _merge_passthrough(kwargs, _passthrough(cfg), "vLLM")
    return kwargs, skipped


def vllm_sampling_kwargs(cfg: Any) -> tuple[Kwargs, Skipped]:
    """Translate the decoder section into ``vllm.SamplingParams`` keyword arguments.

    ``do_sample=False`` becomes ``temperature=0`` (vLLM's greedy decoding; it replaces a
    temperature given with it); the other fields go as set, and vLLM ignores top_k, top_p
    and min_p at temperature 0 (through :func:`llem.run` the table's rule
    sampling-params-greedy leaves them unset). Beam-search fields (length_penalty) have no
    place in ``SamplingParams`` and are not passed: see :func:`vllm_beam_search_kwargs`.

    Returns
    -------
    kwargs : dict
        ``SamplingParams`` argument names and values.
    skipped : dict
        ``decoder.field`` -> why it is not passed.
    """
    d = decoder_of(cfg)
    kwargs = engine_kwargs(cfg, "vllm", "sampling", decoder=d)
    skipped: Skipped = {}

    if _get(d, "do_sample") is False:
        kwargs[spec.engine_arg("vllm", "decoder.temperature").name] = 0.0  # greedy in vLLM

    for row in spec.params("decoder"):
        if "vllm" not in row.backends and _get(d, row.name) is not None:
            skipped[row.path] = f"vLLM's SamplingParams has no {row.name}"
    return kwargs, skipped


def vllm_beam_search_kwargs(cfg: Any) -> tuple[Kwargs, Skipped]:
    """Translate the decoder section into ``BeamSearchParams`` keyword arguments.

    vLLM runs beam search through ``LLM.beam_search(prompts, BeamSearchParams(...))``,
    which takes beam_width, max_tokens, ignore_eos, temperature and length_penalty only.
    ``max_tokens`` is required there: when ``max_new_tokens`` is unset it gets
    :data:`BEAM_DEFAULT_MAX_TOKENS`, SamplingParams' own default.

    Returns
    -------
    kwargs : dict
        ``BeamSearchParams`` argument names and values.
    skipped : dict
        ``decoder.field`` -> why it is not passed.
    """
    d = decoder_of(cfg)
    skipped: Skipped = {}
    kwargs = engine_kwargs(cfg, "vllm", "beam", decoder=d)
    # Both are required by BeamSearchParams.
    kwargs.setdefault(spec.engine_arg("vllm", "decoder.num_beams").name, 1)
    kwargs.setdefault(spec.engine_arg("vllm", "decoder.max_new_tokens").name, BEAM_DEFAULT_MAX_TOKENS)
    beam_rows = {arg.path for arg in spec.engine_args("vllm", target="beam")}
    # decoder.seed seeds the engine (see vllm_engine_kwargs), so beam search uses it too.
    engine_rows = {arg.path for arg in spec.engine_args("vllm", section="decoder", target="llm")}
    for row in spec.params("decoder"):
        if row.path in beam_rows | engine_rows or row.name == "preset" or _get(d, row.name) is None:
            continue  # passed, or a preset (already expanded into the other fields)
        skipped[row.path] = f"vLLM's beam search (BeamSearchParams) takes no {row.name}"
    return kwargs, skipped


# --------------------------------------------------------------------------------------
# Small pure helpers shared with the TensorRT-LLM backend
# --------------------------------------------------------------------------------------


def token_times_from_counts(events: Iterable[tuple[float, int]]) -> tuple[float, ...]:
    """Per-token times from ``(time_s, tokens_so_far)`` observations of a stream.

    Every token first seen at an observation gets that observation's time, so tokens that
    arrive together share a time (nothing is spread out evenly). Counts that do not grow
    add nothing.

    >>> token_times_from_counts([(0.5, 1), (0.6, 1), (0.7, 3)])
    (0.5, 0.7, 0.7)
    """
    times: list[float] = []
    for t, count in events:
        if count > len(times):
            times.extend([t] * (count - len(times)))
    return tuple(times)


#: ``decoder.field`` -> SamplingParams attribute, for reading back effective values (from the table).
SAMPLING_READBACK = readback_map("vllm", "sampling")

#: ``decoder.field`` -> BeamSearchParams attribute (from the table).
BEAM_READBACK = readback_map("vllm", "beam")


def read_back(params: Any, mapping: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, Any]:
    """Effective ``decoder.*`` values: the engine object's attributes, else what was given.

    Reading the constructed params object records the engine's defaults for unset fields
    (vLLM's temperature 1.0, max_tokens 16...), not just what llem passed.
    """
    found: dict[str, Any] = {}
    for key, attr in mapping.items():
        value = getattr(params, attr, None)
        if value is None:
            value = given.get(attr)
        if value is not None:
            found[key] = value if isinstance(value, (int, float, bool, str)) else str(value)
    return found


# --------------------------------------------------------------------------------------
# Run code: imports vLLM lazily
# --------------------------------------------------------------------------------------


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise missing_dependency("vllm", "vllm", "the vLLM backend") from exc
    return vllm


def _require_gpu(backend: str) -> str:
    """Name of the GPU the engine will use, or BackendUnavailableError saying why there is none.

    Asked of :func:`llem.machine.get_machine` (NVML), which does not initialise CUDA here.
    """
    machine = get_machine()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu = next(iter(visible_gpus(machine.gpus, visible)), None)
    if gpu is None:
        why = (f"CUDA_VISIBLE_DEVICES={visible!r} hides them" if machine.gpus
               else machine.gpu_note or "NVML sees no GPU")
        raise BackendUnavailableError(
            f"The {backend} backend needs an NVIDIA GPU with CUDA, and none is visible here "
            f"({why}). Run on a machine with a CUDA GPU, or use backend='pytorch', which "
            "also runs on the CPU."
        )
    return gpu.name


def _resolve_model(cfg: Any) -> str:
    """A loadable path or hub id for ``cfg.model`` (llem aliases resolved when possible)."""
    name = cfg.model
    try:
        from llem.models import resolve_model
    except ImportError:
        return name
    spec = resolve_model(name)
    if spec.gguf_file:
        return os.path.join(spec.id_or_path, spec.gguf_file)
    return spec.id_or_path


def known_fields(cls: Any, **values: Any) -> Any:
    """Build the record ``cls`` from the values it has fields for (the protocol grows)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def effective_from_vllm_config(vllm_config: Any) -> dict[str, Any]:
    """Resolved values read back from a ``VllmConfig`` (or anything with its attributes).

    Where vLLM keeps each value is the rows' ``engine_readback`` (``model_config.dtype``...).
    """
    return read_effective(vllm_config, "vllm")


class VLLMBackend:
    """Runs a configuration on vLLM (``pip install 'llem[vllm]'``; needs a CUDA GPU)."""

    name = "vllm"

    def __init__(self) -> None:
        self._llm: Any = None
        self._tokenizer: Any = None
        self._config: Any = None
        self._beam = False
        self._params: Any = None
        self._params_cls: Any = None
        self._params_kw: Kwargs = {}
        self.load_info: LoadInfo | None = None
        self.chat: ChatPrompting | None = None

    # -- protocol ------------------------------------------------------------------

    def probe_facts(self, config: Any) -> dict[str, Any]:
        """The facts of the table's skip rules that the checkpoint tells before loading.

        ``model_prequantized``: the checkpoint's ``config.json`` carries a quantization
        config (AWQ, GPTQ, ...), read with transformers' ``AutoConfig`` (no weights, no
        CUDA). Left out when that config cannot be read here, so a rule on it stays quiet.
        """
        try:
            from transformers import AutoConfig

            hf_config = AutoConfig.from_pretrained(_resolve_model(config))
        except Exception:  # noqa: BLE001 - an unreadable config tells nothing
            return {}
        return {"model_prequantized": getattr(hf_config, "quantization_config", None) is not None}

    def load(self, config: Any) -> LoadInfo:
        """Build a ``vllm.LLM`` for ``config`` and report what vLLM resolved."""
        vllm = _import_vllm()
        device = _require_gpu("vLLM")
        model = _resolve_model(config)
        kwargs, skipped = vllm_engine_kwargs(config, model=model)
        effective: dict[str, Any] = {}
        kwargs = self._fit_to_installed(vllm, kwargs, skipped, effective)

        self._beam = vllm_uses_beam_search(config)
        if self._beam:
            from vllm.sampling_params import BeamSearchParams

            params_kw, more = vllm_beam_search_kwargs(config)
            self._params_cls = BeamSearchParams
            timing = "none per token: vLLM beam search returns only at the end of the batch"
        else:
            params_kw, more = vllm_sampling_kwargs(config)
            self._params_cls = vllm.SamplingParams
            timing = (
                "per engine step: each token is stamped when the step that produced it "
                "returns; tokens one step delivers together share that time"
            )
        self._params_kw = params_kw
        self._params = self._params_cls(**params_kw)
        effective["llem.token_timing"] = timing
        skipped.update(more)
        readback = BEAM_READBACK if self._beam else SAMPLING_READBACK
        effective.update(read_back(self._params, readback, params_kw))

        start = time.perf_counter()
        self._llm = vllm.LLM(**kwargs)
        load_s = time.perf_counter() - start
        self._tokenizer = self._llm.get_tokenizer()
        self._config = config
        # experiment.chat_template: the tokenizer's template rendered here, then generated
        self.chat = chat_prompting(self._tokenizer, getattr(config, "chat_template", None), model)
        effective.update(self.chat.effective)

        engine = getattr(self._llm, "llm_engine", None)
        vllm_config = getattr(engine, "vllm_config", None) or engine
        effective.update(effective_from_vllm_config(vllm_config))
        seed = getattr(getattr(vllm_config, "model_config", None), "seed", None)
        seed = seed if seed is not None else kwargs.get(spec.engine_arg("vllm", "decoder.seed").name)
        if seed is not None:
            effective["decoder.seed"] = seed
        effective["llem.seeding"] = SEEDING
        versions = {"vllm": str(getattr(vllm, "__version__", "unknown"))}
        try:
            import torch

            versions["torch"] = str(torch.__version__)
        except ImportError:  # pragma: no cover - vLLM needs torch
            pass
        self.load_info = known_fields(
            LoadInfo,
            model_id=model,
            load_s=load_s,
            effective=effective,
            skipped=skipped,
            versions=versions,
            device=device,
            cuda_devices=parallel_devices(kwargs),
            max_context_tokens=effective.get("vllm.max_model_len"),
            notes=(f"Token times: {timing}.", f"Seed: {SEEDING}.", self.chat.note),
            model_path=model if os.path.isdir(model) else None,
        )
        return self.load_info

    def generate(
        self,
        prompts: Sequence[str],
        on_phase: PhaseCallback | None = None,
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
    ) -> BatchOutput:
        """Generate one batch, stamping each token as the engine step delivering it returns.

        ``max_new_tokens`` and ``min_new_tokens`` override the configuration for this batch
        only; there is no per-batch seed (see :data:`SEEDING`). ``prefill_s`` is the time at
        which every request had its first token (NaN for beam search, where it is not
        observable). The phases are marked from each request's tokens
        (:class:`~llem.backends.phases.PhaseTracker`): a batch where vLLM admitted requests
        while others decoded has no prefill/decode split, and says so in
        ``no_phase_split``. With ``n`` > 1 the text and token times are the first
        sequence's; ``output_tokens`` counts all sequences.
        """
        llm = self._loaded()
        params = self._batch_params(max_new_tokens, min_new_tokens)
        limit = getattr(self._config, "max_input_tokens", None)
        chat = self._chat()
        encoded = [chat.truncate(chat.encode(p), limit) for p in prompts]
        token_prompts = [{"prompt_token_ids": ids} for ids, _ in encoded]
        total_input = sum(len(ids) for ids, _ in encoded)
        phase = on_phase or (lambda _name: None)

        if self._beam:
            phase(MIXED)  # prefill and decode, with no boundary to observe
            start = time.perf_counter()
            outs = llm.beam_search(token_prompts, params)
            duration = time.perf_counter() - start
            requests = []
            for prompt, (ids, cut), out in zip(prompts, encoded, outs):
                best = out.sequences[0]
                # A beam's tokens (and its text) include the prompt: keep what was generated.
                gen = list(best.tokens)[len(ids) :]
                text = self._tokenizer.decode(gen, skip_special_tokens=True)
                requests.append(RequestOutput(prompt, text, len(ids), len(gen), (), cut))
            # No prefill boundary is observable through LLM.beam_search: NaN, not a guess.
            return known_fields(
                BatchOutput,
                requests=tuple(requests),
                duration_s=duration,
                prefill_s=float("nan"),
                total_input_tokens=total_input,
                decode_steps=max((r.output_tokens for r in requests), default=0),
                t0_perf=start,
                no_phase_split=BEAM_NO_SPLIT,
            )

        engine = llm.llm_engine
        tag = uuid.uuid4().hex[:8]
        ids_of = [f"llem-{tag}-{i}" for i in range(len(prompts))]
        events: dict[str, list[tuple[float, int]]] = {rid: [] for rid in ids_of}
        final: dict[str, Any] = {}
        phase("prefill")
        tracker = PhaseTracker(phase, ids_of)
        start = time.perf_counter()
        for rid, token_prompt in zip(ids_of, token_prompts):
            engine.add_request(rid, token_prompt, params)
        while engine.has_unfinished_requests():
            step_outputs = engine.step()
            now = time.perf_counter() - start
            counts: dict[str, int] = {}
            for out in step_outputs:
                rid = out.request_id
                if rid not in events:
                    continue
                count = len(out.outputs[0].token_ids) if out.outputs else 0
                events[rid].append((now, count))
                counts[rid] = count
                if out.finished:
                    final[rid] = out
            tracker.observe(now, counts, [rid for rid in counts if rid in final])
        duration = time.perf_counter() - start
        prefill_s = tracker.all_first_s

        requests = []
        for rid, prompt, (ids, cut) in zip(ids_of, prompts, encoded):
            out = final.get(rid)
            seqs = list(out.outputs) if out is not None else []
            text = seqs[0].text if seqs else ""
            n_out = sum(len(s.token_ids) for s in seqs)
            times = token_times_from_counts(events[rid])
            requests.append(RequestOutput(prompt, text, len(ids), n_out, times, cut))
        return known_fields(
            BatchOutput,
            requests=tuple(requests),
            duration_s=duration,
            prefill_s=prefill_s if prefill_s is not None else duration,
            total_input_tokens=total_input,
            decode_steps=max((ev[-1][1] for ev in events.values() if ev), default=0),
            t0_perf=start,
            no_phase_split=tracker.no_split,
        )

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in the loaded model's tokens, a chat template's included."""
        if self._tokenizer is None:
            raise LlemError("The vLLM backend has no model loaded: call load(config) first.")
        return self._chat().count(text)

    def release(self) -> None:
        """Shut the engine down and free GPU memory; safe to call twice."""
        if self._llm is None:
            return
        self._llm = None
        self._tokenizer = None
        self._params = None
        self.chat = None
        try:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # noqa: BLE001 - best effort; absent in some versions
            pass
        gc.collect()
        try:
            import torch

            if torch.cuda.is_initialized():  # never initialise CUDA here just to free it
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    # -- helpers -------------------------------------------------------------------

    def _loaded(self) -> Any:
        if self._llm is None:
            raise LlemError("The vLLM backend has no model loaded: call load(config) first.")
        return self._llm

    def _chat(self) -> ChatPrompting:
        """How prompts become token ids (plain text until :meth:`load` decides)."""
        return self.chat or chat_prompting(self._tokenizer, "off")

    def _batch_params(self, max_new_tokens: int | None, min_new_tokens: int | None) -> Any:
        """The loaded params, or a copy with this batch's overrides (never a seed)."""
        over: Kwargs = {}
        if max_new_tokens is not None:
            over[spec.engine_arg("vllm", "decoder.max_new_tokens").name] = max_new_tokens
        if not self._beam and min_new_tokens is not None:
            over[spec.engine_arg("vllm", "decoder.min_new_tokens").name] = min_new_tokens
        if not over:
            return self._params
        return self._params_cls(**{**self._params_kw, **over})

    @staticmethod
    def _fit_to_installed(vllm: Any, kwargs: Kwargs, skipped: Skipped, effective: dict[str, Any]) -> Kwargs:
        """Adapt named fields to the installed vLLM's EngineArgs; report what cannot go."""
        import dataclasses

        try:
            known = {f.name for f in dataclasses.fields(vllm.EngineArgs)}
        except TypeError:  # not a dataclass: pass everything and let vLLM judge
            return kwargs
        backend = kwargs.get("attention_backend")
        if backend is not None and "attention_backend" not in known:
            del kwargs["attention_backend"]
            os.environ["VLLM_ATTENTION_BACKEND"] = str(backend)
            effective["vllm.attention_backend"] = f"{backend} (set through VLLM_ATTENTION_BACKEND)"
        attention = kwargs.get("attention_config")
        if attention is not None and "attention_config" not in known:
            del kwargs["attention_config"]
            version = attention.get("flash_attn_version")
            if version is not None:
                os.environ["VLLM_FLASH_ATTN_VERSION"] = str(version)
                effective["vllm.flash_attn_version"] = f"{version} (set through VLLM_FLASH_ATTN_VERSION)"
        # What llem's named fields produce (not pass-through keys): argument -> the row behind it.
        produced = {arg.name: arg.path for arg in spec.engine_args("vllm", target="llm")}
        for target in spec.engine_targets("vllm").values():
            if target.parent == "llm":
                produced[target.name] = spec.engine_args("vllm", target=target.name)[0].path
        for name, path in produced.items():
            if name in kwargs and name not in known:
                del kwargs[name]
                skipped[path] = (
                    f"the installed vLLM {getattr(vllm, '__version__', '')} has no {name!r} engine argument"
                )
        return kwargs
