"""Peak memory of one measured run: where the model lives, and the run's own rise.

Two figures per run, both MiB:

``peak_mib``
    The highest memory in use while the run was measured, of the memory the model sits in:
    the process's resident set (RSS) on the CPU (on Linux the kernel's own high-water mark,
    ``VmHWM``, reset at the run's start: exact, and nothing is read while the model runs;
    elsewhere sampled); on a GPU with PyTorch in this process,
    torch's allocator peak (reset at the run's start) summed over every CUDA device of the
    model's device map; for an engine that allocates outside torch or in worker processes
    (vLLM, TensorRT-LLM), NVML's memory in use on each GPU the model was placed on, summed
    (the whole device: other processes on that GPU count too).
``run_peak_mib``
    The same peak minus what was in use when the run started: the run's own peak (the
    weights, what earlier cells left in a notebook kernel and the CUDA context are not in
    it).

:class:`PeakMemory` reads them; ``source`` says in words what was measured. The sampled
readers (``rss``, ``nvml``) read on a thread of their own, or, started with
``background=False``, whenever :meth:`PeakMemory.sample` is called: the runner hands that
to the energy window, whose sampler thread calls it at each tick, so a run has one sampling
thread beside the model's, not two.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from llem.energy.nvml import NvmlLibrary, PynvmlLibrary

_MIB = 1024**2

#: How :class:`PeakMemory` reads memory.
READERS: tuple[str, ...] = ("rss", "torch", "nvml")


def reader_for(backend: str, cuda_devices: Sequence[int]) -> str:
    """How a run's memory is read: ``rss`` on the CPU, ``torch`` for PyTorch on a GPU, else ``nvml``."""
    if not cuda_devices:
        return "rss"
    return "torch" if backend == "pytorch" else "nvml"


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_statm_fd: int | None = None


def _reset_statm_fd() -> None:
    global _statm_fd
    _statm_fd = None  # a forked child must not read its parent's /proc/<pid>/statm


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_statm_fd)


def _statm_rss_bytes() -> float:
    """RSS of the calling process from ``/proc/self/statm`` (Linux; one ``pread``)."""
    global _statm_fd
    if _statm_fd is None:
        _statm_fd = os.open("/proc/self/statm", os.O_RDONLY)
    return float(int(os.pread(_statm_fd, 128, 0).split()[1]) * _PAGE_SIZE)


def process_rss_reader() -> Callable[[], float]:
    """A function returning this process's RSS in bytes.

    On Linux one ``pread`` of ``/proc/self/statm`` (a few microseconds: the memory sampler
    and the estimate meter read it on threads beside the model's); elsewhere psutil's
    reading of one ``Process`` made once.
    """
    try:
        _statm_rss_bytes()
        return _statm_rss_bytes
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    proc = psutil.Process()

    def rss() -> float:
        return float(proc.memory_info().rss)

    return rss


def reset_rss_peak() -> bool:
    """Reset the kernel's record of this process's peak RSS (Linux: ``5`` to ``/proc/self/clear_refs``).

    False where it cannot be reset (not Linux, older than 4.0, no permission).
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return rss_peak_bytes() is not None
    except OSError:
        return False


def rss_peak_bytes() -> int | None:
    """Peak RSS of this process since it started or the last :func:`reset_rss_peak` (``VmHWM``)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_bytes_reader() -> Callable[[], int | None]:
    """:func:`process_rss_reader` as int bytes, or a reader of None when nothing can read it."""
    try:
        read = process_rss_reader()
    except Exception:  # noqa: BLE001 - no /proc and no psutil: no memory figure
        return lambda: None
    return lambda: int(read())


