"""Jupyter widgets: the capability matrix, the config panel, and the live power plot of a run.

Importing this package is cheap: ipywidgets is imported when a widget class is first used
(``from llem.widgets import ConfigPanel``), and a missing ipywidgets fails there with the
install command. Every widget has a useful ``text/plain`` representation, so a terminal
IPython or a static render still says what the widget holds.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_LAZY = {
    "CapabilityMatrix": "llem.widgets.matrix",
    "ConfigPanel": "llem.widgets.panel",
    "PowerPlot": "llem.widgets.power",
    "RunView": "llem.widgets.runview",
    "power_svg": "llem.widgets.svg",
    "StaticImage": "llem.widgets.static",
    "static_chart": "llem.widgets.static",
    "use_static_charts": "llem.widgets.static",
    "control_kind": "llem.widgets.controls",
    "machine_cc": "llem.widgets.controls",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llem.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
