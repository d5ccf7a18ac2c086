"""Model reuse: one backend kept loaded across the runs that share their load-time settings.

Reuse goes only through the backend protocol (:mod:`llem.backends.base`): ``load`` for
the first run of a load key, the optional ``reconfigure`` for the next ones, ``release``
when the key changes. A backend without ``reconfigure``, or whose ``reconfigure`` raises
:class:`~llem.backends.base.ReloadNeeded`, is released and loaded again.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from llem.backends.base import LoadInfo, ReloadNeeded
from llem.backends.loadsteps import step
from llem.runner import get_backend_class
from llem.study.grid import load_key


class KeptBackend:
    """A backend that stays loaded across runs whose load-time settings agree.

    Passed to :func:`llem.run` as ``backend=``; the runner calls :meth:`load` for
    every run. The first call (or one whose :func:`~llem.study.grid.load_key` differs)
    makes the config's backend and loads the model; a later call with the same load key
    calls the backend's ``reconfigure(config)``, which applies the decode-time settings
    to the loaded model. Everything else (``generate``, ``tokenizer``, ``name``...) is
    the loaded backend's.

    A load that fails or is interrupted leaves nothing kept: the half-loaded backend is
    released.

    Parameters
    ----------
    reused_from : str
        What a reused model was loaded for, in the note a reusing run gets ("the previous
        run of this sweep"; the magic's kept model says "the previous cell").

    Attributes
    ----------
    loads : int
        Models loaded so far.
    reuses : int
        Runs that reused a loaded model.
    """

    def __init__(self, reused_from: str = "the previous run of this sweep") -> None:
        self.inner: Any = None
        self.key: str | None = None
        self.loads = 0
        self.reuses = 0
        self.reused_from = reused_from

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def probe_facts(self, cfg: Any) -> dict[str, Any]:
        """The facts ``cfg``'s backend tells before loading (``{}`` when it tells none).

        Asked of the loaded backend, or of a fresh one of ``cfg.backend`` before the first
        load (constructing a backend loads nothing).
        """
        inner = self.inner if self.inner is not None else get_backend_class(cfg.backend)()
        probe = getattr(inner, "probe_facts", None)
        return dict(probe(cfg) or {}) if callable(probe) else {}

    def load(self, cfg: Any) -> LoadInfo:
        """Load ``cfg``'s model, or reuse the loaded one when its load-time settings agree.

        Raises
        ------
        ConfigError
            The backend refuses ``cfg``'s settings (from ``load`` or ``reconfigure``).
        """
        key = load_key(cfg)
        why_not = ""
        if self.inner is not None and key == self.key:
            reconfigure = getattr(self.inner, "reconfigure", None)
            if callable(reconfigure):
                t0 = time.perf_counter()
                step(f"model reused from {self.reused_from}: applying this run's settings")
                try:
                    info = reconfigure(cfg)
                except ReloadNeeded as exc:
                    why_not = str(exc)
                else:
                    self.reuses += 1
                    note = (f"Model reused from {self.reused_from} (same load-time "
                            f"settings); applying this run's settings took "
                            f"{time.perf_counter() - t0:.3f} s.")
                    return dataclasses.replace(info, notes=(*info.notes, note))
        self.release()
        inner = get_backend_class(cfg.backend)()
        try:
            info = inner.load(cfg)
        except BaseException:
            try:
                inner.release()  # nothing half-loaded stays
            except Exception:  # noqa: BLE001 - the load's own error is the one to see
                pass
            raise
        self.inner, self.key = inner, key
        self.loads += 1
        if why_not:
            info = dataclasses.replace(info, notes=(
                *info.notes, f"Model loaded again although the load-time settings agree: {why_not}"))
        return info

    def release(self) -> None:
        """Release the loaded model, if any."""
        inner, self.inner, self.key = self.inner, None, None
        if inner is not None:
            inner.release()


__all__ = ["KeptBackend"]
