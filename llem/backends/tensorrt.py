"""The TensorRT-LLM backend: llem's configuration in TensorRT-LLM's LLM API terms, and a runner.

Two layers, as in :mod:`llem.backends.vllm`:

- pure translation functions (:func:`trtllm_llm_kwargs`, :func:`trtllm_sampling_kwargs`,
  :func:`trtllm_engine_cache_dir`) returning the exact keyword arguments of TensorRT-LLM's
  ``LLM`` and ``SamplingParams``. Nested configs are given as plain dicts
  (``quant_config``, ``kv_cache_config``, ``build_config``) holding the engine's field
  names, with QuantAlgo members spelled by name; :func:`build_llm_objects` turns them into
  the engine's classes at run time. Each function returns ``(kwargs, skipped)``. The
  argument names, where each goes, the QuantAlgo spelling of each quantization and
  KV-cache choice, and where the resolved value is read back all come from the table's
  rows (``spec.engine_args("tensorrt")``);
- :class:`TensorRTBackend`, thin run code that imports ``tensorrt_llm`` on first use.

llem's ``tensorrt`` backend is TensorRT-LLM's TensorRT-engine path: in TensorRT-LLM 1.x
that is ``tensorrt_llm._tensorrt_engine.LLM`` (``tensorrt_llm.LLM`` became the PyTorch
backend); in 0.1x/0.2x it is ``tensorrt_llm.LLM``. Facts and sources: ``docs/engines.md``.

Engines are cached: with ``tensorrt.engine_dir`` set, a built engine is saved under
``engine_dir/<model>-<hash of the build settings and TensorRT-LLM version>`` and loaded
from there by later runs with the same settings.

Timing: requests are streamed (``LLM.generate_async(..., streaming=True)``) and every
token is stamped when its update reaches Python; tokens delivered in one update share a
time. The same per-request counts mark the phases
(:class:`llem.backends.phases.PhaseTracker`): with more prompts than the engine runs at
once, requests are admitted while others decode, and the batch is then reported without a
prefill/decode split. When streaming is not available the backend falls back to a blocking
call and says in ``LoadInfo.effective["llem.token_timing"]`` that no per-token times exist
(and its batches have no split).
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llem import spec
from llem.backends.base import BatchOutput, LoadInfo, PhaseCallback, RequestOutput, parallel_devices
from llem.backends.phases import MIXED, PhaseTracker
from llem.backends.table import decoder_of, engine_kwargs, nested_kwargs, read_effective, readback_map
from llem.backends.vllm import (
    _get,
    _merge_passthrough,
    _passthrough,
    _require_gpu,
    _section,
    _skip_lora,
    known_fields,
    read_back,
    token_times_from_counts,
)
from llem.errors import ConfigError, LlemError, missing_dependency
from llem.prompts.chat import ChatPrompting, chat_prompting

__all__ = [
    "TensorRTBackend",
    "trtllm_llm_kwargs",
    "trtllm_sampling_kwargs",
    "trtllm_engine_cache_dir",
    "build_llm_objects",
    "effective_from_llm_args",
    "QUANT_ALGOS",
    "returned_tokens",
]

Kwargs = dict[str, Any]
Skipped = dict[str, str]

#: The QuantAlgo members llem passes (read from the table's engine_values): weight
#: quantization (tensorrt.quantization) and KV-cache quantization (tensorrt.kv_cache_dtype).
QUANT_ALGOS: tuple[str, ...] = tuple(
    dict.fromkeys(
        algo
        for arg in spec.engine_args("tensorrt", target="quant_config")
        for algo in (arg.values or {}).values()
        if algo is not None
    )
)

#: TensorRT-LLM's own value of max_input_len when none is given (BaseLlmArgs validator).
TRTLLM_DEFAULT_MAX_INPUT_LEN = 1024


def _beam_width(cfg: Any) -> int | None:
    beams = _get(decoder_of(cfg), "num_beams")
    return beams if beams is not None and beams > 1 else None


def trtllm_llm_kwargs(cfg: Any, model: str | None = None) -> tuple[Kwargs, Skipped]:
    """Translate a configuration into TensorRT-LLM ``LLM(...)`` keyword arguments.

    Parameters
    ----------
    cfg : ExperimentConfig or stand-in
        Reads ``cfg.model``, ``cfg.max_input_tokens``, ``cfg.tensorrt.*``,
        ``cfg.decoder.num_beams`` and ``cfg.passthrough``.
    model : str, optional
        What to load instead of ``cfg.model`` (a resolved path, or a cached engine).

    Returns
    -------
    kwargs : dict
        LLM API argument names; ``quant_config``, ``kv_cache_config`` and
        ``build_config`` are dicts of QuantConfig / KvCacheConfig / BuildConfig fields.
    skipped : dict
        ``section.field`` -> why the set field is not passed.

    Notes
    -----
    ``tp_size``/``pp_size`` become ``tensor_parallel_size``/``pipeline_parallel_size``.
    With ``max_input_len`` unset, llem's ``max_input_tokens`` sizes the engine's input.
    A legacy ``max_output_len`` becomes ``max_seq_len = max_input_len + max_output_len``.
    Beam search (``num_beams`` > 1) needs ``max_beam_width`` at build time.
    """
    t = _section(cfg, "tensorrt")
    kwargs: Kwargs = {"model": model if model is not None else cfg.model}
    skipped: Skipped = {}
    # decoder.num_beams sizes the engine for beam search only when it asks for beam search.
    kwargs.update(engine_kwargs(cfg, "tensorrt", "llm", exclude=("decoder.num_beams",)))

    input_len = spec.engine_arg("tensorrt", "tensorrt.max_input_len").name
    if input_len not in kwargs:
        limit = getattr(cfg, "max_input_tokens", None)
        if limit is not None:
            kwargs[input_len] = limit

    seq_len = spec.engine_arg("tensorrt", "tensorrt.max_seq_len").name
    legacy_out = _get(t, "max_output_len")
    if legacy_out is not None:
        if seq_len in kwargs:
            skipped["tensorrt.max_output_len"] = (
                "max_seq_len is set and wins; max_output_len is the name TensorRT-LLM "
                "used before max_seq_len replaced it"
            )
        else:
            base = kwargs.get(input_len, TRTLLM_DEFAULT_MAX_INPUT_LEN)
            kwargs[seq_len] = base + legacy_out

    beams = _beam_width(cfg)
    if beams is not None:
        kwargs[spec.engine_arg("tensorrt", "decoder.num_beams").name] = beams

    nested = nested_kwargs(cfg, "tensorrt", "llm")
    # A BuildConfig is passed only when a field that only it takes is set; the LLM's size
    # limits are then copied in, since a given BuildConfig wins over them.
    nested.pop("build_config", None)
    limits = [arg for arg in spec.engine_args("tensorrt", target="build_config") if "llm" in arg.targets]
    build = engine_kwargs(cfg, "tensorrt", "build_config", exclude=[arg.path for arg in limits])
    if build:
        build.update({arg.name: kwargs[arg.name] for arg in limits if arg.name in kwargs})
        nested["build_config"] = build
    kwargs.update(nested)

    _skip_lora(cfg, skipped, "TensorRT-LLM")
    _merge_passthrough(kwargs, _passthrough(cfg), "TensorRT-LLM")
    return kwargs, skipped


def trtllm_sampling_kwargs(cfg: Any) -> tuple[Kwargs, Skipped]:
    """Translate the decoder section into TensorRT-LLM ``SamplingParams`` keyword arguments.

    TensorRT-LLM decodes greedily when temperature, top_p and top_k are all unset.
    ``do_sample=False`` is passed as ``top_k=1`` (greedy; it replaces a top_k given with
    it). ``num_beams`` > 1 becomes ``use_beam_search=True`` with the beam width as ``n``
    (or as ``best_of`` when ``n`` is also set). ``early_stopping`` is an int there:
    True -> 1, False -> 0.

    Every other set field is passed as asked: what has no effect (a sampling knob under
    greedy decoding, length_penalty with one beam) is the table's to say, and through
    :func:`llem.run` its skip rules leave such fields unset. ``skipped`` lists only the
    decoder fields TensorRT-LLM's SamplingParams does not have.

    Returns
    -------
    kwargs : dict
        ``SamplingParams`` argument names and values.
    skipped : dict
        ``decoder.field`` -> why it is not passed.
    """
    d = decoder_of(cfg)
    skipped: Skipped = {}
    beams = _beam_width(cfg)
    kwargs = engine_kwargs(cfg, "tensorrt", "sampling", decoder=d)

    n = spec.engine_arg("tensorrt", "decoder.n").name
    if beams is not None:
        kwargs["use_beam_search"] = True  # a protocol argument (spec.engine_targets)
        if kwargs.get(n) is not None and kwargs[n] != beams:
            kwargs["best_of"] = beams
        else:
            kwargs[n] = beams

    if _get(d, "do_sample") is False and beams is None:
        kwargs[spec.engine_arg("tensorrt", "decoder.top_k").name] = 1  # greedy in TensorRT-LLM

    for row in spec.params("decoder"):
        if "tensorrt" not in row.backends and _get(d, row.name) is not None:
            skipped[row.path] = f"TensorRT-LLM's SamplingParams has no {row.name}"
    return kwargs, skipped


#: ``decoder.field`` -> TensorRT-LLM SamplingParams attribute, for effective values (from the table).
TRT_SAMPLING_READBACK = readback_map("tensorrt", "sampling")

_SLUG = re.compile(r"[^A-Za-z0-9._-]+")

#: LLM arguments that do not change the built engine (runtime only), left out of the hash.
_RUNTIME_ONLY = ("kv_cache_config",)


def trtllm_engine_cache_dir(cfg: Any, llm_kwargs: Mapping[str, Any], trtllm_version: str = "") -> Path | None:
    """Folder for the engine these settings build, under ``tensorrt.engine_dir``.

    The name is the model's last path part and a hash of the build-relevant arguments and
    the TensorRT-LLM version, so different settings never share an engine. None when
    ``engine_dir`` is unset.
    """
    root = _get(_section(cfg, "tensorrt"), "engine_dir")
    if root is None:
        return None
    build = {k: v for k, v in llm_kwargs.items() if k not in _RUNTIME_ONLY}
    blob = json.dumps({"args": build, "trtllm": trtllm_version}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    name = _SLUG.sub("_", Path(str(llm_kwargs.get("model", cfg.model))).name or "model")
    return Path(root).expanduser() / f"{name}-{digest}"


def _has_engine(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.engine"))


def build_llm_objects(kwargs: Kwargs, llmapi: Any, build_config_cls: Any = None) -> Kwargs:
    """Replace the dict forms of ``quant_config``/``kv_cache_config``/``build_config``.

    ``llmapi`` is the ``tensorrt_llm.llmapi`` module (or anything with ``QuantConfig``,
    ``QuantAlgo`` and ``KvCacheConfig``); ``build_config_cls`` is TensorRT-LLM's
    ``BuildConfig``.
    """
    out = dict(kwargs)
    if isinstance(out.get("quant_config"), Mapping):
        fields = {k: getattr(llmapi.QuantAlgo, v) for k, v in out["quant_config"].items()}
        out["quant_config"] = llmapi.QuantConfig(**fields)
    if isinstance(out.get("kv_cache_config"), Mapping):
        out["kv_cache_config"] = llmapi.KvCacheConfig(**out["kv_cache_config"])
    if isinstance(out.get("build_config"), Mapping):
        if build_config_cls is None:
            raise LlemError(
                "TensorRT-LLM's BuildConfig could not be imported, so build_config "
                "(tensorrt.builder_opt_level) cannot be applied."
            )
        out["build_config"] = build_config_cls(**out["build_config"])
    return out


# --------------------------------------------------------------------------------------
# Run code: imports tensorrt_llm lazily
# --------------------------------------------------------------------------------------


def _import_trtllm() -> tuple[Any, Any, str, Any, Any]:
    """tensorrt_llm, the TensorRT-engine LLM class and its import path, llmapi, BuildConfig."""
    try:
        import tensorrt_llm
        from tensorrt_llm import llmapi
    except ImportError as exc:
        raise missing_dependency("tensorrt_llm", "tensorrt", "the TensorRT-LLM backend") from exc
    try:  # TensorRT-LLM 1.x: the TensorRT-engine LLM moved here
        from tensorrt_llm._tensorrt_engine import LLM

        where = "tensorrt_llm._tensorrt_engine.LLM"
    except ImportError:  # 0.1x / 0.2x: tensorrt_llm.LLM builds TensorRT engines
        LLM = tensorrt_llm.LLM  # noqa: N806
        where = "tensorrt_llm.LLM"
    build_config = getattr(tensorrt_llm, "BuildConfig", None)
    if build_config is None:
        build_config = getattr(llmapi, "BuildConfig", None)
    return tensorrt_llm, LLM, where, llmapi, build_config


def _resolve_model(cfg: Any) -> str:
    name = cfg.model
    try:
        from llem.models import resolve_model
    except ImportError:
        return name
    spec = resolve_model(name)
    if spec.gguf_file:
        raise ConfigError(
            f"Model {name!r} is a GGUF file, which TensorRT-LLM cannot load. Use a "
            "transformers checkpoint (a hub id or a folder with config.json)."
        )
    return spec.id_or_path


def effective_from_llm_args(args: Any) -> dict[str, Any]:
    """Resolved values read back from a TensorRT-LLM ``LlmArgs`` (or a look-alike).

    Where TensorRT-LLM keeps each value is the rows' ``engine_readback``
    (``build_config.max_batch_size``, ``quant_config.quant_algo``...).
    """
    return read_effective(args, "tensorrt")


def returned_tokens(outputs: Sequence[Any], beam_search: bool) -> int:
    """Output tokens of one request: the best beam's under beam search, else every sequence's.

    With beam search TensorRT-LLM returns ``n`` beams per prompt, best first (``n`` is the
    beam width unless ``decoder.n`` asks for fewer); the answer is the best one, as
    transformers' ``generate`` and vLLM's ``beam_search`` give it, so it alone counts: summing
    the beams would multiply output tokens by the width and divide energy per token by it.
    Sampling ``n`` > 1 completions generates each of them, so they all count.
    """
    if not outputs:
        return 0
    if beam_search:
        return len(outputs[0].token_ids)
    return sum(len(q.token_ids) for q in outputs)


def _iterable(obj: Any) -> bool:
    try:
        iter(obj)
    except TypeError:
        return False
    return True


class _Stream:
    """What one streamed request delivered, filled by a consumer thread."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int]] = []
        self.final: Any = None
        self.error: BaseException | None = None


