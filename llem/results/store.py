"""The results store: result files in a folder, read back one by one or all at once.

:meth:`Result.save <llem.results.Result.save>` writes one JSON file per result, atomically
(:func:`llem._files.write_atomic`); :func:`load_result` reads one file and
:func:`load_results` a folder, where a corrupt file is reported and skipped, never
stopping the others from loading. Only regular files are read (a symbolic link is
followed to one), never more than :data:`MAX_RESULT_BYTES`: a FIFO, a device or a huge
file is named and skipped, so loading a folder never hangs.

Before measuring, :func:`check_writable` says whether a folder can take results;
:func:`save_or_keep` saves one and, when the folder cannot take it after all (a full
disk, a folder removed meanwhile), keeps it in a fallback folder
(:func:`fallback_folders`) and says where.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any

from llem._files import TMP_PREFIX, clean_stale_temps
from llem._input import FieldError, FileProblem, load_json, read_capped
from llem.errors import LlemError
from llem.results.result import Result, ResultList

#: The largest result file llem reads, in bytes (256 MiB: some 4 million generated tokens
#: with their times); a larger file is refused with its size, unless ``max_bytes`` is raised.
MAX_RESULT_BYTES = 256 * 2**20


class ResultFileError(LlemError, ValueError):
    """A results file could not be read as a llem result."""


class ResultsFolderError(LlemError, OSError):
    """A results folder cannot take results (a file in its path, no permission, a full disk)."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _read_capped(p: Path, max_bytes: int) -> bytes:
    """The bytes of regular file ``p`` (a link is followed), refused when it is not one or too big."""
    try:
        return read_capped(p, max_bytes)
    except FileProblem as problem:
        if problem.reason == "missing":
            raise ResultFileError(f"Result file {str(p)!r} does not exist.") from None
        if problem.reason == "unreadable":
            raise ResultFileError(f"Result file {str(p)!r} could not be read: {problem.exc}") from None
        if problem.reason == "not_regular":
            link = " (through a symbolic link)" if problem.through_link else ""
            raise ResultFileError(
                f"Result file {str(p)!r} is {_kind(problem.mode)}{link}, not a regular file; llem "
                "reads results only from regular files. Remove it or rename it so its name does "
                "not end in .json.") from None
        raise ResultFileError(
            f"Result file {str(p)!r} is {_size(problem.size)}, over the {_size(max_bytes)} llem "
            "reads (MAX_RESULT_BYTES). If it is a result, read it with "
            "load_result(path, max_bytes=...); otherwise remove it from the folder.") from None


