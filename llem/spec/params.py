"""Every parameter llem knows: one row each. Configs, validators, widgets and docs derive from here.

Defaults of None mean *unset*: the backend's own default applies (``library_default`` says
which), and the effective value is recorded with each result.
"""

from __future__ import annotations

from llem.spec.model import Gate, Param

_BNB = Gate(
    cuda=False,
    package="bitsandbytes",
    install="pip install 'llem[pytorch]'",
    reason="bitsandbytes quantization needs the bitsandbytes package",
    alternative="leave load_in_4bit/load_in_8bit unset",
)
_FA2 = Gate(
    min_cc=8.0,
    package="flash_attn",
    install="pip install flash-attn --no-build-isolation",
    reason="flash_attention_2 needs an Ampere or newer NVIDIA GPU (8.0+) and the flash-attn package",
    alternative="use attn_implementation='sdpa'",
)
_FA3 = Gate(
    min_cc=9.0,
    package="flash_attn_interface",
    install="build flash-attention's hopper/ directory (FlashAttention-3)",
    reason="flash_attention_3 uses Hopper-only instructions (compute capability 9.0+)",
    alternative="use 'flash_attention_2' on Ampere/Ada or 'sdpa' anywhere",
)
_BF16 = Gate(
    min_cc=8.0,
    cuda=False,
    reason="bfloat16 needs an Ampere or newer GPU (8.0+) on CUDA; CPUs run it in software",
    alternative="use dtype='float16' on older GPUs",
)
_VLLM_FP8 = Gate(
    min_cc=8.0,
    reason="vLLM fp8 quantization needs Ampere (8.0+); below 8.9 it runs weight-only (FP8 Marlin), "
           "full W8A8 needs 8.9+",
    alternative="use quantization='awq' or 'gptq' with a pre-quantized model",
)
_VLLM_FLASH_ATTN = Gate(
    min_cc=8.0,
    reason="vLLM's FLASH_ATTN backend (its bundled FlashAttention) needs an Ampere or newer GPU (8.0+)",
    alternative="leave vllm.attention_backend unset (vLLM picks one), or use TRITON_ATTN",
)
_VLLM_FP8_KV = Gate(
    cuda=True,
    reason="an fp8 KV cache needs a CUDA GPU (vLLM states no compute-capability floor)",
    alternative="use kv_cache_dtype='auto'",
)
_FP8_KV = Gate(
    min_cc=8.9,
    reason="an fp8 KV cache needs fp8 tensor cores (Ada 8.9 / Hopper 9.0)",
    alternative="use kv_cache_dtype='auto'",
)
_TRT_FP8 = Gate(
    min_cc=8.9,
    reason="TensorRT-LLM fp8 needs fp8 tensor cores (Ada 8.9 or Hopper 9.0)",
    alternative="use quantization='int8_sq' or 'int4_awq'",
)
_VLLM_CUDA = Gate(
    package="vllm",
    install="pip install 'llem[vllm]'",
    reason="llem's vLLM backend needs Linux and an NVIDIA GPU (CUDA)",
    alternative="use the pytorch backend, or set experiment.target_gpu to plan for a GPU",
)
_TRT_CUDA = Gate(
    package="tensorrt_llm",
    install="pip install 'llem[tensorrt]'",
    reason="TensorRT-LLM needs Linux and an NVIDIA GPU (CUDA)",
    alternative="use the pytorch backend, or set experiment.target_gpu to plan for a GPU",
)
_TORCH = Gate(
    cuda=False,
    package="torch",
    install="pip install 'llem[pytorch]'",
    reason="the pytorch backend needs torch and transformers",
    alternative="pip install 'llem[pytorch]'",
)
# Upper bounds of the open-ended rows: far above any real use, low enough that a typo
# (10**12 prompts, a trillion-token prompt) is refused before anything is allocated.
_MAX_TOKENS = 1_048_576  # a prompt, an output, a context: 2**20 tokens (as max_input_tokens)
_MAX_BUDGET = 2**30  # a token budget over many sequences
_MAX_COUNT = 100_000  # prompts, sequences, a batch (as dataset.count always was)
_MAX_GIB = 1_048_576.0  # host memory, GiB (1 PiB)
_MULTI_GPU = "needs one GPU per rank: more than one process or rank needs 2+ GPUs"

_PT = ("pytorch",)
_VL = ("vllm",)
_TR = ("tensorrt",)
_DTYPES = ("float32", "float16", "bfloat16")
#: llem's precision names -> torch dtypes ("torch.<name>" is the torch attribute).
_TORCH_DTYPES = {name: f"torch.{name}" for name in _DTYPES}
#: The seed's (and LLenergyMeasure's) short spellings of the precisions.
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: The seed's top-level precision names: each backend's own dtype row.
_TOP_PRECISION = ("experiment.precision", "experiment.fp_precision")

