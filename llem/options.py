"""What the two faces (``llem`` on the command line and ``%%llem``) share, written once.

- :data:`OPTIONS`, the option table: each option that sets one table field (``-m/--model``
  sets ``experiment.model``, ``--dtype`` sets ``{backend}.dtype``...). Its help text, value
  type and choices are read from the field's row in :mod:`llem.spec` (choices as
  :func:`llem.config.choices` allows them: for the backend and the meter, the names registered
  in :mod:`llem.plugins`, read when the help is shown). The CLI turns each option into a
  click option and the magic into an argparse argument; options that are not one field
  (``--config``, ``--set``, ``-o``, ``--quiet``...) are declared by each face.
- :func:`parse_sets`, the one ``--set KEY=VALUE`` parser, and :func:`config_updates`, which
  turns parsed option values and ``--set`` items into one config update (``{backend}`` resolved
  to the run's backend).
- :func:`check_config` (what ``config validate`` decides) and :func:`matrix_backends` (which
  backends ``matrix`` shows), so both faces decide these the same way and only word them.

This module imports no click, IPython, ipywidgets or torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llem import spec
from llem._input import InputRefused, parse_yaml, short
from llem.config import ExperimentConfig, choices
from llem.errors import ConfigError, LlemError, unknown_name
from llem.spec.model import Param

#: What ``{backend}`` in an option's path stands for when the run's backend is not known yet.
_DEFAULT_BACKEND: str = spec.param("experiment.backend").default

#: Row types an option can carry on a command line, and the Python type its value is read as.
_VALUE_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "enum": str, "str_or_list": str}

#: The one word, besides YAML's own nulls (``null``, ``~``, nothing), that leaves a field unset.
UNSET = "unset"


@dataclass(frozen=True)
class Option:
    """A command-line option that sets one field of the table.

    Attributes
    ----------
    path : str
        The field it sets, ``section.field``; ``{backend}`` stands for the run's backend
        (``{backend}.dtype`` sets ``vllm.dtype`` in a vllm run).
    short : str or None
        Its one-letter flag (``"n"`` for ``-n``), if any.
    long : str or None
        Its long name without dashes; by default the field's name with ``-`` for ``_``.
    """

    path: str
    short: str | None = None
    long: str | None = None

    @property
    def name(self) -> str:
        """The long name (``max-new-tokens``)."""
        return self.long or self.path.rpartition(".")[2].replace("_", "-")

    @property
    def dest(self) -> str:
        """The name a parser stores the value under (``max_new_tokens``)."""
        return self.name.replace("-", "_")

    @property
    def flags(self) -> tuple[str, ...]:
        """``("-n", "--max-new-tokens")``."""
        return ((f"-{self.short}",) if self.short else ()) + (f"--{self.name}",)

    @property
    def per_backend(self) -> bool:
        """True when the option sets a field of the run's backend's section."""
        return "{backend}" in self.path

    def path_for(self, backend: str) -> str:
        """The field's path in a run on ``backend``."""
        return self.path.replace("{backend}", backend)

    def rows(self) -> tuple[Param, ...]:
        """The rows the option can set: one, or one per backend that has the field."""
        if not self.per_backend:
            return (spec.param(self.path),)
        field = self.path.partition(".")[2]
        return tuple(p for p in spec.params() if p.section in spec.BACKENDS and p.name == field)

    @property
    def row(self) -> Param:
        """The row whose help and type the option shows (the default backend's, if per backend)."""
        rows = self.rows()
        return next((r for r in rows if r.section == _DEFAULT_BACKEND), rows[0])

    @property
    def type(self) -> type:
        """The Python type a value given on the command line is read as."""
        return _VALUE_TYPES[self.row.type]

    def choices(self) -> tuple[Any, ...]:
        """The values the option allows (empty: any value of its type).

        The row's choices as the config allows them (:func:`llem.config.choices`: for
        ``experiment.backend`` and ``experiment.meter`` the registered names too); for a
        per-backend option every backend's, in table order.
        """
        out: dict[Any, None] = {}
        for row in self.rows():
            out.update(dict.fromkeys(choices(row)))
        return tuple(out)

    def help(self) -> str:
        """One paragraph of help, from the row: its help, unit, the paths it sets, its choices."""
        row = self.row
        text = f"{row.help.rstrip('.')} ({row.unit})." if row.unit else row.help
        rows = self.rows()
        if self.per_backend:
            paths = [r.path for r in rows]
            text += (
                " For the run's backend: "
                + (" or ".join([", ".join(paths[:-1]), paths[-1]]) if len(paths) > 1 else paths[0])
                + "."
            )
        choice_sets = [choices(r) for r in rows]
        if row.registry:
            text += " Registered now: " + ", ".join(map(str, choice_sets[0])) + "."
        elif any(choice_sets) and len(set(choice_sets)) > 1:
            text += (
                " One of: "
                + "; ".join(f"{r.section}: {', '.join(map(str, c))}" for r, c in zip(rows, choice_sets) if c)
                + "."
            )
        elif any(choice_sets):
            text += " One of: " + ", ".join(map(str, choice_sets[0])) + "."
        return text


