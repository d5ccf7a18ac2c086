"""Every cross-field rule: the refused combination and the accepted one next to it."""

import warnings

import pytest

from llem import spec
from llem.config import ExperimentConfig
from llem.errors import ConfigError

# rule id -> (a config the rule refuses, the nearest config it accepts)
ERRORS = {
    "4bit-and-8bit": (
        {"pytorch": {"load_in_4bit": True, "load_in_8bit": True}},
        {"pytorch": {"load_in_4bit": True, "load_in_8bit": False}},
    ),
    "compile-mode-needs-compile": (
        {"pytorch": {"torch_compile_mode": "max-autotune"}},
        {"pytorch": {"torch_compile": True, "torch_compile_mode": "max-autotune"}},
    ),
    "compile-backend-needs-compile": (
        {"pytorch": {"torch_compile_backend": "aot_eager", "torch_compile": False}},
        {"pytorch": {"torch_compile_backend": "aot_eager", "torch_compile": True}},
    ),
    "bnb_4bit_compute_dtype-needs-4bit": (
        {"pytorch": {"bnb_4bit_compute_dtype": "float32"}},
        {"pytorch": {"bnb_4bit_compute_dtype": "float32", "load_in_4bit": True}},
    ),
    "bnb_4bit_quant_type-needs-4bit": (
        {"pytorch": {"bnb_4bit_quant_type": "nf4", "load_in_8bit": True}},
        {"pytorch": {"bnb_4bit_quant_type": "nf4", "load_in_4bit": True}},
    ),
    "bnb_4bit_use_double_quant-needs-4bit": (
        {"pytorch": {"bnb_4bit_use_double_quant": True}},
        {"pytorch": {"bnb_4bit_use_double_quant": True, "load_in_4bit": True}},
    ),
    "cache-implementation-needs-cache": (
        {"pytorch": {"cache_implementation": "static", "use_cache": False}},
        {"pytorch": {"cache_implementation": "static", "use_cache": True}},
    ),
    "backend-section-mismatch": (
        {"backend": "vllm", "pytorch": {"batch_size": 4}},
        {"backend": "vllm", "vllm": {"max_num_seqs": 4}},
    ),
    "passthrough-collision": (
        {"passthrough": {"generate": {"top_k": 5}}},
        {"passthrough": {"generate": {"guidance_scale": 1.5}}},
    ),
    "unsupported-precision": (
        {"backend": "tensorrt", "tensorrt": {"dtype": "float32"}},
        {"backend": "tensorrt", "tensorrt": {"dtype": "float16"}},
    ),
    "vllm-no-bnb-flags": (
        {"backend": "vllm", "vllm": {"load_in_4bit": True}},
        {"backend": "vllm", "vllm": {"quantization": "bitsandbytes"}},
    ),
    "assistant-and-prompt-lookup": (
        {"pytorch": {"assistant_model": "tiny-random-llama", "prompt_lookup_num_tokens": 3}},
        {"pytorch": {"prompt_lookup_num_tokens": 3}},
    ),
    "beams-with-assistant": (
        {"decoder": {"num_beams": 4}, "pytorch": {"assistant_model": "tiny-random-llama"}},
        {"decoder": {"num_beams": 1}, "pytorch": {"assistant_model": "tiny-random-llama"}},
    ),
    "min-above-max-new-tokens": (
        {"decoder": {"min_new_tokens": 64, "max_new_tokens": 32}},
        {"decoder": {"min_new_tokens": 32, "max_new_tokens": 32}},
    ),
    "greedy-temperature-with-sampling": (
        {"decoder": {"temperature": 0.0, "do_sample": True}},
        {"decoder": {"temperature": 0.0, "do_sample": False}},
    ),
    "vllm-speculative-needs-tokens": (
        {"backend": "vllm", "vllm": {"speculative_model": "small"}},
        {"backend": "vllm", "vllm": {"speculative_model": "small", "num_speculative_tokens": 5}},
    ),
    "vllm-kv-bytes-and-utilization": (
        {"backend": "vllm", "vllm": {"kv_cache_memory_bytes": 2**30, "gpu_memory_utilization": 0.8}},
        {"backend": "vllm", "vllm": {"kv_cache_memory_bytes": 2**30}},
    ),
    "vllm-beam-search-with-sampling": (
        {"backend": "vllm", "decoder": {"num_beams": 4, "do_sample": True}},
        {"backend": "vllm", "decoder": {"num_beams": 4}},
    ),
    "publication-baseline-bounds": (
        {"profile": "publication", "baseline": {"seconds": 2.0}},
        {"profile": "publication", "baseline": {"seconds": 5.0}},
    ),
    "beam-search-with-sampling-params": (
        {"backend": "tensorrt", "decoder": {"num_beams": 4, "do_sample": True}},
        {"backend": "tensorrt", "decoder": {"num_beams": 4}},
    ),
}


