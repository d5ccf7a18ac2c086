"""``%load_ext llem``: the ``%%llem`` cell magic and the ``%llem`` line magic.

The magic is thin: it parses options, builds an :class:`~llem.config.ExperimentConfig`,
calls :func:`llem.run` and displays what came back. Its options that set one field come
from the option table (:data:`llem.options.OPTIONS`, shared with the ``llem`` command line);
``%%llem?`` lists them with their help from the table's rows. Every mistake a user can make
here (an invalid option, a value the config refuses, an unknown backend, a missing package)
reaches the notebook as a short :class:`~IPython.core.error.UsageError`, without a
traceback.

Loading is cheap: this module imports IPython (already loaded in a kernel), traitlets and
llem's table; torch, transformers, ipywidgets and the plotting libraries load on first use.

Settings (``%config LlemMagics`` lists them)::

    %config LlemMagics.default_model = "tiny-random-llama"
    %config LlemMagics.defaults = {"decoder.max_new_tokens": 16, "experiment.repeats": 2}
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import shlex
from collections.abc import Iterator, Mapping
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser
from traitlets import Bool, Dict, Enum, Int, TraitError, Unicode, validate

from llem import spec
from llem._input import InputRefused, load_json, load_yaml, parse_yaml, read_text
from llem.config import choices
from llem.errors import LlemError, unknown_name
from llem.machine import Where, where
from llem.magic_keep import CellModel, interrupted_message
from llem.options import (
    OPTIONS,
    SET_HELP,
    check_config,
    config_updates,
    flatten_keys,
    matrix_backends,
    parse_sets,
)
from llem.results.flags import flags_html, flags_text
from llem.spec.model import BACKENDS, SECTIONS

#: Keys a YAML cell may hold besides dotted paths: section names and experiment fields.
_TOP_KEYS = frozenset(SECTIONS) | {p.name for p in spec.params("experiment")}

#: Keys of a config file or cell that are not fields (a sweep block, llem's notes).
_NOT_FIELDS = ("sweep", "notes")


class _Parser(MagicArgumentParser):
    """Options split as a shell would (quotes removed: ``--set 'a.b={x: 1}'``); errors are UsageErrors."""

    def parse_argstring(self, argstring: str, *, partial: bool = False) -> Any:
        from IPython.utils.process import arg_split

        try:
            argv = arg_split(argstring, posix=True, strict=True)
        except ValueError as e:
            raise UsageError(f"%{self.prog}: {e} (check the quotes)") from None
        return self.parse_known_args(argv) if partial else self.parse_args(argv)


def _add_run_options(p: _Parser) -> None:
    """The options shared by ``%%llem`` and ``%llem config``: the option table's, then the magic's own."""
    for opt in OPTIONS:
        # argparse formats help with %: a row's "95%" must reach it as "95%%"
        p.add_argument(*opt.flags, dest=opt.dest, type=opt.type, help=opt.help().replace("%", "%%"))
    p.add_argument("-c", "--config", help="A YAML or JSON config file (or a variable holding an "
                   "ExperimentConfig or a dict); the options above override it.")
    p.add_argument("-s", "--set", action="append", nargs="+", default=[], metavar="SECTION.FIELD=VALUE",
                   help=SET_HELP + " One --set takes several: --set decoder.top_k=5 decoder.top_p=0.9.")


def _cell_parser() -> _Parser:
    # prog without its first %: IPython's help formatter writes one before it
    p = _Parser(prog="%llem", add_help=False, description=(
        "Run the cell's prompts (one per line; or a YAML block with 'prompts:' and config keys) "
        "through llem.run and show the result."))
    _add_run_options(p)
    p.add_argument("-o", "--out", metavar="NAME", help="Store the Result in this variable.")
    p.add_argument("-q", "--quiet", action="store_true", help="Show nothing; only store the Result.")
    p.add_argument("--no-live", action="store_true", help="No progress bar or live power plot.")
    p.add_argument("--fresh", action="store_true", help=(
        "Load the model again even when the previous cell's model has the same load-time "
        "settings (that one is otherwise reused)."))
    return p


def _line_parser(sub: str) -> _Parser:
    p = _Parser(prog=f"llem {sub}", add_help=False)
    if sub == "matrix":
        p.add_argument("--target", help="A GPU tier to highlight: 'cpu', a compute capability or a GPU name.")
        p.add_argument("--backend", "-b", action="append", default=[],
                       help="Show only this backend (repeatable).")
        p.add_argument("--markdown", action="store_true", help="Show the Markdown table, not the widget.")
    elif sub == "config":
        p.add_argument("action", choices=("show", "validate", "panel"))
        p.add_argument("source", nargs="?", help="A config file or a variable (ExperimentConfig or dict).")
        _add_run_options(p)
    elif sub == "doctor":
        p.add_argument("--refresh", action="store_true", help="Probe the meters again.")
    return p


USAGE = """\
%%llem [options]            run the cell's prompts and show the result (see %%llem?)
%llem matrix [--target T]   the capability matrix (backends x capabilities, tier gating)
%llem config show [SOURCE] [options]      the config %%llem would build, as YAML
%llem config validate [SOURCE] [options]  check it (rules and the GPU tier), with fixes
%llem config panel [SOURCE] [options]     a form for it, with a Run button
%llem last                  the last result
%llem release               free the model kept from the previous %%llem cell
%llem doctor                which energy meters work here, and why the others don't
"""


def _flatten(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Nested config keys -> ``section.field`` keys (experiment fields get ``experiment.``)."""
    try:
        return flatten_keys(data, where, skip=_NOT_FIELDS)
    except LlemError as e:
        raise UsageError(str(e)) from None