#: The option table: every option of ``%%llem``, ``%llem config``, ``llem run`` and
#: ``llem config validate|show`` that sets one field.
OPTIONS: tuple[Option, ...] = (
    Option("experiment.model", "m"),
    Option("experiment.backend", "b"),
    Option("decoder.max_new_tokens", "n"),
    Option("{backend}.batch_size"),
    Option("experiment.repeats", "r"),
    Option("{backend}.dtype"),
    Option("experiment.meter"),
    Option("decoder.preset"),
    Option("experiment.profile"),
    Option("experiment.prompts"),
    Option("experiment.num_prompts"),
    Option("experiment.chat_template"),
    Option("experiment.target_gpu", long="target"),
)


# ------------------------------------------------------------------------------ --set
_SET_FORM = "give SECTION.FIELD=VALUE, e.g. --set decoder.temperature=0.7"

#: The help of both faces' ``--set``.
SET_HELP = (
    "Set any field, e.g. --set decoder.temperature=0.7; values are read as YAML "
    "('unset' leaves the field unset) and win over the options above."
)


def parse_value(text: str, item: str | None = None) -> Any:
    """A ``--set`` value: YAML scalars and flow collections; ``unset`` or nothing is None.

    ``4`` is an int, ``true`` a bool, ``[1, 2]`` a list, ``{generate: {x: 1}}`` a dict,
    ``null``, ``~``, ``unset`` and an empty value leave the field unset. Text that is not
    valid YAML is taken as it is (``Translate: a: b``), except text that opens a YAML
    collection or quote (``[``, ``{``, ``"``, ``'``) and does not close it.

    Raises
    ------
    ConfigError
        For an unclosed collection or quote, naming ``item`` and the fix.
    """
    stripped = text.strip()
    if not stripped or stripped.lower() == UNSET:
        return None
    import yaml

    try:
        return parse_yaml(text)
    except InputRefused as e:
        raise InputRefused(f"--set {short(item or text)}: {e}") from None
    except yaml.YAMLError as e:
        if stripped[0] not in "[{\"'":
            return text
        problem = str(getattr(e, "problem", None) or e).splitlines()[0]
        raise ConfigError(
            f"--set {item or text!r}: the value is not valid YAML ({problem}). Fix: close the "
            "bracket or quote (quote the whole item for the shell: --set 'a.b={x: 1}'), or "
            "give a plain string without the leading bracket or quote."
        ) from None


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``: each item's value read by :func:`parse_value`.

    Keys are kept as given (``c``, a bare experiment field, stays ``c``); a later item wins.

    Raises
    ------
    ConfigError
        For an item without ``=`` or with an empty key, or a value :func:`parse_value` refuses.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not KEY=VALUE: {_SET_FORM}.")
        out[key] = parse_value(raw, item)
    return out


