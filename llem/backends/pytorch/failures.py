"""What goes wrong in the PyTorch backend, in llem's errors: not found, out of memory, refused.

Each function turns what transformers or torch raised into the llem error that names the
thing, the value and the fix; nothing here imports torch at import time.
"""

from __future__ import annotations

import gc
from typing import Any

from llem.backends.table import field
from llem.errors import ConfigError, MissingDependencyError, OutOfMemoryError
from llem.spec import params

#: Words in transformers' and the hub's messages that mean "there is no such model or file".
_NOT_FOUND = (
    "not found",
    "does not appear to have",
    "is not a local folder",
    "no such file",
    "can't load",
    "couldn't connect",
    "offline",
    "repository not found",
    "not a valid model identifier",
    "we couldn't",
    "404",
    "does not exist",
)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (300 characters at most), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def looks_not_found(exc: BaseException) -> bool:
    """Whether a loading error says the model, adapter or file does not exist (or is offline)."""
    text = str(exc).lower()
    return any(k in text for k in _NOT_FOUND)


def refused(what: str, exc: BaseException) -> ConfigError:
    """The error for a combination of settings, passed as asked, that transformers refused."""
    return ConfigError(
        f"transformers refused the {what}: {first_line(exc)}. Fix: change the setting it names; "
        "a config checked by llem (ExperimentConfig.validate) refuses the known combinations "
        "with their fix before a backend sees them."
    )


def refuse_passthrough_clash(extra: dict[str, Any], named: dict[str, Any], where: str) -> None:
    """Refuse pass-through keyword arguments that repeat one llem sets from a named field."""
    clash = sorted(set(extra) & set(named))
    if clash:
        raise ConfigError(
            f"passthrough.{where} sets {', '.join(clash)}, which llem already sets from "
            "named config fields; set those fields instead of passing them through."
        )


def unknown_passthrough(exc: TypeError, passthrough: dict[str, Any], where: str) -> ConfigError | None:
    """The llem error for a pass-through argument the engine does not take, or None.

    ``exc`` is the TypeError of a call that got ``passthrough`` (``unexpected keyword
    argument 'x'``); None when the error is not about one of those keys.
    """
    text = str(exc)
    bad = sorted(k for k in passthrough if f"'{k}'" in text and "keyword argument" in text)
    if not bad:
        return None
    call = "from_pretrained (or the model it builds)" if where == "load" else "generate"
    return ConfigError(
        f"passthrough.{where}.{bad[0]} is not an argument {call} takes ({first_line(exc)}). "
        f"Fix: remove it from experiment.passthrough.{where}, or spell it as transformers "
        "documents it; a setting llem has a field for is set through that field."
    )


def missing_at_load(model: str, pytorch: Any, exc: BaseException) -> MissingDependencyError:
    """A package transformers needed while loading ``model``, with the table's install command.

    The install command and the alternative come from the gate of a set value that needs a
    package (``attn_implementation='flash_attention_2'`` needs flash-attn...).
    """
    hints = []
    for row in params("pytorch"):
        value = field(pytorch, row.name)
        gate = row.value_gates.get(value) if isinstance(value, str) else None
        if gate is not None and gate.package:
            hints.append(f"{row.path}={value!r} needs {gate.package}: {gate.install}, or "
                         f"{gate.alternative}")
    fix = f" Fix: {'; '.join(hints)}." if hints else ""
    return MissingDependencyError(
        f"Loading {model!r} needs a package that is missing: {first_line(exc)}.{fix}"
    )


def free_accelerator_memory() -> None:
    """Collect garbage and hand the CUDA allocator's cached blocks back (no-op on a CPU)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing memory must never raise
        pass


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` from ``generate`` is the device (or the host) running out of memory."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def out_of_memory(batch: int, max_new_tokens: Any, dtype: str, device: str,
                  exc: BaseException) -> OutOfMemoryError:
    """The out-of-memory error of one batch, naming the settings to lower (memory freed first)."""
    free_accelerator_memory()
    return OutOfMemoryError(
        f"Out of memory generating a batch of {batch} prompt(s) with max_new_tokens="
        f"{max_new_tokens} in {dtype} on {device} "
        f"({first_line(exc)}). Lower pytorch.batch_size (or max_tokens_per_batch), "
        "decoder.max_new_tokens or max_input_tokens, or use a smaller dtype "
        "(pytorch.dtype='bfloat16'/'float16') or quantization (load_in_8bit/load_in_4bit)."
    )
