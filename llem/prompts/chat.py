"""Chat templates: how a prompt becomes the tokens an instruct model is given.

An instruct model is trained on conversations written in its tokenizer's chat template
(ChatML's ``<|im_start|>user ... <|im_end|>``, Llama's ``[INST] ... [/INST]``...). Given a
question as plain text it continues the text instead of answering it. The setting
``experiment.chat_template`` says what llem does:

- ``auto`` (the default): the prompt is the user's turn of a conversation in the
  tokenizer's chat template, followed by the template's generation prompt (the opening of
  the assistant's turn, ``add_generation_prompt=True``), when the tokenizer has a template;
  plain text when it has none;
- ``on``: the same, and a model whose tokenizer has no template is refused;
- ``off``: the prompt's text as it is.

The template's tokens (its system line, the turn markers, the generation prompt) are part
of what the model reads, so they count as input tokens: :meth:`ChatPrompting.encode` and
:meth:`ChatPrompting.count` return the ids and the length of the rendered prompt. A
rendered prompt is tokenized without the tokenizer's own special tokens, since the
template writes those it wants (a BOS token, for one). A prompt cut to
``max_input_tokens`` keeps its start and the template's closing tokens (the end of the
user's turn and the generation prompt), so the model is still asked to answer.

Every backend calls :func:`chat_prompting` once its tokenizer is loaded, and encodes
prompts through the object it returns; what was applied, and why, goes into the run's
effective settings (``experiment.chat_template``: ``on`` or ``off``) and its notes.
Nothing here imports torch or transformers: the tokenizer is the backend's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llem.errors import ConfigError

#: The values of ``experiment.chat_template``.
MODES = ("auto", "on", "off")

#: A string no prompt holds, used to split a rendered template around the user's text.
_MARK = "\x00llem-user-text\x00"


def truncate_ids(ids: Sequence[int], max_tokens: int | None) -> tuple[list[int], bool]:
    """Keep the first ``max_tokens`` token ids; return them and whether any were cut."""
    ids = list(ids)
    if max_tokens is None or len(ids) <= max_tokens:
        return ids, False
    return ids[: int(max_tokens)], True


def hf_tokenizer(tokenizer: Any) -> Any:
    """The object that holds the chat template: ``tokenizer``, or the one it wraps.

    TensorRT-LLM's tokenizer wraps a transformers tokenizer as ``.tokenizer``.
    """
    if hasattr(tokenizer, "apply_chat_template"):
        return tokenizer
    inner = getattr(tokenizer, "tokenizer", None)
    return inner if inner is not None and hasattr(inner, "apply_chat_template") else tokenizer


def template_of(tokenizer: Any) -> str | None:
    """The tokenizer's chat template (a Jinja string), or None when it has none."""
    tok = hf_tokenizer(tokenizer)
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):  # named templates: transformers uses "default"
        template = template.get("default") or next(iter(template.values()), None)
    return template if isinstance(template, str) and template.strip() else None


def messages(text: str) -> list[dict[str, str]]:
    """A prompt as a conversation of one user turn."""
    return [{"role": "user", "content": str(text)}]


