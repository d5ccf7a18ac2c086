"""The shapes of the table's rows: parameters, gates, capabilities, rules and tiers.

Pure data: importing this module imports nothing beyond the standard library and llem.errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llem.errors import ConfigError, did_you_mean

#: Sections of an experiment configuration, in display order.
SECTIONS = (
    "experiment",
    "decoder",
    "pytorch",
    "vllm",
    "tensorrt",
    "warmup",
    "baseline",
    "study",
    "dataset",
)

#: Each section's config class: its name and one line on what it holds.
SECTION_CLASSES: dict[str, tuple[str, str]] = {
    "experiment": ("_ExperimentFields", "Experiment-level fields."),
    "decoder": ("DecoderConfig", "Sampling / decoding settings, shared by backends."),
    "pytorch": ("PyTorchConfig", "Hugging Face transformers backend settings."),
    "vllm": ("VLLMConfig", "vLLM engine settings."),
    "tensorrt": ("TensorRTConfig", "TensorRT-LLM engine settings."),
    "warmup": ("WarmupConfig", "Warmup passes and the thermal floor."),
    "baseline": ("BaselineConfig", "Idle power baseline."),
    "study": ("StudyConfig", "Cycles and order of a study (sweep)."),
    "dataset": ("DatasetConfig", "Synthetic prompts and prompt order."),
}

#: Backends llem ships, in display order.
BACKENDS = ("pytorch", "vllm", "tensorrt")

#: Sections that belong to exactly one backend.
BACKEND_SECTIONS = {"pytorch": "pytorch", "vllm": "vllm", "tensorrt": "tensorrt"}

#: The parameter types a row may declare.
PARAM_TYPES = ("int", "float", "bool", "str", "enum", "dict", "list", "str_or_list", "memory")


@dataclass(frozen=True)
class Gate:
    """What a parameter, or one of its values, needs from the machine.

    Attributes
    ----------
    min_cc : float or None
        Lowest NVIDIA compute capability that can run it (8.0 Ampere, 9.0 Hopper...).
    cuda : bool
        True when it needs an NVIDIA GPU at all (not available on the ``cpu`` tier).
    package : str or None
        Import name of a package it needs (``flash_attn``, ``bitsandbytes``...).
    install : str or None
        The command that installs that package.
    reason : str
        Why, in one sentence.
    alternative : str
        What to use instead.
    """

    min_cc: float | None = None
    cuda: bool = True
    package: str | None = None
    install: str | None = None
    reason: str = ""
    alternative: str = ""


@dataclass(frozen=True)
class Param:
    """One inference parameter: everything llem knows about it, in one row.

    ``default`` of None means *unset*: the backend's own default applies, and the effective
    value is recorded with each result. ``library_default`` says what that default is.
    ``registry`` names a plugin kind (``backend``, ``meter``): besides ``choices`` (llem's
    own), any name registered in :mod:`llem.plugins` for that kind is accepted.

    Other names a config may use for the row (each loads with an ``AliasWarning``):

    - ``aliases``: names inside the row's section (``precision`` is ``pytorch.precision``),
      or full paths where the other name lives elsewhere (``experiment.precision``, the
      seed's top-level name; on a backend's row such a path means "this backend's field");
    - ``seed_name``: the seed benchmark's name (top-level when it has no dot);
    - ``value_aliases``: other spellings of values (``bf16`` for ``bfloat16``).

    How a backend passes the row to its engine (read through :func:`llem.spec.engine_args`):

    - ``engine_target``: backend -> where the argument goes, one target or several (the
      targets are in :data:`llem.spec.engines.ENGINE_TARGETS`: ``llm``, ``sampling``,
      ``generation``, ``from_pretrained``...). A backend passes the row to its engine if and
      only if it has an entry here;
    - ``engine_names``: backend -> the engine's name for the argument, where it differs from
      the row's own name (same name unless this says otherwise);
    - ``engine_values``: backend -> {llem value: engine value}, where the engine spells the
      values differently (None: pass nothing). A value missing from this map is refused;
    - ``engine_readback``: backend -> attribute paths where the engine keeps the value it
      resolved (tried in order), for targets whose params object is not read directly.
    """

    name: str
    section: str
    type: str
    help: str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    unit: str | None = None
    backends: tuple[str, ...] = BACKENDS
    engine_names: dict[str, str] = field(default_factory=dict)
    engine_target: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    engine_values: Mapping[str, Mapping[Any, Any]] = field(default_factory=dict)
    engine_readback: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    library_default: dict[str, Any] = field(default_factory=dict)
    gate: Gate | None = None
    value_gates: dict[Any, Gate] = field(default_factory=dict)
    widget: str | None = None
    aliases: tuple[str, ...] = ()
    value_aliases: Mapping[str, Any] = field(default_factory=dict)
    seed_name: str | None = None
    seed_backends: tuple[str, ...] | None = None
    load_time: bool = False
    allow_none: bool = True
    registry: str | None = None
    source: str = ""
    note: str = ""

    @property
    def path(self) -> str:
        """``section.name``, the parameter's full name."""
        return f"{self.section}.{self.name}"

    def targets(self, backend: str) -> tuple[str, ...]:
        """Where ``backend`` passes this row (its ``engine_target``); empty when it passes none."""
        target = self.engine_target.get(backend)
        if target is None:
            return ()
        return (target,) if isinstance(target, str) else tuple(target)

    @property
    def widget_hint(self) -> str:
        """The control a form should use for this row."""
        if self.widget:
            return self.widget
        if self.registry:
            return "dropdown"
        if self.type == "bool":
            return "checkbox"
        if self.type == "enum":
            return "dropdown"
        if self.type in ("int", "float") and self.min is not None and self.max is not None:
            return "slider"
        if self.type in ("int", "float"):
            return "number"
        return "text"