# Where a decoder row goes in each engine (see llem/spec/engines.py for the targets).
_ALL_SAMPLE = {"pytorch": "generation", "vllm": "sampling", "tensorrt": "sampling"}
_ENGINES_SAMPLE = {"vllm": "sampling", "tensorrt": "sampling"}
_GENERATION = {"pytorch": "generation"}
_FROM_PRETRAINED = {"pytorch": "from_pretrained"}
_MODEL_AND_TOKENIZER = {"pytorch": ("from_pretrained", "tokenizer")}
_BNB_CONFIG = {"pytorch": "quantization_config"}
_LLM = {"vllm": "llm"}
_TRT_LLM = {"tensorrt": "llm"}


def _vllm_at(*paths: str) -> dict[str, tuple[str, ...]]:
    """Where vLLM's resolved config (VllmConfig) keeps a value, tried in order."""
    return {"vllm": paths}


def _trt_at(*paths: str) -> dict[str, tuple[str, ...]]:
    """Where TensorRT-LLM's resolved arguments (LlmArgs) keep a value, tried in order."""
    return {"tensorrt": paths}


#: TensorRT-LLM limits that are LLM arguments and also BuildConfig fields.
_TRT_LIMIT = {"tensorrt": ("llm", "build_config")}

EXPERIMENT = (
    Param("model", "experiment", "str", "Model: a built-in alias (llem.models), a hub id or a local path.",
          default="smollm2-135m", widget="text", load_time=True, allow_none=False,
          aliases=("model_name",)),
    Param("backend", "experiment", "enum",
          "Inference engine: llem's own, or any registered backend (llem.register_backend).",
          default="pytorch", choices=("pytorch", "vllm", "tensorrt"), load_time=True,
          allow_none=False, registry="backend",
          value_gates={"pytorch": _TORCH, "vllm": _VLLM_CUDA, "tensorrt": _TRT_CUDA}),
    Param("prompts", "experiment", "str_or_list",
          "Prompts: a built-in set name, a .txt/.jsonl path, a list, or 'synthetic'.",
          default="qa-short", allow_none=False, seed_name="dataset", aliases=("dataset.source",)),
    Param("num_prompts", "experiment", "int", "How many prompts to use (unset: all).", min=1, max=_MAX_COUNT,
          seed_name="dataset.n_prompts", aliases=("n",)),
    Param("max_input_tokens", "experiment", "int", "Prompts are truncated to this many tokens.",
          default=512, min=1, max=1_048_576, unit="tokens", allow_none=False,
          source="LLenergyMeasure default 512"),
    Param("chat_template", "experiment", "enum",
          "Give each prompt as the user's turn in the tokenizer's chat template, with its "
          "generation prompt: 'auto' when the tokenizer has one, 'on' refuses a model "
          "without one, 'off' plain text. Template tokens count as input tokens.",
          default="auto", choices=("auto", "on", "off"), allow_none=False),
    Param("repeats", "experiment", "int", "Measured runs (the mean gets a 95% interval).",
          default=3, min=1, max=1000, allow_none=False, widget="slider"),
    Param("meter", "experiment", "enum",
          "Energy meter; auto picks nvml for GPUs, rapl else estimate; any registered meter "
          "(llem.register_meter) is accepted too.",
          default="auto",
          choices=("auto", "nvml", "rapl", "estimate", "codecarbon", "zeus", "replay", "none"),
          allow_none=False, seed_name="energy.backend", registry="meter"),
    Param("energy_scope", "experiment", "enum",
          "What the CPU and RAM estimate covers: 'process' (this process's CPU time and memory) or "
          "'system' (the whole machine: busy CPU time of all processes, used memory, as codecarbon).",
          default="process", choices=("process", "system"), allow_none=False,
          note="Only the estimate has a scope: NVML and RAPL counters always read the whole device, "
               "every process on it."),
    Param("gpu_power_limit_w", "experiment", "float",
          "Cap each GPU the run uses at this power for the run (set through NVML, needs root; put "
          "back afterwards). Unset: the GPU's limit as it is.",
          min=10.0, max=2000.0, unit="W", load_time=True,
          gate=Gate(reason="a GPU power limit is set through NVML on an NVIDIA GPU",
                    alternative="leave experiment.gpu_power_limit_w unset"),
          note="Refused when the value is outside the GPU's own min..max "
               "(nvmlDeviceGetPowerManagementLimitConstraints) or when this user may not set it. "
               "Recorded in the effective config and in result.environment['gpu_power_limit']."),
    Param("sampling_interval_s", "experiment", "float", "Power sampling interval.", default=0.1,
          min=0.001, max=10.0, unit="s", allow_none=False),
    Param("grid_intensity_g_per_kwh", "experiment", "float",
          "Carbon intensity of the electricity for g CO2e figures (unset: none, or codecarbon's).",
          min=0.0, max=2000.0, unit="gCO2e/kWh"),
    Param("target_gpu", "experiment", "str",
          "Plan for another machine: 'cpu', a compute capability ('9.0') or a GPU name ('H100').",
          widget="text"),
    Param("output_dir", "experiment", "str", "Where results are saved.", default="llem-results",
          allow_none=False),
    Param("profile", "experiment", "enum",
          "Measurement profile: 'quick' (1 warmup pass, no thermal wait; not for publication) "
          "or 'publication' (5 warmup passes, 60 s thermal floor).",
          default="quick", choices=("quick", "publication"), allow_none=False),
    Param("passthrough", "experiment", "dict",
          "Extra keyword arguments for the engine: {'load': {...}, 'generate': {...}}. "
          "A key that a named field covers is refused.", seed_name="backend passthrough kwargs",
          aliases=("passthrough_kwargs",)),
    Param("lora_adapter", "experiment", "str", "LoRA adapter (hub id or local path) applied via peft.",
          backends=_PT, load_time=True, seed_name="lora.adapter_id", aliases=("lora.adapter_path",)),
    Param("lora_merge", "experiment", "bool", "Merge the LoRA adapter into the weights after loading.",
          backends=_PT, load_time=True, seed_name="lora.merge_weights"),
)

