"""LLenergyMeasure's config files load in llem (issue 13, item 14).

Every other name loads under llem's name with an AliasWarning and a note; what llem refuses
(an empty model, a pass-through key named like a setting) is refused with the fix.
"""

from __future__ import annotations

import textwrap
import warnings

import pytest
from click.testing import CliRunner

from llem import spec
from llem.backends.pytorch.loading import gpu_index_keys
from llem.config import AliasWarning, ExperimentConfig
from llem.errors import ConfigError, UnknownNameError

UPSTREAM_PYTORCH = textwrap.dedent("""\
    model: tiny-random-llama
    backend: pytorch
    precision: bf16
    n: 4
    max_output_tokens: 16
    random_seed: 7
    dataset: qa-short
    passthrough_kwargs:
      load: {attn_implementation_hint: 1}
    energy:
      backend: estimate
    lora:
      adapter_path: /tmp/some-adapter
      merge_weights: true
    """)

UPSTREAM_VLLM = textwrap.dedent("""\
    model: tiny-random-llama
    backend: vllm
    precision: fp16
    vllm:
      max_num_seqs: 8
      attention:
        backend: FLASH_ATTN
        flash_version: 2
      sampling:
        min_p: 0.1
        max_tokens: 32
        presence_penalty: 0.5
    """)


pytestmark = pytest.mark.filterwarnings("ignore::llem.config.AliasWarning")


def _load(text: str) -> tuple[ExperimentConfig, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = ExperimentConfig.from_yaml(text)
    return cfg, [str(w.message) for w in caught if issubclass(w.category, AliasWarning)]


def test_an_upstream_pytorch_config_loads_under_llems_names():
    cfg, warned = _load(UPSTREAM_PYTORCH)
    assert cfg.pytorch.dtype == "bfloat16"
    assert cfg.num_prompts == 4
    assert cfg.decoder.max_new_tokens == 16
    assert cfg.decoder.seed == 7
    assert cfg.prompts == "qa-short"
    assert cfg.passthrough == {"load": {"attn_implementation_hint": 1}}
    assert cfg.meter == "estimate"
    assert cfg.lora_adapter == "/tmp/some-adapter"
    assert cfg.lora_merge is True
    # one warning per other name, each naming how it was written and where it went
    for written, path in [("precision", "pytorch.dtype"), ("n", "experiment.num_prompts"),
                          ("max_output_tokens", "decoder.max_new_tokens"), ("random_seed", "decoder.seed"),
                          ("dataset", "experiment.prompts"), ("passthrough_kwargs", "experiment.passthrough"),
                          ("energy: {backend}", "experiment.meter"),
                          ("lora: {adapter_path}", "experiment.lora_adapter"),
                          ("lora: {merge_weights}", "experiment.lora_merge")]:
        assert any(f"{written!r}" in w and f"{path!r}" in w for w in warned), (written, warned)
        assert any(n.startswith(f"{written!r} loaded as {path!r}") for n in cfg.notes), (written, cfg.notes)
    assert any("'bf16'" in w and "'bfloat16'" in w for w in warned)
    assert "pytorch.dtype: 'bf16' loaded as 'bfloat16' (old spelling)" in cfg.notes


def test_an_upstream_vllm_config_with_nested_sections_loads():
    cfg, warned = _load(UPSTREAM_VLLM)
    assert cfg.vllm.dtype == "float16"
    assert cfg.vllm.max_num_seqs == 8
    assert cfg.vllm.attention_backend == "FLASH_ATTN"
    assert cfg.vllm.flash_attn_version == 2
    assert cfg.decoder.min_p == 0.1
    assert cfg.decoder.max_new_tokens == 32  # vLLM's own name, inside its sampling section
    assert cfg.decoder.presence_penalty == 0.5
    assert any("'vllm: {attention: {backend}}'" in w for w in warned), warned
    assert any("'vllm: {sampling: {min_p}}'" in w for w in warned), warned


@pytest.mark.parametrize("backend,path", [("pytorch", "pytorch.dtype"), ("vllm", "vllm.dtype"),
                                          ("tensorrt", "tensorrt.dtype")])
def test_top_level_precision_is_the_chosen_backends_dtype(backend, path):
    cfg, _ = _load(f"backend: {backend}\nprecision: fp16\n")
    assert cfg.get(path) == "float16"
    assert spec.resolve_path("experiment.precision", backend) == (path, "experiment.precision")


def test_precision_keeps_the_tables_rules():
    # the seed's rule 7 (TensorRT-LLM float32) still refuses, whatever the spelling
    with pytest.raises(ConfigError, match="float32"):
        ExperimentConfig.from_yaml("backend: tensorrt\nprecision: fp32\n")


def test_a_field_given_by_two_other_names_is_refused():
    with pytest.raises(ConfigError, match="given twice.*adapter_id.*adapter_path"):
        ExperimentConfig.from_yaml("lora: {adapter_id: a/b, adapter_path: /x}\n")
    with pytest.raises(ConfigError, match="given twice"):
        ExperimentConfig.from_yaml("max_output_tokens: 8\ndecoder: {max_new_tokens: 9}\n")


def test_the_dataset_section_still_takes_its_fields_and_the_seeds():
    cfg, _ = _load("dataset: {n_prompts: 5, count: 3}\n")
    assert cfg.num_prompts == 5 and cfg.dataset.count == 3
    cfg, _ = _load("dataset: {source: qa-short}\n")
    assert cfg.prompts == "qa-short"


def test_flatten_opens_nested_other_names_where_they_belong():
    flat = spec.flatten({"energy": {"backend": "nvml"}, "lora": {"adapter_id": "a/b"},
                         "vllm": {"attention": {"backend": "FLASHINFER"}}, "precision": "bf16",
                         "passthrough_kwargs": {"load": {"x": 1}}})
    assert flat == {"energy.backend": "nvml", "lora.adapter_id": "a/b",
                    "vllm.attention.backend": "FLASHINFER", "experiment.precision": "bf16",
                    "experiment.passthrough_kwargs": {"load": {"x": 1}}}
    cfg = ExperimentConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AliasWarning)
        cfg.update({**flat, "experiment.backend": "vllm"})
    assert (cfg.meter, cfg.vllm.attention_backend, cfg.vllm.dtype) == ("nvml", "FLASHINFER", "bfloat16")


