"""Prompt sets: the built-in ones, prompts from lists and files, synthetic prompts.

Built-in sets are JSONL files beside this module, written for llem:

- ``qa-short``: 24 short factual questions (short prefill, short answers);
- ``summarise-long``: 8 summarisation requests over texts of 330 to 380 words (long
  prefill: the setting where prefill cost shows);
- ``code``: 12 programming requests (medium prompts, long structured answers).

:func:`load_prompts` accepts a built-in name, a list of prompt strings, a ``.txt`` file
(one prompt per line), a ``.jsonl`` file (a string per line, or an object with a
``prompt`` or ``text`` key), a ``.json`` file holding a list, a Hugging Face ``datasets``
spec ``hf:NAME?split=train&column=text`` (needs the ``datasets`` package), or a list of
any of these sources, ordered across sources by ``order``.
:func:`synthetic_prompts` makes prompts of an exact length in the model's own tokens.
Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from llem.errors import ConfigError, missing_dependency, unknown_name

PROMPTS_DIR = Path(__file__).resolve().parent

#: name -> one-line description
BUILTIN_SETS = {
    "qa-short": "24 short factual questions: short prefill, short answers",
    "summarise-long": "8 summarisation requests over 330-380 word texts: long prefill",
    "code": "12 programming requests: medium prompts, long structured answers",
}

#: How prompts from several sources are put in one sequence.
ORDERS = ("interleaved", "grouped", "shuffled")


@dataclass(frozen=True)
class Prompt:
    """One prompt and where it came from.

    Attributes
    ----------
    text : str
        The prompt text given to the model.
    source : str
        Set name, file path, ``"list"``, ``"synthetic"`` or the dataset spec.
    id : str
        Stable identifier within its source (``qa-short-03``, ``list-7``...).
    max_new_tokens : int or None
        An output length this prompt asks for (synthetic prompts), else None.
    input_tokens : int or None
        Length in the model's tokens when known (synthetic prompts).
    """

    text: str
    source: str = "list"
    id: str = ""
    max_new_tokens: int | None = None
    input_tokens: int | None = None

    def __str__(self) -> str:
        return self.text


def builtin_sets() -> dict[str, str]:
    """Return ``{name: description}`` of the built-in prompt sets."""
    return dict(BUILTIN_SETS)


def _read_jsonl(path: Path, source: str) -> list[Prompt]:
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"Prompt file {str(path)!r}, line {lineno}: not valid JSON ({exc.msg}). "
                    "Each line must be a JSON string or an object with a 'prompt' or 'text' key."
                ) from None
            out.append(_to_prompt(item, source, f"{source}-{lineno}", where=f"line {lineno}"))
    return out


def _to_prompt(item: Any, source: str, default_id: str, where: str) -> Prompt:
    if isinstance(item, Prompt):
        return item
    if isinstance(item, str):
        return Prompt(item, source, default_id)
    if isinstance(item, dict):
        text = item.get("prompt", item.get("text"))
        if isinstance(text, str):
            return Prompt(text, source, str(item.get("id", default_id)))
    raise ConfigError(
        f"Prompt source {source!r}, {where}: expected a string or an object with a 'prompt' "
        f"or 'text' string, not {type(item).__name__} {str(item)[:60]!r}."
    )


def _load_builtin(name: str) -> list[Prompt]:
    return _read_jsonl(PROMPTS_DIR / f"{name}.jsonl", name)


def _load_file(path: Path) -> list[Prompt]:
    source = str(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path, source)
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"Prompt file {source!r} is not valid JSON ({exc.msg}).") from None
        if not isinstance(data, list):
            raise ConfigError(
                f"Prompt file {source!r} must hold a JSON list of prompts, not "
                f"{type(data).__name__}."
            )
        return [_to_prompt(x, source, f"{path.stem}-{i}", f"item {i}") for i, x in enumerate(data)]
    # .txt or anything else: one prompt per non-empty line
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        Prompt(line, source, f"{path.stem}-{i}") for i, line in enumerate(lines, 1) if line.strip()
    ]


def _load_dataset(spec: str) -> list[Prompt]:
    """Load ``hf:NAME?split=train&column=text&config=CFG`` with the ``datasets`` package."""
    body = spec[3:]
    name, _, query = body.partition("?")
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(params) - {"split", "column", "config"}
    if not name or unknown:
        raise ConfigError(
            f"Dataset spec {spec!r} is not understood"
            + (f" (unknown keys: {', '.join(sorted(unknown))})" if unknown else "")
            + ". Use 'hf:NAME?split=train&column=text' (config=... optional)."
        )
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise missing_dependency("datasets", "data", "loading prompts from a dataset") from None
    from datasets import load_dataset

    ds = load_dataset(name, params.get("config"), split=params.get("split", "train"))
    column = params.get("column")
    if column is None:
        text_cols = [c for c, f in ds.features.items() if getattr(f, "dtype", None) == "string"]
        if not text_cols:
            raise ConfigError(f"Dataset {name!r} has no text column; name one with column=...")
        column = text_cols[0]
    if column not in ds.column_names:
        raise unknown_name("dataset column", column, ds.column_names)
    return [Prompt(str(t), spec, f"{name}-{i}") for i, t in enumerate(ds[column])]


def _is_source(item: object) -> bool:
    if not isinstance(item, (str, os.PathLike)):
        return False
    s = os.fspath(item)
    if s in BUILTIN_SETS or s.startswith("hf:"):
        return True
    return "\n" not in s and len(s) < 4096 and _is_file(s)


def _is_file(s: str) -> bool:
    try:
        return Path(s).expanduser().is_file()
    except (OSError, ValueError):  # a long prompt text is not a usable file name
        return False


def _load_one(source: str | os.PathLike[str]) -> list[Prompt]:
    s = os.fspath(source)
    if s in BUILTIN_SETS:
        return _load_builtin(s)
    if s.startswith("hf:"):
        return _load_dataset(s)
    path = Path(s).expanduser()
    if _is_file(s):
        return _load_file(path)
    looks_like_file = path.suffix.lower() in (".txt", ".jsonl", ".json") or os.sep in s
    if looks_like_file:
        raise ConfigError(f"Prompt file {s!r} does not exist.")
    raise unknown_name("prompt set", s, BUILTIN_SETS)


def order_prompts(
    groups: Sequence[Sequence[Prompt]], order: str | None = "interleaved", seed: int | None = 42
) -> list[Prompt]:
    """Put prompts from several sources in one sequence.

    Parameters
    ----------
    groups : sequence of sequences of Prompt
        One sequence per source, each in its own order.
    order : {"interleaved", "grouped", "shuffled"}
        ``interleaved`` takes one from each source in turn (round robin, a source that runs
        out drops out); ``grouped`` puts each source's prompts together, sources in the
        given order; ``shuffled`` shuffles everything with ``random.Random(seed)``.
    seed : int
        Seed of the shuffle (42 when None).
    """
    order = order or "interleaved"
    if order not in ORDERS:
        raise unknown_name("prompt order", order, ORDERS)
    if order == "grouped":
        return [p for g in groups for p in g]
    if order == "shuffled":
        flat = [p for g in groups for p in g]
        random.Random(42 if seed is None else seed).shuffle(flat)
        return flat
    out: list[Prompt] = []
    longest = max((len(g) for g in groups), default=0)
    for i in range(longest):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _take(prompts: list[Prompt], n: int | None) -> list[Prompt]:
    """First ``n`` prompts; when ``n`` exceeds what exists, cycle (ids get ``#k``)."""
    if n is None:
        return prompts
    if n < 1:
        raise ConfigError(f"The number of prompts must be at least 1, not {n}.")
    if not prompts:
        return []
    out = []
    for i in range(n):
        p = prompts[i % len(prompts)]
        k = i // len(prompts)
        out.append(p if k == 0 else Prompt(p.text, p.source, f"{p.id}#{k + 1}",
                                           p.max_new_tokens, p.input_tokens))
    return out


def load_prompts(
    source: str | os.PathLike[str] | Iterable[Any] | None = None,
    n: int | None = None,
    *,
    order: str | None = "interleaved",
    seed: int | None = 42,
) -> list[Prompt]:
    """Load prompts from a built-in set, a list, a file, a dataset, or several of these.

    Parameters
    ----------
    source : str, path, or list
        A built-in set name (see :func:`builtin_sets`), a path to a ``.txt``/``.jsonl``/
        ``.json`` file, a dataset spec ``hf:NAME?split=...&column=...``, a list of prompt
        strings (or :class:`Prompt`), or a list of sources. A list whose every item is a
        built-in name, an existing file or a dataset spec is read as a list of sources;
        any other list is a list of prompt texts. None means ``qa-short``.
    n : int, optional
        How many prompts to return. Fewer than exist: the first ``n`` after ordering.
        More than exist: the prompts are cycled (repeats get ids ending ``#2``, ``#3``...).
    order : {"interleaved", "grouped", "shuffled"}
        How several sources are combined (see :func:`order_prompts`).
    seed : int
        Seed of the shuffle when ``order="shuffled"``.

    Returns
    -------
    list of Prompt
    """
    if source is None:
        source = "qa-short"
    if isinstance(source, (str, os.PathLike)):
        groups = [_load_one(source)]
    else:
        items = list(source)
        if not items:
            raise ConfigError("The prompt list is empty; give at least one prompt.")
        if all(_is_source(x) for x in items):
            groups = [_load_one(x) for x in items]
        else:
            groups = [[_to_prompt(x, "list", f"list-{i}", f"item {i}") for i, x in
                       enumerate(items)]]
    prompts = order_prompts(groups, order, seed)
    if not prompts:
        raise ConfigError(f"The prompt source {source!r} holds no prompts.")
    return _take(prompts, n)


def _word_tokens(tokenizer: Any, rng: random.Random, want: int = 2000) -> list[str]:
    """Vocabulary entries that are a space plus letters and encode back to one token."""
    vocab = tokenizer.get_vocab()
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = [i for i in sorted(vocab.values()) if i not in special]
    rng.shuffle(ids)
    words: list[str] = []
    for tid in ids:
        s = tokenizer.decode([tid])
        core = s[1:]
        if not (s.startswith(" ") and len(core) >= 2 and core.isascii() and core.isalpha()):
            continue
        if tokenizer.encode(s, add_special_tokens=False) != [tid]:
            continue
        words.append(s)
        if len(words) >= want:
            break
    if len(words) < 10:
        raise ConfigError(
            "Synthetic prompts need a tokenizer with whole-word tokens; this one has fewer "
            "than 10. Use a prompt set instead."
        )
    return words


def _first_word(tokenizer: Any, words: list[str], rng: random.Random) -> str:
    """A word without its leading space that is still one token (else keep the space)."""
    for _ in range(50):
        w = rng.choice(words)
        if len(tokenizer.encode(w[1:], add_special_tokens=False)) == 1:
            return w[1:]
    return rng.choice(words)


def synthetic_prompts(
    tokenizer: Any,
    count: int = 512,
    input_len: int = 512,
    output_len: int | None = 128,
    seed: int = 42,
    count_tokens: Callable[[str], int] | None = None,
) -> list[Prompt]:
    """Make prompts exactly ``input_len`` tokens long in the model's own tokenizer.

    Each prompt is a seeded random sequence of the tokenizer's whole-word tokens, adjusted
    word by word until the model's own count (special tokens included, and a chat
    template's tokens when the backend applies one: as the model sees it) is exactly
    ``input_len``. Defaults follow the seed benchmark: input length 512,
    output length 128, seed 42.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        Needs ``get_vocab``, ``encode`` and ``decode``.
    count : int
        Number of prompts.
    input_len : int
        Length of each prompt in tokens.
    output_len : int or None
        Output length each prompt asks for (``Prompt.max_new_tokens``).
    seed : int
        Seed; the same seed and tokenizer give the same prompts.
    count_tokens : callable, optional
        How the model counts a prompt's tokens; defaults to ``len(tokenizer.encode(text))``.
    """
    if count < 1 or input_len < 1:
        raise ConfigError(
            f"Synthetic prompts need count >= 1 and input_len >= 1, not {count} and {input_len}."
        )
    counter = count_tokens or (lambda t: len(tokenizer.encode(t)))
    rng = random.Random(seed)
    words = _word_tokens(tokenizer, rng)
    overhead = counter("")  # special tokens the model adds (BOS...), and a chat template's
    if overhead >= input_len:
        raise ConfigError(
            f"Synthetic prompts of {input_len} tokens cannot be made: the model is given "
            f"{overhead} tokens around every prompt (its special tokens, and its chat template "
            "when experiment.chat_template applies one), which count as input tokens. Fix: set "
            f"dataset.input_len above {overhead}, or experiment.chat_template='off'.")
    prompts = []
    for i in range(count):
        chosen = [rng.choice(words) for _ in range(max(1, input_len - overhead))]
        chosen[0] = _first_word(tokenizer, words, rng)
        text = "".join(chosen)
        length = counter(text)
        for _ in range(4 * input_len):
            if length == input_len:
                break
            if length > input_len and len(chosen) > 1:
                chosen.pop()
            else:
                chosen.append(rng.choice(words))
            text = "".join(chosen)
            length = counter(text)
        if length != input_len:
            raise ConfigError(
                f"Could not make a synthetic prompt of exactly {input_len} tokens with this "
                f"tokenizer (got {length}); try another input length."
            )
        prompts.append(Prompt(text, "synthetic", f"synthetic-{i}", output_len, input_len))
    return prompts


__all__ = [
    "BUILTIN_SETS",
    "ORDERS",
    "Prompt",
    "builtin_sets",
    "load_prompts",
    "order_prompts",
    "synthetic_prompts",
]
