"""The PyTorch backend: Hugging Face transformers ``generate`` with real per-token timing.

Every field of the ``pytorch`` and ``decoder`` config sections maps to the real
transformers or torch setting; which setting, and where it goes (``from_pretrained``,
``BitsAndBytesConfig``, ``GenerationConfig``, ``torch.compile``), is in the table's rows
(``spec.engine_args("pytorch")``). A field left unset (None) is not passed, so transformers
uses its own default; after loading, the value transformers actually uses is read back
(from ``model.generation_config``, ``model.config`` and the weights' dtype) into
:attr:`LoadInfo.effective`. A field that has no effect in the given setting (a sampling
parameter under greedy decoding, ``length_penalty`` without beam search, an offloaded
cache on a CPU...) is not passed either, and is listed in :attr:`LoadInfo.skipped` with
the reason.

Per-token times come from a stopping criterion that transformers calls once per decoding
step, right after the step's tokens are chosen: it reads ``time.perf_counter()`` and
never stops generation. It works for greedy, sampling, beam search and assisted
generation (where one step may accept several tokens at once; they share that step's
time). On a GPU it synchronizes once, at the first token, so that the time to first token
includes the whole prefill; later steps are already synchronized by transformers' own
end-of-sequence check.

torch and transformers are imported in :meth:`PyTorchBackend.load`, never at import.
"""

from __future__ import annotations

import copy
import gc
import importlib.metadata
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llem.backends.base import (
    BatchOutput,
    LoadInfo,
    PhaseCallback,
    ReloadNeeded,
    RequestOutput,
    load_time_values,
)
from llem.backends.table import field, refuse_untranslatable
from llem.errors import (
    ConfigError,
    MissingDependencyError,
    ModelNotFoundError,
    OutOfMemoryError,
    missing_dependency,
)
from llem.models import not_found as model_not_found
from llem.models import resolve_adapter, resolve_model
from llem.spec import engine_arg, engine_args, rule

#: Decoder rows that go to transformers' GenerationConfig (the table's engine_target).
DECODER_FIELDS = tuple(a.row.name for a in engine_args("pytorch", section="decoder", target="generation"))
#: Those that only act when sampling (the fields of the table's rule sampling-params-greedy).
SAMPLING_FIELDS = tuple(
    n for n in DECODER_FIELDS if f"decoder.{n}" in rule("sampling-params-greedy").skip
)
#: Those that only act with beam search (the fields of the rule beam-params-single-beam).
BEAM_FIELDS = tuple(n for n in DECODER_FIELDS if f"decoder.{n}" in rule("beam-params-single-beam").skip)
#: Those passed whenever they are set.
_ALWAYS_FIELDS = tuple(
    n for n in DECODER_FIELDS if n != "do_sample" and n not in SAMPLING_FIELDS + BEAM_FIELDS
)
#: BitsAndBytesConfig rows other than the two load flags: they only configure 4-bit loading.
BNB_4BIT_FIELDS = tuple(
    a.row.name
    for a in engine_args("pytorch", target="quantization_config")
    if a.row.name not in ("load_in_4bit", "load_in_8bit")
)
#: Row name -> GenerationConfig attribute, for every row that goes there.
_GENERATION_NAMES = {a.row.name: a.name for a in engine_args("pytorch", target="generation")}


def _torch_value(torch: Any, value: Any) -> Any:
    """An engine value from the table: ``"torch.<name>"`` is that torch attribute (a dtype)."""
    if isinstance(value, str) and value.startswith("torch."):
        return getattr(torch, value.removeprefix("torch."))
    return value


#: Read a field from a config section (traitlets object, namespace or dict); None if absent.
_get = field


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class _TokenClock:
    """A stopping criterion that timestamps each decoding step and never stops generation.

    ``steps`` holds ``(perf_counter_time, sequence_length)`` per call; the first call is
    the end of prefill (the first token exists).
    """

    def __init__(self, on_phase: PhaseCallback | None, sync: Any = None) -> None:
        self.on_phase = on_phase
        self.sync = sync
        self.steps: list[tuple[float, int]] = []
        self._false: Any = None

    def __call__(self, input_ids: Any, scores: Any = None, **kwargs: Any) -> Any:
        if not self.steps:
            if self.sync is not None:
                self.sync()
            now = time.perf_counter()
            self.steps.append((now, int(input_ids.shape[-1])))
            if self.on_phase is not None:
                self.on_phase("decode")
        else:
            self.steps.append((time.perf_counter(), int(input_ids.shape[-1])))
        f = self._false
        if f is None or f.shape[0] != input_ids.shape[0] or f.device != input_ids.device:
            import torch

            f = self._false = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return f

    def token_times(self, prompt_len: int, t0: float) -> list[float]:
        """Time of each generated position (seconds since ``t0``), in order."""
        times: list[float] = []
        prev = prompt_len
        for t, length in self.steps:
            new = max(0, length - prev)
            times.extend([t - t0] * new)
            prev = max(prev, length)
        return times


