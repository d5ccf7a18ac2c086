"""The results folder of a sweep, and the bookkeeping of each run as it lands.

Result files sit directly in the folder, where :func:`llem.results.load_results` reads
them; the study record and the failed runs go in its ``_sweep`` subfolder. Every result
is saved as soon as it is measured (atomically, see :meth:`llem.results.Result.save`)
and tagged with its configuration key and cycle (:func:`tag`), so a sweep that was
interrupted or crashed resumes where it stopped (:meth:`Store.saved`).

One sweep at a time owns a folder (:class:`FolderLock`): ``_sweep/lock.json`` names the
owner (pid, host, start time) and its time is renewed every :data:`HEARTBEAT_S` seconds.
A second sweep on the folder is refused with the owner named; a lock whose process is
gone on this host, or whose heartbeat is older than :data:`STALE_LOCK_S`, is stale and
taken over, with a note in the sweep's result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llem._files import TMP_PREFIX, write_atomic
from llem.errors import ConfigError
from llem.results import load_results, now_iso
from llem.results.store import check_writable, save_or_keep
from llem.study.grid import jsonable
from llem.study.outcome import Failure, ProgressCallback, SweepProgress, sweep_info
from llem.study.plan import PlannedRun

#: Folder (inside the results folder) for the study record and failed runs.
META_DIR = "_sweep"

#: The lock file (in :data:`META_DIR`) naming the sweep that owns the results folder.
LOCK_FILE = "lock.json"

#: Seconds between two renewals of the lock's time by the sweep that holds it.
HEARTBEAT_S = 30.0

#: A lock not renewed for this many seconds is stale (its owner stopped or its machine is gone).
STALE_LOCK_S = 600.0

#: A lock file still empty or half written this many seconds after it was made is stale.
_UNREADABLE_LOCK_S = 10.0


class FolderInUseError(ConfigError):
    """Another sweep holds the results folder; the message names it and the fix."""


def _pid_gone(pid: Any) -> bool:
    """True when no process ``pid`` runs on this machine (never on Windows, where it cannot be asked)."""
    if os.name == "nt" or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, owned by another user
        return False
    return False


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists (then False); never half written.

    The text is written to a temporary file first and hard-linked to ``path`` (atomic, and
    safe on network file systems); where hard links are not supported, ``O_EXCL``.
    """
    # named as write_atomic names its temporaries, so a killed writer's is cleaned the same way
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}.lock")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            pass
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return True
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


