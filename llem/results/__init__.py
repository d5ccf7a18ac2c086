"""What a run produces and how it is shown: results, the figure table, statistics, the store.

Modules
-------
``result``   :class:`Result`, :class:`RunMeasurement`, :class:`RequestRecord`, :class:`ResultList`
``figures``  the figure table (label, unit, scale, digits, where each figure is shown) and
             the one number formatter (:func:`format_number`, :func:`format_stat`...)
``palette``  the words and colours of energy methods, phases and devices
``stats``    :class:`Stat` (mean with a 95% confidence interval), :func:`t_critical_95`,
             :func:`percentile`
``store``    :func:`load_result`, :func:`load_results` (``Result.save`` writes the files)
``compare``  :func:`compare` and :class:`Comparison`
``rows``     one row per measured run of a result (``Result.to_dataframe()``)
``table``    the same for several results: :func:`table_rows`, :func:`to_dataframe`

This package imports neither the backends nor the report nor the charts: they build on it.
"""

from llem.results.compare import Comparison, compare
from llem.results.figures import (
    COMPARE_FIGURES,
    FIGURES,
    SUMMARY_FIGURES,
    VIEWS,
    Figure,
    figure,
    figures_for,
    format_interval,
    format_mean,
    format_number,
    format_stat,
    format_value,
)
from llem.results.result import SCHEMA, RequestRecord, Result, ResultList, RunMeasurement, now_iso, plain
from llem.results.stats import Stat, is_finite_number, percentile, t_critical_95
from llem.results.store import ResultFileError, load_result, load_results
from llem.results.table import as_results, table_rows, to_dataframe

#: The first version's private names, kept for code that imports them from here
#: (``llem.sweep`` formats with ``_g``). New code uses
#: :func:`plain` and :func:`format_number`.
_plain = plain
_g = format_number

__all__ = [
    "COMPARE_FIGURES",
    "FIGURES",
    "SCHEMA",
    "SUMMARY_FIGURES",
    "VIEWS",
    "Comparison",
    "Figure",
    "RequestRecord",
    "Result",
    "ResultFileError",
    "ResultList",
    "RunMeasurement",
    "Stat",
    "as_results",
    "compare",
    "figure",
    "figures_for",
    "format_interval",
    "format_mean",
    "format_number",
    "format_stat",
    "format_value",
    "is_finite_number",
    "load_result",
    "load_results",
    "now_iso",
    "percentile",
    "plain",
    "t_critical_95",
    "table_rows",
    "to_dataframe",
]
