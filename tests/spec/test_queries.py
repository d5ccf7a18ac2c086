"""The introspection queries read the table and answer the questions the seed's did."""

from html import escape

import pytest

from llem import spec
from llem.errors import UnknownNameError


def test_decoder_support_follows_the_engines():
    support = spec.decoder_param_support()
    assert {"min_p", "min_new_tokens", "typical_p", "do_sample"} <= set(support["pytorch"])
    assert {"min_p", "min_new_tokens", "presence_penalty", "ignore_eos"} <= set(support["vllm"])
    assert "typical_p" not in support["vllm"] and "no_repeat_ngram_size" not in support["vllm"]
    assert "early_stopping" not in support["vllm"]
    assert {"min_p", "no_repeat_ngram_size", "early_stopping"} <= set(support["tensorrt"])


def test_backend_specific_params_are_the_sections():
    bsp = spec.backend_specific_params()
    assert set(bsp) == {"pytorch", "vllm", "tensorrt"}
    assert all(p.startswith("pytorch.") for p in bsp["pytorch"])
    assert "vllm.gpu_memory_utilization" in bsp["vllm"] and "tensorrt.engine_dir" in bsp["tensorrt"]
    assert len(bsp["pytorch"]) >= 25


def test_gpu_capability_ladder():
    at9 = spec.params_requiring_gpu_capability(9.0)
    at8 = spec.params_requiring_gpu_capability(8.0)
    assert "pytorch.attn_implementation=flash_attention_3" in at9["hopper"]
    assert "pytorch.attn_implementation=flash_attention_2" in at9["ampere"]
    assert set(at8) == {"ampere"}
    assert spec.params_requiring_gpu_capability(7.5) == {}


def test_mutual_exclusions_come_from_the_rules():
    mx = spec.mutual_exclusions()
    assert mx["pytorch.load_in_4bit"] == ["pytorch.load_in_8bit"]
    assert "pytorch.torch_compile" in mx["pytorch.torch_compile_mode"]
    assert "vllm.num_speculative_tokens" in mx["vllm.speculative_model"]


def test_skip_conditions_and_validation_rules():
    skips = spec.param_skip_conditions()
    assert "pytorch.num_processes" in skips and "decoder.temperature" in skips
    rules = spec.validation_rules()
    seed_numbers = {r["seed_rule"] for r in rules if r["seed_rule"]}
    assert seed_numbers == set(range(1, 9))
    assert all(r["reason"] and r["fix"] for r in rules)


def test_capabilities_and_precisions_agree():
    caps = spec.backend_capabilities()
    assert caps["vllm"]["float32"].level == "yes"  # the seed contradicted itself here
    assert spec.precisions("vllm") == ("float32", "float16", "bfloat16")
    assert "float32" not in spec.precisions("tensorrt")
    for backend in spec.BACKENDS:
        dtype_choices = set(spec.param(f"{backend}.dtype").choices) - {"auto"}
        assert set(spec.precisions(backend)) <= dtype_choices


def test_matrix_markdown_and_html_cover_every_capability():
    md = spec.capability_matrix_markdown()
    html = spec.capability_matrix_html(highlight_cc=8.0, highlight=True)
    for cap in spec.CAPABILITIES:
        assert f"| {cap.display} |" in md
        assert cap.display in html
    # FlashAttention-3 is dimmed at 8.0, worded as the tier (no "this GPU" for a plan)
    fa3 = html[html.index("FlashAttention-3"):].split("</tr>")[0]
    assert "not on tier ampere" in fa3 and "not here" in fa3
    assert "not on this GPU" not in html
    at_t4 = spec.capability_matrix_html(highlight_cc=7.5, highlight=True, where="the target 'T4'")
    assert escape("not on the target 'T4'") in at_t4


def test_matrix_on_a_cpu_says_what_a_cpu_runs():
    md = spec.capability_matrix_markdown(cc=None, at_tier=True)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:4] for line in md.splitlines()[2:]}
    pytorch, vllm, tensorrt = rows["bfloat16"]
    assert pytorch.startswith("yes") and vllm.startswith("not here") and tensorrt.startswith("not here")
    assert "needs Linux and an NVIDIA GPU" in vllm
    assert spec.capability_at("flash_attention_2", "pytorch", None)[0] == "not here"
    assert spec.capability_at("flash_attention_2", "pytorch", 8.0)[0] == "yes"
    assert spec.capability_at("float32", "tensorrt", 9.0)[0] == "no"


def test_aliases_resolve_and_unknowns_suggest():
    assert spec.resolve_path("pytorch.precision") == ("pytorch.dtype", "pytorch.precision")
    assert spec.resolve_path("tensorrt.max_output_len")[0] == "tensorrt.max_seq_len"
    with pytest.raises(UnknownNameError, match="Did you mean.*'pytorch.batch_size'"):
        spec.resolve_path("pytorch.batchsize")
    with pytest.raises(UnknownNameError, match="no section"):
        spec.resolve_path("nosuch.x")


def test_passthrough_collisions_name_the_field():
    assert spec.passthrough_collisions("vllm", {"load": {"max_num_seqs": 8}}) == {
        "max_num_seqs": "vllm.max_num_seqs"}
    assert spec.passthrough_collisions("vllm", {"generate": {"max_tokens": 8}}) == {
        "max_tokens": "decoder.max_new_tokens"}
    assert spec.passthrough_collisions("pytorch", {"generate": {"guidance_scale": 2}}) == {}


@pytest.mark.parametrize("target,cc,tier", [
    ("cpu", None, "cpu"), ("T4", 7.5, "volta"), ("NVIDIA A100-SXM4-80GB", 8.0, "ampere"),
    ("RTX 4090", 8.9, "ada"), ("H100", 9.0, "hopper"), ("8.6", 8.6, "ampere"), (6.1, 6.1, "legacy"),
])
def test_targets_and_tiers(target, cc, tier):
    assert spec.parse_target(target) == cc
    assert spec.tier_for(cc).name == tier


def test_unknown_target_says_what_is_accepted():
    with pytest.raises(ValueError, match="compute capability as a number"):
        spec.parse_target("Voodoo3")


def test_every_gate_has_a_reason_and_an_alternative():
    for item, gate in spec.gpu_gates():
        assert gate.reason, item
        assert gate.alternative or gate.package, item
