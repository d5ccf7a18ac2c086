"""Which pass-through keyword arguments a named field already covers.

Its own module so that the rules (which refuse such collisions) and the queries (which
answer about them) both read it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llem.spec.engines import ENGINE_TARGETS
from llem.spec.params import PARAMS

#: Sections that never reach an engine's keyword arguments.
_NOT_ENGINE = ("experiment", "warmup", "baseline", "study", "dataset")


def passthrough_collisions(backend: str, passthrough: Mapping[str, Any]) -> dict[str, str]:
    """Pass-through keys that a named field covers: key -> the field to set instead.

    Covered are the backend's rows that reach its engine (by llem's name, an alias or the
    engine's name) and every one of llem's own settings (``model``, ``repeats``...), whose
    names an engine keyword must not take either.

    ``passthrough`` is ``{"load": {...}, "generate": {...}}`` or a flat dict.
    """
    keys: list[str] = []
    for k, v in passthrough.items():
        if k in ("load", "generate") and isinstance(v, Mapping):
            keys += list(v)
        else:
            keys.append(k)
    covered: dict[str, str] = {}
    # An engine name counts where pass-through keys land (not inside speculative_config...).
    reached = {t.name for t in ENGINE_TARGETS if t.backend == backend and t.passthrough}
    for p in PARAMS:
        if p.section in _NOT_ENGINE:
            # llem's own settings (``model``, ``repeats``...): never an engine's keyword
            for n in (p.name, *(a for a in p.aliases if "." not in a)):
                covered.setdefault(n, p.path)
            continue
        if backend not in p.backends:
            continue
        names = {p.name, *(a for a in p.aliases if "." not in a)}
        if reached & set(p.targets(backend)):
            names.add(p.engine_names.get(backend, p.name))
        for n in names:
            covered.setdefault(n, p.path)
    return {k: covered[k] for k in keys if k in covered}
