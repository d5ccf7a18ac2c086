"""What each backend can do: one row per capability, yes / no / partial with a note.

Precisions are capability rows too (``kind="precision"``): the dtype choices each backend
accepts are read from them, so a precision cannot be listed as supported in one place and
refused in another.
"""

from __future__ import annotations

from llem.spec.model import Capability, Gate
from llem.spec.model import Support as S

_Y, _N = S("yes"), S("no")


def _s(pytorch: S, vllm: S, tensorrt: S) -> dict[str, S]:
    return {"pytorch": pytorch, "vllm": vllm, "tensorrt": tensorrt}


CAPABILITIES: tuple[Capability, ...] = (
    Capability("tensor_parallel", "Tensor parallel", "Split each layer across GPUs.",
               _s(S("no", "transformers' tp_plan exists but llem does not drive it"), _Y, _Y),
               params=("vllm.tensor_parallel_size", "tensorrt.tp_size"), seed_row=True,
               gate=Gate(reason="needs 2+ GPUs", alternative="use one GPU"),
               settings={"vllm": {"vllm.tensor_parallel_size": 2}, "tensorrt": {"tensorrt.tp_size": 2}}),
    Capability("pipeline_parallel", "Pipeline parallel", "Split the layers into stages on several GPUs.",
               _s(_N, _Y, _Y), params=("vllm.pipeline_parallel_size", "tensorrt.pp_size"),
               settings={"vllm": {"vllm.pipeline_parallel_size": 2}, "tensorrt": {"tensorrt.pp_size": 2}}),
    Capability("data_parallel", "Data parallel", "One model copy per GPU, prompts split among them.",
               _s(S("yes", "num_processes, one per GPU"), _N, _N), params=("pytorch.num_processes",),
               seed_row=True,
               settings={"pytorch": {"pytorch.num_processes": 2}}),
    Capability("bnb_4bit", "bitsandbytes 4-bit", "NF4/FP4 weights loaded on the fly.",
               _s(S("yes", "also on CPU with bitsandbytes >= 0.45"),
                  S("partial", "quantization='bitsandbytes' loads 4-bit; no 8-bit"), _N),
               kind="quantization", params=("pytorch.load_in_4bit",), seed_row=True,
               seed_support={"pytorch": "yes", "vllm": "no", "tensorrt": "no"},
               settings={"pytorch": {"pytorch.load_in_4bit": True}, "vllm": {"vllm.quantization": "bitsandbytes"}}),
    Capability("bnb_8bit", "bitsandbytes 8-bit", "LLM.int8() weights loaded on the fly.",
               _s(_Y, _N, _N), kind="quantization", params=("pytorch.load_in_8bit",), seed_row=True,
               settings={"pytorch": {"pytorch.load_in_8bit": True}}),
    Capability("native_quantization", "Native quantization", "The engine's own quantized kernels.",
               _s(S("no", "loads pre-quantized AWQ/GPTQ checkpoints through their packages only"),
                  S("yes", "AWQ, GPTQ, FP8 (and Marlin kernels)"),
                  S("yes", "INT8 SmoothQuant, INT4 AWQ, FP8")),
               kind="quantization", params=("vllm.quantization", "tensorrt.quantization"),
               seed_row=True,
               settings={"vllm": {"vllm.quantization": "awq"}, "tensorrt": {"tensorrt.quantization": "int8_sq"}}),
    Capability("float32", "float32", "Full precision.",
               _s(_Y, S("yes", "dtype='float32' is accepted by vLLM; most fast kernels want 16-bit"),
                  S("no", "llem policy (seed rule 7): TensorRT-LLM's dtype accepts float32, but its "
                          "fused kernels and plugins target 16-bit, so a float32 engine measures an "
                          "unrepresentative path")),
               kind="precision", seed_row=True,
               note="The seed's precision list said vLLM has no float32 while its capability row "
                    "said yes; vLLM's engine arguments list float32 among its dtypes.",
               settings={b: {f"{b}.dtype": "float32"} for b in ("pytorch", "vllm", "tensorrt")}),
    Capability("float16", "float16", "Half precision.", _s(_Y, _Y, _Y), kind="precision", seed_row=True,
               settings={b: {f"{b}.dtype": "float16"} for b in ("pytorch", "vllm", "tensorrt")}),
    Capability("bfloat16", "bfloat16", "Brain float; needs Ampere (8.0+) on CUDA.",
               _s(S("yes", "on CPU too"), _Y, _Y), kind="precision", seed_row=True,
               gate=Gate(min_cc=8.0, cuda=False, reason="bfloat16 needs 8.0+ on CUDA"),
               settings={b: {f"{b}.dtype": "bfloat16"} for b in ("pytorch", "vllm", "tensorrt")}),
    Capability("prefix_caching", "Prefix caching", "Reuse the KV cache of shared prompt prefixes.",
               _s(_N, _Y, S("yes", "enable_kv_cache_reuse")),
               params=("vllm.enable_prefix_caching", "tensorrt.enable_kv_cache_reuse"), seed_row=True,
               seed_support={"pytorch": "no", "vllm": "yes", "tensorrt": "no"},
               settings={"vllm": {"vllm.enable_prefix_caching": True}, "tensorrt": {"tensorrt.enable_kv_cache_reuse": True}}),
    Capability("lora", "LoRA adapters", "Low-rank adapters on top of the base model.",
               _s(S("yes", "via peft"), S("partial", "engine supports LoRA; llem does not drive it yet"),
                  S("partial", "engine supports LoRA; llem does not drive it yet")),
               params=("experiment.lora_adapter",), seed_row=True,
               seed_support={"pytorch": "yes", "vllm": "no", "tensorrt": "no"},
               settings={"pytorch": {"experiment.lora_adapter": "an-adapter"}}),
    Capability("torch_compile", "torch.compile", "Graph compilation of the model.",
               _s(_Y, S("partial", "vLLM compiles internally (compilation_config)"), _N),
               params=("pytorch.torch_compile",), seed_row=True,
               seed_support={"pytorch": "yes", "vllm": "no", "tensorrt": "no"},
               settings={"pytorch": {"pytorch.torch_compile": True}}),
    Capability("beam_search", "Beam search", "Keep the n best partial sequences.",
               _s(_Y, S("yes", "LLM.beam_search"), S("yes", "beam_width in the engine build")),
               params=("decoder.num_beams",), seed_row=True,
               seed_support={"pytorch": "yes", "vllm": "yes", "tensorrt": "no"},
               settings={b: {"decoder.num_beams": 2} for b in ("pytorch", "vllm", "tensorrt")}),
    Capability("speculative_decoding", "Speculative decoding", "A draft model proposes tokens.",
               _s(S("yes", "assistant_model / prompt lookup"), S("yes", "speculative_config"),
                  S("partial", "engine supports it; llem does not drive it yet")),
               params=("pytorch.assistant_model", "vllm.speculative_model"), seed_row=True,
               seed_support={"pytorch": "yes", "vllm": "yes", "tensorrt": "no"},
               settings={"pytorch": {"pytorch.assistant_model": "a-draft-model"}, "vllm": {"vllm.speculative_model": "a-draft-model", "vllm.num_speculative_tokens": 5}}),
    Capability("static_kv_cache", "Static KV cache", "Preallocated cache (enables CUDA graphs).",
               _s(S("yes", "cache_implementation='static'"), S("no", "paged cache instead"),
                  S("no", "paged cache instead")),
               params=("pytorch.cache_implementation",), seed_row=True,
               settings={"pytorch": {"pytorch.cache_implementation": "static"}}),
    Capability("continuous_batching", "Continuous batching", "Requests join and leave batches per step.",
               _s(S("no", "llem batches statically or by token budget"), _Y, _Y)),
    Capability("paged_attention", "Paged KV cache", "KV cache in fixed-size blocks.",
               _s(_N, _Y, _Y), params=("vllm.block_size",)),
    Capability("flash_attention_2", "FlashAttention-2", "Fused attention; Ampere+, float16/bfloat16 weights on the GPU.",
               _s(S("yes", "flash-attn package"), S("yes", "FLASH_ATTN backend"), S("yes", "built in")),
               kind="attention", params=("pytorch.attn_implementation",),
               gate=Gate(min_cc=8.0, reason="needs 8.0+"),
               settings={"pytorch": {"pytorch.attn_implementation": "flash_attention_2", "pytorch.dtype": "bfloat16"},
                         "vllm": {"vllm.attention_backend": "FLASH_ATTN", "vllm.flash_attn_version": 2}}),
    Capability("flash_attention_3", "FlashAttention-3", "Hopper-only fused attention; float16/bfloat16 weights on the GPU.",
               _s(S("yes", "attn_implementation='flash_attention_3'"),
                  S("yes", "flash_attn_version=3"), S("partial", "engine's own Hopper kernels")),
               kind="attention", params=("pytorch.attn_implementation", "vllm.flash_attn_version"),
               gate=Gate(min_cc=9.0, reason="needs Hopper (9.0+)"),
               settings={"pytorch": {"pytorch.attn_implementation": "flash_attention_3", "pytorch.dtype": "bfloat16"},
                         "vllm": {"vllm.attention_backend": "FLASH_ATTN", "vllm.flash_attn_version": 3}}),
    Capability("fp8_kv_cache", "fp8 KV cache", "KV cache stored in 8-bit floats.",
               _s(S("partial", "cache_implementation='quantized' (int4/int8, not fp8)"), _Y, _Y),
               kind="quantization", params=("vllm.kv_cache_dtype", "tensorrt.kv_cache_dtype"),
               gate=Gate(min_cc=8.9, reason="TensorRT-LLM needs fp8 tensor cores (8.9+); vLLM states no floor"),
               settings={"vllm": {"vllm.kv_cache_dtype": "fp8"}, "tensorrt": {"tensorrt.kv_cache_dtype": "fp8"}}),
    Capability("min_p", "min_p sampling", "Drop tokens below a share of the top token's probability.",
               _s(_Y, _Y, S("yes", "SamplingParams.min_p")),
               params=("decoder.min_p",),
               settings={b: {"decoder.min_p": 0.1, "decoder.do_sample": True} for b in ("pytorch", "vllm", "tensorrt")}),
    Capability("chunked_prefill", "Chunked prefill", "Long prompts prefilled in pieces.",
               _s(_N, _Y, S("yes", "enable_chunked_context")), params=("vllm.enable_chunked_prefill",),
               settings={"vllm": {"vllm.enable_chunked_prefill": True}}),
    Capability("cpu", "Runs on CPU", "Runs without any GPU.",
               _s(_Y, S("partial", "separate CPU build of vLLM; not llem's target"), _N)),
)


def precisions(backend: str) -> tuple[str, ...]:
    """Precisions (dtypes) ``backend`` supports, read from the precision rows."""
    return tuple(
        c.name for c in CAPABILITIES if c.kind == "precision" and c.support[backend].level != "no"
    )
