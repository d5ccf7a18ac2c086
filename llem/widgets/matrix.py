"""The capability matrix as a widget: backends x capabilities, a tier to plan for, a filter."""

from __future__ import annotations

from typing import Any

from llem import spec
from llem.machine import Where, where
from llem.spec.model import BACKENDS
from llem.widgets.controls import machine_cc, require_ipywidgets

_w = require_ipywidgets()

#: Targets offered besides the machine itself: one GPU per tier (names from spec.KNOWN_GPUS).
TARGETS = ("cpu", "T4", "A100", "L4", "H100")


class CapabilityMatrix(_w.VBox):  # type: ignore[misc, name-defined]
    """Which backend can do what, from the table; hover a cell for its note.

    Parameters
    ----------
    backends : sequence of str, optional
        Backends shown at first (all by default); the checkboxes above change it.
    target : str or float, optional
        A GPU to plan for (``"H100"``, ``"8.6"``, ``"cpu"``); by default this machine.
        Cells that tier cannot run say "not here" and why (words from
        :func:`llem.machine.where`).
    """

    def __init__(self, backends: tuple[str, ...] | list[str] | None = None,
                 target: str | float | None = None, **kwargs: Any) -> None:
        shown = tuple(backends) if backends else BACKENDS
        self.machine = machine_cc()
        here = f"this machine ({spec.tier_for(self.machine).name})"
        options = [(here, "machine")] + [(f"{t} ({spec.tier_for(spec.parse_target(t)).name})", t)
                                         for t in TARGETS]
        start = "machine"
        if target is not None:
            spec.parse_target(target)  # raises for an unknown name
            label = str(target)
            if label not in TARGETS:
                options.append((f"{label} ({spec.tier_for(spec.parse_target(target)).name})", label))
            start = label
        self.filters = {
            b: _w.Checkbox(value=b in shown, description=b, indent=False, layout=_w.Layout(width="110px"))
            for b in BACKENDS
        }
        self.target = _w.Dropdown(options=options, value=start, description="tier",
                                  tooltip="Highlight what this GPU tier can run",
                                  layout=_w.Layout(width="300px"))
        self.tier_label = _w.HTML()
        self.table = _w.HTML()
        for box in self.filters.values():
            box.observe(self._redraw, names="value")
        self.target.observe(self._redraw, names="value")
        bar = _w.HBox([*self.filters.values(), self.target])
        super().__init__(children=[bar, self.tier_label, self.table], **kwargs)
        self.add_class("llem-capability-matrix")
        self._redraw()

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends currently shown."""
        return tuple(b for b, box in self.filters.items() if box.value)

    @property
    def place(self) -> Where:
        """What the matrix is shown for: this machine, or the chosen target."""
        value = self.target.value
        if value == "machine":
            return Where(self.machine, "this machine" + (" (CPU only)" if self.machine is None else ""))
        return where(value)

    @property
    def cc(self) -> float | None:
        """Compute capability highlighted (None = cpu)."""
        return self.place.cc

    def _redraw(self, _change: Any = None) -> None:
        place = self.place
        tier = place.tier
        cc_text = "no GPU" if place.cc is None else f"compute capability {place.cc:g}"
        self.tier_label.value = (f"<span class='llem-tier'>Tier <b>{tier.name}</b>: {tier.display} "
                                 f"({cc_text}); cells marked 'not here' cannot run on "
                                 f"{place.words}.</span>")
        backends = self.backends
        if not backends:
            self.table.value = "<i>Choose at least one backend.</i>"
            return
        self.table.value = spec.capability_matrix_html(backends, highlight_cc=place.cc, highlight=True,
                                                       where=place.words)

    def text(self) -> str:
        """The matrix as Markdown, with the tier line (the text/plain form)."""
        place = self.place
        tier = place.tier
        backends = self.backends or BACKENDS
        return (f"Capability matrix (tier {tier.name}: {tier.display}; on {place.words})\n"
                + spec.capability_matrix_markdown(backends, place.cc, at_tier=True))

    def __repr__(self) -> str:
        return self.text()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            data["text/plain"] = self.text()
        return data


__all__ = ["TARGETS", "CapabilityMatrix"]