def _make_clock_criterion(on_phase: PhaseCallback | None, sync: Any) -> Any:
    from transformers import StoppingCriteria

    class TokenClock(_TokenClock, StoppingCriteria):
        pass

    return TokenClock(on_phase, sync)


class PyTorchBackend:
    """Run a causal language model with Hugging Face transformers.

    Attributes
    ----------
    model, tokenizer
        The loaded transformers objects (None before :meth:`load` and after
        :meth:`release`).
    info : LoadInfo or None
        What the last :meth:`load` resolved.
    """

    name = "pytorch"

    def __init__(self) -> None:
        self._facts: dict[str, Any] = {}
        self.model: Any = None
        self.tokenizer: Any = None
        self.assistant_model: Any = None
        self.assistant_tokenizer: Any = None
        self.info: LoadInfo | None = None
        self.device: str = "cpu"
        self.max_input_tokens: int | None = None
        self._gen_config: Any = None
        self._gen_extra: dict[str, Any] = {}
        self._named_gen_keys: set[str] = set()
        self._dtype_name = ""
        self._loaded: _Loaded | None = None
        self._decode: _Decode | None = None

    # ------------------------------------------------------------------ loading
    def load(self, config: Any) -> LoadInfo:
        """Load the model, tokenizer, adapter and generation settings for ``config``.

        Two halves: the load-time settings (weights, dtype, quantization, attention,
        placement, adapter, compile), then the decode-time ones, applied by the same code
        as :meth:`reconfigure`.

        Returns
        -------
        LoadInfo
            With ``effective`` (``section.field`` -> value transformers uses) and
            ``skipped`` (``section.field`` -> why it had no effect).

        Raises
        ------
        MissingDependencyError
            torch, transformers, bitsandbytes, peft or gguf absent when needed.
        ModelNotFoundError
            The model or adapter cannot be found.
        ConfigError
            transformers refuses the combination of settings.
        """
        try:
            import torch
            import transformers
        except ImportError as exc:
            pkg = "torch" if "torch" in str(exc) and "transformers" not in str(exc) else "transformers"
            raise missing_dependency(pkg, "pytorch", "the pytorch backend") from None

        t_start = time.perf_counter()
        _refuse_untranslatable(config)
        loaded = self._load_weights(config, torch, transformers)
        self._loaded = loaded
        self._apply(config)
        if loaded.compiled:
            self._trial_compile(torch, loaded.skipped, loaded.effective)
        self.info = self._load_info(time.perf_counter() - t_start)
        return self.info

    def reconfigure(self, config: Any) -> LoadInfo:
        """Apply ``config``'s decode-time settings to the loaded model, without loading it.

        The decoder section, cache, speculation by prompt lookup, output scores, the
        ``generate`` pass-through arguments and ``max_input_tokens`` are set as
        :meth:`load` sets them; the model, tokenizer and adapter stay as loaded.

        Returns
        -------
        LoadInfo
            As :meth:`load` would return for ``config``, with ``load_s`` the time this
            call took.

        Raises
        ------
        ReloadNeeded
            No model is loaded, a load-time setting of ``config`` differs from the loaded
            model's, or an ``assistant_model`` is used (transformers takes the draft
            model with the generation settings, so it is loaded again).
        ConfigError
            transformers refuses the generation settings.
        """
        loaded = self._loaded
        if self.model is None or loaded is None:
            raise ReloadNeeded("PyTorchBackend.reconfigure: no model is loaded; call load(config).")
        wanted = load_time_values(config)
        changed = [p for p, v in wanted.items() if loaded.load_values.get(p) != v]
        if changed:
            raise ReloadNeeded(
                f"PyTorchBackend.reconfigure: load-time setting(s) {', '.join(changed)} differ "
                "from the loaded model's; load the model again."
            )
        if _get(_get(config, "pytorch"), "assistant_model"):
            raise ReloadNeeded(
                "PyTorchBackend.reconfigure: pytorch.assistant_model is set; the draft model "
                "is set up with the generation settings, so the model is loaded again."
            )
        t0 = time.perf_counter()
        _refuse_untranslatable(config)
        self._apply(config)
        self.info = self._load_info(time.perf_counter() - t0)
        return self.info

    def _apply(self, config: Any) -> None:
        """The decode-time half of :meth:`load`: generation settings and their readback."""
        loaded = self._loaded
        if loaded is None:
            raise RuntimeError("PyTorchBackend._apply called before the model was loaded.")
        pt = _get(config, "pytorch")
        resolved = getattr(config, "resolved_decoder", None)
        dec = resolved() if callable(resolved) else _get(config, "decoder")  # preset expanded
        passthrough = _split_passthrough(_get(config, "passthrough") or {})
        effective: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        notes: list[str] = []
        gen_cfg, extra = self._generation_config(
            config, dec, pt, skipped, effective, notes, loaded.cuda, loaded.spec
        )
        if loaded.compiled:
            gen_cfg.disable_compile = True  # llem compiled forward itself; don't compile twice
        elif _get(pt, "torch_compile") is False:
            gen_cfg.disable_compile = True
        pass_gen = passthrough.get("generate") or {}
        self._check_passthrough(pass_gen, dict.fromkeys(self._named_gen_keys), "generate")
        for key, value in pass_gen.items():
            if hasattr(gen_cfg, key):
                setattr(gen_cfg, key, value)  # a generation setting: into the config
            else:
                extra[key] = value  # anything else generate() takes
        self._gen_config, self._gen_extra = gen_cfg, extra
        self.max_input_tokens = _get(config, "max_input_tokens")
        one_at_a_time = "assistant_model" in extra or gen_cfg.prompt_lookup_num_tokens is not None
        self._decode = _Decode(effective, skipped, notes, 1 if one_at_a_time else None)

    def _load_info(self, load_s: float) -> LoadInfo:
        """The LoadInfo of the load-time half and the decode-time half now in force."""
        loaded, decode = self._loaded, self._decode
        if loaded is None or decode is None:
            raise RuntimeError("PyTorchBackend._load_info called before load().")
        return LoadInfo(
            model_id=loaded.spec.name,
            num_parameters=loaded.num_parameters,
            load_s=load_s,
            effective={**loaded.effective, **decode.effective},
            skipped={**loaded.skipped, **decode.skipped},
            versions=dict(loaded.versions),
            device=self.device,
            max_context_tokens=loaded.max_context_tokens,
            max_batch_size=decode.max_batch_size,
            notes=(*loaded.notes, *decode.notes),
            model_path=loaded.spec.id_or_path if loaded.spec.is_local else None,
            facts=dict(self._facts),
        )

    def _load_weights(self, config: Any, torch: Any, transformers: Any) -> _Loaded:
        """The load-time half of :meth:`load`: model, tokenizer, adapter, compile, readback."""
        pt = _get(config, "pytorch")
        passthrough = _split_passthrough(_get(config, "passthrough") or {})
        effective: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        notes: list[str] = []
        self._facts = {"compile_failed": False}
        spec = resolve_model(_get(config, "model") or "tiny-random-llama")
        cuda = torch.cuda.is_available()

        load_kw: dict[str, Any] = {}
        tok_kw: dict[str, Any] = {}
        if spec.gguf_file:
            load_kw["gguf_file"] = tok_kw["gguf_file"] = spec.gguf_file
            if importlib.util.find_spec("gguf") is None:
                raise missing_dependency("gguf", "pytorch", "loading a GGUF model file")
            notes.append("Model weights come from a GGUF file and are dequantized on load.")
        for arg in engine_args("pytorch", target="tokenizer"):  # revision, trust_remote_code
            value = _get(pt, arg.row.name)
            if value is not None:
                load_kw[arg.name] = tok_kw[arg.name] = value

        # dtype
        dtype = _get(pt, "dtype")
        if dtype is not None:
            arg = engine_arg("pytorch", "pytorch.dtype")
            load_kw[arg.name] = _torch_value(torch, arg.translate(dtype))

        # attention implementation
        attn = _get(pt, "attn_implementation")
        if attn is not None:
            reason = self._attn_unavailable(attn, torch, cuda)
            if reason:
                skipped["pytorch.attn_implementation"] = reason
            else:
                load_kw["attn_implementation"] = attn

        # bitsandbytes quantization
        q4, q8 = bool(_get(pt, "load_in_4bit")), bool(_get(pt, "load_in_8bit"))
        if q4 and q8:
            raise ConfigError("pytorch.load_in_4bit and pytorch.load_in_8bit cannot both be on; choose one.")
        for name in BNB_4BIT_FIELDS:
            if _get(pt, name) is not None and not q4:
                skipped[f"pytorch.{name}"] = "only used with 4-bit quantization (load_in_4bit)"
        if q4 or q8:
            if importlib.util.find_spec("bitsandbytes") is None:
                raise missing_dependency("bitsandbytes", "pytorch", "4-bit/8-bit quantization")
            from transformers import BitsAndBytesConfig

            bnb: dict[str, Any] = {"load_in_4bit": True} if q4 else {"load_in_8bit": True}
            if q4:
                for name in BNB_4BIT_FIELDS:
                    value = _get(pt, name)
                    if value is not None:
                        arg = engine_arg("pytorch", f"pytorch.{name}")
                        bnb[arg.name] = _torch_value(torch, arg.translate(value))
            load_kw["quantization_config"] = BitsAndBytesConfig(**bnb)
            _quiet_repeated_warnings("bitsandbytes")

        # placement
        device_map = _get(pt, "device_map")
        max_memory = _get(pt, "max_memory")
        if device_map is not None:
            load_kw["device_map"] = device_map
        elif q4 or q8:
            # bitsandbytes needs the weights placed at load time
            load_kw["device_map"] = "auto" if cuda else "cpu"
            notes.append(f"device_map set to {load_kw['device_map']!r} for bitsandbytes.")
        if max_memory is not None:
            if "device_map" in load_kw:
                load_kw["max_memory"] = max_memory
            else:
                skipped["pytorch.max_memory"] = "only used with a device_map (e.g. 'auto')"
        if _get(pt, "low_cpu_mem_usage") is not None:
            if int(transformers.__version__.split(".")[0]) >= 5:
                skipped["pytorch.low_cpu_mem_usage"] = (
                    f"transformers {transformers.__version__} always loads with low CPU memory "
                    "use and ignores this flag"
                )
            else:
                load_kw["low_cpu_mem_usage"] = bool(_get(pt, "low_cpu_mem_usage"))

        num_processes = _get(pt, "num_processes")
        if num_processes is not None and num_processes > 1:
            n_dev = torch.cuda.device_count() if cuda else 0
            if n_dev < num_processes:
                skipped["pytorch.num_processes"] = (
                    f"data parallel over {num_processes} processes needs {num_processes} devices; "
                    f"this machine has {n_dev} GPU(s); ran as 1 process"
                )
            else:
                skipped["pytorch.num_processes"] = (
                    "data parallel runs need one process per GPU, started with "
                    "`accelerate launch`; llem's in-process runner ran as 1 process"
                )
        effective["pytorch.num_processes"] = 1

        self._check_passthrough(passthrough.get("load") or {}, load_kw, "load")
        load_kw.update(passthrough.get("load") or {})

        # load
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer or spec.id_or_path, **tok_kw)
            model: Any = AutoModelForCausalLM.from_pretrained(spec.id_or_path, **load_kw)
        except (OSError, ValueError) as exc:
            if _looks_not_found(exc):
                raise model_not_found(spec.name, [spec.tried], _first_line(exc)) from None
            raise
        except ImportError as exc:
            raise MissingDependencyError(
                f"Loading {spec.name!r} needs a package that is missing: {_first_line(exc)}"
            ) from None
        if "device_map" not in load_kw and cuda:
            model.to("cuda")
            notes.append("No device_map set: the model was put on cuda:0 (llem's default).")
        model.eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
            notes.append("The tokenizer has no pad token; its end-of-sequence token pads.")

        # LoRA adapter
        adapter = _get(config, "lora_adapter")
        if adapter:
            model = self._load_adapter(model, adapter, _get(config, "lora_merge"), effective)
        elif _get(config, "lora_merge") is not None:
            skipped["experiment.lora_merge"] = "only used with a lora_adapter"

        self.model, self.tokenizer = model, tokenizer
        self.device = str(next(model.parameters()).device)

        # torch.compile (tried on a first generation once the generation settings exist)
        compiled = self._maybe_compile(pt, torch, skipped, effective)

        # read back what is in force
        self._dtype_name = str(next(model.parameters()).dtype).replace("torch.", "")
        effective["pytorch.dtype"] = str(getattr(model, "dtype", self._dtype_name)).replace("torch.", "")
        effective["pytorch.device_map"] = (
            dict(model.hf_device_map) if getattr(model, "hf_device_map", None) else self.device
        )
        effective["pytorch.attn_implementation"] = getattr(model.config, "_attn_implementation", None)
        qc: Any = getattr(model.config, "quantization_config", None)
        qd = qc.to_dict() if hasattr(qc, "to_dict") else (qc or {})
        effective["pytorch.load_in_4bit"] = bool(qd.get("load_in_4bit", False))
        effective["pytorch.load_in_8bit"] = bool(qd.get("load_in_8bit", False))
        if qd.get("load_in_4bit"):
            for name in BNB_4BIT_FIELDS:
                effective[f"pytorch.{name}"] = qd.get(name)
        if max_memory is not None and "pytorch.max_memory" not in skipped:
            effective["pytorch.max_memory"] = max_memory
        effective["pytorch.revision"] = getattr(model.config, "_commit_hash", None) or _get(pt, "revision")
        effective["pytorch.trust_remote_code"] = bool(_get(pt, "trust_remote_code"))

        # the checkpoint's own quantization (AWQ, GPTQ...), not bitsandbytes applied on load
        self._facts["model_prequantized"] = (
            getattr(model.config, "quantization_config", None) is not None and not (q4 or q8))
        # an unset do_sample means what the model's generation config says (greedy for most)
        self._facts["model_greedy"] = not bool(getattr(model.generation_config, "do_sample", False))
        n_params = sum(p.numel() for p in model.parameters())
        if q4:
            n_params = _count_quantized_params(model, n_params)
        ctx = getattr(model.config, "max_position_embeddings", None)
        versions = {"torch": torch.__version__, "transformers": transformers.__version__}
        for dist in ("accelerate", "peft", "bitsandbytes", "gguf"):
            v = _version(dist)
            if v:
                versions[dist] = v
        return _Loaded(
            spec=spec,
            cuda=cuda,
            compiled=compiled,
            effective=effective,
            skipped=skipped,
            notes=notes,
            num_parameters=int(n_params),
            max_context_tokens=int(ctx) if ctx else None,
            versions=versions,
            load_values=load_time_values(config),
        )

    @staticmethod
    def _attn_unavailable(attn: str, torch: Any, cuda: bool) -> str | None:
        if attn in ("flash_attention_2", "flash_attention_3"):
            if not cuda:
                return f"{attn} needs an NVIDIA GPU; the default attention was used"
            major, minor = torch.cuda.get_device_capability()
            if attn == "flash_attention_2":
                if importlib.util.find_spec("flash_attn") is None:
                    return "flash_attention_2 needs the flash-attn package (pip install flash-attn)"
                if major < 8:
                    return f"flash_attention_2 needs compute capability 8.0+ (this GPU: {major}.{minor})"
            else:
                if major < 9:
                    return f"flash_attention_3 needs a Hopper GPU, 9.0+ (this GPU: {major}.{minor})"
                if importlib.util.find_spec("flash_attn_interface") is None:
                    return "flash_attention_3 needs the flash-attn 3 package (flash_attn_interface)"
        return None

    @staticmethod
    def _check_passthrough(extra: dict[str, Any], named: dict[str, Any], where: str) -> None:
        clash = sorted(set(extra) & set(named))
        if clash:
            raise ConfigError(
                f"passthrough.{where} sets {', '.join(clash)}, which llem already sets from "
                "named config fields; set those fields instead of passing them through."
            )

    def _load_adapter(self, model: Any, adapter: str, merge: Any, effective: dict) -> Any:
        if importlib.util.find_spec("peft") is None:
            raise missing_dependency("peft", "pytorch", "LoRA adapters")
        from peft import PeftModel

        path = resolve_adapter(adapter)
        try:
            model = PeftModel.from_pretrained(model, path)
        except (OSError, ValueError) as exc:
            if _looks_not_found(exc):
                raise ModelNotFoundError(
                    f"LoRA adapter {adapter!r} was not found ({_first_line(exc)}). Tried "
                    f"{path!r}. Use a local folder with adapter_config.json, a hub id, or the "
                    "built-in 'tiny-random-llama-lora'."
                ) from None
            raise
        if merge:
            model = model.merge_and_unload()
        model.eval()
        effective["experiment.lora_adapter"] = path
        effective["experiment.lora_merge"] = bool(merge)
        return model

    def _maybe_compile(self, pt: Any, torch: Any, skipped: dict, effective: dict) -> bool:
        want = _get(pt, "torch_compile")
        mode, backend = _get(pt, "torch_compile_mode"), _get(pt, "torch_compile_backend")
        if not want:
            for name, value in (("torch_compile_mode", mode), ("torch_compile_backend", backend)):
                if value is not None:
                    skipped[f"pytorch.{name}"] = "only used with torch_compile"
            on_gpu = str(next(self.model.parameters()).device).startswith("cuda")
            effective["pytorch.torch_compile"] = (
                False
                if want is False or not on_gpu
                else "auto: transformers compiles the decode step when the cache is static"
            )
            return False
        kw: dict[str, Any] = {}
        if mode is not None:
            kw["mode"] = mode
        if backend is not None:
            kw["backend"] = backend
        try:
            self._eager_forward = self.model.forward
            self.model.forward = torch.compile(self.model.forward, **kw)
        except Exception as exc:  # noqa: BLE001 - compile failure is non-fatal by design
            self._facts["compile_failed"] = True
            skipped["pytorch.torch_compile"] = f"torch.compile failed, ran eager: {_first_line(exc)}"
            effective["pytorch.torch_compile"] = False
            return False
        effective["pytorch.torch_compile"] = True
        effective["pytorch.torch_compile_mode"] = mode or "default"
        effective["pytorch.torch_compile_backend"] = backend or "inductor"
        return True

    def _trial_compile(self, torch: Any, skipped: dict, effective: dict) -> None:
        """Run one short generation so a compile failure shows now, and fall back to eager."""
        try:
            enc = self.tokenizer(["Hello"], return_tensors="pt").to(self.device)
            gc_ = copy.deepcopy(self._gen_config)
            gc_.max_new_tokens, gc_.min_new_tokens = 2, None
            with torch.inference_mode():
                self.model.generate(**enc, generation_config=gc_, **self._gen_extra)
        except Exception as exc:  # noqa: BLE001
            self.model.forward = self._eager_forward
            torch._dynamo.reset()
            self._facts["compile_failed"] = True
            skipped["pytorch.torch_compile"] = (
                f"torch.compile failed on the first call, ran eager: {type(exc).__name__}: {_first_line(exc)}"
            )
            effective["pytorch.torch_compile"] = False
            for name in ("torch_compile_mode", "torch_compile_backend"):
                effective.pop(f"pytorch.{name}", None)

    def _generation_config(
        self,
        config: Any,
        dec: Any,
        pt: Any,
        skipped: dict,
        effective: dict,
        notes: list,
        cuda: bool,
        spec: Any,
    ) -> tuple[Any, dict[str, Any]]:
        from transformers import GenerationConfig

        base = self.model.generation_config
        defaults = _generation_defaults(GenerationConfig)

        def base_value(name: str) -> Any:
            v = getattr(base, name, None)
            return defaults.get(name) if v is None else v

        kw: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        user = {name: _get(dec, name) for name in DECODER_FIELDS}

        # temperature 0 means greedy (the seed's convention); transformers refuses it
        if user["temperature"] is not None and float(user["temperature"]) == 0.0:
            if user["do_sample"]:
                raise ConfigError(
                    "decoder.temperature=0 means greedy decoding but decoder.do_sample is True; "
                    "set a temperature above 0, or do_sample=False."
                )
            kw["do_sample"] = False
            skipped["decoder.temperature"] = "0 means greedy decoding: do_sample set to False"
            user["temperature"] = None
        elif user["do_sample"] is not None:
            kw["do_sample"] = bool(user["do_sample"])
        do_sample = kw.get("do_sample", base_value("do_sample"))

        for name in SAMPLING_FIELDS:
            value = user[name]
            if value is None:
                continue
            if do_sample:
                kw[name] = value
            else:
                origin = "set" if user["do_sample"] is not None else "transformers' default"
                skipped[f"decoder.{name}"] = (
                    f"no effect with greedy decoding (do_sample is False, {origin}); "
                    "set decoder.do_sample=True to sample"
                )
        for name in _ALWAYS_FIELDS:
            if user[name] is not None:
                kw[name] = user[name]
        num_beams = kw.get("num_beams", base_value("num_beams")) or 1
        for name in BEAM_FIELDS:
            if user[name] is None:
                continue
            if num_beams > 1:
                kw[name] = user[name]
            else:
                skipped[f"decoder.{name}"] = "only used with beam search (decoder.num_beams > 1)"

        # cache
        use_cache = _get(pt, "use_cache")
        if use_cache is not None:
            kw["use_cache"] = bool(use_cache)
        cache_impl = _get(pt, "cache_implementation")
        if cache_impl is not None:
            if use_cache is False:
                skipped["pytorch.cache_implementation"] = "no cache is used (use_cache is False)"
            elif cache_impl.startswith("offloaded") and not cuda:
                skipped["pytorch.cache_implementation"] = (
                    f"{cache_impl!r} offloads the cache from a GPU to the CPU; there is no GPU "
                    "here, the default dynamic cache was used"
                )
            elif cache_impl == "sliding_window" and not getattr(self.model.config, "sliding_window", None):
                skipped["pytorch.cache_implementation"] = (
                    "'sliding_window' needs a model with a sliding attention window; this "
                    "model has none, the default dynamic cache was used"
                )
            else:
                kw["cache_implementation"] = cache_impl

        # speculative decoding: assistant model or prompt lookup
        assistant = _get(pt, "assistant_model")
        n_assist = _get(pt, "num_assistant_tokens")
        lookup = _get(pt, "prompt_lookup_num_tokens")
        if (assistant or lookup) and num_beams > 1:
            for name, value in (("assistant_model", assistant), ("prompt_lookup_num_tokens", lookup)):
                if value:
                    skipped[f"pytorch.{name}"] = (
                        "transformers' assisted generation does not combine with beam search (num_beams > 1)"
                    )
            assistant = lookup = None
        if assistant and lookup:
            skipped["pytorch.prompt_lookup_num_tokens"] = (
                "an assistant_model is set; transformers uses one candidate generator at a time"
            )
            lookup = None
        if assistant:
            self._load_assistant(assistant, extra, pt, effective)
            if n_assist is not None:
                kw["num_assistant_tokens"] = int(n_assist)
        elif n_assist is not None:
            skipped["pytorch.num_assistant_tokens"] = "only used with an assistant_model"
        if lookup:
            kw["prompt_lookup_num_tokens"] = int(lookup)
        if assistant or lookup:
            notes.append(
                "Assisted generation in transformers runs one prompt at a time: batch size 1 is used."
            )

        if _get(pt, "output_scores"):
            kw["output_scores"] = True
            kw["return_dict_in_generate"] = True

        kw = {_GENERATION_NAMES.get(k, k): v for k, v in kw.items()}  # transformers' names
        self._named_gen_keys = set(kw) | set(extra)
        gen_cfg = copy.deepcopy(base)
        try:
            gen_cfg.update(**kw)
            gen_cfg.validate()
        except ValueError as exc:
            raise ConfigError(f"transformers refused the generation settings: {_first_line(exc)}") from None
        if gen_cfg.pad_token_id is None:
            gen_cfg.pad_token_id = self.tokenizer.pad_token_id

        # effective values: generation config, else transformers' defaults
        def eff(name: str) -> Any:
            name = _GENERATION_NAMES.get(name, name)
            v = getattr(gen_cfg, name, None)
            return defaults.get(name) if v is None else v

        eff_sample = bool(eff("do_sample"))
        effective["decoder.do_sample"] = eff_sample
        for name in SAMPLING_FIELDS:
            if eff_sample:
                effective[f"decoder.{name}"] = eff(name)
        for name in _ALWAYS_FIELDS:
            effective[f"decoder.{name}"] = eff(name)
        if (eff("num_beams") or 1) > 1:
            for name in BEAM_FIELDS:
                effective[f"decoder.{name}"] = eff(name)
        max_new = gen_cfg.max_new_tokens
        if max_new is None:
            max_new = eff("max_length")
            notes.append(
                f"decoder.max_new_tokens unset: transformers generates up to {max_new} new "
                "tokens (its max_length default)."
            )
        effective["decoder.max_new_tokens"] = max_new
        effective["pytorch.use_cache"] = bool(eff("use_cache"))
        effective["pytorch.cache_implementation"] = (
            gen_cfg.cache_implementation or "dynamic" if eff("use_cache") else None
        )
        if assistant:
            effective["pytorch.num_assistant_tokens"] = eff("num_assistant_tokens")
        if lookup:
            effective["pytorch.prompt_lookup_num_tokens"] = lookup
        effective["pytorch.output_scores"] = bool(eff("output_scores"))
        seed = _get(dec, "seed")
        effective["decoder.seed"] = seed
        return gen_cfg, extra

    def _load_assistant(self, name: str, extra: dict, pt: Any, effective: dict) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = resolve_model(name)
        kw: dict[str, Any] = {"dtype": self.model.dtype}
        if spec.gguf_file:
            kw["gguf_file"] = spec.gguf_file
        try:
            tok = AutoTokenizer.from_pretrained(
                spec.tokenizer, **({"gguf_file": spec.gguf_file} if spec.gguf_file else {})
            )
            model: Any = AutoModelForCausalLM.from_pretrained(spec.id_or_path, **kw)
        except (OSError, ValueError) as exc:
            if _looks_not_found(exc):
                raise model_not_found(
                    spec.name, [spec.tried], "assistant_model: " + _first_line(exc)
                ) from None
            raise
        model.to(self.device).eval()
        self.assistant_model, self.assistant_tokenizer = model, tok
        extra["assistant_model"] = model
        if tok.get_vocab() != self.tokenizer.get_vocab():
            # different vocabularies: transformers' universal assisted decoding re-tokenizes
            extra["tokenizer"] = self.tokenizer
            extra["assistant_tokenizer"] = tok
        effective["pytorch.assistant_model"] = spec.name

    # --------------------------------------------------------------- generation
    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in the model's tokens, special tokens included."""
        return len(self.tokenizer(str(text))["input_ids"])

    def generate(
        self,
        prompts: Sequence[Any],
        on_phase: PhaseCallback | None = None,
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        seed: int | None = None,
    ) -> BatchOutput:
        """Generate one left-padded batch, timing every token.

        Parameters
        ----------
        prompts : sequence of str (or objects whose ``str`` is the prompt)
            The batch.
        on_phase : callable, optional
            Called with ``"prefill"`` just before generation starts and ``"decode"`` when
            the first token exists.
        max_new_tokens, min_new_tokens : int, optional
            Override the configured lengths for this batch (synthetic prompts with an
            exact output length).
        seed : int, optional
            Seeds torch's generators before this batch, for reproducible sampling.

        Raises
        ------
        OutOfMemoryError
            With the settings to lower.
        """
        import torch

        if self.model is None:
            raise RuntimeError("PyTorchBackend.generate called before load() or after release().")
        texts = [str(p) for p in prompts]
        tok = self.tokenizer
        # tokenize once; truncate (keep the start) and left-pad the id lists ourselves
        ids = tok(texts, return_attention_mask=False)["input_ids"]
        full_lens = [len(x) for x in ids]
        limit = self.max_input_tokens
        if limit is not None:
            ids = [x[: int(limit)] for x in ids]
        in_lens = [len(x) for x in ids]
        padded_len = max(in_lens)
        pad_id = tok.pad_token_id
        input_ids = torch.tensor([[pad_id] * (padded_len - len(x)) + list(x) for x in ids])
        mask = torch.tensor([[0] * (padded_len - len(x)) + [1] * len(x) for x in ids])
        enc = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

        gen_cfg = self._gen_config
        if max_new_tokens is not None or min_new_tokens is not None:
            gen_cfg = copy.copy(gen_cfg)
            if max_new_tokens is not None:
                gen_cfg.max_new_tokens = int(max_new_tokens)
            if min_new_tokens is not None:
                gen_cfg.min_new_tokens = int(min_new_tokens)
        cuda = self.device.startswith("cuda")
        clock = _make_clock_criterion(on_phase, torch.cuda.synchronize if cuda else None)
        if seed is not None:
            torch.manual_seed(int(seed))
        from transformers import StoppingCriteriaList

        if on_phase is not None:
            on_phase("prefill")
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    **enc,
                    generation_config=gen_cfg,
                    stopping_criteria=StoppingCriteriaList([clock]),
                    **self._gen_extra,
                )
            if cuda:
                torch.cuda.synchronize()
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise self._oom(len(texts), gen_cfg, exc) from None
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise self._oom(len(texts), gen_cfg, exc) from None
            raise
        t_end = time.perf_counter()

        seqs = out.sequences if hasattr(out, "sequences") else out
        gen = seqs[:, padded_len:].tolist()
        eos = gen_cfg.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
        positions = clock.token_times(padded_len, t0)
        requests = []
        for i, row in enumerate(gen):
            n = len(row)
            for j, t in enumerate(row):
                if t in eos_ids:
                    n = j + 1  # the end-of-sequence token was generated and cost a step
                    break
            text = tok.decode(row[:n], skip_special_tokens=True)
            times = positions[:n]
            if len(times) < n:  # a step the clock did not see (should not happen)
                times = times + [t_end - t0] * (n - len(times))
            requests.append(
                RequestOutput(
                    prompt=texts[i],
                    text=text,
                    input_tokens=in_lens[i],
                    output_tokens=n,
                    token_times_s=tuple(times),
                    truncated=limit is not None and full_lens[i] > limit,
                )
            )
        prefill_s = (clock.steps[0][0] - t0) if clock.steps else (t_end - t0)
        steps = len(positions)
        return BatchOutput(
            requests=tuple(requests),
            duration_s=t_end - t0,
            prefill_s=prefill_s,
            padding_tokens=padded_len * len(texts) - sum(in_lens),
            total_input_tokens=sum(in_lens),
            decode_steps=steps,
            t0_perf=t0,
        )

    def _oom(self, batch: int, gen_cfg: Any, exc: BaseException) -> OutOfMemoryError:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass
        return OutOfMemoryError(
            f"Out of memory generating a batch of {batch} prompt(s) with max_new_tokens="
            f"{gen_cfg.max_new_tokens} in {self._dtype_name} on {self.device} "
            f"({_first_line(exc)}). Lower pytorch.batch_size (or max_tokens_per_batch), "
            "decoder.max_new_tokens or max_input_tokens, or use a smaller dtype "
            "(pytorch.dtype='bfloat16'/'float16') or quantization (load_in_8bit/load_in_4bit)."
        )

    def release(self) -> None:
        """Free the model, tokenizer and assistant; safe to call twice."""
        had = self.model is not None
        self.model = self.tokenizer = self.assistant_model = self.assistant_tokenizer = None
        self._gen_config, self._gen_extra = None, {}
        self._loaded = self._decode = None
        if had:
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass


