"""The generated reference must match the table; regenerate with `make docs`."""

from pathlib import Path

from llem import spec

REF = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_reference_docs_match_the_table():
    expected = spec.reference_markdown() + "\n"
    actual = REF.read_text(encoding="utf-8")
    assert actual == expected, "docs/reference.md is stale: run `make docs` and commit it"


def test_generated_config_types_match_the_table():
    """llem/_config_types.py (what type checkers and editors read) is generated from the rows."""
    from llem.spec.render import config_types_module

    path = REF.parents[1] / "llem" / "_config_types.py"
    assert path.read_text(encoding="utf-8") == config_types_module() + "\n", (
        "llem/_config_types.py is stale: run `make docs` and commit it")


def test_generated_types_name_every_field_the_runtime_classes_have():
    import llem._config_types as types_module
    from llem import config

    for section, cls in config._SECTION_CLASSES.items():
        declared = getattr(types_module, cls.__name__).__annotations__
        assert set(declared) == set(cls._rows), section
    assert set(types_module._ExperimentFields.__annotations__) == set(config.ExperimentConfig._rows)


def test_reference_lists_every_row_and_rule():
    text = spec.reference_markdown()
    for p in spec.PARAMS:
        assert f"| `{p.name}` |" in text
    for r in spec.RULES:
        assert f"`{r.id}`" in text