def test_every_error_rule_has_a_case():
    ids = {r.id for r in spec.RULES if r.severity == "error"}
    assert ids == set(ERRORS)


@pytest.mark.parametrize("rule_id", sorted(ERRORS))
def test_error_rule_refuses_and_accepts(rule_id):
    bad, good = ERRORS[rule_id]
    rule = next(r for r in spec.RULES if r.id == rule_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError) as err:
            ExperimentConfig.from_dict(bad)
        cfg = ExperimentConfig.from_dict(good)
    msg = str(err.value)
    assert rule.fix in msg, msg
    assert rule_id in msg
    assert cfg.violations() == []


@pytest.mark.parametrize("rule_id", sorted(k for k in ERRORS if k not in (
    "backend-section-mismatch", "vllm-no-bnb-flags")))
def test_error_rule_refuses_an_edit_and_keeps_the_old_value(rule_id):
    """The same combination reached by editing one field at a time is refused at the last edit."""
    bad, _ = ERRORS[rule_id]
    cfg = ExperimentConfig()
    flat = []
    for key, value in bad.items():
        if isinstance(value, dict) and key != "passthrough":
            flat += [(getattr(cfg, key), k, v) for k, v in value.items()]
        else:
            flat.append((cfg, key, value))
    with pytest.raises(ConfigError):
        for obj, name, value in flat:
            before = getattr(obj, name)
            setattr(obj, name, value)
    assert getattr(obj, name) == before


def test_update_is_atomic_across_sections():
    cfg = ExperimentConfig()
    cfg.update({"decoder.num_beams": 1, "pytorch.assistant_model": "tiny-random-llama"})
    with pytest.raises(ConfigError, match="beams-with-assistant"):
        cfg.update({"decoder.num_beams": 4, "pytorch.batch_size": 8})
    assert cfg.decoder.num_beams == 1 and cfg.pytorch.batch_size == 1
    # both changed together: valid as a unit even though each alone is not
    cfg.update({"decoder.num_beams": 4, "pytorch.assistant_model": None})
    assert cfg.decoder.num_beams == 4 and cfg.pytorch.assistant_model is None


