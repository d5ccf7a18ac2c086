"""Every row of the table: its trait exists, its default, its type, its choices and its bounds."""

import pytest

from llem import spec
from llem.config import (
    _SECTION_CLASSES,
    ExperimentConfig,
    InvalidValue,
    check_value,
)
from llem.errors import ConfigError

ROWS = spec.PARAMS
IDS = [p.path for p in ROWS]

_BAD_TYPE = {
    "int": ["3", 1.5, True],
    "float": ["0.5", True, [1]],
    "bool": [1, "yes", 0.0],
    "str": [3, ["a"]],
    "dict": ["a=b", [1]],
    "str_or_list": [3, [1, 2]],
    "enum": ["not-a-choice"],
}


def _section(cfg, row):
    return cfg if row.section == "experiment" else getattr(cfg, row.section)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_default_is_the_rows(row):
    cfg = ExperimentConfig()
    assert getattr(_section(cfg, row), row.name) == row.default


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_trait_is_tagged_with_its_row(row):
    cls = ExperimentConfig if row.section == "experiment" else _SECTION_CLASSES[row.section]
    trait = cls.class_traits()[row.name]
    assert trait.metadata["row"] is row
    assert trait.metadata["unit"] == row.unit
    assert trait.metadata["backends"] == row.backends
    assert trait.help == row.help


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_wrong_type_is_refused_naming_field_and_value(row):
    for bad in _BAD_TYPE[row.type]:
        with pytest.raises(InvalidValue) as err:
            check_value(row, bad)
        msg = str(err.value)
        assert row.path in msg
        assert "Fix" in msg or "Allowed" in msg or "one of" in msg


@pytest.mark.parametrize("row", [r for r in ROWS if r.choices], ids=[r.path for r in ROWS if r.choices])
def test_every_choice_is_accepted_and_near_misses_suggested(row):
    for choice in row.choices:
        assert check_value(row, choice) == choice
    first = row.choices[0]
    if isinstance(first, str) and len(first) > 3:
        with pytest.raises(InvalidValue, match="Did you mean"):
            check_value(row, first[:-1])


NUMERIC = [r for r in ROWS if r.type in ("int", "float") and (r.min is not None or r.max is not None)]


@pytest.mark.parametrize("row", NUMERIC, ids=[r.path for r in NUMERIC])
def test_bounds(row):
    step = 1 if row.type == "int" else 1e-6
    if row.min is not None:
        low = row.min + (step if row.min_exclusive else 0)
        if row.type == "int":
            low = int(low)
        assert check_value(row, low) == low
        with pytest.raises(InvalidValue, match="must be"):
            check_value(row, type(low)(row.min) - (0 if row.min_exclusive else step))
    if row.max is not None:
        high = row.max - (step if row.max_exclusive else 0)
        if row.type == "int":
            high = int(high)
        assert check_value(row, high) == high
        with pytest.raises(InvalidValue, match="must be"):
            check_value(row, high + step if not row.max_exclusive else row.max)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_unset(row):
    if row.allow_none:
        assert check_value(row, None) is None
    else:
        with pytest.raises(InvalidValue, match="cannot be unset"):
            check_value(row, None)


def test_assignment_runs_the_row_checks():
    cfg = ExperimentConfig()
    with pytest.raises(ConfigError, match="pytorch.batch_size must be"):
        cfg.pytorch.batch_size = 0
    assert cfg.pytorch.batch_size == 1
    cfg.pytorch.batch_size = 8
    assert cfg.pytorch.batch_size == 8
    with pytest.raises(ConfigError, match="decoder.temperature"):
        cfg.decoder.temperature = 2.5
    cfg.decoder.temperature = 1  # an int is widened to float
    assert cfg.decoder.temperature == 1.0 and isinstance(cfg.decoder.temperature, float)


def test_trust_remote_code_is_off_by_default():
    cfg = ExperimentConfig()
    assert cfg.pytorch.trust_remote_code is False
    assert cfg.vllm.trust_remote_code is False


def test_section_classes_match_the_table_exactly():
    for name, cls in _SECTION_CLASSES.items():
        traits = {k for k, t in cls.class_traits().items() if "row" in t.metadata}
        assert traits == {p.name for p in spec.params(name)}, name
    exp = {k for k, t in ExperimentConfig.class_traits().items() if "row" in t.metadata}
    assert exp == {p.name for p in spec.params("experiment")}


def test_pytorch_has_at_least_the_22_issue_fields():
    names = {p.name for p in spec.params("pytorch")}
    wanted = {
        "batch_size", "batching_strategy", "max_tokens_per_batch", "dtype", "attn_implementation",
        "torch_compile", "torch_compile_mode", "torch_compile_backend", "load_in_4bit", "load_in_8bit",
        "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "use_cache",
        "cache_implementation", "device_map", "max_memory", "low_cpu_mem_usage", "assistant_model",
        "num_assistant_tokens", "prompt_lookup_num_tokens", "output_scores",
    }
    assert wanted <= names and len(wanted) == 22