class FolderLock:
    """The results folder's lock: one sweep at a time measures into a folder.

    Use it as a context manager (or :meth:`acquire` / :meth:`release`). :meth:`acquire`
    raises :class:`FolderInUseError` while another live sweep holds the folder, and takes
    a stale lock over (``note`` then says whose it was and why it was stale). While held,
    a thread renews the lock's time every :data:`HEARTBEAT_S` seconds. :meth:`release`
    removes the lock only if it is still this one's.
    """

    def __init__(self, folder: Path, study_id: str = "") -> None:
        self.folder = folder
        self.path = folder / META_DIR / LOCK_FILE
        self.study_id = study_id
        self.note = ""
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def record(self) -> dict[str, Any]:
        """What the lock says about its owner: pid, host, start time, study and command."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "started_at": now_iso(),
                "study_id": self.study_id, "command": " ".join(sys.argv)[:300], "token": self.token}

    def _read(self) -> tuple[dict[str, Any] | None, float]:
        """The lock's owner record (None if unreadable) and its age in seconds.

        Raises FileNotFoundError when there is no lock.
        """
        age = 0.0
        try:
            age = time.time() - self.path.stat().st_mtime
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError):
            return None, age
        return (owner if isinstance(owner, dict) else None), age

    @staticmethod
    def _stale(owner: dict[str, Any] | None, age_s: float) -> str:
        """Why a lock is stale, in words; ``""`` when its owner may still be running."""
        if owner is None:
            return (f"the lock file was unreadable and {age_s:.0f} s old"
                    if age_s > _UNREADABLE_LOCK_S else "")
        if owner.get("host") == socket.gethostname() and _pid_gone(owner.get("pid")):
            return f"its process {owner.get('pid')} is gone from {owner.get('host')}"
        if age_s > STALE_LOCK_S:
            return f"its heartbeat stopped {age_s:.0f} s ago (stale after {STALE_LOCK_S:.0f} s)"
        return ""

    def _held(self, owner: dict[str, Any] | None) -> FolderInUseError:
        who = ("a sweep that is starting now" if owner is None else
               f"pid {owner.get('pid')} on host {owner.get('host')!r}, started {owner.get('started_at')}")
        return FolderInUseError(
            f"The results folder {str(self.folder)!r} is in use by another sweep ({who}; lock "
            f"file {str(self.path)!r}). Fix: wait for that sweep to finish, or give this one "
            "another results folder (results_dir=, llem sweep -o FOLDER); if that sweep is no "
            "longer running, delete the lock file.")

    def _take_over(self, owner: dict[str, Any] | None, mine: str) -> bool:
        """Replace the stale lock ``owner`` with this one, unless another sweep got there first."""
        mutex = self.path.with_name(LOCK_FILE + ".takeover")
        if not _create_exclusive(mutex, self.token):
            try:
                if time.time() - mutex.stat().st_mtime > _UNREADABLE_LOCK_S:
                    mutex.unlink()  # left by a sweep killed while it took a lock over
            except OSError:
                pass
            time.sleep(0.1)
            return False
        try:
            try:
                current, _ = self._read()
            except FileNotFoundError:
                current = None
            if (current or {}).get("token") != (owner or {}).get("token"):
                return False  # taken (or released) meanwhile
            write_atomic(self.path, mine)
            return True
        finally:
            try:
                mutex.unlink()
            except OSError:
                pass

    def acquire(self) -> FolderLock:
        """Take the folder (see the class); returns self."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = json.dumps(self.record(), indent=1)
        for _ in range(50):
            if _create_exclusive(self.path, mine):
                break
            try:
                owner, age = self._read()
            except FileNotFoundError:
                continue  # released meanwhile: try again
            why = self._stale(owner, age)
            if not why:
                raise self._held(owner)
            if self._take_over(owner, mine):
                who = (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started_at')}"
                       if owner else "an unknown sweep")
                self.note = f"Took over a stale lock on the results folder, left by {who}: {why}."
                break
        else:
            raise self._held(None)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="llem-sweep-lock", daemon=True)
        self._beat.start()
        return self

    def _mine(self) -> bool:
        try:
            owner, _ = self._read()
        except FileNotFoundError:
            return False
        return (owner or {}).get("token") == self.token

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if self._mine():
                    os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still this one's."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
        if self._mine():
            try:
                self.path.unlink()
            except OSError:
                pass

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class Store:
    """The results folder: result files, the study record and failed runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta = check_writable(root / META_DIR)

    def lock(self, study_id: str = "") -> FolderLock:
        """The folder's lock (:class:`FolderLock`), not yet taken: ``with store.lock(id) as lock:``."""
        return FolderLock(self.root, study_id)

    def saved(self, keys: set[tuple[str, int]]) -> dict[tuple[str, int], Any]:
        """Complete results already in the folder for (key, cycle) pairs of this study."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged file is run again, not fatal
            found = load_results(self.root)
        out = {}
        for r in found:
            m = sweep_info(r)
            pair = (m.get("key"), m.get("cycle"))
            if r.complete and pair in keys:
                out[pair] = r
        return out

    def write_study(self, record: dict[str, Any]) -> None:
        """Write the study record (``_sweep/study.json``)."""
        write_atomic(self.meta / "study.json", json.dumps(jsonable(record), indent=1))

    def _failure_path(self, key: str, cycle: int) -> Path:
        return self.meta / f"failed-{key}-c{cycle}.json"

    def record_failure(self, f: Failure) -> None:
        """Keep a failed run's error in ``_sweep/failed-KEY-cCYCLE.json``."""
        write_atomic(self._failure_path(f.key, f.cycle), json.dumps(f.to_dict(), indent=1))

    def clear_failure(self, key: str, cycle: int) -> None:
        """Forget a failure once the run has succeeded."""
        try:
            self._failure_path(key, cycle).unlink()
        except FileNotFoundError:
            pass


