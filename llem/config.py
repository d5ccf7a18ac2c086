"""Self-validating experiment configurations, built from the table in :mod:`llem.spec`.

Each section class (``DecoderConfig``, ``PyTorchConfig``, ...) gets one trait per table
row when the class is created; the trait is tagged with the row (``help``, ``unit``,
``backends``, ``widget`` ...). Every assignment is checked: the value against its row
(type, choices, bounds), the declared target GPU's tier, and every cross-field rule that
reads the field. ``update()`` applies several values as one unit and rolls all of them
back when any check fails.

>>> cfg = ExperimentConfig(model="tiny-random-llama")
>>> cfg.pytorch.load_in_4bit = True
>>> cfg.pytorch.load_in_8bit = True  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
llem.config.InvalidValue: ... a model is loaded either in 4-bit or in 8-bit, not both...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from traitlets import Any as AnyTrait
from traitlets import HasTraits, Instance, List, TraitError, observe, validate

from llem import plugins, spec
from llem.errors import ConfigError, UnknownNameError, did_you_mean
from llem.machine import Where, where
from llem.spec.model import BACKENDS, Param
from llem.spec.rules import MISSING, RULES, Violation, evaluate


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


def _describe(value: Any) -> str:
    return f"the {type(value).__name__} {value!r}"


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
            hint = did_you_mean(str(value), [str(c) for c in allowed])
            fix = f"set {path} to one of those" + (", or leave it unset." if row.allow_none else ".")
            if row.registry:
                fix += (f" A {row.registry} of your own can be registered with "
                        f"llem.register_{row.registry}(name, cls).")
            raise InvalidValue(
                f"{path} must be one of {', '.join(repr(c) for c in allowed)}, "
                f"not {value!r}.{hint} Fix: {fix}"
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
            f"{path} expected {_TYPE_WORDS[t]}, not {_describe(value)}. "
            f"Allowed: {_allowed(row)}. Fix: set {path} to {_TYPE_WORDS[t]}."
        )
    if t == "float":
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidValue(f"{path} must be a finite number, not {value!r}. Allowed: {_allowed(row)}.")
    if t == "dict":
        value = dict(value)
    if t == "list" or (t == "str_or_list" and not isinstance(value, str)):
        value = list(value)
    if t in ("int", "float"):
        lo_bad = row.min is not None and (value <= row.min if row.min_exclusive else value < row.min)
        hi_bad = row.max is not None and (value >= row.max if row.max_exclusive else value > row.max)
        if lo_bad or hi_bad:
            raise InvalidValue(
                f"{path} must be {_allowed(row)}, not {value!r}. Fix: choose a value in that range"
                + (", or leave it unset." if row.allow_none else ".")
            )
    return value


def _allowed(row: Param) -> str:
    if row.choices:
        return "one of " + ", ".join(repr(c) for c in choices(row))
    parts = []
    if row.min is not None:
        parts.append(f"{'>' if row.min_exclusive else '>='} {row.min:g}")
    if row.max is not None:
        parts.append(f"{'<' if row.max_exclusive else '<='} {row.max:g}")
    base = _TYPE_WORDS.get(row.type, row.type)
    text = base + (" " + " and ".join(parts) if parts else "")
    return text + (" (or unset)" if row.allow_none else "")


class Section(HasTraits):
    """Base of the section classes: traits come from the table rows of ``_section``."""

    _section: ClassVar[str] = ""
    _rows: ClassVar[dict[str, Param]] = {}

    def __init__(self, _parent: ExperimentConfig | None = None, **values: Any) -> None:
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
            if cc_target is not _NO_TARGET:
                problem = _tier_problem(row, value, cc_target)
                if problem:
                    raise InvalidValue(
                        f"{row.path}={value!r} {problem}. Fix: {problem_fix(row, value)}, "
                        f"or change experiment.target_gpu (now {root.target_gpu!r})."
                    )
        if root is not None and value is not None and not root._suspend_rules:
            problem = _unsupported(row, root.backend)
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
        _apply_atomically([self], [(self, _field_name(self, k), v) for k, v in items.items()])

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
            out[k] = _plain(v)
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
    path, alias = _resolve(f"{section._section}.{key}")
    if alias:
        _warn_alias(alias, path)
    return path.split(".", 1)[1]


def _unsupported(row: Param, backend: str) -> str | None:
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


def _tier_problem(row: Param, value: Any, cc: float | None) -> str | None:
    gate = spec.gate_for(row.path, value)
    if gate is None or (gate.min_cc is None and not gate.cuda):
        return None
    return spec.tier_problem(gate, cc)


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return v


def _validate_and_mark(self: Section, proposal: Any) -> Any:
    """Check a proposed value; remember the field as explicitly set (even to its default)."""
    value = self._check_field(proposal)
    self._explicit.add(proposal.trait.name)
    return value


def _make_section(name: str, cls_name: str, doc: str) -> type[Section]:
    rows = {p.name: p for p in spec.params(name)}
    ns: dict[str, Any] = {"__doc__": doc, "_section": name, "_rows": rows, "__module__": __name__}
    for p in rows.values():
        gates = [g.min_cc for g in (p.gate, *p.value_gates.values()) if g is not None and g.min_cc]
        ns[p.name] = _Field(p.default, help=p.help).tag(
            row=p, section=p.section, type=p.type, unit=p.unit, backends=p.backends,
            widget=p.widget_hint, load_time=p.load_time, min_cc=min(gates, default=None),
        )
    ns["_validate_all"] = validate(*rows)(_validate_and_mark)
    return type(cls_name, (Section,), ns)


DecoderConfig = _make_section("decoder", "DecoderConfig", "Sampling / decoding settings, shared by backends.")
PyTorchConfig = _make_section("pytorch", "PyTorchConfig", "Hugging Face transformers backend settings.")
VLLMConfig = _make_section("vllm", "VLLMConfig", "vLLM engine settings.")
TensorRTConfig = _make_section("tensorrt", "TensorRTConfig", "TensorRT-LLM engine settings.")
WarmupConfig = _make_section("warmup", "WarmupConfig", "Warmup passes and the thermal floor.")
BaselineConfig = _make_section("baseline", "BaselineConfig", "Idle power baseline.")
StudyConfig = _make_section("study", "StudyConfig", "Cycles and order of a study (sweep).")
_ExperimentFields = _make_section("experiment", "_ExperimentFields", "Experiment-level fields.")
DatasetConfig = _make_section("dataset", "DatasetConfig", "Synthetic prompts and prompt order.")

_SECTION_CLASSES: dict[str, type[Section]] = {
    "decoder": DecoderConfig, "pytorch": PyTorchConfig, "vllm": VLLMConfig,
    "tensorrt": TensorRTConfig, "warmup": WarmupConfig, "baseline": BaselineConfig,
    "study": StudyConfig, "dataset": DatasetConfig,
}
_NO_TARGET = object()


def _resolve(path: str) -> tuple[str, str | None]:
    try:
        return spec.resolve_path(path)
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


def _warn_alias(alias: str, path: str) -> None:
    warnings.warn(
        f"{alias!r} is the old name of {path!r}; it was loaded as {path!r}. Use the new name.",
        AliasWarning,
        stacklevel=4,
    )


class ExperimentConfig(_ExperimentFields):  # type: ignore[misc, valid-type]
    """A whole experiment: experiment-level fields, the decoder, one backend and the method.

    Parameters
    ----------
    **values
        Experiment fields (``model=``, ``backend=`` ...), section dicts or objects
        (``decoder={"temperature": 0.7}``) and dotted paths (``"pytorch.batch_size": 4``
        through ``from_dict``).
    """

    decoder = Instance(DecoderConfig)
    pytorch = Instance(PyTorchConfig)
    vllm = Instance(VLLMConfig)
    tensorrt = Instance(TensorRTConfig)
    warmup = Instance(WarmupConfig)
    baseline = Instance(BaselineConfig)
    study = Instance(StudyConfig)
    dataset = Instance(DatasetConfig)
    #: What llem changed or noticed while building/editing this config (alias loads, resets...).
    notes: List[str] = List()

    def __init__(self, **values: Any) -> None:
        HasTraits.__init__(self)
        self._parent = None
        self._explicit: set[str] = set()
        self._suspend_rules = False
        for name, cls in _SECTION_CLASSES.items():
            self.set_trait(name, cls(_parent=self))
        if values:
            self._load(values)

    def _check_field(self, proposal: Any) -> Any:
        name = proposal.trait.name
        row = self._rows[name]
        value = check_value(row, proposal.value)
        if name == "target_gpu" and value is not None:
            try:
                cc = spec.parse_target(value)
            except ValueError as e:
                raise InvalidValue(f"experiment.target_gpu={value!r}: {e}") from None
            problems = self.tier_problems(cc)
            if problems:
                raise InvalidValue(
                    f"experiment.target_gpu={value!r} refused: the config already uses what that "
                    f"GPU cannot run: " + "; ".join(f"{p}: {why}" for p, why in problems.items())
                )
        if name == "backend" and value != self.backend:
            self._check_backend_change(value)
            return value
        self._check_rules_root(row.path, value)
        return value

    def _check_backend_change(self, backend: str) -> None:
        """Check every rule as it will stand after the switch (the observer resets fields)."""
        if self._suspend_rules:
            return
        dropped = {f"decoder.{n}" for n, r in self.decoder._rows.items() if backend not in r.backends}

        def get(p: str) -> Any:
            if p == "experiment.backend":
                return backend
            return None if p in dropped else self._get_or_missing(p)

        found = evaluate(get, backend=backend, severity="error")
        if found:
            raise InvalidValue(
                f"experiment.backend={backend!r} refused: " + " ".join(v.message for v in found)
            )

    def _check_rules_root(self, path: str, value: Any) -> None:
        if self._suspend_rules:
            return

        def get(p: str) -> Any:
            return value if p == path else self._get_or_missing(p)

        backend = value if path == "experiment.backend" else self.backend
        found = evaluate(get, backend=backend, severity="error", only_fields=[path],
                         context=self._context())
        found = [v for v in found if path in v.rule.fields or v.rule.check]
        if found:
            raise InvalidValue(f"{path}={value!r} refused: " + " ".join(v.message for v in found))

    @observe("backend")
    def _on_backend(self, change: Any) -> None:
        new = change["new"]
        if new not in BACKENDS:
            return  # a plugin backend takes every decoder field (see _unsupported)
        reset = []
        for name, row in self.decoder._rows.items():
            if new not in row.backends and getattr(self.decoder, name) is not None and row.allow_none:
                self.decoder.set_trait(name, None)
                reset.append(f"decoder.{name}")
        if reset:
            self.notes = [*self.notes, f"backend changed to {new!r}: reset {', '.join(reset)} "
                          f"({new} does not support {'it' if len(reset) == 1 else 'them'})"]

    # -- value access -------------------------------------------------------------------------
    def _section_obj(self, section: str) -> Section:
        return self if section == "experiment" else getattr(self, section)

    def _get_or_missing(self, path: str) -> Any:
        section, _, name = path.partition(".")
        if section == "env":
            return MISSING
        if section == "experiment" and name in self._rows:
            return getattr(self, name)
        if section in _SECTION_CLASSES and name in _SECTION_CLASSES[section]._rows:
            return getattr(getattr(self, section), name)
        return MISSING

    def get(self, path: str) -> Any:
        """Value at ``section.name`` (``experiment.`` may be omitted for top-level fields)."""
        if "." not in path:
            path = f"experiment.{path}"
        path, _ = _resolve(path)
        return self._get_or_missing(path)

    @property
    def backend_section(self) -> Section | None:
        """The chosen backend's section (None for a plugin backend, which has none)."""
        return getattr(self, self.backend) if self.backend in BACKENDS else None

    def _target_cc(self) -> Any:
        if self.target_gpu is None:
            return _NO_TARGET
        return spec.parse_target(self.target_gpu)

    def _context(self) -> dict[str, Any]:
        return getattr(self, "_ctx", {})

    # -- whole-config checks --------------------------------------------------------------------
    def violations(self, env: Mapping[str, Any] | None = None, severity: str = "error") -> list[Violation]:
        """Rules that hold for this config (``env``: facts like ``{'cc': 8.0, 'gpu_count': 1}``)."""
        facts = dict(env or {})

        def get(p: str) -> Any:
            if p.startswith("env."):
                key = p[4:]
                if key.startswith("packages."):
                    pk = facts.get("packages", {})
                    return pk.get(key[9:], MISSING) if isinstance(pk, Mapping) else MISSING
                return facts.get(key, MISSING)
            return self._get_or_missing(p)

        return evaluate(get, backend=self.backend, severity=severity, context=self._context())

    def validate(self, env: Mapping[str, Any] | None = None) -> ExperimentConfig:
        """Raise :class:`ConfigError` listing every refused combination; return self if none."""
        found = self.violations(env)
        if found:
            raise ConfigError("Invalid configuration:\n" + "\n".join(f"- {v.message}" for v in found))
        return self

    def skipped(self, env: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Set fields that will have no effect, with the table's reason, fix and rule id.

        ``env`` holds the facts the skip rules read (``gpu_count``, ``cc``, ``packages``
        from :meth:`llem.machine.Machine.facts`; ``compile_failed``... from the backend's
        load); a rule on a fact not given never fires.
        """
        out: dict[str, str] = {}
        for v in self.violations(env, severity="skip"):
            for path in v.rule.skip:
                value = self._get_or_missing(path)
                if value is not MISSING and value is not None and value is not False:
                    out.setdefault(path, v.message)
        return out

    def tier_problems(self, cc: float | None) -> dict[str, str]:
        """Settings the GPU tier ``cc`` (None = cpu) cannot run: ``path=value`` -> why."""
        out = {}
        own = (self.backend,) if self.backend in BACKENDS else ()
        for section in ("experiment", "decoder", *own):
            obj = self._section_obj(section)
            for name, row in obj._rows.items():
                value = getattr(obj, name)
                if value is None or value is False:
                    continue
                problem = _tier_problem(row, value, cc)
                if problem:
                    out[f"{row.path}={value}"] = f"{problem}; {problem_fix(row, value)}"
        return out

    def check_tier(self, target: str | float | None = None, machine_cc: Any = _NO_TARGET) -> None:
        """Refuse settings the target (or ``experiment.target_gpu``, or this machine) can't run.

        What is checked against is decided by :func:`llem.machine.where`; ``machine_cc``
        stands in for this machine's compute capability (None: a CPU-only machine).
        """
        declared = target if target is not None else self.target_gpu
        if declared is None and machine_cc is not _NO_TARGET:
            place = Where(machine_cc, "this machine" + (" (CPU only)" if machine_cc is None else ""))
        else:
            place = where(declared)
        problems = self.tier_problems(place.cc)
        if problems:
            tier = place.tier
            raise ConfigError(
                f"These settings cannot run on {place.words} (tier {tier.name}: {tier.display}):\n"
                + "\n".join(f"- {k}: {v}" for k, v in problems.items())
                + "\nFix: change them, or set experiment.target_gpu to plan for another GPU."
            )

    # -- editing ---------------------------------------------------------------------------------
    def update(self, values: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Apply several values (dotted paths, section dicts, or fields) as one unit.

        Every value is checked; rules are checked once with all values in place. On any
        error nothing is changed.
        """
        items = self._flatten({**(values or {}), **kw})
        self._check_backend_support(items)
        _apply_atomically(self._objects(), items, root=self)

    def _check_backend_support(self, items: list[tuple[Section, str, Any]]) -> None:
        """Refuse decoder fields the backend (as it will be after ``items``) does not take."""
        backend = next((v for o, n, v in items if o is self and n == "backend"), self.backend)
        for obj, name, value in items:
            if obj is self.decoder and value is not None and name in obj._rows:
                problem = _unsupported(obj._rows[name], backend)
                if problem:
                    raise InvalidValue(problem)

    def _objects(self) -> list[Section]:
        return [self, *(getattr(self, s) for s in _SECTION_CLASSES)]

    def _flatten(
        self, values: Mapping[str, Any], given: set[str] | None = None
    ) -> list[tuple[Section, str, Any]]:
        items: list[tuple[Section, str, Any]] = []
        for key, value in values.items():
            if not isinstance(key, str):
                raise InvalidValue(f"config keys must be strings, not {_describe(key)}")
            if key in _SECTION_CLASSES:
                if isinstance(value, Section):
                    value = value.explicit() or value.to_dict(only_set=True)
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    raise InvalidValue(f"section {key!r} must be a mapping of fields, not {_describe(value)}")
                if given is not None and value:
                    given.add(key)
                for k, v in value.items():
                    items += self._flatten({f"{key}.{k}": v}, given)
                continue
            if "." not in key and key not in self._rows and isinstance(value, Mapping):
                names = [*_SECTION_CLASSES, *self._rows]
                raise UnknownNameError(
                    f"Unknown section {key!r}.{did_you_mean(key, names)} "
                    f"Sections: {', '.join(_SECTION_CLASSES)}."
                )
            path = key if "." in key else f"experiment.{key}"
            if given is not None and path.split(".")[0] in BACKENDS:
                given.add(path.split(".")[0])
            if path in ("vllm.load_in_4bit", "vllm.load_in_8bit"):
                rule = next(r for r in RULES if r.check == "vllm_bnb_flags")
                raise InvalidValue(f"{path} refused: " + Violation(rule, f"{path} given").message)
            canonical, alias = _resolve(path)
            if alias:
                _warn_alias(alias, canonical)
                self.notes = [*self.notes, f"{alias!r} loaded as {canonical!r} (old name)"]
            section, _, name = canonical.partition(".")
            items.append((self._section_obj(section), name, value))
        return items

    def _load(self, values: Mapping[str, Any]) -> None:
        given: set[str] = set()
        items = self._flatten(values, given)
        # the backend decides which section may be given: apply it first
        backend = next((v for o, n, v in items if o is self and n == "backend"), self.backend)
        self._ctx = {"sections_given": sorted(given)}
        try:
            if backend in BACKENDS:
                found = evaluate(lambda p: backend if p == "experiment.backend" else MISSING,
                                 context=self._ctx,
                                 rules=[r for r in RULES if r.check == "backend_section_mismatch"])
                if found:
                    raise InvalidValue(found[0].message)
            self._check_backend_support(items)
            _apply_atomically(self._objects(), items, root=self)
        finally:
            self._ctx = {}

    # -- serialisation ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """Build a config from nested or dotted keys; unknown keys are refused with a suggestion."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a mapping, not {_describe(data)}")
        data = dict(data)
        notes = data.pop("notes", None)
        cfg = cls()
        try:
            cfg._load(data)
        except TraitError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(str(e)) from None
        if notes and isinstance(notes, list):
            cfg.notes = [*cfg.notes, *map(str, notes)]
        return cfg

    def to_dict(self, only_set: bool = False) -> dict[str, Any]:  # type: ignore[override]
        """Nested dict: experiment fields, then the decoder, the chosen backend and method sections.

        Other backends' sections are left out (giving them is refused on load).
        """
        out: dict[str, Any] = Section.to_dict(self, only_set=only_set)
        for name in _SECTION_CLASSES:
            if name in BACKENDS and name != self.backend:
                continue
            section = getattr(self, name).to_dict(only_set=only_set)
            if section or not only_set:
                out[name] = section
        return out

    def flat(self, only_set: bool = False) -> dict[str, Any]:
        """``section.name`` -> value for the same fields as :meth:`to_dict`."""
        out = {}
        for section, value in self.to_dict(only_set=only_set).items():
            if isinstance(value, dict) and section in _SECTION_CLASSES:
                out.update({f"{section}.{k}": v for k, v in value.items()})
            else:
                out[f"experiment.{section}"] = value
        return out

    def to_json(self, only_set: bool = True) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(only_set=only_set), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        """Parse JSON text (as written by :meth:`to_json`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"not valid JSON: {e}") from None
        return cls.from_dict(data)

    def to_yaml(self, only_set: bool = True) -> str:
        """YAML text of :meth:`to_dict`."""
        import yaml

        return yaml.safe_dump(self.to_dict(only_set=only_set), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> ExperimentConfig:
        """Parse YAML text; a ``sweep:`` block, if any, is ignored here (see llem.sweep)."""
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML: {e}") from None
        if data is None:
            data = {}
        if isinstance(data, dict):
            data.pop("sweep", None)
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read a ``.yaml``/``.yml`` or ``.json`` config file."""
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        text = p.read_text(encoding="utf-8")
        return cls.from_json(text) if p.suffix == ".json" else cls.from_yaml(text)

    def save(self, path: str | Path) -> Path:
        """Write the config (only what is set) as YAML or JSON, by the file's suffix."""
        p = Path(path)
        p.write_text(self.to_json() if p.suffix == ".json" else self.to_yaml(), encoding="utf-8")
        return p

    def config_hash(self) -> str:
        """Short stable hash of the full effective settings (identifies a run in a sweep)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def copy(self) -> ExperimentConfig:
        """An independent copy."""
        return ExperimentConfig.from_dict(self.to_dict(only_set=True))

    def resolved_decoder(self) -> dict[str, Any]:
        """Decoder fields with the preset expanded (explicit fields win over the preset)."""
        d = self.decoder.to_dict()
        preset = d.pop("preset", None)
        if preset:
            for k, v in spec.PRESETS[preset].items():
                if d.get(k) is None and k in d:
                    row = self.decoder._rows[k]
                    if self.backend in row.backends:
                        d[k] = v
        return d

    def resolved_method(self) -> dict[str, Any]:
        """Warmup fields with the profile's values where unset."""
        out = {f"warmup.{k}": v for k, v in self.warmup.to_dict().items()}
        for k, v in spec.PROFILES[self.profile].items():
            if out.get(k) is None:
                out[k] = v
        return out

    def _check_after_update(self, touched: set[str]) -> None:
        found = [
            v for v in self.violations()
            if set(v.rule.fields) & touched
            or (v.rule.check and v.rule.check != "backend_section_mismatch")
        ]
        if found:
            raise InvalidValue("refused: " + " ".join(v.message for v in found))

    def __repr__(self) -> str:
        return f"ExperimentConfig({self.to_dict(only_set=True)!r})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        import yaml

        p.text("ExperimentConfig\n" + yaml.safe_dump(self.to_dict(only_set=True), sort_keys=False))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExperimentConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _apply_atomically(
    objects: list[Section], items: list[tuple[Section, str, Any]], root: ExperimentConfig | None = None
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
                    _resolve(f"{obj._section}.{name}")  # raises with a suggestion
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
def _rules_suspended(root: ExperimentConfig) -> Iterator[None]:
    previous = root._suspend_rules
    root._suspend_rules = True
    try:
        yield
    finally:
        root._suspend_rules = previous


__all__ = [
    "AliasWarning",
    "BaselineConfig",
    "DatasetConfig",
    "DecoderConfig",
    "ExperimentConfig",
    "InvalidValue",
    "PyTorchConfig",
    "Section",
    "StudyConfig",
    "TensorRTConfig",
    "VLLMConfig",
    "WarmupConfig",
    "check_value",
    "choices",
]
