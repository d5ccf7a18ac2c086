"""Typed fields of the config sections, for type checkers and editors.

Generated from llem/spec by ``python -m llem.spec types > llem/_config_types.py``: do
not edit (a test fails when it is stale). At run time :mod:`llem.config` builds the same
classes from the rows with :func:`llem.sections.make_section`.
"""

from __future__ import annotations

from typing import Any

from llem.sections import Section


class _ExperimentFields(Section):
    """Experiment-level fields."""

    model: str
    """Model: a built-in alias (llem.models), a hub id or a local path."""
    backend: str
    """Inference engine: llem's own, or any registered backend (llem.register_backend)."""
    prompts: str | list[str]
    """Prompts: a built-in set name, a .txt/.jsonl path, a list, or 'synthetic'."""
    num_prompts: int | None
    """How many prompts to use (unset: all)."""
    max_input_tokens: int
    """Prompts are truncated to this many tokens."""
    chat_template: str
    """Give each prompt as the user's turn in the tokenizer's chat template, with its generation
    prompt: 'auto' when the tokenizer has one, 'on' refuses a model without one, 'off' plain text.
    Template tokens count as input tokens.
    """
    repeats: int
    """Measured runs (the mean gets a 95% interval)."""
    meter: str
    """Energy meter; auto picks nvml for GPUs, rapl else estimate; any registered meter
    (llem.register_meter) is accepted too.
    """
    energy_scope: str
    """What the CPU and RAM estimate covers: 'process' (this process's CPU time and memory) or 'system'
    (the whole machine: busy CPU time of all processes, used memory, as codecarbon).
    """
    gpu_power_limit_w: float | None
    """Cap each GPU the run uses at this power for the run (set through NVML, needs root; put back
    afterwards). Unset: the GPU's limit as it is.
    """
    sampling_interval_s: float
    """Power sampling interval."""
    grid_intensity_g_per_kwh: float | None
    """Carbon intensity of the electricity for g CO2e figures (unset: none, or codecarbon's)."""
    target_gpu: str | None
    """Plan for another machine: 'cpu', a compute capability ('9.0') or a GPU name ('H100')."""
    output_dir: str
    """Where results are saved."""
    profile: str
    """Measurement profile: 'quick' (1 warmup pass, no thermal wait; not for publication) or
    'publication' (5 warmup passes, 60 s thermal floor).
    """
    passthrough: dict[str, Any] | None
    """Extra keyword arguments for the engine: {'load': {...}, 'generate': {...}}. A key that a named
    field covers is refused.
    """
    lora_adapter: str | None
    """LoRA adapter (hub id or local path) applied via peft."""
    lora_merge: bool | None
    """Merge the LoRA adapter into the weights after loading."""

class DecoderConfig(Section):
    """Sampling / decoding settings, shared by backends."""

    preset: str | None
    """Sampling preset; explicit fields override it."""
    temperature: float | None
    """Sampling temperature; 0 means greedy."""
    do_sample: bool | None
    """Sample (True) or decode greedily (False)."""
    top_k: int | None
    """Keep the k most likely tokens; 0 disables."""
    top_p: float | None
    """Nucleus sampling mass; 1.0 disables."""
    min_p: float | None
    """Drop tokens below min_p x the top token's probability."""
    typical_p: float | None
    """Locally typical sampling mass; 1.0 disables."""
    repetition_penalty: float | None
    """Penalty on repeated tokens; 1.0 disables."""
    presence_penalty: float | None
    """Penalty for tokens already present."""
    frequency_penalty: float | None
    """Penalty growing with a token's frequency."""
    no_repeat_ngram_size: int | None
    """Never repeat an n-gram of this size; 0 disables."""
    max_new_tokens: int
    """Most tokens to generate per prompt."""
    min_new_tokens: int | None
    """Fewest tokens to generate per prompt."""
    ignore_eos: bool | None
    """Keep generating past end-of-sequence (fixed lengths)."""
    n: int | None
    """Completions per prompt."""
    num_beams: int | None
    """Beam search width; 1 disables."""
    length_penalty: float | None
    """Beam score length exponent (beam search only)."""
    early_stopping: bool | None
    """Stop beam search when enough beams finished."""
    seed: int
    """Random seed for sampling and synthetic prompts."""

class PyTorchConfig(Section):
    """Hugging Face transformers backend settings."""

    batch_size: int
    """Prompts per batch."""
    batching_strategy: str
    """static: batches in order; sorted_static: sorted by length to cut padding; dynamic /
    sorted_dynamic: batches filled up to max_tokens_per_batch.
    """
    max_tokens_per_batch: int | None
    """Token budget of a dynamic batch."""
    dtype: str | None
    """Weight and activation precision."""
    attn_implementation: str | None
    """Attention kernel."""
    torch_compile: bool | None
    """Compile the model with torch.compile."""
    torch_compile_mode: str | None
    """torch.compile mode."""
    torch_compile_backend: str | None
    """torch.compile backend."""
    load_in_4bit: bool | None
    """bitsandbytes 4-bit weights."""
    load_in_8bit: bool | None
    """bitsandbytes 8-bit weights (LLM.int8)."""
    bnb_4bit_compute_dtype: str | None
    """Compute dtype of 4-bit layers."""
    bnb_4bit_quant_type: str | None
    """4-bit data type."""
    bnb_4bit_use_double_quant: bool | None
    """Quantize the quantization constants too."""
    use_cache: bool | None
    """Keep a KV cache during generation."""
    cache_implementation: str | None
    """KV cache kind."""
    device_map: str | None
    """Where weights go: 'auto', 'cpu', 'cuda:0', ..."""
    max_memory: dict[str, Any] | None
    """Per-device memory limits, e.g. {'0': '20GiB', 'cpu': '30GiB'}."""
    low_cpu_mem_usage: bool | None
    """Load weights without a full extra copy in RAM."""
    assistant_model: str | None
    """A smaller draft model for assisted (speculative) decoding."""
    num_assistant_tokens: int | None
    """Draft tokens per assisted step."""
    prompt_lookup_num_tokens: int | None
    """Prompt-lookup decoding: n-gram candidates."""
    output_scores: bool | None
    """Return token scores (costs memory and time)."""
    revision: str | None
    """Model commit/branch, for reproducibility."""
    trust_remote_code: bool
    """Run code shipped in the model repository. Off unless you turn it on."""
    num_processes: int | None
    """Data-parallel processes (one per GPU)."""

