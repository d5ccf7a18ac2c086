"""One form control per table row: which control a row gets, and how values cross over.

The choice of control is made from the row alone (:func:`control_kind`): a dropdown for
choices, a slider for a number bounded on both sides, a checkbox for a flag, and a text box
otherwise. Values go from the control to the config through :meth:`RowControl.to_config`
and back through :meth:`RowControl.show`. Gating (what the machine's or the declared
target's GPU tier cannot run) is computed from the row's gates with
:func:`llem.spec.tier_problem`.

Only :class:`RowControl` and :func:`require_ipywidgets` touch ipywidgets, and only when
called, so this module imports quickly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from llem import spec
from llem._input import MAX_INT_DIGITS, InputRefused, parse_yaml
from llem.config import choices
from llem.errors import missing_dependency
from llem.machine import get_machine
from llem.spec.model import Gate, Param

#: Integer sliders wider than this many steps become text boxes (a 1..1048576 slider
#: cannot be aimed).
MAX_INT_SLIDER_SPAN = 4096
#: Float sliders whose bounds span more than this factor (0.001..10 s) become text boxes,
#: because a linear slider cannot reach both ends' useful values.
MAX_FLOAT_SLIDER_RATIO = 1000.0


class _Unset:
    """The dropdown value that stands for *unset* (None is "no selection" to ipywidgets)."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def require_ipywidgets() -> Any:
    """Import and return ipywidgets, or raise the error that says how to install it."""
    try:
        import ipywidgets
    except ImportError:  # pragma: no cover - ipywidgets is in the jupyter extra
        raise missing_dependency("ipywidgets", "jupyter", "llem's widgets") from None
    return ipywidgets


def machine_cc(refresh: bool = False) -> float | None:
    """Highest compute capability among this machine's GPUs; None when there is none (cpu)."""
    return get_machine(refresh=refresh).cc


def control_kind(row: Param) -> str:
    """The control a form uses for ``row``: ``dropdown``, ``slider``, ``checkbox`` or ``text``.

    Follows :attr:`llem.spec.Param.widget_hint`, with one exception: a slider whose range
    cannot be aimed (more than :data:`MAX_INT_SLIDER_SPAN` integer steps, or float bounds
    more than :data:`MAX_FLOAT_SLIDER_RATIO` apart) is a text box.
    """
    hint = row.widget_hint
    if hint == "dropdown" and row.choices:
        return "dropdown"
    if hint == "checkbox":
        return "checkbox"
    if hint == "slider" and row.min is not None and row.max is not None:
        if row.type == "int":
            return "slider" if row.max - row.min <= MAX_INT_SLIDER_SPAN else "text"
        if row.min > 0 and row.max / row.min > MAX_FLOAT_SLIDER_RATIO:
            return "text"
        return "slider"
    return "text"


#: Width of one character of a control's label, px (JupyterLab's 13px sans-serif, generous).
LABEL_CHAR_PX = 7.6
#: Width of a control's value part (slider, box, dropdown) beside its label, px.
VALUE_WIDTH_PX = 250
#: What an unset row's label adds to its name.
UNSET_MARK = " (unset)"


def label_width(rows: Any) -> int:
    """Label column width, px, that fits the longest label of ``rows`` (with ``(unset)``)."""
    longest = max((len(r.name) + len(UNSET_MARK) for r in rows), default=10)
    return int(longest * LABEL_CHAR_PX) + 16


def library_default(row: Param, backend: str | None) -> Any:
    """What the backend uses when ``row`` is unset (None when the table does not say)."""
    if row.default is not None:
        return row.default
    if backend is not None and backend in row.library_default:
        return row.library_default[backend]
    return None


def short_need(gate: Gate) -> str:
    """A few words for an option label: ``needs 9.0+`` or ``needs an NVIDIA GPU``."""
    if gate.min_cc is not None:
        return f"needs {gate.min_cc:.1f}+"
    return "needs an NVIDIA GPU"


def gate_problem(gate: Gate | None, cc: float | None) -> str | None:
    """Why ``gate`` cannot run at ``cc`` (None = cpu), with its reason and fix; None if it can."""
    if gate is None or (gate.min_cc is None and not gate.cuda):
        return None
    problem = spec.tier_problem(gate, cc)
    if problem is None:
        return None
    text = problem[0].upper() + problem[1:] + "."
    if gate.reason:
        text += f" {gate.reason.rstrip('.')}."
    if gate.alternative:
        text += f" Fix: {gate.alternative}."
    return text


def tooltip_for(row: Param, backend: str | None) -> str:
    """The hover text of a row's control: help, unit and the unset default."""
    parts = [row.help]
    if row.unit:
        parts.append(f"Unit: {row.unit}.")
    lib = library_default(row, backend)
    if row.allow_none and row.default is None:
        parts.append(f"Unset: the backend's default ({lib})." if lib is not None
                     else "Unset: the backend's default.")
    return " ".join(parts)


