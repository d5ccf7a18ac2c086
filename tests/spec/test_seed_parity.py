"""Seed parity: each fact of the seed benchmark's parameter table, one test each.

The seed is the LLenergyMeasure phase summary in shared/seed/, restated in
shared/SEED-FACTS.md. A test here fails by name when llem drifts from a seed fact. Where
llem deliberately departs from the seed (because the seed was wrong), the test checks
llem's behaviour and says so in its name ("departs").
"""

import warnings

import pytest

from llem import spec
from llem.config import ExperimentConfig
from llem.errors import ConfigError

SEED_PYTORCH_PATHS = [
    "batch_size", "attn_implementation", "torch_compile", "torch_compile_mode", "torch_compile_backend",
    "load_in_4bit", "load_in_8bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_type",
    "bnb_4bit_use_double_quant", "use_cache", "cache_implementation", "num_beams", "early_stopping",
    "length_penalty", "no_repeat_ngram_size", "prompt_lookup_num_tokens", "device_map", "max_memory",
    "revision", "trust_remote_code", "num_processes",
]


def cfg(**data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ExperimentConfig.from_dict(data)


def refused(data, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match=match):
            ExperimentConfig.from_dict(data)


# ---- decoder parameters and per-backend support ----------------------------------------------

def test_seed_pytorch_decoder_support_is_contained():
    assert set(spec.decoder_param_support("seed")["pytorch"]) == {
        "temperature", "top_k", "top_p", "repetition_penalty", "min_p", "min_new_tokens"}
    assert set(spec.decoder_param_support("seed")["pytorch"]) <= set(spec.decoder_param_support()["pytorch"])


def test_seed_vllm_decoder_support_is_contained():
    assert set(spec.decoder_param_support("seed")["vllm"]) == {
        "temperature", "top_k", "top_p", "repetition_penalty"}
    assert set(spec.decoder_param_support("seed")["vllm"]) <= set(spec.decoder_param_support()["vllm"])


def test_seed_tensorrt_decoder_support_is_contained():
    assert set(spec.decoder_param_support("seed")["tensorrt"]) == {"temperature", "top_k", "top_p"}
    assert {"temperature", "top_k", "top_p"} <= set(spec.decoder_param_support()["tensorrt"])


def test_departs_vllm_takes_min_p_and_min_tokens():
    c = cfg(backend="vllm", decoder={"min_p": 0.05, "min_new_tokens": 4})
    assert c.decoder.min_p == 0.05
    assert spec.param("decoder.min_new_tokens").engine_names["vllm"] == "min_tokens"


def test_temperature_bounds_0_to_2():
    cfg(decoder={"temperature": 0.0, "do_sample": False})
    cfg(decoder={"temperature": 2.0})
    refused({"decoder": {"temperature": 2.01}}, "temperature must be")
    refused({"decoder": {"temperature": -0.1}}, "temperature must be")


def test_temperature_zero_means_greedy():
    refused({"decoder": {"temperature": 0.0, "do_sample": True}}, "temperature 0 means greedy")
    assert spec.PRESETS["deterministic"]["temperature"] == 0.0


def test_top_k_zero_disables_and_negative_refused():
    assert cfg(decoder={"top_k": 0}).decoder.top_k == 0
    refused({"decoder": {"top_k": -1}}, "top_k must be")


def test_top_p_bounds_0_to_1():
    cfg(decoder={"top_p": 1.0})
    refused({"decoder": {"top_p": 1.5}}, "top_p must be")


def test_repetition_penalty_bounds():
    cfg(decoder={"repetition_penalty": 0.1})
    cfg(decoder={"repetition_penalty": 10.0})
    refused({"decoder": {"repetition_penalty": 0.05}}, "repetition_penalty must be")
    refused({"decoder": {"repetition_penalty": 10.5}}, "repetition_penalty must be")


def test_min_p_bounds_and_unset_default():
    assert ExperimentConfig().decoder.min_p is None
    refused({"decoder": {"min_p": 1.2}}, "min_p must be")


def test_min_new_tokens_at_least_1_and_unset_default():
    assert ExperimentConfig().decoder.min_new_tokens is None
    refused({"decoder": {"min_new_tokens": 0}}, "min_new_tokens must be")


def test_seed_library_defaults_are_recorded():
    assert spec.param("decoder.temperature").library_default["pytorch"] == 1.0
    assert spec.param("decoder.top_k").library_default["pytorch"] == 50
    assert spec.param("decoder.top_p").library_default["pytorch"] == 1.0
    assert spec.param("decoder.repetition_penalty").library_default["pytorch"] == 1.0


# ---- presets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset,fields", [
    ("deterministic", {"temperature": 0.0, "do_sample": False}),
    ("standard", {"temperature": 1.0, "top_p": 0.95}),
    ("creative", {"temperature": 0.8, "top_p": 0.9, "repetition_penalty": 1.1}),
    ("factual", {"temperature": 0.3}),
])
def test_preset_expands_to_the_seed_fields(preset, fields):
    d = cfg(decoder={"preset": preset}).resolved_decoder()
    for k, v in fields.items():
        assert d[k] == v


