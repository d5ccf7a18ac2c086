"""Questions answered by reading the table; nothing here lists a parameter a second time."""

from __future__ import annotations

from typing import Any

from llem.errors import UnknownNameError, did_you_mean, unknown_name
from llem.spec.capabilities import CAPABILITIES, precisions
from llem.spec.engines import ENGINE_TARGETS
from llem.spec.model import BACKENDS, Capability, EngineArg, EngineTarget, Gate, Param, Rule, Support
from llem.spec.params import PARAMS
from llem.spec.passthrough import passthrough_collisions
from llem.spec.rules import RULES
from llem.spec.tiers import TIERS, tier_for

_BY_PATH: dict[str, Param] = {p.path: p for p in PARAMS}
_ALIASES: dict[str, str] = {}
#: A full-path alias on backends' rows (``experiment.precision``) -> backend -> the row's path.
_BY_BACKEND: dict[str, dict[str, str]] = {}
for _p in PARAMS:
    for _a in _p.aliases:
        if "." in _a and _p.section in BACKENDS:
            _BY_BACKEND.setdefault(_a, {})[_p.section] = _p.path
        else:
            _ALIASES[_a if "." in _a else f"{_p.section}.{_a}"] = _p.path
    if _p.seed_name and " " not in _p.seed_name:
        # the seed's top-level names are the experiment section's
        _ALIASES.setdefault(_p.seed_name if "." in _p.seed_name else f"experiment.{_p.seed_name}",
                            _p.path)
    # an engine's sampling section nests its sampling fields (``vllm: {sampling: {min_p}}``)
    if _p.section == "decoder":
        for _b in ("vllm", "tensorrt"):
            if _b in _p.backends:
                for _n in {_p.name, _p.engine_names.get(_b, _p.name)}:
                    _ALIASES.setdefault(f"{_b}.sampling.{_n}", _p.path)
#: Every prefix of an alias path that is not itself a row: a config may nest under it
#: (``energy: {backend: ...}``, ``vllm: {attention: {backend: ...}}``).
_ALIAS_PREFIXES: frozenset[str] = frozenset(
    a.rsplit(".", i)[0] for a in [*_ALIASES, *_BY_BACKEND] for i in range(1, a.count(".") + 1)
) - set(_BY_PATH) - {p.section for p in PARAMS}


def params(section: str | None = None, backend: str | None = None) -> tuple[Param, ...]:
    """Rows of ``section`` (all when None) that ``backend`` supports (all when None).

    Raises
    ------
    UnknownNameError
        For a section or backend the table does not know (with the known names).
    """
    if section is not None and section not in {p.section for p in PARAMS}:
        raise unknown_name("section", section, sorted({p.section for p in PARAMS}))
    if backend is not None and backend not in BACKENDS:
        # a plugin backend has no rows of its own: its face asks with backend=None
        raise unknown_name("backend", backend, list(BACKENDS))
    return tuple(
        p for p in PARAMS
        if (section is None or p.section == section) and (backend is None or backend in p.backends)
    )


def all_paths() -> tuple[str, ...]:
    """Every parameter path, ``section.name``."""
    return tuple(_BY_PATH)


def aliases() -> dict[str, str]:
    """Old or other names (the seed's, engines') -> llem's path.

    An alias whose row depends on the backend (``experiment.precision``) maps to
    ``<backend>.<field>``; :func:`resolve_path` with a backend gives the row.
    """
    out = dict(_ALIASES)
    for alias, rows in _BY_BACKEND.items():
        fields = {path.split(".", 1)[1] for path in rows.values()}
        out[alias] = f"<backend>.{fields.pop()}" if len(fields) == 1 else " / ".join(rows.values())
    return out


def alias_prefix(path: str) -> bool:
    """True when ``path`` is not a row but other names nest under it (``energy``, ``vllm.attention``)."""
    return path in _ALIAS_PREFIXES


def resolve_path(path: str, backend: str | None = None) -> tuple[str, str | None]:
    """Return ``(canonical path, alias used or None)``; raise for an unknown path.

    ``backend`` picks the row of an alias that names each backend's own field
    (``experiment.precision`` is ``pytorch.dtype`` with the pytorch backend).
    """
    if path in _BY_PATH:
        return path, None
    if path in _ALIASES:
        return _ALIASES[path], path
    if path in _BY_BACKEND:
        rows = _BY_BACKEND[path]
        if backend in rows:
            return rows[backend], path
        raise UnknownNameError(
            f"{path!r} names a backend's own field ({', '.join(rows.values())}); the backend "
            f"{backend!r} has none. Fix: choose one of {', '.join(rows)}, or leave it out.")
    section = path.partition(".")[0]
    same = [p.rsplit(".", 1)[1] for p in _BY_PATH if p.startswith(section + ".")]
    if not same:
        sections = sorted({p.section for p in PARAMS})
        raise UnknownNameError(
            f"Unknown parameter {path!r}: there is no section {section!r}."
            f"{did_you_mean(section, sections)} Sections: {', '.join(sections)}."
        )
    raise UnknownNameError(
        f"Unknown parameter {path!r}.{did_you_mean(path, [*_BY_PATH, *_ALIASES])} "
        f"Fields of {section}: {', '.join(same)}."
    )


