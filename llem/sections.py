"""The machinery of self-validating config sections: field checks, atomic updates, aliases.

:mod:`llem.config` builds its section classes (``DecoderConfig``, ``PyTorchConfig`` ...)
with :func:`make_section`, one trait per table row; this module holds what every section
shares. Values are checked against their row (:func:`check_value`), the declared target's
tier and the cross-field rules that read them; :func:`apply_atomically` sets several values
as one unit and rolls every one back when a check fails.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from traitlets import Any as AnyTrait
from traitlets import HasTraits, TraitError, validate

from llem import plugins, spec
from llem._input import InputRefused, check_data, short
from llem.errors import ConfigError, UnknownNameError, did_you_mean
from llem.spec.model import BACKENDS, SECTION_CLASSES, Param
from llem.spec.rules import MISSING, evaluate

#: What ``_target_cc()`` returns when no target GPU is declared.
NO_TARGET = object()

class InvalidValue(ConfigError, TraitError):
    """A value or combination refused by the table; a :class:`ConfigError` and a TraitError."""


class AliasWarning(FutureWarning):
    """A config used an old name (the seed benchmark's, or an engine's) for a llem field."""


class _Field(AnyTrait):
    """A trait whose checks all live in the section's validator (so None is checked too)."""

    allow_none = False
    info_text = "a value described by its table row"


_TYPE_WORDS = {
    "int": "an int", "float": "a number", "bool": "True or False", "str": "a string",
    "dict": "a dict", "list": "a list", "str_or_list": "a string or a list of strings",
}


def describe(value: Any) -> str:
    """``the str 'a'``: a value and its type, for error messages (a long one cut short)."""
    return f"the {type(value).__name__} {short(value, 200)}"


def choices(row: Param) -> tuple[Any, ...]:
    """The values ``row`` allows: its choices, and for a plugin row every registered name.

    ``experiment.backend`` and ``experiment.meter`` list llem's own names first, then the
    names registered in :mod:`llem.plugins` (entry points or ``llem.register_backend``).
    """
    own = tuple(row.choices or ())
    if not row.registry:
        return own
    return own + tuple(n for n in plugins.names(row.registry) if n not in own)


def check_value(row: Param, value: Any) -> Any:
    """Check ``value`` against ``row`` and return it (ints widened to float where declared).

    Raises :class:`InvalidValue` naming the field, the bad value, what is allowed and the fix.
    """
    path = row.path
    if value is None:
        if row.allow_none:
            return None
        raise InvalidValue(
            f"{path} cannot be unset. Allowed: {_allowed(row)}. Fix: give it a value"
            + (f" (default {row.default!r})." if row.default is not None else ".")
        )
    t = row.type
    if t == "enum":
        allowed = choices(row)
        try:
            ok = value in allowed
        except TypeError:  # an unhashable value compared with the choices
            ok = False
        if not ok:
            text = value if isinstance(value, str) else short(value)
            hint = did_you_mean(text, [str(c) for c in allowed]) if len(text) <= 100 else ""
            fix = f"set {path} to one of those" + (", or leave it unset." if row.allow_none else ".")
            if row.registry:
                fix += (f" A {row.registry} of your own can be registered with "
                        f"llem.register_{row.registry}(name, cls).")
            raise InvalidValue(
                f"{path} must be one of {', '.join(repr(c) for c in allowed)}, "
                f"not {short(value)}.{hint} Fix: {fix}"
            )
        return value
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "dict": isinstance(value, Mapping),
        "list": isinstance(value, (list, tuple)),
        "str_or_list": isinstance(value, str)
        or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)),
    }[t]
    if not ok:
        raise InvalidValue(
            f"{path} expected {_TYPE_WORDS[t]}, not {describe(value)}. "
            f"Allowed: {_allowed(row)}. Fix: set {path} to {_TYPE_WORDS[t]}."
        )
    if isinstance(value, str) and t in ("str", "str_or_list") and not value.strip():
        raise InvalidValue(
            f"{path} cannot be an empty string. Allowed: {_allowed(row)}. Fix: give it a value"
            + (f" (default {row.default!r})" if row.default is not None else "")
            + (", or leave it unset." if row.allow_none else "."))
    if t == "float":
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidValue(f"{path} must be a finite number, not {value!r}. Allowed: {_allowed(row)}.")
    if t in ("dict", "list", "str_or_list") and not isinstance(value, str):
        try:
            check_data(value, path)
        except InputRefused as e:
            raise InvalidValue(str(e)) from None
    if t == "dict":
        value = dict(value)
    if t == "list" or (t == "str_or_list" and not isinstance(value, str)):
        value = list(value)
    if t in ("int", "float"):
        lo_bad = row.min is not None and (value <= row.min if row.min_exclusive else value < row.min)
        hi_bad = row.max is not None and (value >= row.max if row.max_exclusive else value > row.max)
        if lo_bad or hi_bad:
            raise InvalidValue(
                f"{path} must be {_allowed(row)}, not {short(value)}. Fix: choose a value in that range"
                + (", or leave it unset." if row.allow_none else ".")
            )
    return value