def test_explicit_field_overrides_preset():
    assert cfg(decoder={"preset": "factual", "temperature": 0.9}).resolved_decoder()["temperature"] == 0.9


# ---- the 22 PyTorch field paths ------------------------------------------------------------------

@pytest.mark.parametrize("name", SEED_PYTORCH_PATHS)
def test_seed_pytorch_field_has_a_home(name):
    path = spec.resolve_path(f"pytorch.{name}")[0]
    assert spec.param(path)


def test_seed_pytorch_fields_are_22():
    assert len(SEED_PYTORCH_PATHS) == 22


@pytest.mark.parametrize("name", [n for n in SEED_PYTORCH_PATHS if n not in ("batch_size", "trust_remote_code")])
def test_seed_pytorch_field_can_be_left_unset(name):
    path = spec.resolve_path(f"pytorch.{name}")[0]
    section, field = path.split(".")
    assert getattr(getattr(ExperimentConfig(), section), field) is None


def test_attn_implementation_values():
    assert set(spec.param("pytorch.attn_implementation").choices) == {
        "sdpa", "flash_attention_2", "flash_attention_3", "eager"}


def test_torch_compile_mode_values():
    # the seed's three, and every mode the installed torch names (docs/seed.md says why)
    choices = set(spec.param("pytorch.torch_compile_mode").choices)
    assert {"default", "reduce-overhead", "max-autotune"} <= choices
    torch = pytest.importorskip("torch")
    assert set(torch._inductor.list_mode_options()) <= choices


def test_torch_compile_backend_includes_inductor():
    assert "inductor" in spec.param("pytorch.torch_compile_backend").choices


def test_bnb_4bit_compute_dtype_values():
    assert set(spec.param("pytorch.bnb_4bit_compute_dtype").choices) == {"float16", "bfloat16", "float32"}


def test_bnb_4bit_quant_type_values():
    assert set(spec.param("pytorch.bnb_4bit_quant_type").choices) == {"nf4", "fp4"}


def test_cache_implementation_values():
    assert {"static", "offloaded_static", "sliding_window"} <= set(spec.param("pytorch.cache_implementation").choices)


def test_num_beams_and_no_repeat_ngram_bounds():
    refused({"decoder": {"num_beams": 0}}, "num_beams must be")
    assert cfg(decoder={"no_repeat_ngram_size": 0}).decoder.no_repeat_ngram_size == 0
    refused({"decoder": {"no_repeat_ngram_size": -1}}, "no_repeat_ngram_size must be")


def test_prompt_lookup_and_num_processes_at_least_1():
    refused({"pytorch": {"prompt_lookup_num_tokens": 0}}, "prompt_lookup_num_tokens must be")
    refused({"pytorch": {"num_processes": 0}}, "num_processes must be")


def test_max_memory_takes_per_device_limits():
    assert cfg(pytorch={"max_memory": {"0": "20GiB", "cpu": "30GiB"}}).pytorch.max_memory["cpu"] == "30GiB"


def test_departs_trust_remote_code_is_off_by_default():
    assert ExperimentConfig().pytorch.trust_remote_code is False
    assert cfg(pytorch={"trust_remote_code": True}).pytorch.trust_remote_code is True


# ---- vLLM and TensorRT-LLM sections --------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "vllm.gpu_memory_utilization", "vllm.swap_space", "vllm.cpu_offload_gb", "vllm.block_size",
    "vllm.kv_cache_dtype", "vllm.enforce_eager", "vllm.enable_chunked_prefill", "vllm.max_num_seqs",
    "vllm.max_num_batched_tokens", "vllm.max_model_len", "vllm.tensor_parallel_size",
    "vllm.pipeline_parallel_size", "vllm.enable_prefix_caching", "vllm.quantization",
    "vllm.speculative_model", "vllm.num_speculative_tokens", "vllm.disable_custom_all_reduce",
    "vllm.kv_cache_memory_bytes", "vllm.compilation_config", "vllm.attention.backend",
    "vllm.attention.flash_version", "vllm.sampling.presence_penalty", "vllm.sampling.frequency_penalty",
    "vllm.sampling.ignore_eos", "vllm.sampling.n",
])
def test_seed_vllm_field_has_a_home(path):
    assert spec.param(path)


def test_vllm_penalties_bounds():
    cfg(backend="vllm", decoder={"presence_penalty": -2.0, "frequency_penalty": 2.0})
    refused({"backend": "vllm", "decoder": {"presence_penalty": 2.5}}, "presence_penalty must be")


