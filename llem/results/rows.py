"""One row per measured run of a result: the rows behind ``Result.to_dataframe()`` and the CSV report.

:func:`result_rows` gives one result's rows and :func:`frame` makes a pandas DataFrame of
rows; :mod:`llem.results.table` does the same for several results (Results, a
:class:`~llem.results.ResultList`, or result files and folders).

The columns are the run's identity, every config setting (``config.<section>.<field>``),
and the figures of the figure table's ``csv`` view under their attribute names, whose
suffix is the unit (``energy_per_token_j``, ``ttft_p50_s``): raw values in SI units, so
a column can be summed or divided without reading a label.
:func:`column_units` gives each figure column's label and unit (a DataFrame from
:func:`frame` carries them in ``df.attrs["units"]``).

pandas is optional: without it :func:`frame` raises
:class:`~llem.errors.MissingDependencyError` with the install command.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from llem.errors import import_optional
from llem.results.figures import figures_for
from llem.results.flags import warning_ids
from llem.spec.flat import flatten

#: The identity columns, first in every row.
ID_COLUMNS: tuple[str, ...] = ("result_id", "result_name", "model", "backend", "created_at",
                               "config_hash", "profile", "run")
#: The columns after the figures.
TAIL_COLUMNS: tuple[str, ...] = ("energy_method", "energy_source", "run_complete", "result_complete",
                                 "warnings")


def show_value(v: Any) -> str:
    """A setting's value as text (a mapping or list as JSON)."""
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return str(v)


def profile_of(r: Any) -> str:
    """The measurement profile of a result (``quick`` or ``publication``)."""
    return str(r.config.get("profile") or r.effective_config.get("experiment.profile") or "")


def result_rows(r: Any) -> list[dict[str, Any]]:
    """One row per measured run of result ``r`` (see the module's docstring for the columns)."""
    flat = {f"config.{k}": (show_value(v) if isinstance(v, (dict, list)) else v)
            for k, v in flatten(r.config).items()}
    metrics = figures_for("csv")
    rows = []
    for run in r.runs:
        row: dict[str, Any] = dict(zip(ID_COLUMNS, (r.id, r.name, r.model, r.backend, r.created_at,
                                                    r.config_hash, profile_of(r), run.index)))
        row.update(flat)
        for f in metrics:
            row[f.attr] = getattr(run, f.attr)
        row["energy_method"] = run.method
        row["energy_source"] = getattr(run.measurement, "source", "") if run.measurement else ""
        row["run_complete"] = run.complete
        row["result_complete"] = r.complete
        # the ids of the result's validity warnings, comma-separated
        row["warnings"] = ", ".join(warning_ids(r.flags))
        rows.append(row)
    return rows


def column_units() -> dict[str, tuple[str, str]]:
    """Figure column -> ``(label, unit)``: ``ttft_p50_s`` -> ``("TTFT p50", "s")``.

    The unit is the one the column holds: the figure table's unit before the display's
    scale (``s`` where the display shows ``ms``); ``""`` for a count.
    """
    return {f.attr: (f.label, f.unit if f.scale == 1 else _STORED_UNIT.get(f.unit, f.unit))
            for f in figures_for("csv")}


#: A display unit -> the unit the value is stored in (the figure's scale undone).
_STORED_UNIT = {"ms": "s", "mJ": "J", "GFLOP": "FLOP", "% of prompt tokens": "fraction"}


def frame(rows: Iterable[dict[str, Any]], purpose: str = "to_dataframe()") -> Any:
    """``rows`` as a pandas DataFrame; without pandas, the error says how to install it."""
    pd = import_optional("pandas", "data", purpose)
    df = pd.DataFrame(list(rows))
    df.attrs["units"] = {k: v for k, v in column_units().items() if k in df.columns}
    return df


__all__ = ["ID_COLUMNS", "TAIL_COLUMNS", "column_units", "frame", "profile_of", "result_rows", "show_value"]
