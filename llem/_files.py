"""Writing files so that a reader never sees half of one.

:func:`write_atomic` writes through a temporary file named ``.tmp-XXXXXXXX[suffix]`` in
the target's folder, then renames it over the target. The new file gets the mode a plain
``open(path, "w")`` would give it: an existing target's mode, else ``0o666`` less the
umask. Temporaries a killed writer left behind are removed by :func:`clean_stale_temps`,
which every write and every load of a results folder calls: only llem's own names, and
only once they are older than :data:`STALE_TEMP_S`, so a write in progress elsewhere is
never touched.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from pathlib import Path

#: Prefix of llem's temporary files (the results store skips names that start with it).
TMP_PREFIX = ".tmp-"

#: A temporary left this long (seconds since its last change) belongs to a dead writer.
STALE_TEMP_S = 60.0

# mkstemp's names: the prefix, 8 characters of [a-z0-9_], and the suffix given
_TMP_NAME = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}(\.[A-Za-z0-9]{1,8})?")


def current_umask() -> int:
    """The process's umask, read without changing it where the system says (Linux ``/proc``).

    Elsewhere it is read by setting and restoring it (``os.umask``).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike[str]) -> int:
    """The mode a plain ``open(path, "w")`` gives: ``path``'s own if it exists, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def clean_stale_temps(folder: str | os.PathLike[str], older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Remove the temporaries of :func:`write_atomic` left in ``folder`` by a killed writer.

    Only regular files named as :func:`write_atomic` names them (``.tmp-`` and 8 random
    characters, then an optional suffix), and only those unchanged for ``older_than_s``
    seconds. Returns the paths removed; a file that cannot be removed is left alone.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _TMP_NAME.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than_s:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, tmp_suffix: str = "") -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it.

    The temporary file is flushed to disk before ``os.replace``, and removed if anything
    fails (including KeyboardInterrupt, or a full disk). Missing parent folders are
    created. The file's mode is what a plain write would give it (:func:`new_file_mode`),
    and stale temporaries in the folder are cleaned first (:func:`clean_stale_temps`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    mode = new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=tmp_suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            else:  # pragma: no cover - Windows
                os.chmod(tmp, mode)
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