@dataclass(frozen=True)
class ChatPrompting:
    """How one loaded tokenizer turns prompts into token ids.

    Attributes
    ----------
    mode : str
        ``experiment.chat_template`` as configured (``auto``, ``on``, ``off``).
    applied : bool
        Whether prompts are rendered in the tokenizer's chat template.
    reason : str
        Why (or why not), in a few words.
    tokenizer : object
        The backend's tokenizer (``encode``, and ``apply_chat_template`` when applied).
    tail_tokens : int
        Tokens of the template after the user's text (the end of the turn and the
        generation prompt); kept when a prompt is cut.
    """

    mode: str
    applied: bool
    reason: str
    tokenizer: Any = field(repr=False, compare=False, default=None)
    tail_tokens: int = 0

    def render(self, text: str) -> str:
        """The text the model reads: the prompt in the chat template, or the prompt itself."""
        if not self.applied:
            return str(text)
        out = hf_tokenizer(self.tokenizer).apply_chat_template(
            messages(text), tokenize=False, add_generation_prompt=True)
        return str(out)

    def encode(self, text: str) -> list[int]:
        """The prompt's token ids as the model is given them, template tokens included."""
        if not self.applied:
            return list(self.tokenizer.encode(str(text)))
        return list(self.tokenizer.encode(self.render(text), add_special_tokens=False))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each text, in one call of the tokenizer where it takes a batch.

        One call tokenizes the batch in the tokenizer's own loop (inside a measured run,
        this is work the window counts); a tokenizer that is not callable on a list of
        texts is asked text by text.
        """
        texts = [str(t) for t in texts]
        tok = self.tokenizer
        if texts and callable(tok):
            src = [self.render(t) for t in texts] if self.applied else texts
            try:
                ids = tok(src, add_special_tokens=not self.applied)["input_ids"]
            except Exception:  # noqa: BLE001 - not a batch tokenizer: one text at a time
                ids = None
            if isinstance(ids, list) and len(ids) == len(texts):
                return [list(x) for x in ids]
        return [self.encode(t) for t in texts]

    def count(self, text: str) -> int:
        """How many input tokens the prompt is, template tokens included."""
        return len(self.encode(text))

    def truncate(self, ids: Sequence[int], limit: int | None) -> tuple[list[int], bool]:
        """``ids`` cut to ``limit`` tokens, and whether any were cut.

        Plain text keeps its first ``limit`` tokens. A rendered prompt keeps its start and
        its last :attr:`tail_tokens` (the generation prompt), so it still ends where the
        model's answer begins; when ``limit`` leaves no room for both, its start only.
        """
        ids = list(ids)
        tail = self.tail_tokens if self.applied else 0
        if limit is None or len(ids) <= limit or not 0 < tail < limit:
            return truncate_ids(ids, limit)
        return ids[: int(limit) - tail] + ids[-tail:], True

    @property
    def effective(self) -> dict[str, str]:
        """``{"experiment.chat_template": "on" | "off"}``: what was applied."""
        return {"experiment.chat_template": "on" if self.applied else "off"}

    @property
    def note(self) -> str:
        """One sentence for a run's notes: applied or not, and why."""
        if self.applied:
            return (f"Prompts are given in the tokenizer's chat template, with its generation "
                    f"prompt (experiment.chat_template={self.mode}: {self.reason}); the "
                    "template's tokens count as input tokens.")
        return f"Prompts are given as plain text (experiment.chat_template={self.mode}: {self.reason})."

    @property
    def record(self) -> dict[str, Any]:
        """What a result's environment keeps: mode, applied, reason."""
        return {"mode": self.mode, "applied": self.applied, "reason": self.reason}


def _tail_tokens(tokenizer: Any) -> int:
    """Token count of what the template writes after the user's text (0 when unknown)."""
    tok = hf_tokenizer(tokenizer)
    try:
        rendered = str(tok.apply_chat_template(messages(_MARK), tokenize=False,
                                               add_generation_prompt=True))
    except Exception:  # noqa: BLE001 - a template that refuses the marker: keep the start only
        return 0
    if rendered.count(_MARK) != 1:
        return 0
    tail = rendered.split(_MARK, 1)[1]
    return len(tokenizer.encode(tail, add_special_tokens=False)) if tail else 0


def chat_prompting(tokenizer: Any, mode: str | None = "auto", model: str = "") -> ChatPrompting:
    """Decide how prompts reach a model through ``tokenizer``, for ``experiment.chat_template``.

    Parameters
    ----------
    tokenizer : transformers tokenizer (or an engine's wrapper of one)
        The loaded model's tokenizer.
    mode : {"auto", "on", "off"}
        The setting; None means ``auto``.
    model : str
        The model's name, for the refusal's message.

    Returns
    -------
    ChatPrompting

    Raises
    ------
    ConfigError
        ``mode`` is not one of :data:`MODES`, or ``on`` for a tokenizer without a chat
        template (naming the model, why, and the fix).
    """
    mode = mode or "auto"
    if mode not in MODES:
        raise ConfigError(
            f"experiment.chat_template must be one of {', '.join(MODES)}, not {mode!r}. "
            "Fix: 'auto' applies the tokenizer's chat template when it has one.")
    if mode == "off":
        return ChatPrompting(mode, False, "as asked", tokenizer)
    if template_of(tokenizer) is None:
        if mode == "on":
            named = f" of model {model!r}" if model else ""
            raise ConfigError(
                f"experiment.chat_template='on', but the tokenizer{named} has no chat template "
                "(no 'chat_template' in its tokenizer_config.json or GGUF file, no "
                "chat_template.jinja): it is not an instruct/chat model, or its template was "
                "not saved with it. Fix: set experiment.chat_template='auto' or 'off' to give "
                "it plain text, or use the model's instruct variant.")
        return ChatPrompting(mode, False, "the tokenizer has no chat template", tokenizer)
    why = "the tokenizer has one" if mode == "auto" else "on as asked"
    return ChatPrompting(mode, True, why, tokenizer, _tail_tokens(tokenizer))


__all__ = ["MODES", "ChatPrompting", "chat_prompting", "hf_tokenizer", "messages", "template_of",
           "truncate_ids"]