def option_updates(args: Any, backend: str | None = None) -> dict[str, Any]:
    """The config update parsed ``%%llem`` options ask for: the table's options, then ``--set``.

    ``backend`` is the one the layers below (defaults, ``--config``, the cell) chose; see
    :func:`llem.options.config_updates`. Raises UsageError for a malformed ``--set`` item.
    """
    try:
        sets = parse_sets(item for group in getattr(args, "set", None) or [] for item in group)
        return config_updates(vars(args), sets, backend=backend)
    except LlemError as e:
        raise UsageError(str(e)) from None


def _first_key_is_config(text: str) -> bool:
    """True when the cell's first line is ``key:`` with a config key (the cell is a config block)."""
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    key, colon, _ = first.partition(":")
    return bool(colon) and _looks_like_config({key.strip(): None})


def _looks_like_config(data: Any) -> bool:
    if not isinstance(data, Mapping) or not data:
        return False
    for key in data:
        if not isinstance(key, str):
            return False
        if key in _TOP_KEYS or key == "sweep":
            continue
        if "." in key:
            try:
                spec.resolve_path(key)
                continue
            except LlemError:
                return False
        return False
    return True


def parse_cell(cell: str) -> tuple[dict[str, Any], list[str] | None]:
    """Split a ``%%llem`` cell into config keys and prompts.

    A cell that is a YAML mapping of config keys (``prompts:``, ``decoder:``,
    ``model:``, ``pytorch.batch_size:``...) is a config block; anything else is prompts,
    one per line (blank lines and lines starting with ``#`` are skipped).
    """
    text = cell.strip("\n")
    if not text.strip():
        return {}, None
    import yaml

    try:
        data = parse_yaml(text)
    except yaml.YAMLError:
        data = None
    except InputRefused as e:  # a bound crossed: refuse a config block, keep prompts as prompts
        if _first_key_is_config(text):
            raise UsageError(f"the cell: {e}") from None
        data = None
    if _looks_like_config(data):
        flat = _flatten(data, "the cell")
        prompts = flat.get("experiment.prompts")
        if isinstance(prompts, str) and "\n" in prompts:
            flat["experiment.prompts"] = [p for p in prompts.splitlines() if p.strip()]
        return flat, None
    lines = [ln.strip() for ln in text.splitlines()]
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    return {}, prompts or None