def parse_text(row: Param, text: str) -> Any:
    """Turn what was typed for ``row`` into a value; empty text is unset (None).

    Raises ValueError with a message naming the field when the text does not parse.
    """
    text = text.strip()
    if text == "" or text.lower() in ("unset", "none", "null"):
        return None
    try:
        if row.type == "int":
            digits = sum(c.isdigit() for c in text)
            if digits > MAX_INT_DIGITS:
                raise InputRefused(f"an integer of {digits} digits; llem reads integers of at most "
                                   f"{MAX_INT_DIGITS} digits. Fix: give a value within the bounds.")
            return int(text.replace("_", ""))
        if row.type == "float":
            return float(text)
        if row.type in ("dict", "list") or (row.type == "str_or_list" and text.startswith("[")):
            return parse_yaml(text)
    except InputRefused as e:  # a bound of llem._input: a repeated key, deep nesting...
        raise ValueError(f"{row.path}: {e}") from None
    except (ValueError, ImportError) as e:
        what = {"int": "a whole number", "float": "a number"}.get(row.type, "YAML")
        raise ValueError(f"{row.path}: {text!r} is not {what}. Fix: type {what}, or clear it "
                         "to leave it unset.") from e
    except Exception as e:  # yaml errors
        raise ValueError(f"{row.path}: {text!r} is not valid YAML ({e}).") from e
    return text