class PeakMemory:
    """Peak memory of one run (see the module's docstring).

    Parameters
    ----------
    reader : {"rss", "torch", "nvml"}
        What to read (:func:`reader_for` picks it).
    cuda_devices : sequence of int
        The model's CUDA devices (``torch``).
    nvml_indices : sequence of int
        NVML indices of the same GPUs (``nvml``).
    interval_s : float
        How often ``rss`` and ``nvml`` are sampled on a background thread (with
        ``start(background=True)``).
    library : NvmlLibrary, optional
        NVML (pynvml by default; a fake in tests).
    rss : callable, optional
        Bytes resident now (psutil by default; a fake in tests).
    torch_module : module, optional
        ``torch`` (imported when needed; a fake in tests).
    """

    def __init__(self, reader: str = "rss", *, cuda_devices: Sequence[int] = (),
                 nvml_indices: Sequence[int] = (), interval_s: float = 0.1,
                 library: NvmlLibrary | None = None, rss: Callable[[], int | None] | None = None,
                 torch_module: Any = None) -> None:
        if reader not in READERS:
            raise ValueError(f"PeakMemory reader must be one of {READERS}, not {reader!r}.")
        self.reader = reader
        self.cuda_devices = tuple(cuda_devices)
        self.nvml_indices = tuple(nvml_indices)
        self.interval_s = max(0.005, float(interval_s))
        self._library = library
        self._rss = rss or _rss_bytes_reader()
        self._kernel_peak_ok = rss is None  # the default reader may use the kernel's peak
        self._kernel_peak = False  # the kernel's peak was reset at start(): nothing to sample
        self._torch = torch_module
        self._devices: list[Any] = []
        self.start_bytes: dict[str, int] = {}
        self.peak_bytes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error = ""

    # ------------------------------------------------------------------ reading
    def _now(self) -> dict[str, int]:
        if self.reader == "rss":
            b = self._rss()
            return {} if b is None else {"process": b}
        out = {}
        for dev in self._devices:
            b = dev.memory_used_bytes()
            if b is not None:
                out[f"gpu:{dev.index}"] = int(b)
        return out

    @property
    def samples(self) -> bool:
        """Whether this reader needs sampling: ``nvml``, and ``rss`` unless the kernel keeps the peak.

        ``torch`` keeps its own peak; so does the kernel for this process's RSS on Linux
        (reset at :meth:`start`), known once started.
        """
        return self.reader != "torch" and not self._kernel_peak

    def sample(self) -> None:
        """Take one reading now (never raises: a failed reading is kept in :attr:`source`)."""
        self._read()

    def _read(self) -> None:
        try:
            now = self._now()
        except Exception as exc:  # noqa: BLE001 - memory is a side figure; it never stops a run
            self._error = f"{type(exc).__name__}: {exc}"
            return
        for k, b in now.items():
            self.start_bytes.setdefault(k, b)
            if b > self.peak_bytes.get(k, -1):
                self.peak_bytes[k] = b

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def _torch_module(self) -> Any:
        if self._torch is None:
            import torch

            self._torch = torch
        return self._torch

    # ---------------------------------------------------------------- lifecycle
    def start(self, background: bool = True) -> None:
        """Take the starting figures (and reset torch's peaks).

        With ``background`` (the default) a thread samples every ``interval_s``; without
        it, the caller calls :meth:`sample` (the energy window's sampler does, per tick).
        """
        if self.reader == "torch":
            torch = self._torch_module()
            for d in self.cuda_devices:
                torch.cuda.reset_peak_memory_stats(d)
                self.start_bytes[f"cuda:{d}"] = int(torch.cuda.memory_allocated(d))
            return
        if self.reader == "nvml":
            lib = self._library or PynvmlLibrary()
            self._library = None  # set once NVML is started, so stop() shuts it down once
            try:
                lib.init()
            except Exception as exc:  # noqa: BLE001 - no figure rather than no run
                self._error = f"{type(exc).__name__}: {exc}"
            else:
                try:
                    self._devices = [lib.device(i) for i in self.nvml_indices]
                    self._library = lib
                except Exception as exc:  # noqa: BLE001
                    self._error = f"{type(exc).__name__}: {exc}"
                    lib.shutdown()
        if self.reader == "rss" and self._kernel_peak_ok and reset_rss_peak():
            self._kernel_peak = True  # exact, and nothing to read while the model runs
        self._read()
        if background and self.samples:
            self._thread = threading.Thread(target=self._loop, name="llem-memory", daemon=True)
            self._thread.start()

    def stop(self) -> tuple[float | None, float | None]:
        """Stop sampling; return ``(peak_mib, run_peak_mib)`` (None where nothing was read)."""
        if self.reader == "torch":
            torch = self._torch_module()
            for d in self.cuda_devices:
                self.peak_bytes[f"cuda:{d}"] = int(torch.cuda.max_memory_allocated(d))
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._read()
            if self._kernel_peak:
                hwm = rss_peak_bytes()
                if hwm is None:
                    self._error = "the kernel's peak RSS could not be read; the figure is the RSS at the end"
                else:
                    self.peak_bytes["process"] = max(hwm, self.peak_bytes.get("process", 0))
            if self.reader == "nvml" and self._library is not None:
                self._library.shutdown()
        if not self.peak_bytes:
            return None, None
        peak = sum(self.peak_bytes.values())
        rise = sum(max(0, b - self.start_bytes.get(k, b)) for k, b in self.peak_bytes.items())
        return peak / _MIB, rise / _MIB

    @property
    def source(self) -> str:
        """What was measured, in words (shown after the figures)."""
        names = ", ".join(sorted(self.peak_bytes)) if self.peak_bytes else ""
        if self.reader == "rss":
            text = ("process RSS peak: the kernel's high-water mark, reset at the run's start"
                    if self._kernel_peak else "process RSS peak, sampled")
        elif self.reader == "torch":
            text = f"torch allocator peak, reset per run, summed over {names or 'the model devices'}"
        else:
            text = (f"NVML memory in use, sampled, summed over {names or 'the model GPUs'} "
                    "(whole devices: other processes count)")
        return text + (f"; memory reading failed: {self._error}" if self._error else "")


__all__ = ["READERS", "PeakMemory", "process_rss_reader", "reader_for", "reset_rss_peak", "rss_peak_bytes"]
