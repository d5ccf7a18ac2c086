"""Results lined up by the settings that differ between them: :func:`compare`.

Settings are named by their table paths (``pytorch.batch_size``, ``experiment.model``),
from the one config flattener :func:`llem.spec.flatten`, which keeps a row's value whole
(``vllm.compilation_config`` is one setting, not ``vllm.compilation_config.level``). The
figures shown, their labels and formats come from the figure table
(:mod:`llem.results.figures`, view ``compare``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llem.errors import import_optional
from llem.results.figures import figures_for, format_stat, html_table, text_table
from llem.results.flags import warning_ids
from llem.results.palette import method_note
from llem.results.result import Result
from llem.spec.flat import flatten


@dataclass(frozen=True)
class Comparison:
    """Results lined up by the settings that differ between them."""

    results: tuple[Result, ...]
    varying: tuple[str, ...]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per result: its label, the differing settings, then mean figures."""
        out = []
        for i, r in enumerate(self.results):
            flat = flatten(r.config)
            row: dict[str, Any] = {"result": r.name or f"#{i + 1}"}
            for k in self.varying:
                row[k] = flat.get(k)
            for f in figures_for("compare"):
                st = r.stat(f.attr)
                row[f.attr] = st.mean
                row[f.attr + "_ci95"] = st.ci95_half
            row["method"] = r.method
            row["complete"] = r.complete
            row["warnings"] = warning_ids(r.flags)
            out.append(row)
        return out

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        return import_optional("pandas", "data", "Comparison.to_pandas").DataFrame(self.rows())

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """``(heading, rows)`` of the comparison table as text: what the display and the report show."""
        shown = figures_for("compare")
        flagged = any(r.warnings for r in self.results)
        head = ["result", *self.varying] + [f.label for f in shown] + (["warnings"] if flagged else [])
        body = []
        for i, r in enumerate(self.results):
            flat = flatten(r.config)
            cells = [r.name or f"#{i + 1}"] + [str(flat.get(k)) for k in self.varying]
            for f in shown:
                cells.append(format_stat(r.stat(f.attr), f) + (method_note(r.method) if f.energy else ""))
            if flagged:
                cells.append(", ".join(warning_ids(r.flags)) or "-")
            body.append(cells)
        return head, body

    def __repr__(self) -> str:
        try:
            lines = text_table(*self.cells())
            if not self.varying:
                lines.append("(no setting differs between these results)")
            return "\n".join(lines)
        except Exception as exc:  # noqa: BLE001
            return f"<llem Comparison of {len(self.results)} results; display failed: {exc!r}>"

    def _repr_html_(self) -> str:
        try:
            return html_table(*self.cells(), cls="llem-compare")
        except Exception:  # noqa: BLE001
            return f"<pre>{html.escape(repr(self))}</pre>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


def compare(results: Sequence[Result] | Iterable[Result]) -> Comparison:
    """Line results up by the config settings that differ between them.

    Parameters
    ----------
    results : iterable of Result

    Returns
    -------
    Comparison
        ``rows()`` gives one dict per result (label, differing settings, mean figures with
        their 95% CI half-widths, energy method, the ids of its validity warnings); it
        displays as a table, with a ``warnings`` column when a result carries any.
    """
    res = tuple(results)
    if not res:
        raise ValueError("compare() needs at least one result.")
    flats = [flatten(r.config) for r in res]
    keys: list[str] = []
    for f in flats:
        keys.extend(k for k in f if k not in keys)
    varying = tuple(k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str)
                                             for f in flats}) > 1)
    return Comparison(res, varying)


__all__ = ["Comparison", "compare"]