def test_vllm_kv_cache_dtype_values():
    assert {"auto", "fp8", "fp8_e5m2", "fp8_e4m3"} <= set(spec.param("vllm.kv_cache_dtype").choices)


def test_vllm_quantization_values_cover_the_seed():
    assert {"awq", "gptq", "fp8", "bitsandbytes"} <= set(spec.param("vllm.quantization").choices)


def test_departs_vllm_gpu_memory_utilization_accepts_1():
    assert cfg(backend="vllm", vllm={"gpu_memory_utilization": 1.0}).vllm.gpu_memory_utilization == 1.0
    refused({"backend": "vllm", "vllm": {"gpu_memory_utilization": 0.0}}, "gpu_memory_utilization must be")


def test_vllm_beam_search_fields_have_a_home():
    assert spec.param("decoder.num_beams").engine_names["vllm"] == "beam_width"
    assert "vllm" in spec.param("decoder.length_penalty").backends


@pytest.mark.parametrize("path", ["tensorrt.max_batch_size", "tensorrt.tp_size", "tensorrt.quantization",
                                  "tensorrt.engine_path"])
def test_seed_tensorrt_field_has_a_home(path):
    assert spec.param(path)


def test_tensorrt_quantization_values():
    assert {"int8_sq", "int4_awq", "fp8"} <= set(spec.param("tensorrt.quantization").choices)


def test_tensorrt_tp_size_at_least_1():
    refused({"backend": "tensorrt", "tensorrt": {"tp_size": 0}}, "tp_size must be")


# ---- mutual exclusions ---------------------------------------------------------------------------

def test_exclusion_4bit_with_8bit():
    refused({"pytorch": {"load_in_4bit": True, "load_in_8bit": True}}, "4-bit or in 8-bit")


def test_exclusion_compile_mode_without_compile():
    refused({"pytorch": {"torch_compile_mode": "default"}}, "torch_compile_mode has no effect")


def test_exclusion_compile_backend_without_compile():
    refused({"pytorch": {"torch_compile_backend": "inductor"}}, "torch_compile_backend has no effect")


@pytest.mark.parametrize("field", ["bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant"])
def test_exclusion_bnb_4bit_field_without_4bit(field):
    value = {"bnb_4bit_compute_dtype": "float16", "bnb_4bit_quant_type": "nf4",
             "bnb_4bit_use_double_quant": True}[field]
    refused({"pytorch": {field: value}}, f"{field} only configures 4-bit")


def test_exclusion_cache_implementation_with_use_cache_false():
    refused({"pytorch": {"cache_implementation": "static", "use_cache": False}}, "use_cache=False")


def test_exclusion_vllm_speculative_model_without_tokens():
    refused({"backend": "vllm", "vllm": {"speculative_model": "draft"}}, "num_speculative_tokens")


def test_exclusion_vllm_kv_bytes_with_utilization():
    refused({"backend": "vllm", "vllm": {"kv_cache_memory_bytes": 10**9, "gpu_memory_utilization": 0.5}},
            "kv_cache_memory_bytes")


def test_exclusion_vllm_beam_search_with_sampling():
    refused({"backend": "vllm", "decoder": {"num_beams": 2, "do_sample": True}}, "does not sample")


# ---- skip conditions ------------------------------------------------------------------------------

def test_skip_multi_process_needs_2_gpus():
    assert "pytorch.num_processes" in cfg(pytorch={"num_processes": 2}).skipped({"gpu_count": 1})


def test_skip_tensor_parallel_needs_2_gpus():
    assert "vllm.tensor_parallel_size" in cfg(backend="vllm", vllm={"tensor_parallel_size": 2}).skipped(
        {"gpu_count": 1})


def test_skip_flash_attention_2_needs_package():
    c = cfg(pytorch={"attn_implementation": "flash_attention_2"})
    assert "flash-attn" in c.skipped({"packages": {"flash_attn": False}})["pytorch.attn_implementation"]


def test_skip_flash_attention_3_needs_hopper():
    c = cfg(pytorch={"attn_implementation": "flash_attention_3"})
    assert "Hopper" in c.skipped({"cc": 8.9})["pytorch.attn_implementation"]
    assert c.skipped({"cc": 9.0}) == {}


def test_skip_torch_compile_failure_is_non_fatal():
    c = cfg(pytorch={"torch_compile": True})
    assert "non-fatal" in c.skipped({"compile_failed": True})["pytorch.torch_compile"]


def test_skip_fp8_needs_ampere():
    assert "vllm.quantization" in cfg(backend="vllm", vllm={"quantization": "fp8"}).skipped({"cc": 7.5})


