import json

import pytest

from llem.errors import ConfigError, MissingDependencyError, UnknownNameError
from llem.prompts import BUILTIN_SETS, Prompt, builtin_sets, load_prompts, order_prompts, synthetic_prompts


def test_builtin_sets_sizes_and_ids():
    assert len(load_prompts("qa-short")) == 24
    assert len(load_prompts("summarise-long")) == 8
    assert len(load_prompts("code")) == 12
    for name in BUILTIN_SETS:
        ps = load_prompts(name)
        assert len({p.id for p in ps}) == len(ps)
        assert all(p.source == name and p.text.strip() for p in ps)
    assert set(builtin_sets()) == set(BUILTIN_SETS)


def test_summarise_long_is_long():
    for p in load_prompts("summarise-long"):
        assert len(p.text.split()) >= 300


def test_default_is_qa_short():
    assert load_prompts(None) == load_prompts("qa-short")


def test_list_of_strings():
    ps = load_prompts(["hello", "world"])
    assert [p.text for p in ps] == ["hello", "world"]
    assert [p.id for p in ps] == ["list-0", "list-1"]
    assert str(ps[0]) == "hello"


def test_txt_jsonl_json_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\nsecond\n")
    assert [p.text for p in load_prompts(txt)] == ["first", "second"]
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps("a") + "\n" + json.dumps({"prompt": "b", "id": "x"}) + "\n"
                  + json.dumps({"text": "c"}) + "\n")
    ps = load_prompts(str(jl))
    assert [p.text for p in ps] == ["a", "b", "c"] and ps[1].id == "x"
    js = tmp_path / "p.json"
    js.write_text(json.dumps(["u", {"prompt": "v"}]))
    assert [p.text for p in load_prompts(js)] == ["u", "v"]


def test_bad_jsonl_names_the_line(tmp_path):
    jl = tmp_path / "bad.jsonl"
    jl.write_text('"ok"\n{not json\n')
    with pytest.raises(ConfigError, match="line 2"):
        load_prompts(jl)
    jl.write_text('{"question": "no prompt key"}\n')
    with pytest.raises(ConfigError, match="'prompt' or 'text'"):
        load_prompts(jl)


def test_unknown_set_and_missing_file():
    with pytest.raises(UnknownNameError, match="Did you mean 'qa-short'"):
        load_prompts("qa-shrt")
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompts("missing/prompts.txt")


def test_dataset_spec_needs_datasets():
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"pip install 'llem\[data\]'"):
            load_prompts("hf:someone/some-set?split=train&column=text")
    else:
        pytest.skip("datasets is installed; the missing-package path cannot be exercised")


def test_dataset_spec_refuses_unknown_keys():
    with pytest.raises(ConfigError, match="unknown keys: colum"):
        load_prompts("hf:someone/some-set?colum=text")


def test_several_sets_in_each_order():
    inter = load_prompts(["qa-short", "code"], order="interleaved")
    assert [p.source for p in inter[:4]] == ["qa-short", "code", "qa-short", "code"]
    assert len(inter) == 36 and inter[-1].source == "qa-short"
    grouped = load_prompts(["qa-short", "code"], order="grouped")
    assert [p.source for p in grouped] == ["qa-short"] * 24 + ["code"] * 12
    s1 = load_prompts(["qa-short", "code"], order="shuffled", seed=1)
    s2 = load_prompts(["qa-short", "code"], order="shuffled", seed=1)
    s3 = load_prompts(["qa-short", "code"], order="shuffled", seed=2)
    assert s1 == s2 and s1 != s3 and sorted(p.id for p in s1) == sorted(p.id for p in grouped)
    with pytest.raises(UnknownNameError):
        order_prompts([[Prompt("a")]], "random")


def test_n_takes_first_and_cycles():
    assert [p.id for p in load_prompts("code", n=2)] == ["code-01", "code-02"]
    ps = load_prompts("code", n=14)
    assert len(ps) == 14 and ps[12].id == "code-01#2" and ps[12].text == ps[0].text
    with pytest.raises(ConfigError):
        load_prompts("code", n=0)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    from llem.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("tiny-random-llama").tokenizer)


@pytest.mark.parametrize("length", [1, 7, 64, 300])
def test_synthetic_prompts_are_exact_in_tokens(tiny_tokenizer, length):
    ps = synthetic_prompts(tiny_tokenizer, count=3, input_len=length, output_len=5, seed=42)
    assert len(ps) == 3
    for p in ps:
        assert len(tiny_tokenizer(p.text)["input_ids"]) == length
        assert p.input_tokens == length and p.max_new_tokens == 5 and p.source == "synthetic"


def test_synthetic_prompts_are_seeded(tiny_tokenizer):
    a = synthetic_prompts(tiny_tokenizer, count=2, input_len=32, seed=5)
    b = synthetic_prompts(tiny_tokenizer, count=2, input_len=32, seed=5)
    c = synthetic_prompts(tiny_tokenizer, count=2, input_len=32, seed=6)
    assert a == b and a != c and a[0].text != a[1].text


def test_synthetic_defaults_follow_the_seed_benchmark(tiny_tokenizer):
    (p,) = synthetic_prompts(tiny_tokenizer, count=1)
    assert p.input_tokens == 512 and p.max_new_tokens == 128