def value_alias(path: str, value: Any) -> Any:
    """The row's own spelling of ``value`` (``bf16`` -> ``bfloat16``), or ``value`` unchanged."""
    row = _BY_PATH.get(path)
    if row is None or not isinstance(value, str):
        return value
    return row.value_aliases.get(value, value)


def param(path: str) -> Param:
    """The row for ``path`` (aliases accepted)."""
    return _BY_PATH[resolve_path(path)[0]]


def decoder_param_support(view: str = "llem") -> dict[str, list[str]]:
    """Decoder parameters each backend takes.

    ``view="llem"`` follows each engine's current documentation; ``view="seed"`` gives the
    seed benchmark's (narrower) lists, for comparison.
    """
    if view not in ("llem", "seed"):
        raise ValueError("view must be 'llem' or 'seed'")
    out: dict[str, list[str]] = {b: [] for b in BACKENDS}
    for p in params("decoder"):
        if view == "seed":
            supported = p.seed_backends or ()
        else:
            supported = p.backends
        for b in supported:
            out[b].append(p.name)
    return out


def backend_specific_params() -> dict[str, list[str]]:
    """Paths of each backend's own section."""
    return {b: [p.path for p in params(b)] for b in BACKENDS}


def mutual_exclusions() -> dict[str, list[str]]:
    """Each path -> the paths it cannot be used with (read from the error rules)."""
    out: dict[str, list[str]] = {}
    for rule in RULES:
        if rule.severity != "error" or rule.check or len(rule.when) < 2:
            continue
        fields = [c.path for c in rule.when if c.path != "experiment.backend"]
        first, rest = fields[0], fields[1:]
        for other in rest:
            out.setdefault(first, [])
            if other not in out[first]:
                out[first].append(other)
    return out


def param_skip_conditions() -> dict[str, list[str]]:
    """Each path -> the reasons it can be skipped (ignored, not refused)."""
    out: dict[str, list[str]] = {}
    for rule in RULES:
        if rule.severity != "skip":
            continue
        for path in rule.skip:
            out.setdefault(path, []).append(rule.reason)
    for p in PARAMS:
        for value, gate in p.value_gates.items():
            if gate.package:
                out.setdefault(f"{p.path}={value}", []).append(gate.reason)
    return out


def gpu_gates() -> list[tuple[str, Gate]]:
    """Every gated item (``path`` or ``path=value``) with its gate."""
    out: list[tuple[str, Gate]] = []
    for p in PARAMS:
        if p.gate is not None:
            out.append((p.path, p.gate))
        for value, gate in p.value_gates.items():
            out.append((f"{p.path}={value}", gate))
    return out


def named_packages() -> tuple[str, ...]:
    """Import names the table asks about, in table order, each once.

    Its gates' packages first, then the ``env.packages.*`` facts its rules read.
    """
    names = [g.package for _, g in gpu_gates() if g.package]
    names += [c.path.removeprefix("env.packages.") for r in RULES for c in r.when
              if c.path.startswith("env.packages.")]
    return tuple(dict.fromkeys(names))


def params_requiring_gpu_capability(cc: float) -> dict[str, list[str]]:
    """Gated items whose compute-capability floor is at most ``cc``, grouped by tier.

    ``params_requiring_gpu_capability(9.0)`` returns the Ampere, Ada and Hopper rows;
    ``8.0`` returns the Ampere rows only.
    """
    out: dict[str, list[str]] = {}
    for item, gate in gpu_gates():
        if gate.min_cc is not None and gate.min_cc <= cc + 1e-9:
            out.setdefault(tier_for(gate.min_cc).name, []).append(item)
    return out


def gate_for(path: str, value: Any = None) -> Gate | None:
    """The gate on ``path`` set to ``value`` (value gate first, then the row's own gate)."""
    p = param(path)
    if value is not None:
        try:
            gate = p.value_gates.get(value)
        except TypeError:  # unhashable value (dict)
            gate = None
        if gate is not None:
            return gate
    if p.gate is not None and value not in (None, False):
        return p.gate
    return None


