"""Exceptions raised by llem.

Every message names the thing, the bad value, what is allowed and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class LlemError(Exception):
    """Base class of every error llem raises on purpose."""


class ConfigError(LlemError, ValueError):
    """A configuration value or combination of values is refused."""


class UnknownNameError(ConfigError, KeyError):
    """A name (field, backend, meter, exporter, model) that llem does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(LlemError, ImportError):
    """An optional package is needed for what was asked; the message says how to install it."""


class BackendUnavailableError(LlemError, RuntimeError):
    """A backend cannot run on this machine (no GPU, wrong platform...)."""


class ModelNotFoundError(LlemError, FileNotFoundError):
    """The model id or path could not be resolved to a loadable model."""


class OutOfMemoryError(LlemError, MemoryError):
    """The run ran out of memory; the message names the setting to lower."""


class MeterReadError(LlemError, RuntimeError):
    """A meter's reading failed or stopped making sense during a measurement.

    Raised instead of reporting a wrong figure (a GPU's energy counter that stops answering
    mid-run would otherwise give a negative energy); the message names the device, what
    failed and the fix. The measurement window ends first and keeps the partial record.
    """


class RunInterrupted(LlemError):
    """A run was interrupted; ``partial`` holds what was measured before it stopped.

    ``stage`` is where the interrupt landed (``"load"``, ``"warmup"``, ``"run 2/3"``...;
    empty when not known).
    """

    def __init__(self, message: str, partial: object = None, stage: str = "") -> None:
        super().__init__(message)
        self.partial = partial
        self.stage = stage


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    if len(close) == 1:
        return f" Did you mean {close[0]!r}?"
    return " Did you mean one of " + ", ".join(repr(c) for c in close) + "?"


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown ``kind`` called ``name``, listing what exists."""
    known = sorted(known)
    return UnknownNameError(
        f"Unknown {kind} {name!r}.{did_you_mean(name, known)} "
        f"Known {kind}s: {', '.join(known) if known else '(none)'}."
    )


def import_optional(module: str, extra: str | None = None, purpose: str = "") -> Any:
    """Import ``module``, or raise :class:`MissingDependencyError` with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise missing_dependency(module, extra, purpose) from None


def missing_dependency(package: str, extra: str | None = None, purpose: str = "") -> MissingDependencyError:
    """Build the error for a missing optional package, with the install command."""
    cmd = f"pip install 'llem[{extra}]'" if extra else f"pip install {package}"
    why = f" for {purpose}" if purpose else ""
    return MissingDependencyError(
        f"The optional package {package!r} is needed{why} but is not installed. Install it with: {cmd}"
    )