class VLLMConfig(Section):
    """vLLM engine settings."""

    dtype: str | None
    """Model precision ('auto' takes the checkpoint's)."""
    max_num_seqs: int | None
    """Most sequences in one scheduler step."""
    max_num_batched_tokens: int | None
    """Most tokens in one scheduler step."""
    max_model_len: int | None
    """Context length (prompt + output)."""
    gpu_memory_utilization: float | None
    """Share of GPU memory vLLM may take."""
    kv_cache_memory_bytes: int | None
    """KV cache size in bytes (instead of a share)."""
    swap_space: float | None
    """CPU swap space per GPU."""
    cpu_offload_gb: float | None
    """Weights offloaded to CPU memory."""
    block_size: int | None
    """KV cache block size in tokens."""
    kv_cache_dtype: str | None
    """KV cache precision."""
    enforce_eager: bool | None
    """Disable CUDA graphs."""
    enable_chunked_prefill: bool | None
    """Split long prefills into chunks."""
    enable_prefix_caching: bool | None
    """Reuse KV blocks of shared prefixes."""
    tensor_parallel_size: int | None
    """GPUs per tensor-parallel group."""
    pipeline_parallel_size: int | None
    """Pipeline stages."""
    disable_custom_all_reduce: bool | None
    """Use NCCL all-reduce only."""
    quantization: str | None
    """Weight quantization method."""
    speculative_model: str | None
    """Draft model for speculative decoding."""
    num_speculative_tokens: int | None
    """Draft tokens per step."""
    compilation_config: dict[str, Any] | None
    """vLLM compilation settings (dict, or {'level': n})."""
    attention_backend: str | None
    """Attention backend (vLLM picks one when unset)."""
    flash_attn_version: int | None
    """FlashAttention version for FLASH_ATTN."""
    trust_remote_code: bool
    """Run code shipped in the model repository."""
    revision: str | None
    """Model commit/branch."""

class TensorRTConfig(Section):
    """TensorRT-LLM engine settings."""

    dtype: str | None
    """Engine precision."""
    max_batch_size: int | None
    """Largest batch the engine is built for."""
    max_input_len: int | None
    """Longest prompt the engine is built for."""
    max_seq_len: int | None
    """Longest prompt + output the engine is built for."""
    max_num_tokens: int | None
    """Most tokens in one engine step."""
    tp_size: int | None
    """Tensor-parallel GPUs."""
    pp_size: int | None
    """Pipeline-parallel stages."""
    quantization: str | None
    """Quantization algorithm."""
    kv_cache_dtype: str | None
    """KV cache precision."""
    kv_cache_free_gpu_memory_fraction: float | None
    """Share of free GPU memory for the KV cache."""
    enable_kv_cache_reuse: bool | None
    """Reuse KV blocks across requests."""
    builder_opt_level: int | None
    """TensorRT builder optimisation level."""
    engine_dir: str | None
    """Cache directory for built engines."""

class WarmupConfig(Section):
    """Warmup passes and the thermal floor."""

    runs: int | None
    """Warmup passes before measuring (discarded). Unset: the profile's."""
    adaptive: bool | None
    """Keep warming up until latency settles (CV under cv_threshold)."""
    cv_threshold: float
    """Latency coefficient of variation that counts as settled."""
    window: int
    """Rolling window of passes for the CV."""
    max_runs: int
    """Cap on adaptive warmup passes."""
    thermal_floor_s: float | None
    """Wait after warmup before measuring (the sampler keeps recording). Unset: the profile's."""

class BaselineConfig(Section):
    """Idle power baseline."""

    seconds: float
    """Idle power measured for this long before the run; 0 = none."""
    cache_ttl_s: float
    """How long a measured baseline is reused."""
    max_spread: float
    """Baseline too noisy to subtract when its std exceeds this share of its mean."""

class StudyConfig(Section):
    """Cycles and order of a study (sweep)."""

    cycles: int
    """Repeats of the whole grid."""
    order: str
    """Cycle order: sequential (A A B B), interleaved (A B A B), shuffled."""
    gap_s: float
    """Pause between configurations."""
    cycle_gap_s: float
    """Pause between cycles."""
    cold_start: bool
    """A fresh process for every run (no model reuse)."""

class DatasetConfig(Section):
    """Synthetic prompts and prompt order."""

    count: int
    """Synthetic prompts to make."""
    input_len: int
    """Synthetic prompt length, exact in the model's tokens."""
    output_len: int
    """Synthetic output length (sets max/min_new_tokens)."""
    order: str
    """Order across prompt sets."""
