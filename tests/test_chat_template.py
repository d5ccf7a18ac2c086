"""experiment.chat_template: prompts in the tokenizer's chat template, recorded, counted."""

from __future__ import annotations

import json
import shutil

import pytest

import llem
from llem.config import ExperimentConfig
from llem.errors import ConfigError
from llem.models import DATA_DIR
from llem.prompts.chat import chat_prompting, template_of

TINY = DATA_DIR / "tiny-random-llama"
QUESTION = "What is the capital of France?"


def config(**fields):
    base = {"model": "tiny-random-llama", "repeats": 1, "meter": "none", "num_prompts": 2,
            "decoder.max_new_tokens": 4, "warmup.runs": 0, "prompts": [QUESTION, "Name a colour."]}
    base.update(fields)
    return ExperimentConfig.from_dict(base)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


@pytest.fixture
def no_template_model(tmp_path):
    """A copy of the tiny model whose tokenizer has no chat template."""
    folder = tmp_path / "plain-llama"
    shutil.copytree(TINY, folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["chat_template"]
    cfg_path.write_text(json.dumps(cfg))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def test_the_row_defaults_to_auto_with_three_choices():
    row = llem.spec.param("experiment.chat_template")
    assert row.default == "auto" and row.choices == ("auto", "on", "off")
    assert ExperimentConfig().chat_template == "auto"
    with pytest.raises(ConfigError, match="chat_template"):
        ExperimentConfig(chat_template="yes")


def test_the_shipped_tiny_model_has_a_chat_template(tiny_tokenizer):
    assert template_of(tiny_tokenizer)
    chat = chat_prompting(tiny_tokenizer, "auto")
    assert chat.applied and chat.render(QUESTION) == f"user: {QUESTION}\nassistant:"


def test_auto_applies_the_template_on_the_tiny_model_and_records_it(tiny_tokenizer):
    r = llem.run(config())
    assert r.effective_config["experiment.chat_template"] == "on"
    assert r.environment["chat_template"] == {"mode": "auto", "applied": True,
                                              "reason": "the tokenizer has one"}
    assert any("chat template" in n and "generation prompt" in n for n in r.notes)
    # template tokens count as input tokens: the rendered prompt's length, not the plain one
    req = next(q for q in r.runs[0].requests if q.prompt == QUESTION)
    rendered = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True)
    want = len(tiny_tokenizer.encode(rendered, add_special_tokens=False))
    assert req.input_tokens == want > len(tiny_tokenizer.encode(QUESTION))
    assert r.runs[0].input_tokens == sum(q.input_tokens for q in r.runs[0].requests)


def test_off_gives_plain_text_and_counts_only_its_tokens(tiny_tokenizer):
    r = llem.run(config(chat_template="off"))
    assert r.effective_config["experiment.chat_template"] == "off"
    assert r.environment["chat_template"]["applied"] is False
    assert any("plain text" in n and "chat_template=off" in n for n in r.notes)
    req = next(q for q in r.runs[0].requests if q.prompt == QUESTION)
    assert req.input_tokens == len(tiny_tokenizer.encode(QUESTION))


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_a_batch_is_encoded_in_one_call_as_each_text_alone(tiny_tokenizer, mode):
    texts = [QUESTION, "", "Name a colour.", "h\u00e9llo w\u00f6rld \U0001f642", "a\nb"]
    chat = chat_prompting(tiny_tokenizer, mode)
    calls = []

    class Counting:
        def __init__(self, tok):
            self.tok = tok

        def __call__(self, *a, **k):
            calls.append(a)
            return self.tok(*a, **k)

        def __getattr__(self, name):
            return getattr(self.tok, name)

    one_by_one = [chat.encode(t) for t in texts]
    batched = type(chat)(chat.mode, chat.applied, chat.reason, Counting(tiny_tokenizer), chat.tail_tokens)
    assert batched.encode_batch(texts) == one_by_one
    assert len(calls) == 1


