"""One way to flatten a nested configuration into ``section.field`` paths.

A configuration is written nested (``{"model": ..., "pytorch": {"batch_size": 4}}``, the
form of ``ExperimentConfig.to_dict()``, a YAML file, a ``%%llem`` cell) or with dotted keys
(``{"pytorch.batch_size": 4}``). :func:`flatten` turns either into one flat mapping whose
keys are the table's paths, so results, comparisons, reports and the magic name a setting
the same way.

The table decides where to stop: the value of a row is a leaf, whatever it holds, so a
row of type ``dict`` (``experiment.passthrough``, ``pytorch.max_memory``,
``vllm.compilation_config``) stays one value. Only a mapping under a path the table does
not know (a sub-group of an older result, say) is opened further.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from llem.errors import ConfigError
from llem.spec.model import SECTIONS
from llem.spec.params import PARAMS
from llem.spec.queries import alias_prefix, aliases

#: Every path the table knows (aliases included): their values are leaves.
_OWN_ROWS: frozenset[str] = frozenset(p.path for p in PARAMS)
_ROWS: frozenset[str] = _OWN_ROWS | frozenset(aliases())

#: Keys of a config file that are not settings (read elsewhere or kept as notes).
NOT_SETTINGS: tuple[str, ...] = ("sweep", "notes")


def is_leaf(path: str) -> bool:
    """True when ``path`` (``section.field``, aliases accepted) is a row of the table.

    A row's value is one value, also when it is a mapping (rows of type ``dict``).
    """
    return path in _ROWS


def flatten(config: Mapping[str, Any], *, skip: Iterable[str] = NOT_SETTINGS) -> dict[str, Any]:
    """A nested or dotted configuration as ``section.field`` -> value.

    Parameters
    ----------
    config : mapping
        Nested sections (``{"pytorch": {"batch_size": 4}}``), the experiment's own fields
        at the top (``{"model": "m"}``) or under ``experiment``, dotted keys
        (``{"pytorch.batch_size": 4}``), or a mix.
    skip : iterable of str
        Top-level keys that are not settings and are left out (``sweep``, ``notes``).

    Returns
    -------
    dict
        Paths in the order met; the experiment's fields are ``experiment.<name>``. A row's
        value is kept whole (``vllm.compilation_config`` stays a dict); only a mapping under
        a path the table does not know is opened into ``path.key`` entries.

    Raises
    ------
    ConfigError
        For a key that is not a string.
    """
    skipped = set(skip)
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in config.items():
        _check_key(key)
        if key in skipped:
            continue
        if "." in key or (isinstance(value, Mapping) and alias_prefix(key)):
            _put(out, seen, key, value, key)  # dotted, or other names nested: ``energy: {backend}``
        elif key in SECTIONS and isinstance(value, Mapping) and f"experiment.{key}" not in _OWN_ROWS:
            for name, v in value.items():
                _check_key(name)
                _put(out, seen, f"{key}.{name}", v, nested_spelling(key, name))
        else:
            _put(out, seen, f"experiment.{key}", value, key)
    return out


def _put(out: dict[str, Any], seen: dict[str, str], path: str, value: Any, spelling: str) -> None:
    if isinstance(value, Mapping) and value and not is_leaf(path):
        for k, v in value.items():
            _check_key(k)
            _put(out, seen, f"{path}.{k}", v, f"{spelling}.{k}")
    else:
        given_once(seen, path, spelling)
        out[path] = value


#: An alias (``section.old_name``, or the seed's name) -> the row's path.
_CANONICAL: dict[str, str] = aliases()


def nested_spelling(section: str, name: str) -> str:
    """How a field given inside its section's mapping is written: ``pytorch: {batch_size}``."""
    return f"{section}: {{{name}}}"


def given_once(seen: dict[str, str], path: str, spelling: str) -> None:
    """Record that ``path`` was given as ``spelling``; refuse a second spelling of one field.

    ``pytorch.batch_size`` and ``pytorch: {batch_size}``, an alias and its row's name, or
    ``model`` and ``experiment.model`` all name one field: a config that gives it twice is
    ambiguous (which one wins?), so it is refused, naming both spellings.

    Raises
    ------
    ConfigError
        When ``path`` (or the row an alias names) is already in ``seen``.
    """
    canonical = _CANONICAL.get(path, path)
    if canonical in seen:
        raise ConfigError(
            f"{canonical} is given twice, as {seen[canonical]!r} and as {spelling!r}; llem does "
            "not let one of them win silently. Fix: give it once.")
    seen[canonical] = spelling


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise ConfigError(f"config keys must be strings, not {key!r} ({type(key).__name__}); "
                          "write the key in quotes.")


__all__ = ["NOT_SETTINGS", "flatten", "given_once", "is_leaf", "nested_spelling"]