DECODER = (
    Param("preset", "decoder", "enum", "Sampling preset; explicit fields override it.",
          choices=("deterministic", "standard", "creative", "factual")),
    Param("temperature", "decoder", "float", "Sampling temperature; 0 means greedy.", min=0.0, max=2.0,
          widget="slider", seed_backends=("pytorch", "vllm", "tensorrt"),
          engine_target={"pytorch": "generation", "vllm": ("sampling", "beam"), "tensorrt": "sampling"},
          library_default={"pytorch": 1.0, "vllm": 1.0, "tensorrt": 1.0}),
    Param("do_sample", "decoder", "bool", "Sample (True) or decode greedily (False).",
          library_default={"pytorch": False, "vllm": True, "tensorrt": False},
          engine_target={"pytorch": "generation"},
          note="vLLM and TensorRT-LLM have no such flag: llem sends greedy as temperature 0 "
               "(vLLM) or top_k 1 (TensorRT-LLM)."),
    Param("top_k", "decoder", "int", "Keep the k most likely tokens; 0 disables.", min=0, max=_MAX_TOKENS,
          seed_backends=("pytorch", "vllm", "tensorrt"), engine_target=_ALL_SAMPLE,
          library_default={"pytorch": 50, "vllm": 0, "tensorrt": 0}),
    Param("top_p", "decoder", "float", "Nucleus sampling mass; 1.0 disables.", min=0.0, max=1.0,
          widget="slider", seed_backends=("pytorch", "vllm", "tensorrt"), engine_target=_ALL_SAMPLE,
          library_default={"pytorch": 1.0, "vllm": 1.0, "tensorrt": 1.0}),
    Param("min_p", "decoder", "float", "Drop tokens below min_p x the top token's probability.",
          min=0.0, max=1.0, widget="slider", seed_backends=("pytorch",), engine_target=_ALL_SAMPLE,
          library_default={"pytorch": 0.0, "vllm": 0.0, "tensorrt": 0.0}),
    Param("typical_p", "decoder", "float", "Locally typical sampling mass; 1.0 disables.",
          min=0.0, max=1.0, backends=_PT, widget="slider", engine_target={"pytorch": "generation"},
          library_default={"pytorch": 1.0}),
    Param("repetition_penalty", "decoder", "float", "Penalty on repeated tokens; 1.0 disables.",
          min=0.1, max=10.0, seed_backends=("pytorch", "vllm"), engine_target=_ALL_SAMPLE,
          library_default={"pytorch": 1.0, "vllm": 1.0, "tensorrt": 1.0}),
    Param("presence_penalty", "decoder", "float", "Penalty for tokens already present.", min=-2.0,
          max=2.0, backends=("vllm", "tensorrt"), seed_name="vllm.sampling.presence_penalty",
          engine_target=_ENGINES_SAMPLE, library_default={"vllm": 0.0, "tensorrt": 0.0}),
    Param("frequency_penalty", "decoder", "float", "Penalty growing with a token's frequency.",
          min=-2.0, max=2.0, backends=("vllm", "tensorrt"), seed_name="vllm.sampling.frequency_penalty",
          engine_target=_ENGINES_SAMPLE, library_default={"vllm": 0.0, "tensorrt": 0.0}),
    Param("no_repeat_ngram_size", "decoder", "int", "Never repeat an n-gram of this size; 0 disables.",
          min=0, max=_MAX_TOKENS, backends=("pytorch", "tensorrt"), seed_name="pytorch.no_repeat_ngram_size",
          engine_target={"pytorch": "generation", "tensorrt": "sampling"}),
    Param("max_new_tokens", "decoder", "int", "Most tokens to generate per prompt.", default=128,
          min=1, max=1_048_576, unit="tokens", allow_none=False,
          engine_names={"vllm": "max_tokens", "tensorrt": "max_tokens"},
          engine_target={"pytorch": "generation", "vllm": ("sampling", "beam"), "tensorrt": "sampling"},
          aliases=("max_output_tokens", "max_tokens", "experiment.max_output_tokens"),
          source="LLenergyMeasure default 128"),
    Param("min_new_tokens", "decoder", "int", "Fewest tokens to generate per prompt.", min=1, max=_MAX_TOKENS,
          unit="tokens", engine_names={"vllm": "min_tokens", "tensorrt": "min_tokens"},
          engine_target=_ALL_SAMPLE,
          aliases=("min_tokens",), seed_backends=("pytorch",)),
    Param("ignore_eos", "decoder", "bool", "Keep generating past end-of-sequence (fixed lengths).",
          backends=("vllm", "tensorrt"), seed_name="vllm.sampling.ignore_eos",
          engine_target={"vllm": ("sampling", "beam"), "tensorrt": "sampling"}),
    Param("n", "decoder", "int", "Completions per prompt.", min=1, max=64, backends=("vllm", "tensorrt"),
          seed_name="vllm.sampling.n", engine_target=_ENGINES_SAMPLE, library_default={"vllm": 1, "tensorrt": 1}),
    Param("num_beams", "decoder", "int", "Beam search width; 1 disables.", min=1, max=64,
          engine_names={"vllm": "beam_width", "tensorrt": "max_beam_width"},
          engine_target={"pytorch": "generation", "vllm": "beam", "tensorrt": ("llm", "build_config")},
          aliases=("beam_width",), seed_name="pytorch.num_beams",
          library_default={"pytorch": 1, "vllm": 1, "tensorrt": 1},
          note="TensorRT-LLM builds the engine for max_beam_width beams and runs beam search through "
               "SamplingParams(use_beam_search=True, n or best_of = the width)."),
    Param("length_penalty", "decoder", "float", "Beam score length exponent (beam search only).",
          min=-10.0, max=10.0, seed_name="pytorch.length_penalty",
          library_default={"pytorch": 1.0, "vllm": 1.0, "tensorrt": 1.0},
          engine_target={"pytorch": "generation", "vllm": "beam", "tensorrt": "sampling"}),
    Param("early_stopping", "decoder", "bool", "Stop beam search when enough beams finished.",
          backends=("pytorch", "tensorrt"), seed_name="pytorch.early_stopping",
          engine_target={"pytorch": "generation", "tensorrt": "sampling"},
          engine_values={"tensorrt": {True: 1, False: 0}},
          note="TensorRT-LLM's early_stopping is an int (1 = True, 0 = False)."),
    Param("seed", "decoder", "int", "Random seed for sampling and synthetic prompts.", default=42,
          min=0, max=2**32 - 1, allow_none=False, source="LLenergyMeasure default 42",
          seed_name="random_seed", engine_target={"vllm": "llm", "tensorrt": "sampling"},
          note="PyTorch: the runner seeds torch before each batch (generate(seed=...)). vLLM: the "
               "engine is seeded once (LLM(seed=...)) and no batch or request is, since seeded "
               "requests sample through a slower per-request path."),
)