def test_a_tokenizer_without_batch_calls_is_asked_text_by_text(tiny_tokenizer):
    class EncodeOnly:
        def encode(self, text, **k):
            return tiny_tokenizer.encode(text, **k)

    chat = chat_prompting(tiny_tokenizer, "off")
    plain = type(chat)(chat.mode, chat.applied, chat.reason, EncodeOnly(), chat.tail_tokens)
    assert plain.encode_batch([QUESTION, "Name a colour."]) == [chat.encode(QUESTION), chat.encode("Name a colour.")]


def test_on_refuses_a_model_without_a_template_with_the_reason_and_fix(no_template_model):
    with pytest.raises(ConfigError) as err:
        llem.run(config(model=str(no_template_model), chat_template="on"))
    msg = str(err.value)
    assert "no chat template" in msg and str(no_template_model) in msg
    assert "chat_template='auto' or 'off'" in msg


def test_auto_on_a_model_without_a_template_is_plain_text_and_says_why(no_template_model):
    r = llem.run(config(model=str(no_template_model)))
    assert r.effective_config["experiment.chat_template"] == "off"
    assert r.environment["chat_template"]["reason"] == "the tokenizer has no chat template"


def test_on_applies_the_template_like_auto():
    r = llem.run(config(chat_template="on"))
    assert r.environment["chat_template"] == {"mode": "on", "applied": True, "reason": "on as asked"}


def test_a_cut_prompt_keeps_the_generation_prompt(tiny_tokenizer):
    chat = chat_prompting(tiny_tokenizer, "auto")
    long = " ".join(["energy"] * 80)
    ids = chat.encode(long)
    cut, was_cut = chat.truncate(ids, 20)
    assert was_cut and len(cut) == 20
    assert tiny_tokenizer.decode(cut).endswith("\nassistant:")
    assert tiny_tokenizer.decode(cut).startswith("user: energy")
    plain = chat_prompting(tiny_tokenizer, "off")
    assert plain.truncate(ids, 20) == (ids[:20], True)


def test_truncation_in_a_run_keeps_the_generation_prompt_and_counts_the_limit():
    long = " ".join(["energy"] * 80)
    r = llem.run(config(prompts=[long], num_prompts=1, max_input_tokens=24))
    req = r.runs[0].requests[0]
    assert req.truncated and req.input_tokens == 24


def test_reconfigure_follows_a_changed_chat_template():
    from llem.backends.pytorch import PyTorchBackend

    backend = PyTorchBackend()
    backend.load(config())
    assert backend.chat.applied and backend.count_tokens(QUESTION) > len(backend.tokenizer.encode(QUESTION))
    info = backend.reconfigure(config(chat_template="off"))
    assert info.effective["experiment.chat_template"] == "off"
    assert backend.count_tokens(QUESTION) == len(backend.tokenizer.encode(QUESTION))
    backend.release()
    assert backend.chat is None


def test_an_unknown_mode_is_refused_with_the_choices(tiny_tokenizer):
    with pytest.raises(ConfigError, match="auto, on, off"):
        chat_prompting(tiny_tokenizer, "always")



def test_synthetic_prompts_count_the_template_and_say_when_it_leaves_no_room():
    r = llem.run(config(prompts="synthetic", num_prompts=2, **{"dataset.input_len": 24,
                                                             "dataset.output_len": 2}))
    assert [q.input_tokens for q in r.runs[0].requests] == [24, 24]
    assert r.environment["chat_template"]["applied"] is True
    with pytest.raises(ConfigError, match="chat template") as err:
        llem.run(config(prompts="synthetic", num_prompts=1, **{"dataset.input_len": 8,
                                                             "dataset.output_len": 2}))
    assert "experiment.chat_template='off'" in str(err.value)
    r = llem.run(config(prompts="synthetic", num_prompts=1, chat_template="off",
                        **{"dataset.input_len": 8, "dataset.output_len": 2}))
    assert r.runs[0].requests[0].input_tokens == 8