def test_skip_awq_gptq_need_prequantized_models():
    reason = cfg(backend="vllm", vllm={"quantization": "gptq"}).skipped({"model_prequantized": False})
    assert "Qwen2.5-0.5B-Instruct-GPTQ-Int4" in reason["vllm.quantization"]
    assert spec.PREQUANTIZED_TEST_MODELS == {
        "awq": "Qwen/Qwen2.5-0.5B-Instruct-AWQ", "gptq": "Qwen/Qwen2.5-0.5B-Instruct-GPTQ-Int4"}


def test_skip_bitsandbytes_needs_the_package():
    c = cfg(pytorch={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"})
    skipped = c.skipped({"packages": {"bitsandbytes": False}})
    assert {"pytorch.load_in_4bit", "pytorch.bnb_4bit_quant_type"} <= set(skipped)


def test_skip_prompt_lookup_needs_overlap():
    assert "pytorch.prompt_lookup_num_tokens" in cfg(pytorch={"prompt_lookup_num_tokens": 4}).skipped(
        {"prompt_overlap": False})


# ---- GPU tiers -----------------------------------------------------------------------------------

def test_tier_ampere_list():
    ampere = spec.params_requiring_gpu_capability(8.0)["ampere"]
    assert "pytorch.attn_implementation=flash_attention_2" in ampere
    assert "vllm.quantization=fp8" in ampere


def test_departs_tensorrt_fp8_needs_ada_not_ampere():
    assert "tensorrt.quantization=fp8" not in spec.params_requiring_gpu_capability(8.0).get("ampere", [])
    assert "tensorrt.quantization=fp8" in spec.params_requiring_gpu_capability(8.9)["ada"]


def test_tier_hopper_list_at_9():
    at9 = spec.params_requiring_gpu_capability(9.0)
    assert "pytorch.attn_implementation=flash_attention_3" in at9["hopper"]
    assert "ampere" in at9


def test_below_9_no_hopper_rows():
    assert "hopper" not in spec.params_requiring_gpu_capability(8.9)


# ---- the 8 validation rules ---------------------------------------------------------------------

@pytest.mark.parametrize("number", range(1, 9))
def test_seed_rule_exists_with_reason_and_resolution(number):
    rules = [r for r in spec.validation_rules() if r["seed_rule"] == number]
    assert rules and all(r["reason"] and r["fix"] for r in rules)


def test_rule5_backend_section_must_match():
    refused({"backend": "tensorrt", "vllm": {"max_num_seqs": 2}}, "backend-section-mismatch")


def test_rule6_passthrough_collision():
    refused({"passthrough": {"load": {"device_map": "cpu"}}}, "pytorch.device_map")


def test_rule7_tensorrt_fp32_refused():
    refused({"backend": "tensorrt", "tensorrt": {"dtype": "float32"}}, "float16, bfloat16")


def test_rule8_vllm_bitsandbytes_flags_refused():
    refused({"backend": "vllm", "vllm": {"load_in_8bit": True}}, "no bitsandbytes 8-bit")


# ---- the 14 capability rows ----------------------------------------------------------------------

SEED_CAPS = {
    "tensor_parallel": ("no", "yes", "yes"),
    "data_parallel": ("yes", "no", "no"),
    "bnb_4bit": ("yes", "partial", "no"),
    "bnb_8bit": ("yes", "no", "no"),
    "native_quantization": ("no", "yes", "yes"),
    "float32": ("yes", "yes", "no"),
    "float16": ("yes", "yes", "yes"),
    "bfloat16": ("yes", "yes", "yes"),
    "prefix_caching": ("no", "yes", "yes"),
    "lora": ("yes", "partial", "partial"),
    "torch_compile": ("yes", "partial", "no"),
    "beam_search": ("yes", "yes", "yes"),
    "speculative_decoding": ("yes", "yes", "partial"),
    "static_kv_cache": ("yes", "no", "no"),
}


@pytest.mark.parametrize("name", sorted(SEED_CAPS))
def test_capability_row(name):
    caps = spec.backend_capabilities()
    got = tuple(caps[b][name].level for b in ("pytorch", "vllm", "tensorrt"))
    assert got == SEED_CAPS[name]


def test_seed_capability_rows_are_14():
    assert sum(c.seed_row for c in spec.CAPABILITIES) == 14 == len(SEED_CAPS)


def test_where_llem_departs_from_a_seed_capability_it_says_why():
    for c in spec.CAPABILITIES:
        if c.seed_support:
            for backend, level in c.seed_support.items():
                if c.support[backend].level != level:
                    assert c.support[backend].note, (c.name, backend)


def test_departs_one_answer_for_vllm_float32():
    assert spec.backend_capabilities()["vllm"]["float32"].level == "yes"
    assert "float32" in spec.precisions("vllm")
    cfg(backend="vllm", vllm={"dtype": "float32"})