_NOT_LOADED = "The TensorRT-LLM backend has no model loaded: call load(config) first."

#: Why a batch whose results could not be streamed has no prefill/decode split.
BLOCKING_NO_SPLIT = ("this TensorRT-LLM version's results could not be streamed, so no first token "
                     "is observable")


class TensorRTBackend:
    """Runs a configuration on TensorRT-LLM (``pip install 'llem[tensorrt]'``; CUDA GPU)."""

    name = "tensorrt"

    def __init__(self) -> None:
        self._llm: Any = None
        self._tokenizer: Any = None
        self._config: Any = None
        self._params: Any = None
        self._params_cls: Any = None
        self._params_kw: Kwargs = {}
        self.load_info: LoadInfo | None = None
        self.chat: ChatPrompting | None = None

    def load(self, config: Any) -> LoadInfo:
        """Build (or load a cached) TensorRT engine for ``config``; report what resolved."""
        trtllm, llm_cls, llm_path, llmapi, build_config_cls = _import_trtllm()
        device = _require_gpu("TensorRT-LLM")
        model = _resolve_model(config)
        kwargs, skipped = trtllm_llm_kwargs(config, model=model)
        version = str(getattr(trtllm, "__version__", ""))
        effective: dict[str, Any] = {"llem.trtllm_llm_class": llm_path}

        cache = trtllm_engine_cache_dir(config, kwargs, version)
        if cache is not None and _has_engine(cache):
            # The engine was built from these same settings (the folder name is their hash);
            # only runtime arguments may be given alongside an engine.
            kwargs = {k: v for k, v in kwargs.items() if k not in ("quant_config", "build_config")}
            kwargs["model"] = str(cache)
            kwargs.setdefault("tokenizer", model)  # the engine folder may hold no tokenizer
            effective["llem.engine"] = f"reused {cache}"

        start = time.perf_counter()
        self._llm = llm_cls(**build_llm_objects(kwargs, llmapi, build_config_cls))
        if cache is not None and "llem.engine" not in effective:
            cache.mkdir(parents=True, exist_ok=True)
            self._llm.save(str(cache))
            effective["llem.engine"] = f"built and saved to {cache}"
        elif "llem.engine" not in effective:
            effective["llem.engine"] = "built (not cached: tensorrt.engine_dir is unset)"
        load_s = time.perf_counter() - start

        params_kw, more = trtllm_sampling_kwargs(config)
        skipped.update(more)
        self._params_cls = trtllm.SamplingParams
        self._params_kw = params_kw
        self._params = self._params_cls(**params_kw)
        effective.update(read_back(self._params, TRT_SAMPLING_READBACK, params_kw))
        if not params_kw.get("use_beam_search") and not any(
            params_kw.get(k) is not None for k in ("temperature", "top_p", "top_k")
        ):
            # TensorRT-LLM decodes greedily when none of the three is given.
            effective["decoder.do_sample"] = False
        timing = (
            "per streamed update: each token is stamped when its update reaches Python; "
            "tokens delivered in one update share that time"
        )
        effective["llem.token_timing"] = timing
        effective.update(effective_from_llm_args(getattr(self._llm, "args", None)))
        self._tokenizer = self._llm.tokenizer
        self._config = config
        # experiment.chat_template: the tokenizer's own template, rendered before encoding
        self.chat = chat_prompting(self._tokenizer, getattr(config, "chat_template", None), model)
        effective.update(self.chat.effective)
        self.load_info = known_fields(
            LoadInfo,
            model_id=model,
            load_s=load_s,
            effective=effective,
            skipped=skipped,
            versions={"tensorrt_llm": version},
            device=device,
            cuda_devices=parallel_devices(kwargs),
            max_context_tokens=effective.get("tensorrt.max_seq_len"),
            max_batch_size=effective.get("tensorrt.max_batch_size"),
            notes=(f"Token times: {timing}.", self.chat.note),
            model_path=model if Path(model).is_dir() else None,
        )
        return self.load_info

    def generate(
        self,
        prompts: Sequence[str],
        on_phase: PhaseCallback | None = None,
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        seed: int | None = None,
    ) -> BatchOutput:
        """Generate one batch, streaming every request and stamping each token update.

        ``max_new_tokens``, ``min_new_tokens`` and ``seed`` override the configuration for
        this batch only. Under beam search each request's text and ``output_tokens`` are the
        best beam's (:func:`returned_tokens`). ``prefill_s`` is the time at which every request had its first
        token (NaN when streaming was unavailable).
        """
        llm = self._loaded()
        params = self._params
        over = {
            spec.engine_arg("tensorrt", path).name: v
            for path, v in (
                ("decoder.max_new_tokens", max_new_tokens),
                ("decoder.min_new_tokens", min_new_tokens),
                ("decoder.seed", seed),
            )
            if v is not None
        }
        if over:
            params = self._params_cls(**{**self._params_kw, **over})
        limit = getattr(self._config, "max_input_tokens", None)
        chat = self.chat or chat_prompting(self._tokenizer, "off")
        encoded = [chat.truncate(chat.encode(p), limit) for p in prompts]
        total_input = sum(len(ids) for ids, _ in encoded)
        phase = on_phase or (lambda _name: None)

        phase("prefill")
        start = time.perf_counter()
        results = [llm.generate_async(ids, sampling_params=params, streaming=True) for ids, _ in encoded]
        per_token = all(_iterable(r) for r in results)
        tracker = PhaseTracker(phase, range(len(results)))
        if per_token:
            streams = self._consume(results, start, tracker)
        else:
            # This version's results cannot be iterated: wait for them without token times.
            phase(MIXED)  # prefill and decode, with no boundary to observe
            streams = []
            for r in results:
                s = _Stream()
                s.final = r.result()
                streams.append(s)
            if self.load_info is not None:
                self.load_info.effective["llem.token_timing"] = (
                    "none per token: streamed results were not iterable in this "
                    "TensorRT-LLM version; only the batch time is known"
                )
        duration = time.perf_counter() - start

        requests = []
        firsts = []
        beam = bool(self._params_kw.get("use_beam_search"))
        for prompt, (ids, cut), s in zip(prompts, encoded, streams):
            if s.error is not None:
                raise s.error
            seqs = list(getattr(s.final, "outputs", []) or [])
            text = seqs[0].text if seqs else ""
            n_out = returned_tokens(seqs, beam)
            times = token_times_from_counts(s.events) if per_token else ()
            if times:
                firsts.append(times[0])
            requests.append(RequestOutput(prompt, text, len(ids), n_out, times, cut))
        if per_token and firsts and len(firsts) == len(requests):
            prefill_s = max(firsts)
        else:
            prefill_s = float("nan")  # not observable: NaN rather than a guess
        return known_fields(
            BatchOutput,
            requests=tuple(requests),
            duration_s=duration,
            prefill_s=prefill_s,
            total_input_tokens=total_input,
            decode_steps=max((r.output_tokens for r in requests), default=0),
            t0_perf=start,
            no_phase_split=tracker.no_split if per_token else BLOCKING_NO_SPLIT,
        )

    @staticmethod
    def _consume(results: list[Any], start: float, tracker: PhaseTracker) -> list[_Stream]:
        """Iterate every streamed result in its own thread; mark the phases from this one.

        The phases follow the requests' token counts (:class:`PhaseTracker`): TensorRT-LLM
        admits at most ``max_batch_size`` requests at a time, so with more prompts than
        that some decode while others wait, and the batch is marked ``prefill+decode``.
        """
        streams = [_Stream() for _ in results]

        def drain(result: Any, stream: _Stream) -> None:
            try:
                last = None
                for out in result:
                    now = time.perf_counter() - start
                    count = len(out.outputs[0].token_ids) if out.outputs else 0
                    stream.events.append((now, count))
                    last = out
                stream.final = last if last is not None else result
            except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
                stream.error = exc

        threads = [threading.Thread(target=drain, args=(r, s), daemon=True) for r, s in zip(results, streams)]
        def observe() -> None:
            counts = {i: s.events[-1][1] for i, s in enumerate(streams) if s.events}
            done = [i for i, th in enumerate(threads) if not th.is_alive()]
            tracker.observe(time.perf_counter() - start, counts, done)

        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            observe()
            time.sleep(0.0005)
        for th in threads:
            th.join()
        observe()
        return streams

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in the loaded model's tokens, a chat template's included."""
        if self._tokenizer is None:
            raise LlemError(_NOT_LOADED)
        return (self.chat or chat_prompting(self._tokenizer, "off")).count(text)

    def release(self) -> None:
        """Shut the executor down and free GPU memory; safe to call twice."""
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        self._tokenizer = None
        self._params = None
        self.chat = None
        shutdown = getattr(llm, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # noqa: BLE001 - best effort on teardown
                pass
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_initialized():  # never initialise CUDA here just to free it
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass

    def _loaded(self) -> Any:
        if self._llm is None:
            raise LlemError(_NOT_LOADED)
        return self._llm