def tier_problem(gate: Gate, cc: float | None, *, on_cpu_ok_without_cuda: bool = True) -> str | None:
    """Why ``gate`` cannot run at compute capability ``cc`` (None = cpu), or None if it can."""
    if cc is None:
        if gate.cuda:
            return "needs an NVIDIA GPU" + (f" (compute capability {gate.min_cc}+)" if gate.min_cc else "")
        return None
    if gate.min_cc is not None and cc + 1e-9 < gate.min_cc:
        need = tier_for(gate.min_cc)
        return (f"needs compute capability {gate.min_cc:.1f}+ ({need.name.capitalize()} or newer); "
                f"this one has {cc:.1f}")
    return None


def validation_rules() -> list[dict[str, Any]]:
    """Every rule as a plain dict: id, severity, backends, fields, reason, fix, seed_rule."""
    return [
        {
            "id": r.id,
            "severity": r.severity,
            "backends": list(r.backends),
            "fields": list(r.fields),
            "reason": r.reason,
            "fix": r.fix,
            "seed_rule": r.seed_rule,
        }
        for r in RULES
    ]


def rule(rule_id: str) -> Rule:
    """The rule called ``rule_id``."""
    for r in RULES:
        if r.id == rule_id:
            return r
    raise unknown_name("rule", rule_id, [r.id for r in RULES])


def backend_capabilities() -> dict[str, dict[str, Support]]:
    """Backend -> capability name -> support."""
    return {b: {c.name: c.support[b] for c in CAPABILITIES} for b in BACKENDS}


def capability(name: str) -> Capability:
    """The capability row called ``name``."""
    for c in CAPABILITIES:
        if c.name == name:
            return c
    raise unknown_name("capability", name, [c.name for c in CAPABILITIES])


def engine_targets(backend: str) -> dict[str, EngineTarget]:
    """Where ``backend``'s engine arguments go: target name -> what it is (the engine's call or object)."""
    found = {t.name: t for t in ENGINE_TARGETS if t.backend == backend}
    if not found:
        raise unknown_name("backend", backend, BACKENDS)
    return found


def engine_args(backend: str, section: str | None = None, target: str | None = None) -> tuple[EngineArg, ...]:
    """Every row ``backend`` passes to its engine: its name there, where it goes, its values.

    A row is an engine argument of ``backend`` when its ``engine_target`` names the backend;
    its name is ``engine_names[backend]``, else the row's own name.

    Parameters
    ----------
    backend : str
        ``pytorch``, ``vllm`` or ``tensorrt``.
    section : str, optional
        Only rows of this section (``decoder``...).
    target : str, optional
        Only arguments that go to this target (``sampling``, ``llm``, ``generation``...; see
        :func:`engine_targets`).

    Examples
    --------
    >>> {a.path: a.name for a in engine_args("vllm", target="beam")}["decoder.num_beams"]
    'beam_width'
    """
    known = engine_targets(backend)
    if target is not None and target not in known:
        raise unknown_name(f"{backend} engine target", target, known)
    out = []
    for p in PARAMS:
        targets = p.targets(backend)
        if not targets or (section is not None and p.section != section):
            continue
        if target is not None and target not in targets:
            continue
        out.append(EngineArg(row=p, backend=backend, name=p.engine_names.get(backend, p.name),
                             targets=targets, readback=p.engine_readback.get(backend, ())))
    return tuple(out)


def engine_arg(backend: str, path: str) -> EngineArg:
    """The engine argument row ``path`` is for ``backend``; raise if the backend passes none."""
    row = param(path)
    for arg in engine_args(backend, section=row.section):
        if arg.row is row:
            return arg
    raise UnknownNameError(
        f"{row.path} is not an engine argument of the {backend} backend (its row has no "
        f"engine_target for {backend!r}). Arguments of {backend} in that section: "
        f"{', '.join(a.path for a in engine_args(backend, section=row.section)) or 'none'}."
    )


def tiers() -> list[dict[str, Any]]:
    """The GPU tiers with what each adds."""
    return [
        {"name": t.name, "display": t.display, "min_cc": t.min_cc, "examples": list(t.examples),
         "adds": t.adds}
        for t in TIERS
    ]


__all__ = [
    "alias_prefix",
    "aliases",
    "all_paths",
    "backend_capabilities",
    "backend_specific_params",
    "capability",
    "decoder_param_support",
    "engine_arg",
    "engine_args",
    "engine_targets",
    "gate_for",
    "gpu_gates",
    "mutual_exclusions",
    "named_packages",
    "param",
    "param_skip_conditions",
    "params",
    "params_requiring_gpu_capability",
    "passthrough_collisions",
    "precisions",
    "resolve_path",
    "value_alias",
    "rule",
    "tier_problem",
    "tiers",
    "validation_rules",
]