def load_result(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Result:
    """Read one result file written by :meth:`Result.save`.

    Parameters
    ----------
    path : path
        A regular file (or a symbolic link to one).
    max_bytes : int, optional
        Refuse a larger file (default :data:`MAX_RESULT_BYTES`).

    Raises
    ------
    ResultFileError
        Naming the file and what is wrong with it.
    """
    p = Path(path)
    raw = _read_capped(p, MAX_RESULT_BYTES if max_bytes is None else max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResultFileError(f"Result file {str(p)!r} could not be read: {exc}") from None
    return parse_result(text, str(p))


def parse_result(text: str, name: str = "<text>") -> Result:
    """The Result in ``text`` (a result file's content); ``name`` names the file in errors.

    The JSON is read within :mod:`llem._input`'s bounds (nesting, huge integers, a key
    given twice), then every field is checked against its type before anything is built.

    Raises
    ------
    ResultFileError
        Naming the file, the field (``runs[0].energy_j``) and what is wrong with it.
    """
    what = f"Result file {name!r}"
    data = load_json(text, what, error=ResultFileError)
    if not isinstance(data, dict) or "runs" not in data:
        raise ResultFileError(f"{what} does not hold a llem result.")
    try:
        return Result.from_dict(data)
    except FieldError as exc:
        raise ResultFileError(
            f"{what} holds a result llem cannot rebuild: the field {exc.field or '(top level)'} "
            f"{exc.problem}. Fix: the file was "
            "edited or damaged; restore it, or remove it and run the experiment again."
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise ResultFileError(
            f"{what} holds a result llem cannot rebuild: {type(exc).__name__}: {exc}"
        ) from None


def load_results(folder: str | os.PathLike[str] = "llem-results", *,
                 max_bytes: int | None = None) -> ResultList:
    """Read every ``*.json`` result in ``folder``, oldest first.

    A file that cannot be read (corrupt, not a regular file, over :data:`MAX_RESULT_BYTES`)
    is reported (a warning naming the file and the problem, and an entry in the returned
    list's ``errors``) and skipped; the others still load. Temporaries an interrupted save
    left behind are removed (:func:`llem._files.clean_stale_temps`). ``max_bytes`` is
    passed to :func:`load_result`.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ResultFileError(f"Results folder {str(root)!r} does not exist.")
    clean_stale_temps(root)
    results, errors = [], {}
    for p in sorted(root.glob("*.json")):
        if p.name.startswith(TMP_PREFIX):
            continue
        try:
            results.append(load_result(p, max_bytes=max_bytes))
        except ResultFileError as exc:
            errors[str(p)] = str(exc)
            warnings.warn(str(exc), stacklevel=2)
    results.sort(key=lambda r: r.created_at)
    return ResultList(results, errors)


def _why(folder: Path, exc: OSError) -> str:
    """Why ``folder`` cannot take files, in words."""
    for up in (folder, *folder.parents):
        if up.exists() or up.is_symlink():
            if not up.is_dir():
                return (f"{str(up)!r} is a file, not a folder" if up != folder
                        else "it is a file, not a folder")
            break
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (the folder is not writable)"
    if exc.errno == errno.ENOSPC:
        return "the disk is full (no space left on device)"
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system"
    return exc.strerror or str(exc)


def check_writable(folder: str | os.PathLike[str]) -> Path:
    """Make sure results can be saved in ``folder`` (created if missing); return it.

    A file is created there and removed, so a folder on a read-only or full disk, or
    without write permission, is found before anything is measured.

    Raises
    ------
    ResultsFolderError
        Naming the folder, why it cannot take results, and the fix.
    """
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TMP_PREFIX, dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ResultsFolderError(
            f"Results cannot be saved in {str(p)!r}: {_why(p, exc)}. Fix: give a folder you "
            "can write to (llem run -o FOLDER, or the config's output_dir).") from None
    return p


def fallback_folders() -> list[Path]:
    """Where :func:`save_or_keep` keeps a result its folder could not take, in order of choice.

    The user's cache (``$XDG_CACHE_HOME/llem/unsaved-results``, else
    ``~/.cache/llem/unsaved-results``), then the system's temporary folder
    (``<tmp>/llem-unsaved-results``).
    """
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [Path(cache) / "llem" / "unsaved-results", Path(tempfile.gettempdir()) / "llem-unsaved-results"]


def save_or_keep(result: Any, folder: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """Save ``result`` in ``folder``; if that fails, in the first fallback folder that takes it.

    Returns
    -------
    (path, problem)
        The file written, and ``""`` when it is in ``folder``, else one line saying why
        ``folder`` failed and where the result was kept.

    Raises
    ------
    ResultsFolderError
        Neither ``folder`` nor any fallback folder could take it (the message names all).
    """
    target = Path(folder if folder is not None else result.config.get("output_dir") or "llem-results")
    try:
        return result.save(target), ""
    except OSError as exc:
        why = _why(target, exc)
    tried = []
    for fb in fallback_folders():
        try:
            path = result.save(fb)
        except OSError as exc:
            tried.append(f"{str(fb)!r} ({_why(fb, exc)})")
            continue
        return path, (f"saving in {str(target)!r} failed ({why}); the result was kept in {str(path)!r} "
                      "instead: move it where it belongs.")
    raise ResultsFolderError(
        f"The result could not be saved in {str(target)!r} ({why}) nor in the fallback folders "
        + ", ".join(tried) + ". Fix: free disk space or give a writable folder; in Python the "
        "result is still in memory (result.save(folder)).")


__all__ = ["MAX_RESULT_BYTES", "ResultFileError", "ResultsFolderError", "check_writable",
           "fallback_folders", "load_result", "load_results", "parse_result", "save_or_keep"]