PYTORCH = (
    Param("batch_size", "pytorch", "int", "Prompts per batch.", default=1, min=1, max=4096,
          backends=_PT, allow_none=False, widget="slider"),
    Param("batching_strategy", "pytorch", "enum",
          "static: batches in order; sorted_static: sorted by length to cut padding; "
          "dynamic / sorted_dynamic: batches filled up to max_tokens_per_batch.",
          default="static", choices=("static", "sorted_static", "dynamic", "sorted_dynamic"),
          backends=_PT, allow_none=False),
    Param("max_tokens_per_batch", "pytorch", "int", "Token budget of a dynamic batch.", min=1, max=_MAX_BUDGET,
          unit="tokens", backends=_PT, library_default={"pytorch": 4096},
          source="llem's choice: bounds the KV cache of one batch"),
    Param("dtype", "pytorch", "enum", "Weight and activation precision.", choices=_DTYPES,
          backends=_PT, load_time=True, value_gates={"bfloat16": _BF16},
          engine_target={"pytorch": "from_pretrained"}, engine_values={"pytorch": _TORCH_DTYPES},
          aliases=("precision", "torch_dtype", *_TOP_PRECISION), value_aliases=_DTYPE_ALIASES,
          library_default={"pytorch": "the checkpoint's dtype"}),
    Param("attn_implementation", "pytorch", "enum", "Attention kernel.",
          choices=("eager", "sdpa", "flash_attention_2", "flash_attention_3"), backends=_PT,
          load_time=True, value_gates={"flash_attention_2": _FA2, "flash_attention_3": _FA3},
          engine_target={"pytorch": "from_pretrained"}, library_default={"pytorch": "sdpa"}),
    Param("torch_compile", "pytorch", "bool", "Compile the model with torch.compile.", backends=_PT,
          load_time=True, library_default={"pytorch": False}),
    Param("torch_compile_mode", "pytorch", "enum", "torch.compile mode.",
          choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "lite"),
          backends=_PT, load_time=True,
          source="torch._inductor.list_mode_options() of torch 2.13 ('lite' is new there)",
          engine_target={"pytorch": "compile"}, engine_names={"pytorch": "mode"}),
    Param("torch_compile_backend", "pytorch", "enum", "torch.compile backend.",
          choices=("inductor", "cudagraphs", "aot_eager", "eager"), backends=_PT, load_time=True,
          engine_target={"pytorch": "compile"}, engine_names={"pytorch": "backend"}),
    Param("load_in_4bit", "pytorch", "bool", "bitsandbytes 4-bit weights.", backends=_PT,
          load_time=True, gate=_BNB, engine_target=_BNB_CONFIG),
    Param("load_in_8bit", "pytorch", "bool", "bitsandbytes 8-bit weights (LLM.int8).", backends=_PT,
          load_time=True, gate=_BNB, engine_target=_BNB_CONFIG),
    Param("bnb_4bit_compute_dtype", "pytorch", "enum", "Compute dtype of 4-bit layers.",
          choices=_DTYPES, backends=_PT, load_time=True, value_gates={"bfloat16": _BF16},
          engine_target=_BNB_CONFIG, engine_values={"pytorch": _TORCH_DTYPES}),
    Param("bnb_4bit_quant_type", "pytorch", "enum", "4-bit data type.", choices=("nf4", "fp4"),
          backends=_PT, load_time=True, library_default={"pytorch": "fp4"}, engine_target=_BNB_CONFIG),
    Param("bnb_4bit_use_double_quant", "pytorch", "bool", "Quantize the quantization constants too.",
          backends=_PT, load_time=True, engine_target=_BNB_CONFIG),
    Param("use_cache", "pytorch", "bool", "Keep a KV cache during generation.", backends=_PT,
          library_default={"pytorch": True}, engine_target=_GENERATION),
    Param("cache_implementation", "pytorch", "enum", "KV cache kind.",
          choices=("dynamic", "static", "offloaded", "offloaded_static", "sliding_window", "quantized"),
          backends=_PT, library_default={"pytorch": "dynamic"}, engine_target=_GENERATION),
    Param("device_map", "pytorch", "str", "Where weights go: 'auto', 'cpu', 'cuda:0', ...",
          backends=_PT, load_time=True, library_default={"pytorch": "auto (cpu without a GPU)"},
          engine_target=_FROM_PRETRAINED),
    Param("max_memory", "pytorch", "dict", "Per-device memory limits, e.g. {'0': '20GiB', 'cpu': '30GiB'}.",
          backends=_PT, load_time=True, engine_target=_FROM_PRETRAINED),
    Param("low_cpu_mem_usage", "pytorch", "bool", "Load weights without a full extra copy in RAM.",
          backends=_PT, load_time=True, engine_target=_FROM_PRETRAINED),
    Param("assistant_model", "pytorch", "str", "A smaller draft model for assisted (speculative) decoding.",
          backends=_PT, load_time=True, engine_target={"pytorch": "generate"},
          note="llem loads the draft model and passes the loaded model to generate()."),
    Param("num_assistant_tokens", "pytorch", "int", "Draft tokens per assisted step.", min=1, max=64,
          backends=_PT, engine_target=_GENERATION),
    Param("prompt_lookup_num_tokens", "pytorch", "int", "Prompt-lookup decoding: n-gram candidates.",
          min=1, max=64, backends=_PT, engine_target=_GENERATION),
    Param("output_scores", "pytorch", "bool", "Return token scores (costs memory and time).",
          backends=_PT, engine_target=_GENERATION),
    Param("revision", "pytorch", "str", "Model commit/branch, for reproducibility.", backends=_PT,
          load_time=True, engine_target=_MODEL_AND_TOKENIZER),
    Param("trust_remote_code", "pytorch", "bool",
          "Run code shipped in the model repository. Off unless you turn it on.", default=False,
          backends=_PT, load_time=True, allow_none=False, engine_target=_MODEL_AND_TOKENIZER,
          note="The seed turned this on by default; llem does not run a repository's code unasked."),
    Param("num_processes", "pytorch", "int", "Data-parallel processes (one per GPU).", min=1, max=1024,
          backends=_PT, load_time=True),
)