@dataclass(frozen=True)
class EngineTarget:
    """A place an engine argument goes: a call, or a config object nested in one.

    Attributes
    ----------
    backend : str
        The backend whose engine it is.
    name : str
        The target's name in the rows' ``engine_target`` (for a nested config object, the
        keyword of its parent that holds it: ``speculative_config``, ``quant_config``).
    display : str
        What it is in the engine's own terms (``vllm.SamplingParams``).
    parent : str or None
        For a nested config object, the target that holds it.
    passthrough : bool
        Whether ``experiment.passthrough`` keys land there (so a row's engine name there
        collides with a pass-through key of the same name).
    protocol : dict
        Arguments llem passes there that no row names, each with why (the model to load, a
        per-batch length, an argument derived from a row such as ``use_beam_search``).
    note : str
        How llem uses it, where that is not plain.
    """

    backend: str
    name: str
    display: str
    parent: str | None = None
    passthrough: bool = True
    protocol: Mapping[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class EngineArg:
    """One row as one backend's engine argument: its name there, where it goes, its values.

    Built by :func:`llem.spec.engine_args` from the row's ``engine_*`` fields.
    """

    row: Param
    backend: str
    name: str
    targets: tuple[str, ...]
    readback: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """The row's ``section.name``."""
        return self.row.path

    @property
    def values(self) -> Mapping[Any, Any] | None:
        """The map from llem values to engine values, or None when values pass as they are."""
        return self.row.engine_values.get(self.backend)

    def allowed(self) -> tuple[Any, ...] | None:
        """The llem values this argument translates (None: any value of the row's type)."""
        if self.values is not None:
            return tuple(self.values)
        return self.row.choices

    def translate(self, value: Any) -> Any:
        """The engine's spelling of ``value`` (None means: pass nothing).

        Raises
        ------
        ConfigError
            When the row refuses ``value``: a backend never translates what the table
            does not allow.
        """
        allowed = self.allowed()
        if allowed is None:
            return value
        try:
            known = any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed)
        except TypeError:  # an unhashable or incomparable value
            known = False
        if not known:
            names = [str(a) for a in allowed]
            raise ConfigError(
                f"{self.path}={value!r} is not a value llem's {self.backend} backend passes to its engine."
                f"{did_you_mean(str(value), names)} Allowed: {', '.join(names)}. "
                f"Fix: set {self.path} to one of those (the table in llem/spec/params.py "
                "lists them)."
            )
        return value if self.values is None else self.values[value]


@dataclass(frozen=True)
class Support:
    """A backend's support for a capability: ``yes``, ``no`` or ``partial``, with a note."""

    level: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.level not in ("yes", "no", "partial"):
            raise ValueError(f"support level must be yes, no or partial, not {self.level!r}")


@dataclass(frozen=True)
class Capability:
    """A feature and how each backend supports it.

    ``settings`` maps a backend to the configuration that turns the feature on there
    (``{"pytorch": {"pytorch.dtype": "bfloat16"}}``): what it needs on a tier is read from
    those settings' gates, so the matrix and config validation cannot disagree. ``gate``
    describes the feature where it has no setting (and the matrix's "Needs" column).
    """

    name: str
    display: str
    help: str
    support: dict[str, Support]
    kind: str = "feature"
    params: tuple[str, ...] = ()
    gate: Gate | None = None
    seed_row: bool = False
    seed_support: dict[str, str] | None = None
    note: str = ""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Cond:
    """A condition on a parameter path (``section.name``) or an environment fact (``env.x``).

    Operators: ``set`` (not None), ``unset``, ``true`` (is True), ``not_true`` (None or False),
    ``false`` (is False), ``eq``, ``ne``, ``in``, ``not_in``, ``gt``, ``lt``, ``not_gt`` (unset
    or not greater), ``gt_path``
    (greater than the value at another path; unset on either side is never true).
    """

    path: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: when every condition holds, refuse (``error``) or skip with a note.

    ``check`` names a structural check (in :mod:`llem.spec.rules`) for rules that are not a
    conjunction of conditions (a backend section that does not match the backend...).
    ``skip`` lists what is skipped when a ``skip`` rule holds.
    """

    id: str
    severity: str
    reason: str
    fix: str
    when: tuple[Cond, ...] = ()
    backends: tuple[str, ...] = BACKENDS
    check: str | None = None
    skip: tuple[str, ...] = ()
    seed_rule: int | None = None
    seed_kind: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        """Parameter paths the rule reads (environment facts excluded)."""
        out = [c.path for c in self.when if not c.path.startswith("env.")]
        out += [c.value for c in self.when if c.op == "gt_path"]
        out += [p for p in self.skip if p not in out]
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Tier:
    """A rung of the GPU compute-capability ladder."""

    name: str
    display: str
    min_cc: float | None
    examples: tuple[str, ...]
    adds: str