@magics_class
class LlemMagics(Magics):
    """The ``%llem`` / ``%%llem`` magics and their settings.

    Settings are traits: ``%config LlemMagics.default_model = "tiny-random-llama"``.
    """

    default_model = Unicode(None, allow_none=True, help=(
        "Model %%llem runs when the cell gives none (unset: the table's default, "
        f"{spec.param('experiment.model').default!r}).")).tag(config=True)
    default_backend = Unicode(None, allow_none=True, help=(
        "Backend %%llem uses when the cell gives none (unset: the table's default); "
        "a registered backend name.")).tag(config=True)
    default_meter = Unicode(None, allow_none=True, help=(
        "Energy meter %%llem uses when the cell gives none (unset: 'auto'); "
        "a registered meter name.")).tag(config=True)
    defaults = Dict(help=(
        "Any fields, as {'section.field': value}, applied before a cell's own settings "
        "(e.g. {'decoder.max_new_tokens': 16}).")).tag(config=True)
    live = Enum(("auto", "widget", "off"), "auto", help=(
        "Progress bar and live power plot while running: 'auto' shows them in a Jupyter "
        "kernel, 'widget' always, 'off' never.")).tag(config=True)
    show_text = Int(2, min=0, help="Generated texts shown after a run (0: none).").tag(config=True)
    timeline = Bool(True, help="Show the power timeline (phases shaded) after a run.").tag(config=True)
    save = Bool(False, help="Save every result as JSON in the config's output_dir.").tag(config=True)
    quiet_libraries = Bool(True, help=(
        "Hide the progress bars transformers draws while it loads a model during a %%llem run "
        "(llem's own progress shows the load).")).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.last: Any = None
        #: The model kept loaded between cells (:class:`llem.magic_keep.CellModel`).
        self.kept = CellModel()

    @validate("default_backend", "default_meter")
    def _check_registered(self, proposal: Any) -> str | None:
        value = proposal["value"]
        row = spec.param("experiment." + proposal["trait"].name.removeprefix("default_"))
        if value is not None and value not in choices(row):
            raise TraitError(f"LlemMagics.{proposal['trait'].name}: "
                             f"{unknown_name(row.name, value, choices(row))}")
        return value

    @validate("defaults")
    def _check_defaults(self, proposal: Any) -> dict[str, Any]:
        value = dict(proposal["value"])
        for key in value:
            try:
                spec.resolve_path(key if "." in key else f"experiment.{key}")
            except LlemError as e:
                raise TraitError(f"LlemMagics.defaults: {e}") from None
        return value

    # ------------------------------------------------------------------ the magic
    @line_cell_magic
    def llem(self, line: str = "", cell: str | None = None) -> Any:
        """Measure LLM inference from a notebook.

        ::

          %%llem [options]
          prompt one
          prompt two

        runs the prompts (or a YAML block: ``prompts:`` plus config keys) through
        ``llem.run`` and shows the generated text, the summary and the power timeline; the
        cell's value is the Result. ``%%llem?`` lists the options, with their help from
        the table's rows (:data:`llem.options.OPTIONS`).

        Line forms::

          %llem matrix [--target T] [-b BACKEND]
          %llem config show|validate|panel [SOURCE] [options]
          %llem last
          %llem release      (free the model kept from the previous cell)
          %llem doctor

        A cell whose load-time settings are the previous cell's reuses its model (the
        result's notes say so); ``--fresh`` loads again.
        """
        if cell is not None:
            return self._run_cell(line, cell)
        return self._line(line)

    # ---------------------------------------------------------------- building
    def build_config(self, args: Any, cell_keys: Mapping[str, Any] | None = None,
                     prompts: list[str] | None = None) -> Any:
        """The ExperimentConfig for parsed options, the cell's keys and prompts.

        Later layers win: the magic's defaults, ``--config``, the cell's YAML, the options,
        then ``--set``. Raises UsageError with the config's message when it is refused.
        """
        from llem.config import ExperimentConfig

        layers: list[dict[str, Any]] = []
        base: dict[str, Any] = {}
        if self.default_model is not None:
            base["experiment.model"] = self.default_model
        if self.default_backend is not None:
            base["experiment.backend"] = self.default_backend
        if self.default_meter is not None:
            base["experiment.meter"] = self.default_meter
        base.update(_flatten(self.defaults, "LlemMagics.defaults"))
        layers.append(base)
        source = getattr(args, "config", None) or getattr(args, "source", None)
        if source:
            layers.append(self._source_keys(source))
        if cell_keys:
            layers.append(dict(cell_keys))
        if prompts:
            layers.append({"experiment.prompts": prompts})
        below = dict(kv for layer in layers for kv in layer.items())
        layers.append(option_updates(args, backend=below.get("experiment.backend")))

        merged: dict[str, Any] = {}
        origin: dict[str, int] = {}
        for i, layer in enumerate(layers):
            merged.update(layer)
            origin.update(dict.fromkeys(layer, i))
        backend = merged.get("experiment.backend") or spec.param("experiment.backend").default
        resolved: dict[str, Any] = {}
        for key, value in merged.items():
            section = key.partition(".")[0]
            if origin[key] == 0 and section in BACKENDS and section != backend:
                continue  # a default for another backend does not apply to this run
            resolved[key] = value
        import warnings

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cfg = ExperimentConfig.from_dict(resolved)
        except (LlemError, TraitError, ValueError) as e:
            raise UsageError(_short(e)) from None
        for w in caught:
            cfg.notes = [*cfg.notes, str(w.message)] if str(w.message) not in cfg.notes else cfg.notes
        return cfg

    def _source_keys(self, source: str) -> dict[str, Any]:
        from pathlib import Path

        from llem.config import ExperimentConfig

        ns = self.shell.user_ns if self.shell is not None else {}
        if source in ns and not Path(source).exists():
            obj = ns[source]
            if isinstance(obj, ExperimentConfig):
                return _flatten(obj.to_dict(only_set=True), source)
            if isinstance(obj, Mapping):
                return _flatten(obj, source)
            raise UsageError(f"{source!r} holds a {type(obj).__name__}; --config takes a file, an "
                             "ExperimentConfig or a dict.")
        path = Path(source).expanduser()
        if not path.is_file():
            raise UsageError(f"Config file {source!r} not found (and no variable of that name). "
                             "Give a .yaml/.yml/.json file or the name of an ExperimentConfig.")
        try:
            text = read_text(path, "config file")
            data = (load_json if path.suffix == ".json" else load_yaml)(text, source) or {}
        except LlemError as e:
            raise UsageError(str(e)) from None
        if not isinstance(data, Mapping):
            raise UsageError(f"{source}: a config file holds a mapping of fields, not a "
                             f"{type(data).__name__}.")
        return _flatten(data, source)

    # ------------------------------------------------------------------ running
    def _run_cell(self, line: str, cell: str) -> Any:
        args = _cell_parser().parse_argstring(line)
        cell_keys, prompts = parse_cell(cell)
        cfg = self.build_config(args, cell_keys, prompts)
        from IPython.display import display

        view = handle = None
        if not args.quiet and not args.no_live and self._want_live():
            view = self._live_view(cfg)
            if view is not None:
                handle = display(view, display_id=True)
        import llem
        from llem.errors import RunInterrupted

        if args.fresh:
            self.kept.release()
        try:
            with _library_bars_hidden(self.quiet_libraries), self.kept.run(cfg) as backend:
                result = llem.run(cfg, progress=view.progress if view else None,
                                  on_sample=view.on_sample if view else None, backend=backend)
        except RunInterrupted as e:
            if view is not None:
                view.failed("interrupted")
                _settle(handle, view)
            partial = e.partial
            if getattr(partial, "runs", None) == ():
                raise UsageError(interrupted_message(partial, "", None, e.stage)) from None
            self._store(partial, args.out)
            if self.shell is not None:
                self.shell.user_ns["_llem_partial"] = partial
            raise UsageError(interrupted_message(partial, args.out, self.kept, e.stage)) from None
        except (LlemError, ImportError, MemoryError) as e:
            if view is not None:
                view.failed("the error is below", hide_plot=True)
                _settle(handle, view)
            raise UsageError(_short(e)) from None
        except BaseException:
            if view is not None:
                view.failed("stopped")
            raise
        if view is not None:
            view.done(result)
            _settle(handle, view)
        self._store(result, args.out)
        if self.save:
            try:
                result.save()
            except OSError as e:
                raise UsageError(f"The run finished but saving its result failed: {e}") from None
        if args.quiet:
            return None
        extra = RunReport(result, n_text=self.show_text, timeline=self.timeline,
                          header=self.kept.said(result))
        if extra.has_content():
            display(*extra.outputs())
        return result

    def _want_live(self) -> bool:
        if self.live == "off":
            return False
        if self.live == "widget":
            return True
        return getattr(self.shell, "kernel", None) is not None

    def _live_view(self, cfg: Any) -> Any:
        try:
            from llem.widgets.runview import RunView
        except ImportError:
            return None
        return RunView(title=f"{cfg.model} on {cfg.backend}")

    def _store(self, result: Any, name: str | None) -> None:
        self.last = result
        if self.shell is not None:
            self.shell.user_ns["_llem_last"] = result
            if name:
                if not name.isidentifier():
                    raise UsageError(f"-o takes a variable name, not {name!r}.")
                self.shell.user_ns[name] = result

    # --------------------------------------------------------------- line forms
    def _line(self, line: str) -> Any:
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"%llem: {e}") from None
        if not words or words[0] in ("help", "-h", "--help"):
            print(USAGE)
            return None
        sub, rest = words[0], line.strip()[len(words[0]):]
        if sub == "last":
            if self.last is None:
                raise UsageError("No llem result yet in this session: run a %%llem cell first.")
            return self.last
        if sub == "release":
            if rest.strip():
                raise UsageError(f"%llem release takes nothing, not {rest.strip()!r}.")
            print(self.kept.release())
            return None
        if sub not in ("matrix", "config", "doctor", "panel"):
            from llem.errors import did_you_mean

            known = ["matrix", "config", "last", "release", "doctor"]
            raise UsageError(f"Unknown %llem command {sub!r}.{did_you_mean(sub, known)}\n{USAGE}")
        if sub == "panel":
            sub, rest = "config", "panel " + rest
        args = _line_parser(sub).parse_argstring(rest)
        if sub == "matrix":
            return self._matrix(args)
        if sub == "doctor":
            from llem.energy.doctor import doctor

            return doctor(refresh=args.refresh)
        return self._config(args)

    def _matrix(self, args: Any) -> Any:
        try:
            backends = matrix_backends(args.backend)
        except LlemError as e:
            raise UsageError(str(e)) from None
        if args.target is not None:
            try:
                spec.parse_target(args.target)
            except ValueError as e:
                raise UsageError(f"--target: {e}") from None
        if not args.markdown:
            try:
                from llem.widgets.matrix import CapabilityMatrix
            except ImportError:
                pass
            else:
                return CapabilityMatrix(backends=backends, target=args.target)
        return MatrixTable(backends, where(args.target))

    def _config(self, args: Any) -> Any:
        cfg = self.build_config(args)
        if args.action == "show":
            return cfg
        if args.action == "panel":
            try:
                from llem.widgets.panel import ConfigPanel
            except ImportError as e:
                raise UsageError(_short(e)) from None
            return ConfigPanel(cfg)
        found = check_config(cfg)
        if not found.ok:
            raise UsageError("\n".join(found.messages))
        return Validated(cfg)