VLLM = (
    Param("dtype", "vllm", "enum", "Model precision ('auto' takes the checkpoint's).",
          choices=("auto", *_DTYPES), backends=_VL, load_time=True, value_gates={"bfloat16": _BF16},
          library_default={"vllm": "auto"}, aliases=("precision", *_TOP_PRECISION),
          value_aliases=_DTYPE_ALIASES,
          engine_target=_LLM, engine_readback=_vllm_at("model_config.dtype")),
    Param("max_num_seqs", "vllm", "int", "Most sequences in one scheduler step.", min=1, max=_MAX_COUNT, backends=_VL,
          load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("scheduler_config.max_num_seqs")),
    Param("max_num_batched_tokens", "vllm", "int", "Most tokens in one scheduler step.", min=1, max=_MAX_BUDGET,
          unit="tokens", backends=_VL, load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("scheduler_config.max_num_batched_tokens")),
    Param("max_model_len", "vllm", "int", "Context length (prompt + output).", min=1, max=_MAX_TOKENS, unit="tokens",
          backends=_VL, load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("model_config.max_model_len")),
    Param("gpu_memory_utilization", "vllm", "float", "Share of GPU memory vLLM may take.", min=0.0,
          max=1.0, min_exclusive=True, backends=_VL, load_time=True, widget="slider",
          library_default={"vllm": 0.9}, note="The seed allowed [0, 1); vLLM accepts (0, 1].",
          engine_target=_LLM, engine_readback=_vllm_at("cache_config.gpu_memory_utilization")),
    Param("kv_cache_memory_bytes", "vllm", "int", "KV cache size in bytes (instead of a share).",
          min=1, max=2**50, unit="bytes", backends=_VL, load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("cache_config.kv_cache_memory_bytes")),
    Param("swap_space", "vllm", "float", "CPU swap space per GPU.", min=0.0, max=_MAX_GIB, unit="GiB", backends=_VL,
          load_time=True, note="Removed from recent vLLM versions; passed only when set.",
          engine_target=_LLM, engine_readback=_vllm_at("cache_config.swap_space")),
    Param("cpu_offload_gb", "vllm", "float", "Weights offloaded to CPU memory.", min=0.0, max=_MAX_GIB, unit="GiB",
          backends=_VL, load_time=True,
          engine_target=_LLM,
          engine_readback=_vllm_at("offload_config.cpu_offload_gb", "cache_config.cpu_offload_gb")),
    Param("block_size", "vllm", "enum", "KV cache block size in tokens.", choices=(1, 8, 16, 32, 64, 128),
          backends=_VL, load_time=True, library_default={"vllm": 16},
          note="The seed allowed 8, 16, 32; vLLM's EngineArgs takes 1, 8, 16, 32, 64, 128.",
          engine_target=_LLM, engine_readback=_vllm_at("cache_config.block_size")),
    Param("kv_cache_dtype", "vllm", "enum", "KV cache precision.",
          choices=("auto", "fp8", "fp8_e4m3", "fp8_e5m2"), backends=_VL, load_time=True,
          value_gates={"fp8": _VLLM_FP8_KV, "fp8_e4m3": _VLLM_FP8_KV, "fp8_e5m2": _VLLM_FP8_KV},
          note="vLLM states no compute-capability floor for an fp8 KV cache (storage only); "
               "its fp8 attention kernels want 8.9+.",
          engine_target=_LLM, engine_readback=_vllm_at("cache_config.cache_dtype")),
    Param("enforce_eager", "vllm", "bool", "Disable CUDA graphs.", backends=_VL, load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("model_config.enforce_eager")),
    Param("enable_chunked_prefill", "vllm", "bool", "Split long prefills into chunks.", backends=_VL,
          load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("scheduler_config.enable_chunked_prefill")),
    Param("enable_prefix_caching", "vllm", "bool", "Reuse KV blocks of shared prefixes.", backends=_VL,
          load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("cache_config.enable_prefix_caching")),
    Param("tensor_parallel_size", "vllm", "int", "GPUs per tensor-parallel group.", min=1, max=1024,
          backends=_VL, load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("parallel_config.tensor_parallel_size")),
    Param("pipeline_parallel_size", "vllm", "int", "Pipeline stages.", min=1, max=1024, backends=_VL,
          load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("parallel_config.pipeline_parallel_size")),
    Param("disable_custom_all_reduce", "vllm", "bool", "Use NCCL all-reduce only.", backends=_VL,
          load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("parallel_config.disable_custom_all_reduce")),
    Param("quantization", "vllm", "enum", "Weight quantization method.",
          choices=("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "fbgemm_fp8", "modelopt", "gguf",
                   "bitsandbytes", "compressed-tensors", "torchao"),
          backends=_VL, load_time=True, value_gates={"fp8": _VLLM_FP8},
          note="The seed also listed fp8_e5m2/fp8_e4m3 (KV cache dtypes in vLLM, see kv_cache_dtype) "
               "and marlin (gone from recent vLLM; awq_marlin and gptq_marlin remain).",
          engine_target=_LLM, engine_readback=_vllm_at("model_config.quantization")),
    Param("speculative_model", "vllm", "str", "Draft model for speculative decoding.", backends=_VL,
          load_time=True, engine_target={"vllm": "speculative_config"}, engine_names={"vllm": "model"},
          note="Passed as speculative_config={'model': ...}; 'ngram' becomes {'method': 'ngram'}."),
    Param("num_speculative_tokens", "vllm", "int", "Draft tokens per step.", min=1, max=64,
          backends=_VL, load_time=True, engine_target={"vllm": "speculative_config"}),
    Param("compilation_config", "vllm", "dict", "vLLM compilation settings (dict, or {'level': n}).",
          backends=_VL, load_time=True, engine_target=_LLM),
    Param("attention_backend", "vllm", "enum", "Attention backend (vLLM picks one when unset).",
          choices=("FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION", "XFORMERS"),
          backends=_VL, load_time=True, seed_name="vllm.attention.backend",
          value_gates={"FLASH_ATTN": _VLLM_FLASH_ATTN},
          engine_target=_LLM, engine_readback=_vllm_at("attention_config.backend")),
    Param("flash_attn_version", "vllm", "enum", "FlashAttention version for FLASH_ATTN.", choices=(2, 3),
          backends=_VL, load_time=True, value_gates={3: _FA3}, seed_name="vllm.attention.flash_version",
          engine_target={"vllm": "attention_config"},
          engine_readback=_vllm_at("attention_config.flash_attn_version")),
    Param("trust_remote_code", "vllm", "bool", "Run code shipped in the model repository.",
          default=False, backends=_VL, load_time=True, allow_none=False,
          engine_target=_LLM, engine_readback=_vllm_at("model_config.trust_remote_code")),
    Param("revision", "vllm", "str", "Model commit/branch.", backends=_VL, load_time=True,
          engine_target=_LLM, engine_readback=_vllm_at("model_config.revision")),
)