def flatten_keys(data: Mapping[str, Any], where: str, skip: Iterable[str] = ()) -> dict[str, Any]:
    """Nested or bare config keys as ``section.field`` keys (:func:`llem.spec.flatten`).

    ``{"decoder": {"top_k": 3}}`` -> ``{"decoder.top_k": 3}``; a bare key is an experiment
    field (``repeats`` -> ``experiment.repeats``); dotted keys stay as they are; a row's
    value stays whole (``pytorch.max_memory: {cpu: 4GiB}``). Keys in ``skip`` (``sweep``,
    ``notes`` in a config file) are left out.

    Raises
    ------
    ConfigError
        For a key that is not a string, naming ``where`` it came from.
    """
    try:
        return spec.flatten(data, skip=skip)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def config_updates(
    values: Mapping[str, Any], sets: Mapping[str, Any] | None = None, *, backend: str | None = None
) -> dict[str, Any]:
    """The config update that parsed options and ``--set`` items ask for: path -> value.

    Parameters
    ----------
    values : mapping
        Option values by :attr:`Option.dest` (a face's parsed arguments); None means not
        given. Keys that are not table options are ignored.
    sets : mapping, optional
        What :func:`parse_sets` returned; applied after the options, so they win.
    backend : str, optional
        The backend the config already has (a file's); ``{backend}`` in an option's path
        resolves to ``experiment.backend`` from ``sets``, else ``--backend``, else this, else
        the table's default.

    Returns
    -------
    dict
        Dotted paths (bare keys become ``experiment.`` fields) in the order given.
    """
    opts = {o.path: values[o.dest] for o in OPTIONS if values.get(o.dest) is not None}
    extra = flatten_keys(sets or {}, "--set")
    chosen = extra.get("experiment.backend") or opts.get("experiment.backend") or backend
    chosen = chosen if isinstance(chosen, str) else _DEFAULT_BACKEND
    out = {key.replace("{backend}", chosen): value for key, value in opts.items()}
    out.update(extra)
    return out


# -------------------------------------------------------------------- shared commands
@dataclass(frozen=True)
class ConfigCheck:
    """What ``config validate`` found.

    Attributes
    ----------
    problems : tuple of str
        The refused values and combinations (each message has its fix).
    tier_problem : str or None
        Why the GPU tier (``experiment.target_gpu``'s, else this machine's) cannot run it.
    """

    problems: tuple[str, ...] = ()
    tier_problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when the config can run where it is meant to."""
        return not self.problems and self.tier_problem is None

    @property
    def messages(self) -> list[str]:
        """Every problem, the tier's last."""
        return [*self.problems, *([self.tier_problem] if self.tier_problem else [])]


def check_config(cfg: ExperimentConfig) -> ConfigCheck:
    """Check every value and rule of ``cfg``, then its GPU tier; collect what is refused.

    The tier is ``experiment.target_gpu``'s, else this machine's (:func:`llem.machine.where`
    decides, through :meth:`ExperimentConfig.check_tier`).
    """
    problems: list[str] = []
    tier: str | None = None
    try:
        cfg.validate()
    except LlemError as e:
        problems.append(str(e))
    try:
        cfg.check_tier()
    except LlemError as e:
        tier = str(e)
    return ConfigCheck(tuple(problems), tier)


def matrix_backends(names: Iterable[str]) -> tuple[str, ...]:
    """The backends a capability matrix shows: ``names`` (all of the table's when empty).

    Raises
    ------
    UnknownNameError
        For a name that is not a backend of the table, with a did-you-mean.
    """
    chosen = tuple(names) or spec.BACKENDS
    for name in chosen:
        if name not in spec.BACKENDS:
            raise unknown_name("backend", name, spec.BACKENDS)
    return chosen


__all__ = [
    "OPTIONS",
    "SET_HELP",
    "UNSET",
    "ConfigCheck",
    "Option",
    "check_config",
    "config_updates",
    "flatten_keys",
    "matrix_backends",
    "parse_sets",
    "parse_value",
]
