"""Self-validating experiment configurations, built from the table in :mod:`llem.spec`.

Each section class (``DecoderConfig``, ``PyTorchConfig``, ...) gets one trait per table
row when the class is created (:func:`llem.sections.make_section`); the trait is tagged
with the row (``help``, ``unit``, ``backends``, ``widget`` ...). Every assignment is
checked: the value against its row (type, choices, bounds), the declared target GPU's
tier, and every cross-field rule that reads the field. ``update()`` applies several
values as one unit and rolls all of them back when any check fails.

Type checkers and editors see the fields through ``llem/_config_types.py``, generated from
the same rows (``python -m llem.spec types``).

>>> cfg = ExperimentConfig(model="tiny-random-llama")
>>> cfg.pytorch.load_in_4bit = True
>>> cfg.pytorch.load_in_8bit = True  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
llem.sections.InvalidValue: ... a model is loaded either in 4-bit or in 8-bit, not both...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traitlets import HasTraits, Instance, List, TraitError, observe

from llem import spec
from llem._input import load_json, load_yaml, read_text, short
from llem.errors import ConfigError, UnknownNameError, did_you_mean
from llem.machine import Where, where
from llem.sections import (
    NO_TARGET,
    AliasWarning,
    InvalidValue,
    Section,
    apply_atomically,
    check_value,
    choices,
    describe,
    make_section,
    problem_fix,
    resolve_path,
    tier_problem_of,
    unsupported,
    warn_alias,
    warn_value_alias,
)
from llem.spec.flat import given_once, nested_spelling
from llem.spec.model import BACKENDS
from llem.spec.rules import MISSING, RULES, Violation, evaluate

if TYPE_CHECKING:
    from llem._config_types import (
        BaselineConfig,
        DatasetConfig,
        DecoderConfig,
        PyTorchConfig,
        StudyConfig,
        TensorRTConfig,
        VLLMConfig,
        WarmupConfig,
        _ExperimentFields,
    )
else:
    DecoderConfig = make_section("decoder")
    PyTorchConfig = make_section("pytorch")
    VLLMConfig = make_section("vllm")
    TensorRTConfig = make_section("tensorrt")
    WarmupConfig = make_section("warmup")
    BaselineConfig = make_section("baseline")
    StudyConfig = make_section("study")
    DatasetConfig = make_section("dataset")
    _ExperimentFields = make_section("experiment")

_SECTION_CLASSES: dict[str, type[Section]] = {
    "decoder": DecoderConfig, "pytorch": PyTorchConfig, "vllm": VLLMConfig,
    "tensorrt": TensorRTConfig, "warmup": WarmupConfig, "baseline": BaselineConfig,
    "study": StudyConfig, "dataset": DatasetConfig,
}

#: Every other name a config may use for a row (:func:`llem.spec.aliases`).
_ALIAS_PATHS: frozenset[str] = frozenset(spec.aliases())


def _nested(spelling: str, key: str) -> str:
    """How ``key`` inside the mapping written ``spelling`` reads: ``vllm: {attention: {backend}}``."""
    closing = len(spelling) - len(spelling.rstrip("}"))
    if not closing:
        return f"{spelling}: {{{key}}}"
    return f"{spelling[:-closing]}: {{{key}}}" + "}" * closing


def _backend_given(values: Mapping[str, Any]) -> str | None:
    """The backend ``values`` choose, in any of the spellings a config may use, or None."""
    for key in ("backend", "experiment.backend"):
        if isinstance(values.get(key), str):
            return str(values[key])
    top = values.get("experiment")
    if isinstance(top, Mapping) and isinstance(top.get("backend"), str):
        return str(top["backend"])
    return None

_NO_TARGET = NO_TARGET


class ExperimentConfig(_ExperimentFields):
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
        path, _ = resolve_path(path)
        return self._get_or_missing(path)

    @property
    def backend_section(self) -> Section | None:
        """The chosen backend's section (None for a plugin backend, which has none)."""
        return getattr(self, self.backend) if self.backend in BACKENDS else None

    def _target_cc(self) -> Any:
        """The declared target's compute capability, or NO_TARGET.

        While several values are applied as one unit, ``target_gpu`` may hold a proposed
        value not yet checked; one that does not parse gates nothing here, and its own
        check refuses it with the reason.
        """
        if self.target_gpu is None:
            return _NO_TARGET
        try:
            return spec.parse_target(self.target_gpu)
        except ValueError:
            return _NO_TARGET

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
                problem = tier_problem_of(row, value, cc)
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
        apply_atomically(self._objects(), items, root=self)

    def _check_backend_support(self, items: list[tuple[Section, str, Any]]) -> None:
        """Refuse decoder fields the backend (as it will be after ``items``) does not take."""
        backend = next((v for o, n, v in items if o is self and n == "backend"), self.backend)
        for obj, name, value in items:
            if obj is self.decoder and value is not None and name in obj._rows:
                problem = unsupported(obj._rows[name], backend)
                if problem:
                    raise InvalidValue(problem)

    def _objects(self) -> list[Section]:
        return [self, *(getattr(self, s) for s in _SECTION_CLASSES)]

    def _flatten(
        self, values: Mapping[str, Any], given: set[str] | None = None,
        seen: dict[str, str] | None = None, spelled: Mapping[str, str] | None = None,
        backend: str | None = None,
    ) -> list[tuple[Section, str, Any]]:
        """``values`` as (section object, field, value); a field given twice is refused.

        ``seen`` maps each field given so far to how it was written; ``spelled`` gives how a
        key of ``values`` was written when that differs from the key (a nested section).
        ``backend`` resolves names that are each backend's own field (``precision``); by
        default the one ``values`` chooses, else this config's.
        """
        items: list[tuple[Section, str, Any]] = []
        seen = {} if seen is None else seen
        if backend is None:
            backend = _backend_given(values) or self.backend
        for key, value in values.items():
            if not isinstance(key, str):
                raise InvalidValue(f"config keys must be strings, not {describe(key)}")
            if key in _SECTION_CLASSES and not isinstance(value, (Mapping, Section)) \
                    and value is not None and f"experiment.{key}" in _ALIAS_PATHS:
                spelled = {**(spelled or {}), f"experiment.{key}": key}
                key = f"experiment.{key}"  # the seed's ``dataset: NAME``
            if key in _SECTION_CLASSES:
                if isinstance(value, Section):
                    value = value.explicit() or value.to_dict(only_set=True)
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    raise InvalidValue(f"section {key!r} must be a mapping of fields, not {describe(value)}")
                if given is not None and value:
                    given.add(key)
                for k, v in value.items():
                    items += self._flatten({f"{key}.{k}": v}, given, seen,
                                           {f"{key}.{k}": nested_spelling(key, str(k))}, backend)
                continue
            if isinstance(value, Mapping) and spec.alias_prefix(key):
                # other names nested under a prefix: ``energy: {backend}``, ``vllm.attention: {...}``
                spelling = (spelled or {}).get(key, key)
                for k, v in value.items():
                    items += self._flatten({f"{key}.{k}": v}, given, seen,
                                           {f"{key}.{k}": _nested(spelling, str(k))}, backend)
                continue
            if "." not in key and key not in self._rows and isinstance(value, Mapping) \
                    and f"experiment.{key}" not in _ALIAS_PATHS:
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
            canonical, alias = resolve_path(path, backend)
            spelling = (spelled or {}).get(key, key)
            given_once(seen, canonical, spelling)
            if alias:
                warn_alias(spelling, canonical)
                self.notes = [*self.notes, f"{spelling!r} loaded as {canonical!r} (old name)"]
            own = spec.value_alias(canonical, value)
            if own != value:
                warn_value_alias(canonical, value, own)
                self.notes = [*self.notes, f"{canonical}: {value!r} loaded as {own!r} (old spelling)"]
                value = own
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
            apply_atomically(self._objects(), items, root=self)
        finally:
            self._ctx = {}

    # -- serialisation ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """Build a config from nested or dotted keys; unknown keys are refused with a suggestion."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a mapping, not {describe(data)}")
        data = dict(data)
        notes = data.pop("notes", None)
        if notes is not None and (not isinstance(notes, list)
                                  or not all(isinstance(n, str) for n in notes)):
            bad = notes if not isinstance(notes, list) else next(
                n for n in notes if not isinstance(n, str))
            example = bad if isinstance(bad, str) else short(bad)
            raise ConfigError(
                f"notes must be a list of strings, not {'a list holding ' if bad is not notes else ''}"
                f"{describe(bad)}. Fix: write notes: [{example[:40]!r}] (one string per note).")
        cfg = cls()
        try:
            cfg._load(data)
        except TraitError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(str(e)) from None
        if notes:
            cfg.notes = [*cfg.notes, *notes]
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
        """``section.name`` -> value for the same fields as :meth:`to_dict` (:func:`llem.spec.flatten`)."""
        return spec.flatten(self.to_dict(only_set=only_set))

    def to_json(self, only_set: bool = True) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(only_set=only_set), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, *, source: str = "the config") -> ExperimentConfig:
        """Parse JSON text (as written by :meth:`to_json`); errors name ``source``."""
        return cls.from_dict(load_json(text, source))

    def to_yaml(self, only_set: bool = True) -> str:
        """YAML text of :meth:`to_dict`."""
        import yaml

        return yaml.safe_dump(self.to_dict(only_set=only_set), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "the config") -> ExperimentConfig:
        """Parse YAML text; a ``sweep:`` block, if any, is ignored here (see llem.study.sweepfile).

        The text is read within :mod:`llem._input`'s bounds: a key given twice, nesting
        deeper than 64 levels, a huge integer or an alias "bomb" is refused, naming ``source``.
        """
        data = load_yaml(text, source)
        if data is None:
            data = {}
        if isinstance(data, dict):
            data.pop("sweep", None)
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        """Read a ``.yaml``/``.yml`` or ``.json`` config file."""
        p = Path(path)
        text = read_text(p, "config file")
        source = f"config file {str(p)!r}"
        if p.suffix == ".json":
            return cls.from_json(text, source=source)
        return cls.from_yaml(text, source=source)

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
