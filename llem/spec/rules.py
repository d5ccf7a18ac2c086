"""Cross-field rules (refusals and skip conditions) and the evaluator that applies them.

A rule is data: conditions on parameter paths, a severity, a reason and a fix. The
evaluator reads values through a ``get(path)`` function so it works on a config object, a
plain dict, or a config with one value swapped in (a proposed edit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llem.spec.capabilities import precisions
from llem.spec.model import Cond, Rule
from llem.spec.passthrough import passthrough_collisions

C = Cond
_SAMPLING = ("decoder.temperature", "decoder.top_k", "decoder.top_p", "decoder.min_p", "decoder.typical_p")
_FLASH = ("flash_attention_2", "flash_attention_3")
#: The dtypes FlashAttention-2/3 kernels take (transformers warns on others, the kernels refuse them).
_HALF = ("float16", "bfloat16")
_BNB4 = ("pytorch.bnb_4bit_compute_dtype", "pytorch.bnb_4bit_quant_type",
         "pytorch.bnb_4bit_use_double_quant")


def _bnb4_rule(path: str) -> Rule:
    name = path.split(".")[1]
    return Rule(f"{name}-needs-4bit", "error",
                reason=f"{name} only configures 4-bit bitsandbytes loading",
                fix="set pytorch.load_in_4bit=True, or leave " + name + " unset",
                when=(C(path, "set"), C("pytorch.load_in_4bit", "not_true")), backends=("pytorch",),
                seed_rule=3, seed_kind="mutual_exclusion")


RULES: tuple[Rule, ...] = (
    # --- the seed's eight rules -------------------------------------------------------------
    Rule("4bit-and-8bit", "error",
         reason="a model is loaded either in 4-bit or in 8-bit, not both",
         fix="set only one of pytorch.load_in_4bit and pytorch.load_in_8bit",
         when=(C("pytorch.load_in_4bit", "true"), C("pytorch.load_in_8bit", "true")),
         backends=("pytorch",), seed_rule=1, seed_kind="mutual_exclusion"),
    Rule("compile-mode-needs-compile", "error",
         reason="torch_compile_mode has no effect unless torch_compile is on",
         fix="set pytorch.torch_compile=True, or leave torch_compile_mode unset",
         when=(C("pytorch.torch_compile_mode", "set"), C("pytorch.torch_compile", "not_true")),
         backends=("pytorch",), seed_rule=2, seed_kind="mutual_exclusion"),
    Rule("compile-backend-needs-compile", "error",
         reason="torch_compile_backend has no effect unless torch_compile is on",
         fix="set pytorch.torch_compile=True, or leave torch_compile_backend unset",
         when=(C("pytorch.torch_compile_backend", "set"), C("pytorch.torch_compile", "not_true")),
         backends=("pytorch",), seed_rule=2, seed_kind="mutual_exclusion"),
    *(_bnb4_rule(p) for p in _BNB4),
    Rule("cache-implementation-needs-cache", "error",
         reason="cache_implementation chooses a KV cache, and use_cache=False turns the cache off",
         fix="remove pytorch.cache_implementation, or set pytorch.use_cache=True",
         when=(C("pytorch.cache_implementation", "set"), C("pytorch.use_cache", "false")),
         backends=("pytorch",), seed_rule=4, seed_kind="mutual_exclusion"),
    Rule("backend-section-mismatch", "error",
         reason="settings were given for a backend other than the chosen one",
         fix="move them to the chosen backend's section, or change experiment.backend",
         check="backend_section_mismatch", seed_rule=5),
    Rule("passthrough-collision", "error",
         reason="a pass-through keyword argument names something a field already covers",
         fix="set the named field instead of passing it through",
         check="passthrough_collision", seed_rule=6),
    Rule("unsupported-precision", "error",
         reason="the backend does not support that precision (see the precision capability rows)",
         fix="choose a precision the backend supports",
         check="unsupported_precision", seed_rule=7),
    Rule("vllm-no-bnb-flags", "error",
         reason="vLLM has no load_in_4bit/load_in_8bit flags and no bitsandbytes 8-bit",
         fix="use vllm.quantization='bitsandbytes' (4-bit), or the pytorch backend for 8-bit",
         check="vllm_bnb_flags", backends=("vllm",), seed_rule=8),
    # --- more refusals ------------------------------------------------------------------------
    Rule("assistant-and-prompt-lookup", "error",
         reason="assisted decoding and prompt-lookup decoding are two candidate generators; "
                "generate() takes one",
         fix="set only one of pytorch.assistant_model and pytorch.prompt_lookup_num_tokens",
         when=(C("pytorch.assistant_model", "set"), C("pytorch.prompt_lookup_num_tokens", "set")),
         backends=("pytorch",), seed_kind="mutual_exclusion"),
    Rule("beams-with-assistant", "error",
         reason="assisted generation only supports one beam",
         fix="set decoder.num_beams=1, or remove pytorch.assistant_model",
         when=(C("decoder.num_beams", "gt", 1), C("pytorch.assistant_model", "set")),
         backends=("pytorch",)),
    Rule("min-above-max-new-tokens", "error",
         reason="min_new_tokens is larger than max_new_tokens",
         fix="lower decoder.min_new_tokens or raise decoder.max_new_tokens",
         when=(C("decoder.min_new_tokens", "gt_path", "decoder.max_new_tokens"),)),
    Rule("greedy-temperature-with-sampling", "error",
         reason="temperature 0 means greedy decoding, but do_sample=True asks to sample",
         fix="set decoder.do_sample=False, or a temperature above 0",
         when=(C("decoder.temperature", "eq", 0.0), C("decoder.do_sample", "true"))),
    Rule("vllm-speculative-needs-tokens", "error",
         reason="a speculative model needs the number of tokens it proposes per step",
         fix="set vllm.num_speculative_tokens (e.g. 5)",
         when=(C("vllm.speculative_model", "set"), C("vllm.num_speculative_tokens", "unset")),
         backends=("vllm",), seed_kind="mutual_exclusion"),
    Rule("vllm-kv-bytes-and-utilization", "error",
         reason="kv_cache_memory_bytes sizes the KV cache directly and replaces gpu_memory_utilization",
         fix="set only one of vllm.kv_cache_memory_bytes and vllm.gpu_memory_utilization",
         when=(C("vllm.kv_cache_memory_bytes", "set"), C("vllm.gpu_memory_utilization", "set")),
         backends=("vllm",), seed_kind="mutual_exclusion"),
    Rule("vllm-beam-search-with-sampling", "error",
         reason="vLLM's beam search (LLM.beam_search) does not sample",
         fix="set decoder.do_sample unset/False, or decoder.num_beams=1",
         when=(C("experiment.backend", "eq", "vllm"), C("decoder.num_beams", "gt", 1),
               C("decoder.do_sample", "true")),
         backends=("vllm",), seed_kind="mutual_exclusion"),
    Rule("beam-search-with-sampling-params", "error",
         reason="beam search here is deterministic; sampling parameters would be ignored",
         fix="set decoder.num_beams=1 to sample, or drop decoder.do_sample",
         when=(C("experiment.backend", "eq", "tensorrt"), C("decoder.num_beams", "gt", 1),
               C("decoder.do_sample", "true")),
         backends=("tensorrt",)),
    Rule("publication-baseline-bounds", "error",
         reason="an idle baseline for publication must last 5 to 120 s to average out noise",
         fix="set baseline.seconds to 0 (none) or 5..120 (30 is the seed's default), "
             "or use profile='quick'",
         when=(C("experiment.profile", "eq", "publication"), C("baseline.seconds", "gt", 0.0),
               C("baseline.seconds", "lt", 5.0))),
    # --- skip conditions: ignored (with a note), not refused -----------------------------------
    Rule("sampling-params-greedy", "skip",
         reason="do_sample is False (greedy decoding), so sampling parameters have no effect",
         fix="set decoder.do_sample=True to use them",
         when=(C("decoder.do_sample", "false"),), skip=_SAMPLING),
    Rule("sampling-params-model-greedy", "skip",
         reason="do_sample is unset and the model's own generation config chooses greedy decoding, "
                "so sampling parameters have no effect",
         fix="set decoder.do_sample=True to use them",
         when=(C("decoder.do_sample", "unset"), C("env.model_greedy", "true")), skip=_SAMPLING,
         backends=("pytorch",)),
    Rule("beam-params-single-beam", "skip",
         reason="length_penalty and early_stopping only act in beam search",
         fix="set decoder.num_beams > 1 to use them",
         when=(C("decoder.num_beams", "not_gt", 1),),
         skip=("decoder.length_penalty", "decoder.early_stopping")),
    Rule("assistant-tokens-without-assistant", "skip",
         reason="num_assistant_tokens only acts with an assistant model",
         fix="set pytorch.assistant_model",
         when=(C("pytorch.num_assistant_tokens", "set"), C("pytorch.assistant_model", "unset")),
         skip=("pytorch.num_assistant_tokens",), backends=("pytorch",)),
    Rule("token-budget-static-batching", "skip",
         reason="max_tokens_per_batch only acts with the dynamic batching strategies",
         fix="set pytorch.batching_strategy to 'dynamic' or 'sorted_dynamic'",
         when=(C("pytorch.max_tokens_per_batch", "set"),
               C("pytorch.batching_strategy", "in", ("static", "sorted_static"))),
         skip=("pytorch.max_tokens_per_batch",), backends=("pytorch",)),
    Rule("prompt-lookup-with-beams", "skip",
         reason="prompt-lookup decoding is assisted generation, which transformers runs with one "
                "beam only; with beam search it is ignored",
         fix="set decoder.num_beams=1 to use prompt lookup, or leave pytorch.prompt_lookup_num_tokens unset",
         when=(C("pytorch.prompt_lookup_num_tokens", "set"), C("decoder.num_beams", "gt", 1)),
         skip=("pytorch.prompt_lookup_num_tokens",), backends=("pytorch",)),
    Rule("multi-process-needs-gpus", "skip",
         reason="more than one process or tensor/pipeline-parallel rank needs 2+ GPUs",
         fix="run on a machine with enough GPUs, or set the count to 1",
         when=(C("env.gpu_count", "lt", 2),),
         skip=("pytorch.num_processes", "vllm.tensor_parallel_size", "vllm.pipeline_parallel_size",
               "tensorrt.tp_size", "tensorrt.pp_size"),
         check="multi_rank_requested", seed_kind="skip_condition"),
    Rule("flash-attention-needs-gpu", "skip",
         reason="FlashAttention kernels run only on an NVIDIA GPU, and this machine has none",
         fix="use attn_implementation='sdpa' (or 'eager') on a CPU",
         when=(C("pytorch.attn_implementation", "in", _FLASH), C("env.cuda", "false")),
         skip=("pytorch.attn_implementation",), backends=("pytorch",), seed_kind="skip_condition"),
    Rule("flash-attention-2-needs-package", "skip",
         reason="flash_attention_2 needs the flash-attn package",
         fix="pip install flash-attn --no-build-isolation, or use attn_implementation='sdpa'",
         when=(C("pytorch.attn_implementation", "eq", "flash_attention_2"),
               C("env.packages.flash_attn", "not_true")),
         skip=("pytorch.attn_implementation",), backends=("pytorch",), seed_kind="skip_condition"),
    Rule("flash-attention-3-needs-hopper", "skip",
         reason="flash_attention_3 needs Hopper (compute capability 9.0+)",
         fix="use flash_attention_2 or sdpa",
         when=(C("pytorch.attn_implementation", "eq", "flash_attention_3"), C("env.cc", "lt", 9.0)),
         skip=("pytorch.attn_implementation",), backends=("pytorch",), seed_kind="skip_condition"),
    Rule("flash-attention-2-needs-ampere", "skip",
         reason="flash_attention_2 needs an Ampere or newer GPU (compute capability 8.0+)",
         fix="use attn_implementation='sdpa' on this GPU",
         when=(C("pytorch.attn_implementation", "eq", "flash_attention_2"), C("env.cc", "lt", 8.0)),
         skip=("pytorch.attn_implementation",), backends=("pytorch",), seed_kind="skip_condition"),
    Rule("flash-attention-3-needs-package", "skip",
         reason="flash_attention_3 needs FlashAttention-3 (the flash_attn_interface package)",
         fix="build flash-attention's hopper/ directory, or use flash_attention_2 or sdpa",
         when=(C("pytorch.attn_implementation", "eq", "flash_attention_3"),
               C("env.packages.flash_attn_interface", "not_true")),
         skip=("pytorch.attn_implementation",), backends=("pytorch",), seed_kind="skip_condition"),
    Rule("flash-attention-needs-gpu-weights", "skip",
         reason="FlashAttention kernels run on the GPU, and device_map puts the weights on the CPU "
                "(or disk)",
         fix="set pytorch.device_map to 'auto' or 'cuda:0', or use attn_implementation='sdpa'",
         when=(C("pytorch.attn_implementation", "in", _FLASH), C("pytorch.device_map", "in", ("cpu", "disk"))),
         skip=("pytorch.attn_implementation",), backends=("pytorch",), seed_kind="skip_condition"),
    Rule("flash-attention-needs-half-precision", "skip",
         reason="FlashAttention-2 and -3 take float16 and bfloat16 only",
         fix="set pytorch.dtype='bfloat16' (or 'float16'), or use attn_implementation='sdpa'",
         when=(C("pytorch.attn_implementation", "in", _FLASH), C("pytorch.dtype", "not_in", _HALF)),
         skip=("pytorch.attn_implementation",), backends=("pytorch",), seed_kind="skip_condition"),
    Rule("flash-attention-needs-half-precision-weights", "skip",
         reason="FlashAttention-2 and -3 take float16 and bfloat16 only, and with pytorch.dtype unset "
                "the weights load in another dtype",
         fix="set pytorch.dtype='bfloat16' (or 'float16'), or use attn_implementation='sdpa'",
         when=(C("pytorch.attn_implementation", "in", _FLASH), C("pytorch.dtype", "unset"),
               C("env.default_dtype", "not_in", _HALF)),
         skip=("pytorch.attn_implementation",), backends=("pytorch",), seed_kind="skip_condition"),
    Rule("torch-compile-may-fail", "skip",
         reason="torch.compile can fail on some architectures and platforms; llem then falls back "
                "to eager mode and records it (non-fatal)",
         fix="nothing to do; check result.skipped",
         when=(C("pytorch.torch_compile", "true"), C("env.compile_failed", "true")),
         skip=("pytorch.torch_compile",), backends=("pytorch",), seed_kind="skip_condition"),
    Rule("fp8-needs-ampere", "skip",
         reason="fp8 quantization needs Ampere (8.0+; TensorRT-LLM needs 8.9+)",
         fix="use awq/gptq (vLLM) or int8_sq/int4_awq (TensorRT-LLM)",
         when=(C("env.cc", "lt", 8.0), C("env.fp8_requested", "true")),
         skip=("vllm.quantization", "tensorrt.quantization"), check="fp8_requested",
         seed_kind="skip_condition"),
    Rule("awq-gptq-need-prequantized", "skip",
         reason="AWQ and GPTQ load pre-quantized checkpoints (e.g. Qwen/Qwen2.5-0.5B-Instruct-AWQ, "
                "Qwen/Qwen2.5-0.5B-Instruct-GPTQ-Int4); they do not quantize a full model",
         fix="point experiment.model at a pre-quantized checkpoint",
         when=(C("vllm.quantization", "in", ("awq", "awq_marlin", "gptq", "gptq_marlin")),
               C("env.model_prequantized", "false")),
         skip=("vllm.quantization",), backends=("vllm",), seed_kind="skip_condition"),
    Rule("bnb-needs-package", "skip",
         reason="4-bit/8-bit loading needs a working bitsandbytes",
         fix="pip install 'llem[pytorch]'",
         when=(C("env.packages.bitsandbytes", "false"), C("env.bnb_requested", "true")),
         skip=("pytorch.load_in_4bit", "pytorch.load_in_8bit", *_BNB4), check="bnb_requested",
         backends=("pytorch",), seed_kind="skip_condition"),
    Rule("prompt-lookup-needs-overlap", "skip",
         reason="prompt lookup only speeds up outputs that copy n-grams from the prompt "
                "(summaries, code edits); elsewhere it costs a little",
         fix="use it with prompts whose answers quote them",
         when=(C("pytorch.prompt_lookup_num_tokens", "set"), C("env.prompt_overlap", "false")),
         skip=("pytorch.prompt_lookup_num_tokens",), backends=("pytorch",), seed_kind="skip_condition"),
)


@dataclass(frozen=True)
class Violation:
    """A rule that holds for a configuration."""

    rule: Rule
    detail: str = ""

    @property
    def message(self) -> str:
        """Reason, detail and fix in one sentence group."""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.rule.reason}{detail}. Fix: {self.rule.fix}. [rule {self.rule.id}]"


_MISSING = object()


def _holds(cond: Cond, get: Callable[[str], Any]) -> bool | None:
    """Evaluate ``cond``; None when its value is unknown (an environment fact not given)."""
    value = get(cond.path)
    if value is _MISSING:
        return None
    op = cond.op
    if op == "set":
        return value is not None
    if op == "unset":
        return value is None
    if op == "true":
        return value is True
    if op == "not_true":
        return value is not True
    if op == "false":
        return value is False
    if op == "eq":
        return value is not None and value == cond.value
    if op == "ne":
        return value is not None and value != cond.value
    if op == "in":
        return value in cond.value
    if op == "not_in":
        return value is not None and value not in cond.value
    if op in ("gt", "lt", "not_gt"):
        if value is None:
            return op == "not_gt"
        if op == "gt":
            return value > cond.value
        if op == "lt":
            return value < cond.value
        return not value > cond.value
    if op == "gt_path":
        other = get(cond.value)
        if value is None or other is None or other is _MISSING:
            return False
        return value > other
    raise ValueError(f"unknown condition operator {op!r}")


def _check_backend_section_mismatch(get: Callable[[str], Any], ctx: Mapping[str, Any]) -> str | None:
    backend = get("experiment.backend")
    others = [s for s in ctx.get("sections_given", ()) if s in ("pytorch", "vllm", "tensorrt")
              and s != backend]
    if others:
        return f"backend is {backend!r} but the config has settings in: {', '.join(others)}"
    return None


def _check_passthrough_collision(get: Callable[[str], Any], ctx: Mapping[str, Any]) -> str | None:
    passthrough = get("experiment.passthrough")
    backend = get("experiment.backend")
    if passthrough is _MISSING or not passthrough or backend is _MISSING:
        return None
    hits = passthrough_collisions(backend, passthrough)
    if hits:
        return "; ".join(f"{key!r} is the field {field}" for key, field in hits.items())
    return None


def _check_unsupported_precision(get: Callable[[str], Any], ctx: Mapping[str, Any]) -> str | None:
    backend = get("experiment.backend")
    if backend is _MISSING or backend not in ("pytorch", "vllm", "tensorrt"):
        return None
    dtype = get(f"{backend}.dtype")
    if dtype in (None, "auto", _MISSING):
        return None
    ok = precisions(backend)
    if dtype not in ok:
        return f"{backend} does not support dtype {dtype!r}; it supports {', '.join(ok)}"
    return None


def _check_vllm_bnb_flags(get: Callable[[str], Any], ctx: Mapping[str, Any]) -> str | None:
    given = [k for k in ctx.get("refused_keys", ()) if k in ("vllm.load_in_4bit", "vllm.load_in_8bit")]
    if given:
        return f"{', '.join(given)} given"
    return None


def _check_multi_rank(get: Callable[[str], Any], ctx: Mapping[str, Any]) -> str | None:
    for path in ("pytorch.num_processes", "vllm.tensor_parallel_size", "vllm.pipeline_parallel_size",
                 "tensorrt.tp_size", "tensorrt.pp_size"):
        v = get(path)
        if v is not _MISSING and v is not None and v > 1:
            return f"{path}={v}"
    return None


def _check_fp8(get: Callable[[str], Any], ctx: Mapping[str, Any]) -> str | None:
    for path in ("vllm.quantization", "tensorrt.quantization"):
        if get(path) == "fp8":
            return f"{path}='fp8'"
    return None


def _check_bnb(get: Callable[[str], Any], ctx: Mapping[str, Any]) -> str | None:
    for path in ("pytorch.load_in_4bit", "pytorch.load_in_8bit"):
        if get(path) is True:
            return f"{path}=True"
    return None


#: Structural checks: name -> function(get, context) returning a detail string when violated.
CHECKS: dict[str, Callable[[Callable[[str], Any], Mapping[str, Any]], str | None]] = {
    "backend_section_mismatch": _check_backend_section_mismatch,
    "passthrough_collision": _check_passthrough_collision,
    "unsupported_precision": _check_unsupported_precision,
    "vllm_bnb_flags": _check_vllm_bnb_flags,
    "multi_rank_requested": _check_multi_rank,
    "fp8_requested": _check_fp8,
    "bnb_requested": _check_bnb,
}

#: Environment facts a structural check provides to its rule's conditions.
_CHECK_FACTS = {
    "multi_rank_requested": None,
    "fp8_requested": "env.fp8_requested",
    "bnb_requested": "env.bnb_requested",
}


def evaluate(
    get: Callable[[str], Any],
    *,
    backend: str | None = None,
    severity: str | None = None,
    only_fields: Iterable[str] | None = None,
    context: Mapping[str, Any] | None = None,
    rules: Iterable[Rule] = RULES,
) -> list[Violation]:
    """Return the rules that hold.

    Parameters
    ----------
    get : callable
        ``get(path)`` returns the value at ``section.name`` or ``env.fact``; it returns
        :data:`MISSING` for something it does not know (then conditions on it never hold).
    backend : str, optional
        Only rules that apply to this backend.
    severity : str, optional
        ``"error"`` or ``"skip"`` to filter.
    only_fields : iterable of str, optional
        Only rules that read at least one of these paths (used when one field is edited).
    context : mapping, optional
        Extra facts for structural checks (``sections_given``, ``refused_keys``).
    """
    ctx = context or {}
    wanted = set(only_fields) if only_fields is not None else None
    out = []
    for rule in rules:
        if severity and rule.severity != severity:
            continue
        if backend and backend not in rule.backends:
            continue
        if wanted is not None and not (wanted & set(rule.fields)) and not rule.check:
            continue
        detail = ""
        extra: dict[str, Any] = {}
        if rule.check:
            found = CHECKS[rule.check](get, ctx)
            if not found:
                continue
            detail = found
            fact = _CHECK_FACTS.get(rule.check)
            if fact:
                extra[fact] = True

        def lookup(path: str, _extra: dict[str, Any] = extra) -> Any:
            return _extra[path] if path in _extra else get(path)

        results = [_holds(c, lookup) for c in rule.when]
        if all(r is True for r in results):
            out.append(Violation(rule, detail))
    return out


#: The marker ``get`` returns for a path it does not know.
MISSING = _MISSING