def test_the_cli_validates_an_upstream_config_file(tmp_path):
    from llem.cli import cli

    path = tmp_path / "upstream.yaml"
    path.write_text(UPSTREAM_PYTORCH.replace("/tmp/some-adapter", str(tmp_path)))
    result = CliRunner().invoke(cli, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output


def test_an_empty_model_or_prompt_set_is_refused_with_the_fix():
    for field, text in [("experiment.model", "model: ''"), ("experiment.model", "model: '   '"),
                        ("experiment.prompts", "prompts: ''")]:
        with pytest.raises(ConfigError, match=rf"{field} cannot be an empty string.*Fix: give it a value"):
            ExperimentConfig.from_yaml(text)


def test_every_torch_compile_mode_is_taken():
    for mode in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        cfg = ExperimentConfig.from_dict({"pytorch": {"torch_compile": True, "torch_compile_mode": mode}})
        assert cfg.pytorch.torch_compile_mode == mode


@pytest.mark.parametrize("passthrough,field", [
    ({"load": {"model": "other"}}, "experiment.model"),
    ({"generate": {"repeats": 2}}, "experiment.repeats"),
    ({"load": {"torch_dtype": "float16"}}, "pytorch.dtype"),
])
def test_a_passthrough_key_named_like_any_setting_is_refused(passthrough, field):
    with pytest.raises(ConfigError, match=rf"'{field}'|field {field}"):
        ExperimentConfig.from_dict({"passthrough": passthrough})


def test_max_memory_gpu_keys_reach_accelerate_as_ints():
    # '0' after a JSON round trip is GPU 0; cpu and disk stay strings
    assert gpu_index_keys({"0": "20GiB", " 1 ": "20GiB", "cpu": "30GiB", "disk": "1TiB"}) == {
        0: "20GiB", 1: "20GiB", "cpu": "30GiB", "disk": "1TiB"}
    cfg = ExperimentConfig.from_json('{"pytorch": {"device_map": "auto", "max_memory": {"0": "1GiB"}}}')
    assert cfg.pytorch.max_memory == {"0": "1GiB"}  # the config keeps what was written


def test_params_of_an_unknown_backend_or_section_raise_with_the_known_names():
    with pytest.raises(UnknownNameError, match="Unknown backend 'nope'.*pytorch, tensorrt, vllm"):
        spec.params(backend="nope")
    with pytest.raises(UnknownNameError, match="Unknown section 'nope'.*decoder"):
        spec.params(section="nope")
    assert spec.params(section="decoder", backend="vllm")
