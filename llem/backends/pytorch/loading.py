"""Loading for the PyTorch backend: weights, tokenizer, quantization, placement, adapter, compile.

Each keyword argument comes from the table's rows for its target
(:func:`llem.backends.table.engine_kwargs`): ``from_pretrained`` (dtype, attention,
placement), ``tokenizer`` (revision, trust_remote_code), ``quantization_config``
(``BitsAndBytesConfig``) and ``compile`` (``torch.compile``). A value the config sets is
passed as set; what transformers then uses is read back from the loaded model (its
config, its weights' dtype and placement) into ``effective``.

Where llem decides for itself, no row can: bitsandbytes weights are placed at load time
(``device_map`` ``auto`` on a GPU, ``cpu`` otherwise, when none is set); a model without a
device map goes to ``cuda:0`` when CUDA is there; ``max_memory`` without a device map,
``low_cpu_mem_usage`` on transformers 5 and ``num_processes`` > 1 (llem runs in one
process) are reported in ``skipped``. A failed ``torch.compile`` falls back to eager mode
and says so in the load fact ``compile_failed`` (the table's rule torch-compile-may-fail
gives the reason in a run). A GGUF model is converted once per file and then loaded from
llem's cache (:mod:`~llem.backends.pytorch.gguf_cache`; ``LLEM_GGUF_CACHE=off`` turns it off).
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import llem.backends.pytorch.gguf_cache as gguf_cache
from llem.backends.base import load_time_values
from llem.backends.loadsteps import step
from llem.backends.pytorch.failures import (
    first_line,
    looks_not_found,
    missing_at_load,
    refuse_passthrough_clash,
    refused,
    unknown_passthrough,
)
from llem.backends.pytorch.generation import Draft
from llem.backends.table import engine_kwargs
from llem.backends.table import field as _get
from llem.errors import ConfigError, MissingDependencyError, ModelNotFoundError, missing_dependency
from llem.models import not_found as model_not_found
from llem.models import resolve_adapter, resolve_model
from llem.spec import engine_args

#: The oldest transformers the backend runs with: ``from_pretrained(dtype=...)`` (the table's
#: engine name for ``pytorch.dtype``) exists from 4.56 on, which renamed ``torch_dtype``.
#: setup.cfg's ``pytorch`` extra asks for the same floor (a test keeps the two equal).
TRANSFORMERS_MIN: tuple[int, int] = (4, 56)


def check_transformers(version: str) -> None:
    """Refuse a transformers older than :data:`TRANSFORMERS_MIN`, with the upgrade command.

    Raises
    ------
    MissingDependencyError
        For ``version`` below the floor (a version that cannot be read passes).
    """
    found = re.match(r"(\d+)\.(\d+)", str(version))
    if found is None or (int(found[1]), int(found[2])) >= TRANSFORMERS_MIN:
        return
    floor = ".".join(map(str, TRANSFORMERS_MIN))
    raise MissingDependencyError(
        f"transformers {version} is installed, and llem's pytorch backend needs transformers>={floor} "
        f"(from_pretrained takes dtype= from {floor} on). Upgrade it: pip install -U "
        f"'transformers>={floor}' (or pip install -U 'llem[pytorch]')."
    )


def gpu_index_keys(limits: Mapping[str, Any]) -> dict[Any, Any]:
    """``max_memory`` with GPU keys as ints, as accelerate reads them.

    A config file (JSON keys are strings) or YAML written ``'0': 20GiB`` gives GPU 0 as
    ``'0'``, which accelerate does not take for a device; ``cpu``/``disk`` stay strings.
    """
    return {int(k) if isinstance(k, str) and k.strip().isdigit() else k: v for k, v in limits.items()}


def default_dtype(hf_config: Any, transformers_version: str) -> str | None:
    """The dtype ``from_pretrained`` loads the weights in when no dtype is given.

    transformers 5 reads the checkpoint's (``dtype="auto"``: the config's ``dtype``, else
    the weights'); 4.x loads float32. None when only the weights could tell.
    """
    major = str(transformers_version).split(".")[0]
    if not major.isdigit() or int(major) < 5:
        return "float32"
    dt = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    return str(dt).replace("torch.", "") if dt is not None else None


def probe_facts(config: Any) -> dict[str, Any]:
    """The load facts the checkpoint's config tells before any weight is read.

    ``default_dtype`` (:func:`default_dtype`), so the table's FlashAttention rules can leave
    an attention kernel the weights' dtype cannot use unset before the load. ``{}`` when
    the config cannot be read here (a GGUF file, remote code, no access).
    """
    try:
        import transformers

        spec = resolve_model(_get(config, "model") or "tiny-random-llama")
        if spec.gguf_file:
            return {}
        pt = _get(config, "pytorch")
        kw = {k: v for k, v in (("revision", _get(pt, "revision")),
                                ("trust_remote_code", _get(pt, "trust_remote_code"))) if v is not None}
        hf_config = transformers.AutoConfig.from_pretrained(spec.id_or_path, **kw)
    except Exception:  # noqa: BLE001 - an unreadable config tells nothing
        return {}
    found = default_dtype(hf_config, transformers.__version__)
    return {"default_dtype": found} if found is not None else {}


def torch_value(torch: Any, value: Any) -> Any:
    """An engine value from the table: ``"torch.<name>"`` is that torch attribute (a dtype)."""
    if isinstance(value, str) and value.startswith("torch."):
        return getattr(torch, value.removeprefix("torch."))
    return value


def _torch_kwargs(torch: Any, config: Any, target: str) -> dict[str, Any]:
    """The table's keyword arguments for ``target`` with torch values (dtypes) resolved."""
    return {k: torch_value(torch, v) for k, v in engine_kwargs(config, "pytorch", target).items()}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class Loaded:
    """What the load-time half of :meth:`PyTorchBackend.load` resolved (kept for reuse)."""

    spec: Any
    model: Any
    tokenizer: Any
    device: str
    dtype: str
    compiled: bool
    effective: dict[str, Any]
    skipped: dict[str, str]
    notes: list[str]
    num_parameters: int
    max_context_tokens: int | None
    versions: dict[str, str]
    load_values: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    eager_forward: Any = None


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


