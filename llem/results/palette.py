"""The words and colours every display of a result uses: energy methods, phases, devices.

Defined once here and read by the charts (:mod:`llem.plots`), the reports
(:mod:`llem.report`), the Result's own display and the live power plot
(:mod:`llem.widgets.svg`), so a phase has the same colour while a run is drawn live and in
its report, and an estimate is called the same everywhere.

The method vocabulary itself (``measured`` / ``sampled`` / ``estimated``, and ``none``)
belongs to the energy layer (:data:`llem.energy.measurement.METHODS`); this module gives
each of those names its display word and colour.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llem.energy.measurement import NO_METHOD, UNMARKED

# ------------------------------------------------------------------------- methods
#: How each energy method is written beside a figure. An estimate is written in capitals:
#: it must not be read as a measurement.
METHOD_WORDS: dict[str, str] = {
    "measured": "measured",
    "sampled": "sampled",
    "estimated": "ESTIMATED",
    NO_METHOD: "not measured",
}

#: Colour of each method in the charts (bars, points, the ``estimated`` mark).
METHOD_COLOURS: dict[str, str] = {
    "measured": "#2f7d32",
    "sampled": "#4c78a8",
    "estimated": "#c0661b",
    NO_METHOD: "#999999",
}



def method_word(method: str) -> str:
    """The word for ``method`` beside a key figure (``ESTIMATED`` for an estimate)."""
    return METHOD_WORDS.get(method, method)


def method_note(method: str) -> str:
    """What a table cell or a chart label adds to an estimated figure: ``" (estimated)"``.

    Measured and sampled figures get nothing: a cell only calls out the estimate.
    """
    return " (estimated)" if method == "estimated" else ""


# -------------------------------------------------------------------------- phases
@dataclass(frozen=True)
class Phase:
    """A phase of a run as the runner and the energy layer mark it.

    Attributes
    ----------
    name : str
        The mark's name (``prefill``, ``decode``, ``host``...).
    colour : str
        The colour of its band, drawn at :data:`PHASE_OPACITY` behind the power lines.
    meaning : str
        One line: when the phase starts and ends.
    """

    name: str
    colour: str
    meaning: str


#: Every phase llem marks, in the order they are listed in a legend.
PHASES: tuple[Phase, ...] = (
    Phase("load", "#ff9da6", "loading the model"),
    Phase("warmup", "#eeca3b", "warmup passes, not measured"),
    Phase("thermal", "#b279a2", "waiting for the device to reach a steady temperature"),
    Phase("baseline", "#d8d8d8", "measuring idle power"),
    Phase("idle", "#d8d8d8", "nothing running (idle power)"),
    Phase("prefill", "#f58518", "from a batch's start to its first token"),
    Phase("decode", "#4c78a8", "from a batch's first token to its last"),
    Phase("prefill+decode", "#9ecae9", "prefill and decode not told apart: an engine admitted "
                                       "requests while others decoded, or showed no first token"),
    Phase("host", "#bab0ac", "host work between batches"),
    Phase("measure", "#9d755d", "the measured runs"),
    Phase(UNMARKED, "#ffffff", "before the first mark"),
)

#: Name -> colour of :data:`PHASES`.
PHASE_COLOURS: dict[str, str] = {p.name: p.colour for p in PHASES}

#: Colours given, in turn, to phases the table does not name (``run 1/3``...).
PHASE_FALLBACK: tuple[str, ...] = ("#72b7b2", "#54a24b", "#e45756", "#79706e")

#: Opacity of a phase band behind the power lines (charts and the live plot alike).
PHASE_OPACITY = 0.35

#: The part a phase's energy is counted in when a run's energy is split (prefill,
#: decode, and the rest).
PHASE_PARTS: tuple[str, ...] = ("prefill", "decode", "other (host work between batches)")


def _assign(names: Iterable[str], known: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        if n not in out:
            out[n] = known.get(n) or PHASE_FALLBACK[sum(m not in known for m in out) % len(PHASE_FALLBACK)]
    return out


def phase_colours(names: Iterable[str]) -> dict[str, str]:
    """A colour for each of ``names`` (in order): the table's, else the fallback in turn."""
    return _assign(names, PHASE_COLOURS)


def phase_part(name: str) -> str:
    """The part of :data:`PHASE_PARTS` a phase's energy is counted in.

    ``prefill`` and ``decode`` are their own parts; ``host`` and unmarked time are the
    host work between batches; any other mark is named: ``other (thermal)``.
    """
    if name in PHASE_PARTS[:2]:
        return name
    return PHASE_PARTS[2] if name in ("host", UNMARKED) else f"other ({name})"


def part_colours(parts: Iterable[str]) -> dict[str, str]:
    """A colour for each energy part: prefill and decode as their phases, the rest as ``host``."""
    return _assign(parts, dict(zip(PHASE_PARTS, (PHASE_COLOURS[n] for n in ("prefill", "decode", "host")))))


# ------------------------------------------------------------------------- devices
#: Line colours of the devices on a power timeline, in order of first appearance
#: (Vega's ``dark2`` scheme, which the report's timeline used before this table).
DEVICE_COLOURS: tuple[str, ...] = (
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
)


def device_colour(index: int) -> str:
    """The line colour of the ``index``-th device drawn."""
    return DEVICE_COLOURS[index % len(DEVICE_COLOURS)]


__all__ = [
    "DEVICE_COLOURS", "METHOD_COLOURS", "METHOD_WORDS", "PHASES", "PHASE_COLOURS", "PHASE_FALLBACK",
    "PHASE_OPACITY", "PHASE_PARTS", "Phase", "device_colour", "method_note", "method_word",
    "part_colours", "phase_colours", "phase_part",
]
