"""One row per measured run of several results: :func:`table_rows` and :func:`to_dataframe`.

They take Results, a :class:`~llem.results.ResultList`, or paths to result files and
folders (:func:`as_results`). The columns are those of :mod:`llem.results.rows`: the run's
identity, every config setting, the figure table's ``csv`` figures under their attribute
names (the suffix is the unit: ``energy_per_token_j``), the energy method and whether the
run and the result were complete. ``llem.to_dataframe`` is :func:`to_dataframe`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llem.errors import LlemError
from llem.results.result import Result
from llem.results.rows import frame, result_rows
from llem.results.store import load_result, load_results


def as_results(results: Any) -> list[Any]:
    """Results from a Result, a list, a ResultList, or paths to result files / folders."""
    if isinstance(results, Result):
        return [results]
    if isinstance(results, (str, os.PathLike)):
        results = [results]
    out: list[Any] = []
    for item in results:
        if isinstance(item, Result):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            p = Path(item)
            out.extend(load_results(p) if p.is_dir() else [load_result(p)])
        else:
            raise TypeError(f"Cannot tabulate a {type(item).__name__}; give llem Results or result files.")
    if not out:
        raise LlemError("There are no results here (an empty list, or a folder without "
                        "readable result files).")
    return out


def table_rows(results: Any) -> list[dict[str, Any]]:
    """One row per measured run of every result (:func:`llem.results.rows.result_rows`)."""
    return [row for r in as_results(results) for row in result_rows(r)]


def to_dataframe(results: Any) -> Any:
    """:func:`table_rows` as a pandas DataFrame: a row per run (needs pandas).

    Raises
    ------
    MissingDependencyError
        When pandas is not installed; the message gives the install command.
    """
    return frame(table_rows(results), "llem.to_dataframe()")


__all__ = ["as_results", "table_rows", "to_dataframe"]