TENSORRT = (
    Param("dtype", "tensorrt", "enum", "Engine precision.", choices=_DTYPES, backends=_TR,
          load_time=True, value_gates={"bfloat16": _BF16}, aliases=("precision", *_TOP_PRECISION),
          value_aliases=_DTYPE_ALIASES,
          engine_target=_TRT_LLM, engine_readback=_trt_at("dtype")),
    Param("max_batch_size", "tensorrt", "int", "Largest batch the engine is built for.", min=1, max=_MAX_COUNT,
          backends=_TR, load_time=True,
          engine_target=_TRT_LIMIT, engine_readback=_trt_at("build_config.max_batch_size", "max_batch_size")),
    Param("max_input_len", "tensorrt", "int", "Longest prompt the engine is built for.", min=1, max=_MAX_TOKENS,
          unit="tokens", backends=_TR, load_time=True,
          engine_target=_TRT_LIMIT, engine_readback=_trt_at("build_config.max_input_len", "max_input_len")),
    Param("max_seq_len", "tensorrt", "int", "Longest prompt + output the engine is built for.", min=1, max=_MAX_TOKENS,
          unit="tokens", backends=_TR, load_time=True, aliases=("max_output_len",),
          note="Older TensorRT-LLM had max_output_len; the LLM API takes max_seq_len.",
          engine_target=_TRT_LIMIT, engine_readback=_trt_at("build_config.max_seq_len", "max_seq_len")),
    Param("max_num_tokens", "tensorrt", "int", "Most tokens in one engine step.", min=1, max=_MAX_BUDGET,
          unit="tokens", backends=_TR, load_time=True,
          engine_target=_TRT_LIMIT, engine_readback=_trt_at("build_config.max_num_tokens", "max_num_tokens")),
    Param("tp_size", "tensorrt", "int", "Tensor-parallel GPUs.", min=1, max=1024, backends=_TR,
          load_time=True, engine_names={"tensorrt": "tensor_parallel_size"},
          engine_target=_TRT_LLM, engine_readback=_trt_at("tensor_parallel_size")),
    Param("pp_size", "tensorrt", "int", "Pipeline-parallel stages.", min=1, max=1024, backends=_TR,
          load_time=True, engine_names={"tensorrt": "pipeline_parallel_size"},
          engine_target=_TRT_LLM, engine_readback=_trt_at("pipeline_parallel_size")),
    Param("quantization", "tensorrt", "enum", "Quantization algorithm.",
          choices=("fp8", "int8_sq", "int4_awq", "w4a8_awq", "int8_weight_only", "int4_weight_only"),
          backends=_TR, load_time=True, value_gates={"fp8": _TRT_FP8},
          engine_target={"tensorrt": "quant_config"}, engine_names={"tensorrt": "quant_algo"},
          engine_values={"tensorrt": {
              "fp8": "FP8", "int8_sq": "W8A8_SQ_PER_CHANNEL", "int4_awq": "W4A16_AWQ",
              "w4a8_awq": "W4A8_AWQ", "int8_weight_only": "W8A16", "int4_weight_only": "W4A16"}},
          engine_readback=_trt_at("quant_config.quant_algo"),
          note="Values are TensorRT-LLM QuantAlgo members (fp8 = FP8, int8_sq = W8A8_SQ_PER_CHANNEL, "
               "int4_awq = W4A16_AWQ, w4a8_awq = W4A8_AWQ, int8/int4_weight_only = W8A16/W4A16)."),
    Param("kv_cache_dtype", "tensorrt", "enum", "KV cache precision.", choices=("auto", "fp8", "int8"),
          backends=_TR, load_time=True, value_gates={"fp8": _FP8_KV},
          engine_target={"tensorrt": "quant_config"}, engine_names={"tensorrt": "kv_cache_quant_algo"},
          engine_values={"tensorrt": {"auto": None, "fp8": "FP8", "int8": "INT8"}},
          engine_readback=_trt_at("quant_config.kv_cache_quant_algo", "kv_cache_config.dtype"),
          note="TensorRT-LLM has no fp8_e5m2 KV cache; 'auto' (the model's dtype) passes nothing."),
    Param("kv_cache_free_gpu_memory_fraction", "tensorrt", "float",
          "Share of free GPU memory for the KV cache.", min=0.0, max=1.0, min_exclusive=True,
          backends=_TR, load_time=True, widget="slider",
          engine_target={"tensorrt": "kv_cache_config"}, engine_names={"tensorrt": "free_gpu_memory_fraction"},
          engine_readback=_trt_at("kv_cache_config.free_gpu_memory_fraction")),
    Param("enable_kv_cache_reuse", "tensorrt", "bool", "Reuse KV blocks across requests.",
          backends=_TR, load_time=True,
          engine_target={"tensorrt": "kv_cache_config"}, engine_names={"tensorrt": "enable_block_reuse"},
          engine_readback=_trt_at("kv_cache_config.enable_block_reuse")),
    Param("builder_opt_level", "tensorrt", "int", "TensorRT builder optimisation level.", min=0, max=5,
          backends=_TR, load_time=True,
          engine_target={"tensorrt": "build_config"}, engine_names={"tensorrt": "opt_level"},
          engine_readback=_trt_at("build_config.opt_level")),
    Param("engine_dir", "tensorrt", "str", "Cache directory for built engines.", backends=_TR,
          load_time=True, aliases=("engine_path",),
          note="Not an engine argument: llem saves a built engine under engine_dir/<model>-<hash of "
               "the build settings> and loads it from there next time."),
)