@dataclass
class _Loaded:
    """What the load-time half of :meth:`PyTorchBackend.load` resolved (kept for reuse)."""

    spec: Any
    cuda: bool
    compiled: bool
    effective: dict[str, Any]
    skipped: dict[str, str]
    notes: list[str]
    num_parameters: int
    max_context_tokens: int | None
    versions: dict[str, str]
    load_values: dict[str, Any]


@dataclass
class _Decode:
    """What the decode-time half (:meth:`PyTorchBackend.reconfigure`) resolved."""

    effective: dict[str, Any]
    skipped: dict[str, str]
    notes: list[str]
    max_batch_size: int | None


def _refuse_untranslatable(config: Any) -> None:
    """Refuse, before anything is loaded, a set value the table does not translate for transformers."""
    resolved = getattr(config, "resolved_decoder", None)
    dec = resolved() if callable(resolved) else _get(config, "decoder")  # preset expanded
    refuse_untranslatable(config, "pytorch", decoder=dec)


def _split_passthrough(passthrough: Any) -> dict[str, dict[str, Any]]:
    """Split pass-through keyword arguments into ``{"load": {...}, "generate": {...}}``.

    A flat key goes to ``generate`` when it is a generation setting of transformers, else
    to ``from_pretrained``.
    """
    out: dict[str, dict[str, Any]] = {"load": {}, "generate": {}}
    if not passthrough:
        return out
    flat = {}
    for k, v in dict(passthrough).items():
        if k in ("load", "generate") and isinstance(v, dict):
            out[k].update(v)
        else:
            flat[k] = v
    if flat:
        from transformers import GenerationConfig

        gen_names = set(vars(GenerationConfig()))
        for k, v in flat.items():
            out["generate" if k in gen_names else "load"][k] = v
    return out


