"""experiment.chat_template on the vLLM and TensorRT-LLM run code, against stand-in engines."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import test_tensorrt_translate as tt  # the stand-in engines of the translation tests
import test_vllm_translate as tv
from test_tensorrt_translate import fake_trtllm  # noqa: F401 - fixture
from test_vllm_translate import fake_vllm  # noqa: F401 - fixture

from llem.backends import tensorrt as tb
from llem.backends import vllm as vb
from llem.errors import ConfigError

pytestmark = pytest.mark.gpu_path


class ChatTokenizer:
    """A transformers-like tokenizer with a chat template; id 0 is its BOS token."""

    chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"

    def encode(self, text, add_special_tokens=True):
        return ([0] if add_special_tokens else []) + [ord(c) % 97 + 1 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"t{i}" for i in ids)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert tokenize is False
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")


class WrappedTokenizer:
    """TensorRT-LLM's shape: a wrapper holding the transformers tokenizer as ``.tokenizer``."""

    def __init__(self):
        self.tokenizer = ChatTokenizer()

    def encode(self, text, add_special_tokens=True):
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)


def rendered_ids(text):
    return ChatTokenizer().encode(f"<user>{text}<assistant>", add_special_tokens=False)


def test_vllm_generates_from_the_templated_prompt(fake_vllm, monkeypatch):  # noqa: F811
    monkeypatch.setattr(tv.FakeLLM, "get_tokenizer", lambda self: ChatTokenizer())
    backend = vb.VLLMBackend()
    info = backend.load(tv.standin(decoder={"max_new_tokens": 2}))
    assert info.effective["experiment.chat_template"] == "on"
    assert any("chat template" in n for n in info.notes)
    out = backend.generate(["hi"])
    engine = tv.FakeLLM.instances[-1].llm_engine
    (sent,) = [r["ids"] for r in engine.requests.values()]
    assert sent == rendered_ids("hi")  # rendered, no second BOS
    assert out.requests[0].input_tokens == len(rendered_ids("hi")) == backend.count_tokens("hi")


def test_vllm_off_and_on(fake_vllm, monkeypatch):  # noqa: F811
    backend = vb.VLLMBackend()
    cfg = tv.standin(decoder={"max_new_tokens": 2})
    cfg.chat_template = "on"  # the stand-in tokenizer has no template
    with pytest.raises(ConfigError, match="no chat template"):
        backend.load(cfg)
    monkeypatch.setattr(tv.FakeLLM, "get_tokenizer", lambda self: ChatTokenizer())
    cfg.chat_template = "off"
    info = backend.load(cfg)
    assert info.effective["experiment.chat_template"] == "off"
    assert backend.count_tokens("hi") == len(ChatTokenizer().encode("hi"))


def test_vllm_beam_search_gets_the_templated_prompt_too(fake_vllm, monkeypatch):  # noqa: F811
    monkeypatch.setattr(tv.FakeLLM, "get_tokenizer", lambda self: ChatTokenizer())
    backend = vb.VLLMBackend()
    backend.load(tv.standin(decoder={"num_beams": 2, "max_new_tokens": 2}))
    out = backend.generate(["ab"])
    assert out.requests[0].input_tokens == len(rendered_ids("ab"))


def test_tensorrt_uses_the_wrapped_tokenizers_template(fake_trtllm, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setattr(tt, "FakeTokenizer", WrappedTokenizer)
    sent = []
    real_generate = tt.FakeLLM.generate_async

    def spy(self, ids, sampling_params=None, streaming=False):
        sent.append(list(ids))
        return real_generate(self, ids, sampling_params=sampling_params, streaming=streaming)

    monkeypatch.setattr(tt.FakeLLM, "generate_async", spy)
    backend = tb.TensorRTBackend()
    cfg = tt.standin(decoder={"max_new_tokens": 2}, max_input_tokens=20)
    info = backend.load(cfg)
    assert info.effective["experiment.chat_template"] == "on"
    out = backend.generate(["hello there"])
    full = rendered_ids("hello there")
    tail = len(ChatTokenizer().encode("<assistant>", add_special_tokens=False))
    assert sent == [full[: 20 - tail] + full[-tail:]]  # cut, the generation prompt kept
    assert out.requests[0].truncated and out.requests[0].input_tokens == 20


def test_tensorrt_on_refuses_a_tokenizer_without_template(fake_trtllm):  # noqa: F811
    cfg = tt.standin(decoder={"max_new_tokens": 2})
    cfg.chat_template = "on"
    with pytest.raises(ConfigError, match="no chat template"):
        tb.TensorRTBackend().load(cfg)
    cfg.chat_template = None
    backend = tb.TensorRTBackend()
    info = backend.load(cfg)
    assert info.effective["experiment.chat_template"] == "off"
    assert backend.count_tokens("abc") == 3


def test_the_record_is_json_safe():
    from llem.prompts.chat import chat_prompting

    rec = chat_prompting(SimpleNamespace(encode=lambda t: [1]), "off").record
    assert rec == {"mode": "off", "applied": False, "reason": "as asked"}
