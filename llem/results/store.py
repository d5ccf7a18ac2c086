"""The results store: result files in a folder, read back one by one or all at once.

:meth:`Result.save <llem.results.Result.save>` writes one JSON file per result, atomically
(:func:`llem._files.write_atomic`); :func:`load_result` reads one file and
:func:`load_results` a folder, where a corrupt file is reported and skipped, never
stopping the others from loading.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from llem.errors import LlemError
from llem.results.result import Result, ResultList


class ResultFileError(LlemError, ValueError):
    """A results file could not be read as a llem result."""


def load_result(path: str | os.PathLike[str]) -> Result:
    """Read one result file written by :meth:`Result.save`.

    Raises
    ------
    ResultFileError
        Naming the file and what is wrong with it.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultFileError(f"Result file {str(p)!r} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"Result file {str(p)!r} could not be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultFileError(
            f"Result file {str(p)!r} is not valid JSON (line {exc.lineno}: {exc.msg}); it may "
            "have been cut short or edited."
        ) from None
    if not isinstance(data, dict) or "runs" not in data:
        raise ResultFileError(f"Result file {str(p)!r} does not hold a llem result.")
    try:
        return Result.from_dict(data)
    except Exception as exc:  # noqa: BLE001
        raise ResultFileError(
            f"Result file {str(p)!r} holds a result llem cannot rebuild: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def load_results(folder: str | os.PathLike[str] = "llem-results") -> ResultList:
    """Read every ``*.json`` result in ``folder``, oldest first.

    A file that cannot be read is reported (a warning naming the file and the problem, and
    an entry in the returned list's ``errors``) and skipped; the others still load.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ResultFileError(f"Results folder {str(root)!r} does not exist.")
    results, errors = [], {}
    for p in sorted(root.glob("*.json")):
        if p.name.startswith(".tmp-"):
            continue
        try:
            results.append(load_result(p))
        except ResultFileError as exc:
            errors[str(p)] = str(exc)
            warnings.warn(str(exc), stacklevel=2)
    results.sort(key=lambda r: r.created_at)
    return ResultList(results, errors)


__all__ = ["ResultFileError", "load_result", "load_results"]
