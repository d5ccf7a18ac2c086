"""Config objects: round trips, unknown keys, aliases, tier checks, presets and profiles."""

import json
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llem import spec
from llem.config import AliasWarning, ExperimentConfig, PyTorchConfig
from llem.errors import ConfigError, UnknownNameError

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def _full_config():
    return ExperimentConfig.from_dict({
        "model": "tiny-random-llama", "repeats": 2, "passthrough": {"load": {"foo": 1}},
        "decoder": {"temperature": 0.7, "top_p": 0.9, "do_sample": True, "max_new_tokens": 24},
        "pytorch": {"batch_size": 4, "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                    "max_memory": {"cpu": "8GiB"}},
        "warmup": {"adaptive": True}, "baseline": {"seconds": 5.0},
    })


def test_dict_yaml_json_round_trips():
    cfg = _full_config()
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert ExperimentConfig.from_yaml(cfg.to_yaml()) == cfg
    assert ExperimentConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["pytorch"]["bnb_4bit_quant_type"] == "nf4"
    assert cfg.copy() == cfg and cfg.copy() is not cfg


def test_files_round_trip(tmp_path):
    cfg = _full_config()
    for name in ("c.yaml", "c.json"):
        cfg.save(tmp_path / name)
        assert ExperimentConfig.load(tmp_path / name) == cfg
    with pytest.raises(ConfigError, match="does not exist"):
        ExperimentConfig.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ExperimentConfig.load(tmp_path / "bad.yaml")


def test_only_set_keeps_explicit_choices_apart_from_defaults():
    cfg = ExperimentConfig()
    assert "pytorch" not in cfg.to_dict(only_set=True)
    cfg.pytorch.batch_size = 1  # explicitly set to its default value
    assert cfg.to_dict(only_set=True)["pytorch"] == {"batch_size": 1}
    assert cfg.pytorch.explicit() == {"batch_size": 1}


def test_hash_is_stable_and_sensitive():
    a, b = _full_config(), _full_config()
    assert a.config_hash() == b.config_hash()
    b.pytorch.batch_size = 8
    assert a.config_hash() != b.config_hash()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate(path):
    cfg = ExperimentConfig.load(path)
    cfg.validate()
    if cfg.target_gpu:
        cfg.check_tier()
    assert ExperimentConfig.from_yaml(cfg.to_yaml()) == cfg


def test_one_example_per_backend():
    backends = {ExperimentConfig.load(p).backend for p in EXAMPLES}
    assert backends == set(spec.BACKENDS)


@pytest.mark.parametrize("data,match", [
    ({"modle": "x"}, "Did you mean.*'experiment.model'"),
    ({"pytorch": {"batchsize": 2}}, "Did you mean.*'pytorch.batch_size'"),
    ({"pytorhc": {"batch_size": 2}}, "Unknown section 'pytorhc'. Did you mean 'pytorch'"),
    ({"pytorch": {"pipeline_parallel_size": 2}}, "belongs to vllm, tensorrt|belongs to vllm"),
    ({"backend": "onnx"}, "must be one of 'pytorch', 'vllm', 'tensorrt'"),
    ({"decoder": 3}, "must be a mapping"),
    ({1: 2}, "keys must be strings"),
])
def test_bad_input_names_the_fix(data, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig.from_dict(data)


def test_seed_names_load_with_a_note_not_an_error():
    with pytest.warns(AliasWarning, match="old name of 'tensorrt.max_seq_len'"):
        cfg = ExperimentConfig.from_dict({"backend": "tensorrt", "tensorrt": {"max_output_len": 256}})
    assert cfg.tensorrt.max_seq_len == 256
    assert any("max_output_len" in n for n in cfg.notes)
    with pytest.warns(AliasWarning):
        assert ExperimentConfig.from_dict({"pytorch": {"num_beams": 3}}).decoder.num_beams == 3


def test_target_gpu_gates_edits_and_names_the_tier():
    cfg = ExperimentConfig(target_gpu="A100")
    cfg.pytorch.attn_implementation = "flash_attention_2"
    with pytest.raises(ConfigError, match=r"needs compute capability 9.0\+.*sdpa"):
        cfg.pytorch.attn_implementation = "flash_attention_3"
    with pytest.raises(ConfigError, match="target_gpu='T4' refused"):
        cfg.target_gpu = "T4"
    cfg.target_gpu = "H100"
    cfg.pytorch.attn_implementation = "flash_attention_3"
    with pytest.raises(ConfigError, match="Voodoo"):
        cfg.target_gpu = "Voodoo"


def test_check_tier_against_a_machine_or_target():
    cfg = ExperimentConfig(pytorch={"dtype": "bfloat16", "attn_implementation": "flash_attention_2"})
    cfg.check_tier("A100")
    with pytest.raises(ConfigError) as err:
        cfg.check_tier("T4")
    msg = str(err.value)
    assert "pytorch.dtype=bfloat16" in msg and "float16" in msg and "tier volta" in msg
    with pytest.raises(ConfigError, match="needs an NVIDIA GPU"):
        cfg.check_tier(machine_cc=None)  # a CPU-only machine
    assert cfg.tier_problems(9.0) == {}
    # bfloat16 alone runs on a CPU
    ExperimentConfig(pytorch={"dtype": "bfloat16"}).check_tier("cpu")


def test_presets_expand_and_explicit_fields_win():
    cfg = ExperimentConfig(decoder={"preset": "creative", "temperature": 0.5})
    d = cfg.resolved_decoder()
    assert d["temperature"] == 0.5 and d["top_p"] == 0.9 and d["repetition_penalty"] == 1.1
    assert cfg.decoder.preset == "creative"
    assert ExperimentConfig(decoder={"preset": "deterministic"}).resolved_decoder()["do_sample"] is False


def test_profiles_fill_unset_warmup_fields():
    assert ExperimentConfig().resolved_method()["warmup.runs"] == 1
    pub = ExperimentConfig(profile="publication").resolved_method()
    assert pub["warmup.runs"] == 5 and pub["warmup.thermal_floor_s"] == 60.0
    assert ExperimentConfig(profile="publication", warmup={"runs": 2}).resolved_method()["warmup.runs"] == 2


def test_standalone_section_validates_its_own_rules():
    sec = PyTorchConfig(load_in_4bit=True)
    with pytest.raises(ConfigError, match="4bit-and-8bit"):
        sec.load_in_8bit = True
    assert sec.load_in_8bit is None
    with pytest.raises(UnknownNameError):
        PyTorchConfig(batchsize=3)


def test_backend_section_property_and_get():
    cfg = ExperimentConfig(backend="vllm")
    assert cfg.backend_section is cfg.vllm
    assert cfg.get("model") == cfg.model and cfg.get("decoder.max_new_tokens") == 128
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cfg.get("vllm.max_num_seqs") is None


# ---- property: from_dict returns a config or raises llem's ConfigError, nothing else -----------
_paths = st.sampled_from([*spec.all_paths(), *spec.aliases(), "nosuch.x", "model", "decoder"])
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=12) | st.sampled_from(["float16", "bfloat16", "sdpa", "vllm", "tensorrt", "nf4"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_paths, _values, max_size=6))
def test_from_dict_returns_a_config_or_a_config_error(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = ExperimentConfig.from_dict(data)
        except ConfigError:
            return
    assert isinstance(cfg, ExperimentConfig)
    cfg.validate()
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["pytorch", "decoder", "vllm", "warmup"]),
                       st.dictionaries(st.text(max_size=20), _values, max_size=4), max_size=3))
def test_nested_sections_never_raise_anything_else(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ExperimentConfig.from_dict(data)
        except ConfigError:
            pass


def test_a_refused_update_tells_observers_about_the_rollback():
    cfg = ExperimentConfig()
    seen = []
    cfg.pytorch.observe(lambda ch: seen.append((ch["name"], ch["new"])), names=["load_in_4bit"])
    with pytest.raises(ConfigError):
        cfg.update({"pytorch.load_in_4bit": True, "pytorch.load_in_8bit": True})
    assert cfg.pytorch.load_in_4bit is None
    assert seen == [("load_in_4bit", True), ("load_in_4bit", None)]


def test_a_bad_target_given_with_other_fields_is_a_config_error():
    """Found by the hypothesis test: a gated field checked while target_gpu held an unparsed value."""
    for bad in ("0.0", False, []):
        with pytest.raises(ConfigError, match="target_gpu"):
            ExperimentConfig.from_dict({"target_gpu": bad, "pytorch.dtype": "bfloat16"})


def test_bounds_read_as_numbers_a_person_writes():
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(max_input_tokens=0)
    assert ">= 1 and <= 1,048,576" in str(e.value) and "e+" not in str(e.value)