def tag(result: Any, run: PlannedRun, study_id: str) -> Any:
    """``result`` named after its trial, with the sweep's bookkeeping in its environment."""
    env = dict(result.environment or {})
    env["sweep"] = {"study": study_id, "key": run.trial.key, "load_key": run.trial.load_key,
                    "cycle": run.cycle, "position": run.position, "label": run.trial.label,
                    "settings": jsonable(run.trial.settings)}
    return dataclasses.replace(result, name=f"{run.trial.label} (cycle {run.cycle + 1})",
                               environment=env)


def _current(run: PlannedRun) -> str:
    return f"{run.trial.label} (cycle {run.cycle + 1})"


class Driver:
    """Bookkeeping shared by the executors: save, record, report progress.

    An executor calls :meth:`starting` when a run begins, then :meth:`finished` with its
    Result or :meth:`failed_run` with its error; the driver saves, counts and tells the
    ``progress`` and ``on_result`` callbacks (a callback that raises never stops a sweep;
    its first errors are kept in ``callback_errors``).
    """

    def __init__(self, runs: list[PlannedRun], store: Store, study_id: str, done: int,
                 progress: ProgressCallback | None, on_result: Callable[[Any], None] | None):
        self.runs = runs
        self.store = store
        self.study_id = study_id
        self.progress = progress
        self.on_result = on_result
        self.total = len(runs)
        self.done = done
        self.resumed = done
        self.failed = 0
        self.results: dict[tuple[str, int], Any] = {}
        self.failures: list[Failure] = []
        self.t0 = time.perf_counter()
        self.finished_here = 0
        self.callback_errors: list[str] = []
        self.notes: list[str] = []

    def eta(self) -> float | None:
        """Seconds to the end at this session's pace; None before the first run ends."""
        if not self.finished_here:
            return None
        elapsed = time.perf_counter() - self.t0
        remaining = self.total - self.done - self.failed
        return elapsed / self.finished_here * remaining

    def emit(self, stage: str, current: str = "", result: Any = None, error: str = "") -> None:
        """Tell the progress callback where the sweep stands."""
        if self.progress is None:
            return
        event = SweepProgress(stage, self.done, self.failed, self.total, self.resumed, current,
                              self.eta(), time.perf_counter() - self.t0, result, error)
        self._call(self.progress, event)

    def _call(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            fn(arg)
        except Exception as exc:  # noqa: BLE001 - a display callback never stops a sweep
            if len(self.callback_errors) < 5:
                self.callback_errors.append(f"{getattr(fn, '__name__', fn)!r} raised {exc!r}")

    def starting(self, run: PlannedRun) -> None:
        """A run begins."""
        self.emit("run", _current(run))

    def finished(self, run: PlannedRun, result: Any) -> Any:
        """A run ended with ``result``: tag it, save it, count it; returns the tagged result."""
        tagged = tag(result, run, self.study_id)
        stopped = False
        try:
            _, problem = save_or_keep(tagged, self.store.root)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM while a measured result was being saved (the temporary file
            # is gone): save it again, keep it, then stop the sweep as asked
            stopped = True
            _, problem = save_or_keep(tagged, self.store.root)
            self.notes.append(f"{_current(run)}: the sweep was stopped while this result was "
                              "being saved; it was saved again before stopping.")
        if problem:  # kept elsewhere (a full disk): the sweep goes on, and says where
            self.notes.append(f"{_current(run)}: {problem}")
        self.store.clear_failure(run.trial.key, run.cycle)
        self.results[(run.trial.key, run.cycle)] = tagged
        self.done += 1
        self.finished_here += 1
        if stopped:
            raise KeyboardInterrupt
        if self.on_result is not None:
            self._call(self.on_result, tagged)
        self.emit("result", _current(run), result=tagged)
        return tagged

    def failed_run(self, run: PlannedRun, error: str, tb: str = "") -> None:
        """A run raised ``error``: record it and go on."""
        f = Failure(run.trial.label, dict(run.trial.settings), run.trial.key, run.cycle, error, tb)
        self.store.record_failure(f)
        self.failures.append(f)
        self.failed += 1
        self.finished_here += 1
        self.emit("failed", _current(run), error=error)


__all__ = ["HEARTBEAT_S", "LOCK_FILE", "META_DIR", "STALE_LOCK_S", "Driver", "FolderInUseError", "FolderLock",
           "Store", "tag"]
