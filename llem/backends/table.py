"""What a backend reads from the table: its engine arguments, their values and their read-back.

Every row a backend passes to its engine says so in the table (``engine_target``), with the
engine's name for it and, where the engine spells values differently, the translation
(see :func:`llem.spec.engine_args`). The backends build their keyword arguments with
:func:`engine_kwargs` and read the resolved values back with :func:`read_effective`, so a
new row reaches the engine without an edit here or in a backend.

Pure functions; nothing here imports an engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from llem import spec
from llem.spec import EngineArg

__all__ = [
    "decoder_of",
    "engine_kwargs",
    "field",
    "nested_kwargs",
    "read_effective",
    "readback_map",
    "refuse_untranslatable",
    "value_of",
]

Kwargs = dict[str, Any]


def field(section: Any, name: str) -> Any:
    """A field's value in a section (config object, stand-in or dict); None when absent."""
    if section is None:
        return None
    if isinstance(section, Mapping):
        return section.get(name)
    return getattr(section, name, None)


def decoder_of(cfg: Any) -> Any:
    """The decoder section with its preset expanded (``ExperimentConfig.resolved_decoder``).

    A stand-in config without ``resolved_decoder`` gives its ``decoder`` as it is.
    """
    resolved = getattr(cfg, "resolved_decoder", None)
    if callable(resolved):
        return resolved()
    return field(cfg, "decoder")


def value_of(cfg: Any, arg: EngineArg, decoder: Any = None) -> Any:
    """The value ``cfg`` sets for ``arg``'s row (None: unset). ``decoder``: from :func:`decoder_of`."""
    section = arg.row.section
    if section == "experiment":
        return field(cfg, arg.row.name)
    holder = decoder if section == "decoder" and decoder is not None else field(cfg, section)
    return field(holder, arg.row.name)


def engine_kwargs(
    cfg: Any,
    backend: str,
    target: str,
    *,
    decoder: Any = None,
    exclude: Iterable[str] = (),
) -> Kwargs:
    """Engine keyword arguments for the rows ``cfg`` sets that go to ``target``.

    Parameters
    ----------
    cfg : ExperimentConfig or stand-in
        The configuration.
    backend, target : str
        Whose engine, and where in it (:func:`llem.spec.engine_targets`).
    decoder : optional
        The decoder section to read (default: :func:`decoder_of` ``cfg``).
    exclude : iterable of str
        Row paths to leave out (a backend passes them its own way).

    Returns
    -------
    dict
        The engine's names -> the engine's values; unset rows, and values that translate to
        None (TensorRT-LLM's kv_cache_dtype 'auto'), are absent.

    Raises
    ------
    ConfigError
        For a value the row refuses: a backend never passes what the table does not allow.
    """
    dec = decoder_of(cfg) if decoder is None else decoder
    skip = set(exclude)
    out: Kwargs = {}
    for arg in spec.engine_args(backend, target=target):
        if arg.path in skip:
            continue
        value = value_of(cfg, arg, dec)
        if value is None:
            continue
        engine_value = arg.translate(value)
        if engine_value is not None:
            out[arg.name] = engine_value
    return out


def nested_kwargs(cfg: Any, backend: str, parent: str, *, decoder: Any = None) -> dict[str, Kwargs]:
    """The nested config objects of ``parent`` that ``cfg`` fills: target -> its fields (as a dict).

    Only targets with at least one set field are returned.
    """
    out: dict[str, Kwargs] = {}
    for name, target in spec.engine_targets(backend).items():
        if target.parent != parent:
            continue
        fields = engine_kwargs(cfg, backend, name, decoder=decoder)
        if fields:
            out[name] = fields
    return out


def readback_map(backend: str, target: str) -> dict[str, str]:
    """``section.field`` -> the attribute of ``target``'s params object that holds its value."""
    return {arg.path: arg.name for arg in spec.engine_args(backend, target=target)}


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, bool, str)) else str(value)


def read_effective(resolved: Any, backend: str) -> dict[str, Any]:
    """Resolved values read back from the engine's resolved config (VllmConfig, LlmArgs...).

    Each row's ``engine_readback`` paths are tried in order; the first that holds a value
    wins. Values that are not plain numbers, booleans or strings are given as ``str``.
    """
    found: dict[str, Any] = {}
    for arg in spec.engine_args(backend):
        for path in arg.readback:
            obj = resolved
            for part in path.split("."):
                obj = getattr(obj, part, None) if obj is not None else None
            if obj is not None:
                found[arg.path] = _plain(obj)
                break
    return found


def refuse_untranslatable(cfg: Any, backend: str, *, decoder: Any = None) -> None:
    """Raise ConfigError for a set value that the table refuses for ``backend``.

    A backend that builds some arguments its own way calls this first, so that no value
    the table refuses reaches its engine (``engine_kwargs`` checks the values it builds).
    """
    for target in spec.engine_targets(backend):
        engine_kwargs(cfg, backend, target, decoder=decoder)