@contextlib.contextmanager
def _library_bars_hidden(hide: bool) -> Iterator[None]:
    """Hide transformers' progress bars for the duration (restored after); else let them draw.

    The backend turns them into load steps in any case (:mod:`llem.backends.loadsteps`)
    unless ``hide`` is False.
    """
    if not hide:
        from llem.backends.loadsteps import library_bars_shown

        with library_bars_shown():
            yield
        return
    if importlib.util.find_spec("transformers") is None:
        yield
        return
    try:
        from transformers.utils import logging as hf_logging
    except Exception:  # noqa: BLE001 - cosmetic only
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _short(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text


class Validated:
    """What ``%llem config validate`` shows for a config that passes."""

    def __init__(self, cfg: Any) -> None:
        self.config = cfg
        try:
            self.skipped = cfg.skipped()
        except Exception:  # noqa: BLE001
            self.skipped = {}
        where = f"target {cfg.target_gpu!r}" if cfg.target_gpu else "this machine"
        self.where = where

    def text(self) -> str:
        """Plain-text verdict."""
        lines = [f"valid: {self.config.model} on {self.config.backend} can run on {self.where}"]
        lines += [f"  no effect: {k}: {v}" for k, v in self.skipped.items()]
        lines += [f"  note: {n}" for n in self.config.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        text = self.text()
        first, *rest = text.splitlines()
        items = "".join(f"<li>{html.escape(r.strip())}</li>" for r in rest)
        return {"text/plain": text,
                "text/html": f"<div class='llem-valid'>&#10004; {html.escape(first)}"
                             + (f"<ul>{items}</ul>" if items else "") + "</div>"}


class MatrixTable:
    """The capability matrix as HTML and Markdown (when widgets are not wanted or missing).

    Cells say what ``place`` (this machine or a target, :func:`llem.machine.where`) runs.
    """

    def __init__(self, backends: tuple[str, ...], place: Where) -> None:
        self.backends, self.place = backends, place

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        place = self.place
        tier = place.tier
        head = f"Capability matrix (tier {tier.name}: {tier.display}; on {place.words})"
        md = spec.capability_matrix_markdown(self.backends, place.cc, at_tier=True)
        return {
            "text/plain": head + "\n" + md,
            "text/markdown": f"**{head}**\n\n" + md,
            "text/html": f"<b>{html.escape(head)}</b>" + spec.capability_matrix_html(
                self.backends, highlight_cc=place.cc, highlight=True, where=place.words),
        }


class RunReport:
    """What ``%%llem`` shows after a run, before the Result's summary: text and timeline."""

    def __init__(self, result: Any, n_text: int = 2, timeline: bool = True, header: str = "") -> None:
        self.result = result
        self.n_text = n_text
        self.timeline = timeline
        self.header = header

    def pairs(self) -> list[tuple[str, str]]:
        """``(prompt, generated text)`` of the first ``n_text`` requests of the last run."""
        reqs = list(getattr(self.result, "requests", ()) or ())[: self.n_text]
        return [(r.prompt, r.text) for r in reqs]

    def measurement(self) -> Any:
        """The last run's measurement (None without a meter)."""
        runs = getattr(self.result, "runs", ()) or ()
        return getattr(runs[-1], "measurement", None) if runs else None

    def warnings(self) -> tuple[Any, ...]:
        """The result's validity warnings (``result.warnings``)."""
        return tuple(getattr(self.result, "warnings", ()) or ())

    def has_content(self) -> bool:
        """True when there is text or a timeline to show (the header and warnings come first).

        Warnings alone do not make a report: the Result's own display below shows them too.
        """
        return bool(self.pairs()) or (self.timeline and self.measurement() is not None)

    def outputs(self) -> list[Any]:
        """What to display: the texts (this object's HTML), then the timeline as a static image.

        The timeline is its own ``image/svg+xml`` output (:class:`llem.widgets.static.StaticImage`),
        not SVG inside HTML, so it is still drawn when the saved notebook is opened again.
        """
        out: list[Any] = [self] if self.pairs() else []
        image = self.timeline_image()
        if image is not None:
            out.append(image)
        return out

    def timeline_image(self) -> Any:
        """The last run's power timeline as a static image (None without one)."""
        m = self.measurement()
        if not self.timeline or m is None:
            return None
        try:
            from llem.widgets.static import StaticImage
            from llem.widgets.svg import measurement_svg

            phases = ", ".join(dict.fromkeys(n for n, _a, _b in m.phase_spans()))
            return StaticImage(measurement_svg(m, title="power over the last measured run", css_vars=False),
                               f"power timeline: {len(getattr(m, 'timeline', ()))} samples, phases: {phases}")
        except Exception as exc:  # noqa: BLE001 - display never raises
            return _Text(f"(power timeline unavailable: {exc!r})")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        lines, parts = [], []
        if self.header:
            lines.append(self.header)
            parts.append(f"<div class='llem-run-header' style='opacity:0.8'>{html.escape(self.header)}</div>")
        warnings = self.warnings()  # first: what to doubt in the figures below
        lines.extend(flags_text(warnings, indent=""))
        parts.append(flags_html(warnings))
        for prompt, text in self.pairs():
            lines.append(f"> {prompt}\n{text.strip()}")
            parts.append(f"<div style='margin:4px 0'><b>&gt; {html.escape(prompt)}</b><br>"
                         f"<span style='white-space:pre-wrap'>{html.escape(text.strip()[:800])}</span></div>")
        return {"text/plain": "\n".join(lines),
                "text/html": "<div class='llem-run-report'>" + "".join(parts) + "</div>"}


def _settle(handle: Any, view: Any) -> None:
    """Store the finished view's text form in the notebook (not the ``starting`` it was shown with)."""
    if handle is not None:
        handle.update(view)


class _Text:
    """A line of plain text as a display output."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def magic_help() -> str:
    """What ``%%llem?`` shows: the magic's docstring, then its options with their help (from the table)."""
    import inspect

    return "\n\n".join([inspect.cleandoc(LlemMagics.llem.__doc__ or ""), _cell_parser().format_help(),
                        "%llem config show|validate|panel takes the same options (not -o, -q, --no-live).",
                        _line_parser("matrix").format_help()])


# IPython's ``?`` asks an object's getdoc() first: the help is built when asked, so it shows
# the registered backends and meters of that moment (and loading the extension stays cheap).
LlemMagics.llem.getdoc = magic_help  # type: ignore[union-attr]


def load_ipython_extension(ipython: Any) -> None:
    """Register :class:`LlemMagics` (``%load_ext llem``); replaces an earlier instance on reload."""
    unload_ipython_extension(ipython)  # an earlier instance frees its kept model
    ipython.configurables[:] = [c for c in ipython.configurables if type(c).__name__ != "LlemMagics"]
    ipython.register_magics(LlemMagics(shell=ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Free the kept model and forget the magics' settings object (``%unload_ext llem``)."""
    for c in ipython.configurables:
        if type(c).__name__ == "LlemMagics" and getattr(c, "kept", None) is not None:
            c.kept.release()
    ipython.configurables[:] = [c for c in ipython.configurables if type(c).__name__ != "LlemMagics"]


__all__ = ["LlemMagics", "load_ipython_extension", "parse_cell", "unload_ipython_extension"]