def test_update_turns_two_linked_fields_on_together():
    cfg = ExperimentConfig()
    with pytest.raises(ConfigError):
        cfg.pytorch.bnb_4bit_quant_type = "nf4"
    cfg.pytorch.update(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    assert cfg.pytorch.bnb_4bit_quant_type == "nf4"


SKIPS = {
    "sampling-params-greedy": ({"decoder": {"do_sample": False, "top_p": 0.9}}, {}, "decoder.top_p"),
    "sampling-params-model-greedy": ({"decoder": {"temperature": 0.7}}, {"model_greedy": True},
                                     "decoder.temperature"),
    "beam-params-single-beam": ({"decoder": {"length_penalty": 2.0}}, {}, "decoder.length_penalty"),
    "prompt-lookup-with-beams": ({"decoder": {"num_beams": 2}, "pytorch": {"prompt_lookup_num_tokens": 3}},
                                 {}, "pytorch.prompt_lookup_num_tokens"),
    "assistant-tokens-without-assistant": ({"pytorch": {"num_assistant_tokens": 4}}, {},
                                           "pytorch.num_assistant_tokens"),
    "token-budget-static-batching": ({"pytorch": {"max_tokens_per_batch": 256}}, {},
                                     "pytorch.max_tokens_per_batch"),
    "multi-process-needs-gpus": ({"pytorch": {"num_processes": 2}}, {"gpu_count": 1},
                                 "pytorch.num_processes"),
    "flash-attention-2-needs-package": ({"pytorch": {"attn_implementation": "flash_attention_2"}},
                                        {"packages": {"flash_attn": False}},
                                        "pytorch.attn_implementation"),
    "flash-attention-needs-gpu": ({"pytorch": {"attn_implementation": "flash_attention_3"}},
                                  {"cuda": False}, "pytorch.attn_implementation"),
    "flash-attention-needs-gpu-weights": ({"pytorch": {"attn_implementation": "flash_attention_2",
                                                       "device_map": "cpu"}},
                                          {}, "pytorch.attn_implementation"),
    "flash-attention-needs-half-precision": ({"pytorch": {"attn_implementation": "flash_attention_2",
                                                          "dtype": "float32"}},
                                             {}, "pytorch.attn_implementation"),
    "flash-attention-needs-half-precision-weights": ({"pytorch": {"attn_implementation": "flash_attention_3"}},
                                                     {"default_dtype": "float32"},
                                                     "pytorch.attn_implementation"),
    "flash-attention-3-needs-hopper": ({"pytorch": {"attn_implementation": "flash_attention_3"}},
                                       {"cc": 8.0}, "pytorch.attn_implementation"),
    "flash-attention-2-needs-ampere": ({"pytorch": {"attn_implementation": "flash_attention_2"}},
                                       {"cc": 7.5}, "pytorch.attn_implementation"),
    "flash-attention-3-needs-package": ({"pytorch": {"attn_implementation": "flash_attention_3"}},
                                        {"packages": {"flash_attn_interface": False}},
                                        "pytorch.attn_implementation"),
    "torch-compile-may-fail": ({"pytorch": {"torch_compile": True}}, {"compile_failed": True},
                               "pytorch.torch_compile"),
    "fp8-needs-ampere": ({"backend": "vllm", "vllm": {"quantization": "fp8"}}, {"cc": 7.5},
                         "vllm.quantization"),
    "awq-gptq-need-prequantized": ({"backend": "vllm", "vllm": {"quantization": "awq"}},
                                   {"model_prequantized": False}, "vllm.quantization"),
    "bnb-needs-package": ({"pytorch": {"load_in_8bit": True}}, {"packages": {"bitsandbytes": False}},
                          "pytorch.load_in_8bit"),
    "prompt-lookup-needs-overlap": ({"pytorch": {"prompt_lookup_num_tokens": 3}},
                                    {"prompt_overlap": False}, "pytorch.prompt_lookup_num_tokens"),
}


def test_every_skip_rule_has_a_case():
    assert {r.id for r in spec.RULES if r.severity == "skip"} == set(SKIPS)


@pytest.mark.parametrize("rule_id", sorted(SKIPS))
def test_skip_rule_reports_the_field_with_its_reason(rule_id):
    data, env, path = SKIPS[rule_id]
    rule = next(r for r in spec.RULES if r.id == rule_id)
    cfg = ExperimentConfig.from_dict(data)  # a skip condition never refuses
    skipped = cfg.skipped(env)
    assert path in skipped and skipped[path].startswith(rule.reason)


def test_skip_rules_need_their_environment_fact():
    cfg = ExperimentConfig.from_dict({"pytorch": {"num_processes": 2}})
    assert cfg.skipped() == {}  # the GPU count is unknown: nothing is claimed
    assert cfg.skipped({"gpu_count": 2}) == {}


def test_unset_fields_are_never_reported_skipped():
    cfg = ExperimentConfig.from_dict({"decoder": {"do_sample": False}})
    assert cfg.skipped() == {}


def test_validate_lists_every_violation():
    cfg = ExperimentConfig()
    cfg.validate()
    # only reachable by bypassing the edit-time checks, e.g. a config built by a plugin
    cfg.pytorch._trait_values.update(load_in_4bit=True, load_in_8bit=True, torch_compile_mode="default")
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert "4bit-and-8bit" in str(err.value) and "compile-mode-needs-compile" in str(err.value)


def test_decoder_field_the_backend_does_not_take_is_refused_when_given():
    with pytest.raises(ConfigError, match="decoder.typical_p is not supported by the vllm backend"):
        ExperimentConfig.from_dict({"backend": "vllm", "decoder": {"typical_p": 0.9}})
    cfg = ExperimentConfig(backend="vllm")
    with pytest.raises(ConfigError, match="supported by: pytorch"):
        cfg.decoder.no_repeat_ngram_size = 3


def test_switching_backend_resets_what_the_new_one_does_not_take_with_a_note():
    cfg = ExperimentConfig()
    cfg.decoder.typical_p = 0.9
    cfg.backend = "vllm"
    assert cfg.decoder.typical_p is None
    assert any("reset decoder.typical_p" in n for n in cfg.notes)


def test_switching_backend_into_a_refused_combination_is_refused():
    cfg = ExperimentConfig(decoder={"num_beams": 4, "do_sample": True})
    with pytest.raises(ConfigError, match="vllm-beam-search-with-sampling"):
        cfg.backend = "vllm"
    assert cfg.backend == "pytorch"