WARMUP = (
    Param("runs", "warmup", "int", "Warmup passes before measuring (discarded). Unset: the profile's.",
          min=0, max=100, source="5 in the publication profile: Zeus, AI Energy Score"),
    Param("adaptive", "warmup", "bool", "Keep warming up until latency settles (CV under cv_threshold)."),
    Param("cv_threshold", "warmup", "float", "Latency coefficient of variation that counts as settled.",
          default=0.05, min=0.0, max=1.0, min_exclusive=True, allow_none=False),
    Param("window", "warmup", "int", "Rolling window of passes for the CV.", default=5, min=2, max=100,
          allow_none=False),
    Param("max_runs", "warmup", "int", "Cap on adaptive warmup passes.", default=20, min=1, max=1000,
          allow_none=False),
    Param("thermal_floor_s", "warmup", "float",
          "Wait after warmup before measuring (the sampler keeps recording). Unset: the profile's.",
          min=0.0, max=3600.0, unit="s", source="60 s in the publication profile: MLPerf Power minimum"),
)

BASELINE = (
    Param("seconds", "baseline", "float", "Idle power measured for this long before the run; 0 = none.",
          default=0.0, min=0.0, max=120.0, unit="s", allow_none=False,
          note="Bounds 5..120 s apply when enabled (LLenergyMeasure: 30 s default)."),
    Param("cache_ttl_s", "baseline", "float", "How long a measured baseline is reused.", default=3600.0,
          min=0.0, max=86400.0, unit="s", allow_none=False),
    Param("max_spread", "baseline", "float",
          "Baseline too noisy to subtract when its std exceeds this share of its mean.", default=0.2,
          min=0.0, max=10.0, allow_none=False),
)