def _bound(x: float) -> str:
    """A bound as a person reads it: ``1,048,576``, ``0.5``, ``-2`` (never ``1.04858e+06``)."""
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:g}"


def _allowed(row: Param) -> str:
    if row.choices:
        return "one of " + ", ".join(repr(c) for c in choices(row))
    parts = []
    if row.min is not None:
        parts.append(f"{'>' if row.min_exclusive else '>='} {_bound(row.min)}")
    if row.max is not None:
        parts.append(f"{'<' if row.max_exclusive else '<='} {_bound(row.max)}")
    base = _TYPE_WORDS.get(row.type, row.type)
    text = base + (" " + " and ".join(parts) if parts else "")
    return text + (" (or unset)" if row.allow_none else "")


class Section(HasTraits):
    """Base of the section classes: traits come from the table rows of ``_section``."""

    _section: ClassVar[str] = ""
    _rows: ClassVar[dict[str, Param]] = {}

    def __init__(self, _parent: Any = None, **values: Any) -> None:
        super().__init__()
        self._parent = _parent
        self._explicit: set[str] = set()
        if values:
            self.update(values)

    # -- validation ---------------------------------------------------------------------------
    def _check_field(self, proposal: Any) -> Any:
        name = proposal.trait.name
        row = self._rows[name]
        value = check_value(row, proposal.value)
        root = self._parent
        if root is not None and value is not None:
            cc_target = root._target_cc()
            if cc_target is not NO_TARGET:
                problem = tier_problem_of(row, value, cc_target)
                if problem:
                    raise InvalidValue(
                        f"{row.path}={value!r} {problem}. Fix: {problem_fix(row, value)}, "
                        f"or change experiment.target_gpu (now {root.target_gpu!r})."
                    )
        if root is not None and value is not None and not root._suspend_rules:
            problem = unsupported(row, root.backend)
            if problem:
                raise InvalidValue(problem)
        self._check_rules(row.path, value)
        return value

    def _check_rules(self, path: str, value: Any) -> None:
        root = self._parent
        if root is not None and root._suspend_rules:
            return

        def get(p: str) -> Any:
            if p == path:
                return value
            if root is not None:
                return root._get_or_missing(p)
            section, _, name = p.partition(".")
            if section == self._section and name in self._rows:
                return getattr(self, name)
            return MISSING

        backend = root.backend if root is not None else None
        found = evaluate(get, backend=backend, severity="error", only_fields=[path])
        found = [v for v in found if path in v.rule.fields or v.rule.check == "unsupported_precision"]
        if found:
            raise InvalidValue(f"{path}={value!r} refused: " + " ".join(v.message for v in found))

    # -- access ---------------------------------------------------------------------------------
    @classmethod
    def rows(cls) -> tuple[Param, ...]:
        """The table rows this section was made from."""
        return tuple(cls._rows.values())

    def update(self, values: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Set several fields as one unit: all are applied, or none (rolled back on error)."""
        items = {**(values or {}), **kw}
        if self._parent is not None:
            self._parent.update({f"{self._section}.{k}": v for k, v in items.items()})
            return
        apply_atomically([self], [(self, _field_name(self, k), v) for k, v in items.items()])

    def explicit(self) -> dict[str, Any]:
        """Fields the user set (even to their default value)."""
        return {k: getattr(self, k) for k in self._rows if k in self._explicit}

    def to_dict(self, only_set: bool = False) -> dict[str, Any]:
        """Field -> value; with ``only_set`` only fields that are set (not None) or explicit."""
        out = {}
        for k, row in self._rows.items():
            v = getattr(self, k)
            if only_set and v is None:
                continue
            if only_set and k not in self._explicit and v == row.default and row.section != "experiment":
                continue
            out[k] = plain(v)
        return out

    def is_default(self) -> bool:
        """True when nothing in the section was set."""
        return not self._explicit and all(getattr(self, k) == r.default for k, r in self._rows.items())

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.to_dict(only_set=True).items())
        return f"{type(self).__name__}({body})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


def _field_name(section: Section, key: str) -> str:
    if key in section._rows:
        return key
    path, alias = resolve_path(f"{section._section}.{key}")
    if alias:
        warn_alias(alias, path)
    return path.split(".", 1)[1]


def unsupported(row: Param, backend: str) -> str | None:
    """Why a decoder ``row`` cannot be set with ``backend``, or None.

    A plugin backend (not one of the table's) is not in any row's ``backends``: it takes
    every decoder field, and reports the ones it ignores in its load's ``skipped``.
    """
    if row.section != "decoder" or backend in row.backends or backend not in BACKENDS:
        return None
    return (
        f"{row.path} is not supported by the {backend} backend (supported by: "
        f"{', '.join(row.backends)}). Fix: leave it unset, or choose one of those backends."
    )


def problem_fix(row: Param, value: Any) -> str:
    """The alternative a gate suggests for ``row`` set to ``value``."""
    gate = spec.gate_for(row.path, value)
    return gate.alternative if gate and gate.alternative else f"leave {row.path} unset"


def tier_problem_of(row: Param, value: Any, cc: float | None) -> str | None:
    """Why ``row`` set to ``value`` cannot run at compute capability ``cc`` (None: a CPU)."""
    gate = spec.gate_for(row.path, value)
    if gate is None or (gate.min_cc is None and not gate.cuda):
        return None
    return spec.tier_problem(gate, cc)


def plain(v: Any) -> Any:
    """``v`` with tuples turned into lists (how a config dict holds sequences)."""
    if isinstance(v, tuple):
        return list(v)
    return v


def _validate_and_mark(self: Section, proposal: Any) -> Any:
    """Check a proposed value; remember the field as explicitly set (even to its default)."""
    value = self._check_field(proposal)
    self._explicit.add(proposal.trait.name)
    return value


def make_section(name: str) -> type[Section]:
    """The section class of ``name``: one trait per table row, named and documented by the table.

    The class's name and docstring come from :data:`llem.spec.model.SECTION_CLASSES`; it
    lives in :mod:`llem.config` (its ``__module__``), where the sections are made.
    """
    cls_name, doc = SECTION_CLASSES[name]
    rows = {p.name: p for p in spec.params(name)}
    ns: dict[str, Any] = {"__doc__": doc, "_section": name, "_rows": rows, "__module__": "llem.config"}
    for p in rows.values():
        gates = [g.min_cc for g in (p.gate, *p.value_gates.values()) if g is not None and g.min_cc]
        ns[p.name] = _Field(p.default, help=p.help).tag(
            row=p, section=p.section, type=p.type, unit=p.unit, backends=p.backends,
            widget=p.widget_hint, load_time=p.load_time, min_cc=min(gates, default=None),
        )
    ns["_validate_all"] = validate(*rows)(_validate_and_mark)
    return type(cls_name, (Section,), ns)


def resolve_path(path: str, backend: str | None = None) -> tuple[str, str | None]:
    """``(canonical path, alias used)``; an unknown backend field says which section has it.

    ``backend`` picks the row of a name that is each backend's own field (``precision``).
    """
    try:
        return spec.resolve_path(path, backend)
    except UnknownNameError:
        section, _, name = path.partition(".")
        elsewhere = [p.section for p in spec.PARAMS if p.name == name and p.section != section]
        if elsewhere and section in BACKENDS:
            raise UnknownNameError(
                f"{path} is not a {section} setting: {name!r} belongs to "
                f"{', '.join(elsewhere)}. The {section} backend does not take it; "
                f"use {' or '.join(e + '.' + name for e in elsewhere)} with that backend."
            ) from None
        raise


def warn_alias(alias: str, path: str) -> None:
    """Warn (:class:`AliasWarning`) that ``alias`` was loaded as ``path``."""
    warnings.warn(
        f"{alias!r} is the old name of {path!r}; it was loaded as {path!r}. Use the new name.",
        AliasWarning,
        stacklevel=4,
    )


def warn_value_alias(path: str, value: Any, own: Any) -> None:
    """Warn (:class:`AliasWarning`) that ``value`` of ``path`` was loaded as llem's ``own`` spelling."""
    warnings.warn(
        f"{value!r} is another spelling of {own!r} for {path}; it was loaded as {own!r}. "
        f"Use {own!r}.",
        AliasWarning,
        stacklevel=4,
    )


def apply_atomically(
    objects: list[Section], items: list[tuple[Section, str, Any]], root: Any = None
) -> None:
    """Set ``items`` with every object's notifications held; on error restore all of them."""
    snapshot = [(o, dict(o._trait_values), set(o._explicit)) for o in objects]
    notes = list(root.notes) if root is not None else None
    try:
        with contextlib.ExitStack() as stack:
            if root is not None:
                stack.enter_context(_rules_suspended(root))
            for o in objects:
                stack.enter_context(o.hold_trait_notifications())
            for obj, name, value in items:
                if name not in obj._rows:
                    resolve_path(f"{obj._section}.{name}")  # raises with a suggestion
                setattr(obj, name, value)
        # all values in place: check every rule once
        if root is not None:
            root._check_after_update({f"{o._section}.{n}" for o, n, _ in items})
    except Exception as e:
        changed = []
        for o, values, explicit in snapshot:
            now = dict(o._trait_values)
            o._trait_values.clear()
            o._trait_values.update(values)
            o._explicit = explicit
            # a trait never read before has no stored value: it falls back to its default
            changed += [(o, k, v, getattr(o, k)) for k, v in now.items() if getattr(o, k) is not v]
        # observers (a linked form...) saw the refused values: tell them about the rollback
        for o, name, refused, old in changed:
            o._notify_trait(name, refused, old)
        if root is not None and notes is not None:
            root._trait_values["notes"] = notes
        if isinstance(e, ConfigError):
            raise
        if isinstance(e, TraitError):
            raise InvalidValue(str(e)) from None
        raise


@contextlib.contextmanager
def _rules_suspended(root: Any) -> Iterator[None]:
    previous = root._suspend_rules
    root._suspend_rules = True
    try:
        yield
    finally:
        root._suspend_rules = previous