def _quantization(config: Any, torch: Any) -> Any:
    """``BitsAndBytesConfig`` for ``load_in_4bit``/``load_in_8bit``; None when neither is on.

    The ``bnb_4bit_*`` rows are that object's arguments: without a load flag nothing takes them.
    """
    pt = _get(config, "pytorch")
    if not (_get(pt, "load_in_4bit") or _get(pt, "load_in_8bit")):
        return None
    try:
        import bitsandbytes  # noqa: F401 - transformers needs it to quantize
    except ImportError:
        raise missing_dependency("bitsandbytes", "pytorch", "4-bit/8-bit quantization") from None
    from transformers import BitsAndBytesConfig

    try:
        bnb = BitsAndBytesConfig(**_torch_kwargs(torch, config, "quantization_config"))
    except ValueError as exc:
        raise refused("quantization settings", exc) from None
    _quiet_repeated_warnings("bitsandbytes")
    return bnb


def _load_kwargs(config: Any, spec: Any, torch: Any, transformers: Any, cuda: bool,
                 skipped: dict[str, str], notes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``from_pretrained`` keyword arguments of the model and of its tokenizer."""
    pt = _get(config, "pytorch")
    load_kw = _torch_kwargs(torch, config, "from_pretrained")
    tok_kw = _torch_kwargs(torch, config, "tokenizer")  # revision, trust_remote_code
    if spec.gguf_file:
        load_kw["gguf_file"] = tok_kw["gguf_file"] = spec.gguf_file
        if importlib.util.find_spec("gguf") is None:
            raise missing_dependency("gguf", "pytorch", "loading a GGUF model file")
        if not gguf_cache.enabled():  # else the cache says where the conversion comes from
            notes.append("Model weights come from a GGUF file and are dequantized on load.")

    bnb = _quantization(config, torch)
    if bnb is not None:
        load_kw["quantization_config"] = bnb
        if "device_map" not in load_kw:  # bitsandbytes needs the weights placed at load time
            load_kw["device_map"] = "auto" if cuda else "cpu"
            notes.append(f"device_map set to {load_kw['device_map']!r} for bitsandbytes.")
    if "max_memory" in load_kw and "device_map" not in load_kw:
        del load_kw["max_memory"]
        skipped["pytorch.max_memory"] = "only used with a device_map (e.g. 'auto')"
    if "max_memory" in load_kw:
        load_kw["max_memory"] = gpu_index_keys(load_kw["max_memory"])
    if "low_cpu_mem_usage" in load_kw and int(transformers.__version__.split(".")[0]) >= 5:
        del load_kw["low_cpu_mem_usage"]
        skipped["pytorch.low_cpu_mem_usage"] = (
            f"transformers {transformers.__version__} always loads with low CPU memory use and "
            "ignores this flag"
        )
    processes = _get(pt, "num_processes")
    if processes is not None and processes > 1:
        skipped["pytorch.num_processes"] = (
            "data parallel runs need one process per GPU, started with `accelerate launch`; "
            "llem's in-process runner ran as 1 process"
        )
    return load_kw, tok_kw


def check_generate_passthrough(config: Any, passthrough: dict[str, Any], torch: Any,
                               transformers: Any) -> None:
    """Refuse, before any weight is loaded, ``passthrough.generate`` arguments the model ignores.

    Arguments that are neither generation settings nor ``generate``'s own go to the model
    as model arguments; transformers checks those at the first ``generate``. The same check
    (transformers' own) runs here on a copy of the model built on the meta device from the
    checkpoint's config, which holds no weights. Where that copy cannot be built (a model
    class transformers' auto mapping does not know), nothing is refused here and the first
    ``generate`` still checks.
    """
    gen_cfg = transformers.GenerationConfig()
    named = set(inspect.signature(transformers.GenerationMixin.generate).parameters)
    model_kw = {k: v for k, v in passthrough.items() if not hasattr(gen_cfg, k) and k not in named}
    if not model_kw:
        return
    spec = resolve_model(_get(config, "model") or "tiny-random-llama")
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        cfg_kw = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
        hf_config = transformers.AutoConfig.from_pretrained(spec.id_or_path, **cfg_kw)
        model_cls: Any = MODEL_FOR_CAUSAL_LM_MAPPING[type(hf_config)]
        with torch.device("meta"):
            shell = model_cls(hf_config)
        validate = shell._validate_model_kwargs
    except Exception:  # noqa: BLE001 - cannot tell before loading; generate checks later
        return
    try:
        validate(dict(model_kw))
    except ValueError as exc:
        raise ConfigError(
            f"passthrough.generate: {first_line(exc)}. Fix: remove those keys from "
            "experiment.passthrough.generate, or spell them as transformers' generate() takes them."
        ) from None


def load_model(config: Any, passthrough: dict[str, Any], torch: Any, transformers: Any) -> Loaded:
    """Load the model, tokenizer and adapter of ``config``, compile it if asked, read back.

    ``passthrough`` is ``passthrough.load``: more ``from_pretrained`` arguments (a key a
    named field sets is refused).
    """
    effective: dict[str, Any] = {"pytorch.num_processes": 1}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    pt = _get(config, "pytorch")
    step("resolving the model")
    spec = resolve_model(_get(config, "model") or "tiny-random-llama")
    cuda = torch.cuda.is_available()  # where to put the weights, not a skip decision
    load_kw, tok_kw = _load_kwargs(config, spec, torch, transformers, cuda, skipped, notes)
    refuse_passthrough_clash(passthrough, load_kw, "load")
    load_kw.update(passthrough)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = "the GGUF file" if spec.gguf_file else ("its folder" if spec.is_local else "the hub cache")
    model: Any
    try:
        if spec.gguf_file and gguf_cache.enabled():  # converted once per GGUF file
            step("reading the model converted from the GGUF file (llem's cache; converted on first use)")
            tokenizer, model, entry = gguf_cache.load(spec, load_kw, tok_kw, AutoTokenizer,
                                                      AutoModelForCausalLM, torch, transformers.__version__)
            notes.append(entry.note)
        else:
            step(f"reading the tokenizer from {source}")
            tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer or spec.id_or_path, **tok_kw)
            step(f"reading the weights from {source}")
            model = AutoModelForCausalLM.from_pretrained(spec.id_or_path, **load_kw)
    except (OSError, ValueError) as exc:
        if looks_not_found(exc):
            raise model_not_found(spec.name, [spec.tried], first_line(exc)) from None
        raise
    except ImportError as exc:
        raise missing_at_load(spec.name, pt, exc) from None
    except TypeError as exc:  # a pass-through argument from_pretrained or the model refuses
        error = unknown_passthrough(exc, passthrough, "load")
        if error is None:
            raise
        raise error from None
    if "device_map" not in load_kw and cuda:
        step("moving the weights to cuda:0")
        model.to("cuda")
        notes.append("No device_map set: the model was put on cuda:0 (llem's default).")
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
        notes.append("The tokenizer has no pad token; its end-of-sequence token pads.")

    adapter = _get(config, "lora_adapter")
    if adapter:
        step("applying the LoRA adapter")
        model = load_adapter(model, adapter, _get(config, "lora_merge"), effective)
    elif _get(config, "lora_merge") is not None:
        skipped["experiment.lora_merge"] = "only used with a lora_adapter"

    device = str(next(model.parameters()).device)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    facts: dict[str, Any] = {"compile_failed": False}
    loaded = Loaded(spec=spec, model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                    compiled=False, effective=effective, skipped=skipped, notes=notes,
                    num_parameters=0, max_context_tokens=None, versions={},
                    load_values=load_time_values(config), facts=facts)
    compile_forward(loaded, config, torch)
    _read_back(loaded, config, load_kw, torch, transformers)
    return loaded


def _read_back(loaded: Loaded, config: Any, load_kw: dict[str, Any], torch: Any, transformers: Any) -> None:
    """What is in force after loading: dtype, placement, attention, quantization, size, facts."""
    model, effective = loaded.model, loaded.effective
    pt = _get(config, "pytorch")
    effective["pytorch.dtype"] = str(getattr(model, "dtype", loaded.dtype)).replace("torch.", "")
    effective["pytorch.device_map"] = (
        dict(model.hf_device_map) if getattr(model, "hf_device_map", None) else loaded.device
    )
    effective["pytorch.attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    qc: Any = getattr(model.config, "quantization_config", None)
    qd = qc.to_dict() if hasattr(qc, "to_dict") else (qc or {})
    q4 = bool(qd.get("load_in_4bit", False))
    effective["pytorch.load_in_4bit"] = q4
    effective["pytorch.load_in_8bit"] = bool(qd.get("load_in_8bit", False))
    if q4:
        for arg in engine_args("pytorch", target="quantization_config"):
            if arg.row.name not in ("load_in_4bit", "load_in_8bit"):
                effective[arg.path] = qd.get(arg.name)
    if "max_memory" in load_kw:
        effective["pytorch.max_memory"] = load_kw["max_memory"]
    effective["pytorch.revision"] = getattr(model.config, "_commit_hash", None) or _get(pt, "revision")
    effective["pytorch.trust_remote_code"] = bool(_get(pt, "trust_remote_code"))

    # the checkpoint's own quantization (AWQ, GPTQ...), not bitsandbytes applied on load
    loaded.facts["model_prequantized"] = qc is not None and "quantization_config" not in load_kw
    if _get(pt, "dtype") is None:  # what an unset dtype loaded (the FlashAttention rules read it)
        loaded.facts["default_dtype"] = effective["pytorch.dtype"]
    # an unset do_sample means what the model's generation config says (greedy for most)
    loaded.facts["model_greedy"] = not bool(getattr(model.generation_config, "do_sample", False))
    n_params = sum(p.numel() for p in model.parameters())
    loaded.num_parameters = int(_count_quantized_params(model, n_params) if q4 else n_params)
    ctx = getattr(model.config, "max_position_embeddings", None)
    loaded.max_context_tokens = int(ctx) if ctx else None
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for dist in ("accelerate", "peft", "bitsandbytes", "gguf"):
        v = _version(dist)
        if v:
            versions[dist] = v
    loaded.versions = versions


def load_adapter(model: Any, adapter: str, merge: Any, effective: dict[str, Any]) -> Any:
    """``model`` with the LoRA ``adapter`` applied by peft (merged into the weights if ``merge``)."""
    if importlib.util.find_spec("peft") is None:
        raise missing_dependency("peft", "pytorch", "LoRA adapters")
    from peft import PeftModel

    path = resolve_adapter(adapter)
    try:
        model = PeftModel.from_pretrained(model, path)
    except (OSError, ValueError) as exc:
        if looks_not_found(exc):
            raise ModelNotFoundError(
                f"LoRA adapter {adapter!r} was not found ({first_line(exc)}). Tried "
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


def load_draft(name: str, model: Any, tokenizer: Any, device: str) -> Draft:
    """The draft model ``name`` for assisted generation, in ``model``'s dtype on ``device``.

    With a vocabulary other than ``tokenizer``'s, both tokenizers go to ``generate``
    (transformers' universal assisted decoding re-tokenizes).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    step(f"loading the draft model {name}")
    spec = resolve_model(name)
    kw: dict[str, Any] = {"dtype": model.dtype}
    if spec.gguf_file:
        kw["gguf_file"] = spec.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(
            spec.tokenizer, **({"gguf_file": spec.gguf_file} if spec.gguf_file else {})
        )
        draft: Any = AutoModelForCausalLM.from_pretrained(spec.id_or_path, **kw)
    except (OSError, ValueError) as exc:
        if looks_not_found(exc):
            raise model_not_found(spec.name, [spec.tried], "assistant_model: " + first_line(exc)) from None
        raise
    draft.to(device).eval()
    extra: dict[str, Any] = {"assistant_model": draft}
    if tok.get_vocab() != tokenizer.get_vocab():
        extra["tokenizer"] = tokenizer
        extra["assistant_tokenizer"] = tok
    return Draft(spec.name, draft, tok, extra)


def compile_forward(loaded: Loaded, config: Any, torch: Any) -> None:
    """``torch.compile`` the model's forward pass when ``pytorch.torch_compile`` is on.

    Its options are the rows of the ``compile`` target; without ``torch_compile`` there is
    no ``torch.compile`` call to give them to. A failure falls back to eager mode.
    """
    want = _get(_get(config, "pytorch"), "torch_compile")
    effective, model = loaded.effective, loaded.model
    if not want:
        effective["pytorch.torch_compile"] = (
            False if want is False or not loaded.device.startswith("cuda")
            else "auto: transformers compiles the decode step when the cache is static"
        )
        return
    kw = engine_kwargs(config, "pytorch", "compile")
    step("torch.compile of the forward pass")
    try:
        loaded.eager_forward = model.forward
        model.forward = torch.compile(model.forward, **kw)
    except Exception as exc:  # noqa: BLE001 - compile failure is non-fatal by design
        _compile_failed(loaded, f"torch.compile failed, ran eager: {first_line(exc)}")
        return
    loaded.compiled = True
    effective["pytorch.torch_compile"] = True
    effective["pytorch.torch_compile_mode"] = kw.get("mode") or "default"
    effective["pytorch.torch_compile_backend"] = kw.get("backend") or "inductor"


def _compile_failed(loaded: Loaded, why: str) -> None:
    loaded.compiled = False
    loaded.facts["compile_failed"] = True
    loaded.skipped["pytorch.torch_compile"] = why
    loaded.effective["pytorch.torch_compile"] = False
    for name in ("torch_compile_mode", "torch_compile_backend"):
        loaded.effective.pop(f"pytorch.{name}", None)


def trial_compile(loaded: Loaded, gen_config: Any, gen_extra: dict[str, Any], torch: Any) -> None:
    """Run one short generation so a compile failure shows now, and fall back to eager."""
    model = loaded.model
    try:
        enc = loaded.tokenizer(["Hello"], return_tensors="pt").to(loaded.device)
        trial = copy.deepcopy(gen_config)
        trial.max_new_tokens, trial.min_new_tokens = 2, None
        with torch.inference_mode():
            model.generate(**enc, generation_config=trial, **gen_extra)
    except Exception as exc:  # noqa: BLE001
        model.forward = loaded.eager_forward
        torch._dynamo.reset()
        _compile_failed(loaded, "torch.compile failed on the first call, ran eager: "
                                f"{type(exc).__name__}: {first_line(exc)}")


def uncompile(loaded: Loaded, torch: Any) -> None:
    """Undo what compiling left behind, so a released model can be freed.

    :func:`compile_forward` set ``model.forward`` to ``torch.compile``'s wrapper, which holds
    the model's own bound ``forward`` (``loaded.eager_forward`` holds it too); transformers
    keeps its own compiled ``__call__`` on the model (``_compiled_call``) when it compiles
    the decode step of a static cache. dynamo keeps what it compiled (graphs, CUDA graph
    pools) on the code object of ``forward``, shared by every instance of the class, until
    ``torch._dynamo.reset()``. Without this, a released model and its weights stay alive
    (on the GPU) and the next model of a sweep runs out of memory. The reset drops every
    compiled function of this process, which is what a model that is gone needs.
    """
    model = loaded.model
    attrs = getattr(model, "__dict__", {})
    compiled_here = loaded.eager_forward is not None or loaded.compiled
    compiled_by_transformers = attrs.get("_compiled_call") is not None
    attrs.pop("forward", None)  # the instance attribute compile_forward set: the class's forward again
    attrs.pop("_compiled_call", None)
    loaded.eager_forward = None
    loaded.compiled = False
    if compiled_here or compiled_by_transformers:
        dynamo = getattr(torch, "_dynamo", None)
        reset = getattr(dynamo, "reset", None)
        if callable(reset):
            reset()


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