class _OnceFilter:
    """A logging filter that lets each distinct message through once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def filter(self, record: Any) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


def _quiet_repeated_warnings(logger_prefix: str) -> None:
    """Keep the first of each repeated log message (bitsandbytes logs a cast per matmul)."""
    import logging

    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith(logger_prefix):
            lg = logging.getLogger(name)
            if not any(isinstance(f, _OnceFilter) for f in lg.filters):
                lg.addFilter(_OnceFilter())


def _generation_defaults(cls: Any) -> dict[str, Any]:
    getter = getattr(cls, "_get_default_generation_params", None)
    if getter is not None:
        try:
            return dict(getter())
        except Exception:  # noqa: BLE001
            pass
    return {}


def _count_quantized_params(model: Any, n: int) -> int:
    """4-bit weights are packed two per byte; count logical parameters from the shapes."""
    total = 0
    for module in model.modules():
        for p in module.parameters(recurse=False):
            shape = getattr(p, "quant_state", None)
            if shape is not None and hasattr(shape, "shape"):
                total += int(shape.shape.numel())
            else:
                total += p.numel()
    return total or n


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _looks_not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    keys = (
        "not found",
        "does not appear to have",
        "is not a local folder",
        "no such file",
        "can't load",
        "couldn't connect",
        "offline",
        "repository not found",
        "not a valid model identifier",
        "we couldn't",
        "404",
        "does not exist",
    )
    return any(k in text for k in keys)