def format_value(value: Any) -> str:
    """Show a value in a text box (the inverse of :func:`parse_text`)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def _float_step(lo: float, hi: float) -> float:
    span = hi - lo
    return float(10 ** math.floor(math.log10(span / 100))) if span > 0 else 0.01


class RowControl:
    """The control of one table row, and the translation between it and the config value.

    Parameters
    ----------
    row : Param
        The table row.
    backend : str
        The config's backend (for unset defaults and backend-specific labels).
    on_edit : callable
        Called with ``(row_control, value)`` when the user changes the control; the panel
        applies the value to the config and calls :meth:`show` to revert when refused.
    label_px : int, optional
        Width of the label column, px (default: wide enough for this row's own label); a
        panel passes the widest of a tab so the controls line up and no label is cut.

    Attributes
    ----------
    kind : str
        From :func:`control_kind`.
    widget : ipywidgets.Widget
        The value control (``Dropdown``, ``IntSlider``/``FloatSlider``, ``Checkbox``, ``Text``).
    box : ipywidgets.Widget
        What the form shows: the widget, with an *unset* button beside sliders of rows
        that may be unset.
    reset : ipywidgets.Button or None
        That button.
    gated : dict
        Option value -> reason, for dropdown options the tier cannot run.
    """

    def __init__(self, row: Param, backend: str, on_edit: Callable[[RowControl, Any], None],
                 label_px: int | None = None) -> None:
        w = require_ipywidgets()
        self.row = row
        self.backend = backend
        self.kind = control_kind(row)
        self._on_edit = on_edit
        self._syncing = False
        self.value: Any = None
        self.gated: dict[Any, str] = {}
        self.disabled_reason: str | None = None
        self.base_tooltip = tooltip_for(row, backend)
        label_px = label_px if label_px is not None else label_width([row])
        style = {"description_width": f"{label_px}px"}
        layout = w.Layout(width=f"{label_px + VALUE_WIDTH_PX}px")
        common = {"description": row.name, "style": style, "layout": layout, "tooltip": self.base_tooltip}
        self.reset = None
        if self.kind == "dropdown":
            self.widget = w.Dropdown(options=self._options(None), value=UNSET if row.allow_none else
                                     row.choices[0], **common)  # type: ignore[index]
        elif self.kind == "checkbox":
            self.widget = w.Checkbox(value=False, indent=True, **common)
        elif self.kind == "slider":
            lo, hi = float(row.min), float(row.max)  # type: ignore[arg-type]
            if row.type == "int":
                self.widget = w.IntSlider(min=int(lo), max=int(hi), value=int(lo), continuous_update=False,
                                          **common)
            else:
                if row.min_exclusive:
                    lo = lo + _float_step(lo, hi)
                self.widget = w.FloatSlider(min=lo, max=hi, step=_float_step(lo, hi), value=lo,
                                            continuous_update=False, readout_format=".3g", **common)
            if row.allow_none:
                self.reset = w.Button(description="unset", layout=w.Layout(width="64px"),
                                      tooltip="Unset: use the backend's default")
                self.reset.on_click(lambda _b: self._edit(None))
        else:
            self.widget = w.Text(value="", continuous_update=False, placeholder=self._placeholder(), **common)
        self.box = w.HBox([self.widget, self.reset]) if self.reset is not None else self.widget
        self.widget.observe(self._changed, names="value")

    # -- config -> control ---------------------------------------------------------------------
    def show(self, value: Any) -> None:
        """Display the config's ``value`` without reporting it back as an edit."""
        self.value = value
        self._syncing = True
        try:
            if self.kind == "dropdown":
                self.widget.value = UNSET if value is None else value
            elif self.kind == "checkbox":
                self.widget.value = bool(self._effective(value))
            elif self.kind == "slider":
                shown = self._effective(value)
                known = isinstance(shown, (int, float)) and not isinstance(shown, bool)
                if not known:
                    shown = self.widget.min
                shown = min(max(shown, self.widget.min), self.widget.max)
                self.widget.value = int(shown) if self.row.type == "int" else float(shown)
                # unset: the slider stands at the backend's default; where the table does not
                # know that default it shows no number rather than a made-up one
                self.widget.readout = known
                if self.reset is not None:
                    self.reset.disabled = value is None or self.disabled_reason is not None
                self.widget.description = self.row.name + (UNSET_MARK if value is None else "")
            else:
                self.widget.value = format_value(value)
        finally:
            self._syncing = False

    def _effective(self, value: Any) -> Any:
        return library_default(self.row, self.backend) if value is None else value

    # -- control -> config ---------------------------------------------------------------------
    def _changed(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        new = change["new"]
        try:
            value = self.to_config(new)
        except ValueError as e:
            self._on_edit(self, _ParseError(str(e)))
            return
        self._edit(value)

    def _edit(self, value: Any) -> None:
        self._on_edit(self, value)

    def to_config(self, shown: Any) -> Any:
        """The config value for what the control shows (``ValueError`` when text won't parse)."""
        row = self.row
        if self.kind == "dropdown":
            return None if shown is UNSET else shown
        if self.kind == "checkbox":
            # unset stays unset when the box shows what the backend does anyway
            lib = library_default(row, self.backend)
            if row.allow_none and row.default is None and bool(shown) == bool(lib):
                return None
            return bool(shown)
        if self.kind == "slider":
            return shown
        return parse_text(row, shown)

    # -- gating --------------------------------------------------------------------------------
    def gate(self, cc: float | None) -> None:
        """Disable what the tier ``cc`` (None = cpu) cannot run, with the reason as tooltip."""
        row = self.row
        self.gated = {}
        self.disabled_reason = gate_problem(row.gate, cc)
        if self.kind == "dropdown":
            for choice in choices(row):
                why = gate_problem(_hashable_get(row.value_gates, choice), cc)
                if why:
                    self.gated[choice] = why
            self._syncing = True
            try:
                current = self.widget.value
                self.widget.options = self._options(cc)
                self.widget.value = current
            finally:
                self._syncing = False
        tip = self.base_tooltip
        if self.disabled_reason:
            tip = f"Disabled: {self.disabled_reason} {tip}"
        elif self.gated:
            tip += " Not on this tier: " + " ".join(f"{c!s}: {why}" for c, why in self.gated.items())
        self.widget.tooltip = tip
        self.widget.disabled = self.disabled_reason is not None and not self._value_set()
        if self.reset is not None:
            self.reset.disabled = self.value is None or self.widget.disabled

    def _value_set(self) -> bool:
        # a control holding a value the tier cannot run stays enabled so it can be turned off
        return self.value not in (None, False)

    def _options(self, cc: float | None) -> list[tuple[str, Any]]:
        row = self.row
        opts: list[tuple[str, Any]] = []
        if row.allow_none:
            lib = library_default(row, self.backend)
            opts.append((f"(unset: {lib})" if lib is not None else "(unset)", UNSET))
        for choice in choices(row):
            label = str(choice)
            if choice in self.gated:
                gate = _hashable_get(row.value_gates, choice)
                label += f" ({short_need(gate)})" if gate else " (not on this tier)"
            opts.append((label, choice))
        return opts

    def _placeholder(self) -> str:
        lib = library_default(self.row, self.backend)
        if not self.row.allow_none:
            return ""
        return f"unset ({format_value(lib)})" if lib is not None else "unset"

    def __repr__(self) -> str:
        state = " disabled" if self.widget.disabled else ""
        return f"<{self.kind} {self.row.path}={self.value!r}{state}>"


class _ParseError:
    """Marks text that did not parse (carried to the panel, which shows it)."""

    def __init__(self, message: str) -> None:
        self.message = message


def _hashable_get(mapping: dict[Any, Gate], key: Any) -> Gate | None:
    try:
        return mapping.get(key)
    except TypeError:
        return None


__all__ = [
    "MAX_FLOAT_SLIDER_RATIO",
    "MAX_INT_SLIDER_SPAN",
    "UNSET",
    "UNSET_MARK",
    "RowControl",
    "control_kind",
    "format_value",
    "gate_problem",
    "label_width",
    "library_default",
    "machine_cc",
    "parse_text",
    "require_ipywidgets",
    "short_need",
    "tooltip_for",
]