STUDY = (
    Param("cycles", "study", "int", "Repeats of the whole grid.", default=3, min=1, max=100,
          allow_none=False, source="3 default, 5+ for publication (LLenergyMeasure)"),
    Param("order", "study", "enum", "Cycle order: sequential (A A B B), interleaved (A B A B), shuffled.",
          default="sequential", choices=("sequential", "interleaved", "shuffled"), allow_none=False),
    Param("gap_s", "study", "float", "Pause between configurations.", default=0.0, min=0.0, max=3600.0,
          unit="s", allow_none=False),
    Param("cycle_gap_s", "study", "float", "Pause between cycles.", default=0.0, min=0.0, max=3600.0,
          unit="s", allow_none=False),
    Param("cold_start", "study", "bool", "A fresh process for every run (no model reuse).",
          default=False, allow_none=False),
)

DATASET = (
    Param("count", "dataset", "int", "Synthetic prompts to make.", default=8, min=1, max=_MAX_COUNT,
          allow_none=False),
    Param("input_len", "dataset", "int", "Synthetic prompt length, exact in the model's tokens.",
          default=512, min=1, max=_MAX_TOKENS, unit="tokens", allow_none=False, source="LLenergyMeasure default 512"),
    Param("output_len", "dataset", "int", "Synthetic output length (sets max/min_new_tokens).",
          default=128, min=1, max=_MAX_TOKENS, unit="tokens", allow_none=False, source="LLenergyMeasure default 128"),
    Param("order", "dataset", "enum", "Order across prompt sets.", default="interleaved",
          choices=("interleaved", "grouped", "shuffled"), allow_none=False),
)

#: Every parameter row, in display order.
PARAMS: tuple[Param, ...] = (
    EXPERIMENT + DECODER + PYTORCH + VLLM + TENSORRT + WARMUP + BASELINE + STUDY + DATASET
)

#: Decoder presets: fields they set (explicit fields override them).
PRESETS: dict[str, dict[str, object]] = {
    "deterministic": {"temperature": 0.0, "do_sample": False},
    "standard": {"temperature": 1.0, "top_p": 0.95, "do_sample": True},
    "creative": {"temperature": 0.8, "top_p": 0.9, "repetition_penalty": 1.1, "do_sample": True},
    "factual": {"temperature": 0.3, "do_sample": True},
}

#: Measurement profiles: what they set when the fields are unset.
PROFILES: dict[str, dict[str, object]] = {
    "quick": {"warmup.runs": 1, "warmup.thermal_floor_s": 0.0},
    "publication": {"warmup.runs": 5, "warmup.thermal_floor_s": 60.0},
}

#: Pre-quantized checkpoints for testing AWQ/GPTQ (the seed's choices).
PREQUANTIZED_TEST_MODELS: dict[str, str] = {
    "awq": "Qwen/Qwen2.5-0.5B-Instruct-AWQ",
    "gptq": "Qwen/Qwen2.5-0.5B-Instruct-GPTQ-Int4",
}
