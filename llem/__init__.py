"""llem: what LLM inference costs in energy, time and memory, measured from Jupyter.

``import llem`` is cheap: the public names below are imported on first use, and nothing
here imports torch, transformers, altair, matplotlib or IPython.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llem._version import __version__ as __version__

#: public name -> module that defines it
_LAZY = {
    "ExperimentConfig": "llem.config",
    "DecoderConfig": "llem.config",
    "PyTorchConfig": "llem.config",
    "VLLMConfig": "llem.config",
    "TensorRTConfig": "llem.config",
    "WarmupConfig": "llem.config",
    "BaselineConfig": "llem.config",
    "StudyConfig": "llem.config",
    "ConfigError": "llem.errors",
    "LlemError": "llem.errors",
    "measure": "llem.energy.window",
    "Measurement": "llem.energy.measurement",
    "doctor": "llem.energy.doctor",
    "run": "llem.runner",
    "register_backend": "llem.plugins",
    "register_meter": "llem.plugins",
    "register_exporter": "llem.plugins",
    "get_machine": "llem.machine",
    "Result": "llem.results",
    "load_result": "llem.results",
    "load_results": "llem.results",
    "compare": "llem.results",
    "to_dataframe": "llem.results",
    "sweep": "llem.study",
}

__all__ = sorted([*_LAZY, "__version__", "spec", "plots", "report", "load_ipython_extension"])


def __getattr__(name: str) -> Any:
    if name in ("spec", "plots", "report", "models", "prompts", "testing", "runner", "machine",
                "plugins"):
        return importlib.import_module(f"llem.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llem' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%llem`` / ``%%llem`` magics (called by ``%load_ext llem``)."""
    from llem.magic import load_ipython_extension as _load

    _load(ipython)


if TYPE_CHECKING:  # pragma: no cover
    from llem.config import (  # noqa: F401
        BaselineConfig,
        DecoderConfig,
        ExperimentConfig,
        PyTorchConfig,
        StudyConfig,
        TensorRTConfig,
        VLLMConfig,
        WarmupConfig,
    )
    from llem.machine import get_machine  # noqa: F401
    from llem.plugins import register_backend, register_exporter, register_meter  # noqa: F401
    from llem.runner import run  # noqa: F401
