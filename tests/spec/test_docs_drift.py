"""The generated reference must match the table; regenerate with `make docs`."""

from pathlib import Path

from llem import spec

REF = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_reference_docs_match_the_table():
    expected = spec.reference_markdown() + "\n"
    actual = REF.read_text(encoding="utf-8")
    assert actual == expected, "docs/reference.md is stale: run `make docs` and commit it"


def test_reference_lists_every_row_and_rule():
    text = spec.reference_markdown()
    for p in spec.PARAMS:
        assert f"| `{p.name}` |" in text
    for r in spec.RULES:
        assert f"`{r.id}`" in text
