"""The ``zeus`` meter: one Zeus ``ZeusMonitor`` measurement window around llem's window.

For users who want the figures of the tool the field already uses (Zeus, from the
ML.ENERGY initiative) beside llem's own NVML meter on the same run. ``start()`` opens a
Zeus window (``ZeusMonitor.begin_window``) and ``stop()`` closes it
(``ZeusMonitor.end_window``); Zeus's ``Measurement`` (``time`` in s, ``gpu_energy``,
``cpu_energy`` and ``dram_energy`` in J per index) becomes llem's readings:

- GPUs that have NVML's total-energy counter (Volta and newer): ``measured``;
- older GPUs, which Zeus integrates from power readings of its own poller: ``sampled``;
- CPU packages and DRAM from RAPL: ``measured``.

Device names are llem's: ``gpu:N`` with N the NVML index (Zeus numbers GPUs as CUDA does,
after ``CUDA_VISIBLE_DEVICES``; this module translates), ``cpu:N`` and ``ram:N`` for RAPL
package N, as the ``rapl`` meter names them.

Zeus reports when a window ends, so this meter adds no live timeline points; the window
draws each device's total as a straight line at its mean power, and the phase split
(prefill / decode) then follows time, not power (said in the measurement's notes).

**Not yet run on real hardware**: Zeus is not installed on the development machines;
this module is tested against a stand-in ``zeus`` module with Zeus's API.
"""

from __future__ import annotations

import itertools
import os
import sys
import warnings
from typing import Any

from llem.energy.base import Meter, MeterUnavailableError, Probe, RawSample, package_version
from llem.energy.measurement import DeviceReading
from llem.energy.nvml import gpu_indices
from llem.errors import LlemError, missing_dependency
from llem.machine import get_machine, visible_gpus

#: What the user installs to get Zeus (the ``zeus`` distribution; ``zeus-ml`` before 0.10.1).
EXTRA = "zeus"

#: The note every Zeus measurement carries about its timeline.
TIMELINE_NOTE = (
    "zeus: energy is read once per window (ZeusMonitor end_window); the power timeline and "
    "the prefill/decode split are drawn at each device's mean power over the window."
)

_keys = itertools.count(1)


def zeus_version() -> str | None:
    """The installed Zeus version (distribution ``zeus``, or ``zeus-ml`` before the rename)."""
    v = package_version("zeus") or package_version("zeus-ml")
    if v is None:
        mod = sys.modules.get("zeus")
        v = getattr(mod, "__version__", None)
    return str(v) if v else None


def _import_monitor() -> Any:
    """``zeus.monitor.ZeusMonitor``; a llem error with the install command when missing."""
    try:
        from zeus.monitor import ZeusMonitor
    except ImportError:
        raise missing_dependency("zeus", EXTRA, "the zeus meter (Zeus's ZeusMonitor)") from None
    return ZeusMonitor


def _visible() -> list[int]:
    """NVML indices of the GPUs CUDA numbers 0, 1, ... here (:func:`llem.machine.visible_gpus`)."""
    return [g.index for g in visible_gpus(get_machine().gpus)]


def cuda_index_for_nvml_device(nvml_index: int) -> int:
    """The CUDA ordinal (Zeus's GPU index) of NVML GPU ``nvml_index``.

    Raises
    ------
    LlemError
        When ``CUDA_VISIBLE_DEVICES`` hides that GPU.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") is None and os.environ.get("CUDA_DEVICE_ORDER") is None:
        return nvml_index
    seen = _visible()
    if nvml_index in seen:
        return seen.index(nvml_index)
    raise LlemError(
        f"GPU {nvml_index} (NVML index) is hidden by CUDA_VISIBLE_DEVICES="
        f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}; Zeus reads only the GPUs CUDA sees. "
        "Fix: make it visible, or ask for a visible GPU."
    )


def nvml_index_for_cuda_index(cuda: int) -> int:
    """The NVML index of CUDA ordinal ``cuda`` (``cuda`` itself where it cannot be matched)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is None and os.environ.get("CUDA_DEVICE_ORDER") is None:
        return cuda
    seen = _visible()
    return seen[cuda] if 0 <= cuda < len(seen) else cuda


class ZeusMeter(Meter):
    """GPU, CPU and DRAM energy read by Zeus's ``ZeusMonitor`` over the window.

    Parameters
    ----------
    devices : iterable of int or "gpu:N", optional
        NVML indices of the GPUs to read; all GPUs CUDA sees when None. CPU packages and
        DRAM are read wherever Zeus can read RAPL.
    cpu : bool
        Read the CPU packages through Zeus (RAPL). False passes ``cpu_indices=[]``.
    monitor_kwargs : dict, optional
        More keyword arguments for ``ZeusMonitor`` (not ``gpu_indices``/``cpu_indices``).
    """

    name = "zeus"

    def __init__(self, devices: Any = None, *, cpu: bool = True,
                 monitor_kwargs: dict[str, Any] | None = None) -> None:
        self.indices = gpu_indices(devices)
        self.cpu = bool(cpu)
        self.monitor_kwargs = dict(monitor_kwargs or {})
        bad = {"gpu_indices", "cpu_indices"} & set(self.monitor_kwargs)
        if bad:
            raise LlemError(
                f"ZeusMeter monitor_kwargs may not set {', '.join(sorted(bad))}: give the GPUs "
                "as devices= and the CPU choice as cpu=."
            )
        self._monitor: Any = None
        self._key: str | None = None
        self._gpu_names: dict[int, int] = {}  # Zeus (CUDA) index -> NVML index

    @property
    def cache_key(self) -> str:
        """Which GPUs, and whether the CPU is read."""
        return f"zeus/{self.indices}/cpu={self.cpu}"

    @property
    def notes(self) -> tuple[str, ...]:
        """What a reader of a Zeus measurement should know about its timeline."""
        return (TIMELINE_NOTE,)

    def _monitor_args(self) -> dict[str, Any]:
        kw = dict(self.monitor_kwargs)
        if self.indices is not None:
            cuda = [cuda_index_for_nvml_device(i) for i in dict.fromkeys(self.indices)]
            self._gpu_names = dict(zip(cuda, dict.fromkeys(self.indices)))
            kw["gpu_indices"] = cuda
        if not self.cpu:
            kw["cpu_indices"] = []
        return kw

    def _make_monitor(self) -> Any:
        monitor_cls = _import_monitor()
        kw = self._monitor_args()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                monitor = monitor_cls(**kw)
        except LlemError:
            raise
        except Exception as exc:
            raise MeterUnavailableError(
                f"Zeus's ZeusMonitor could not start ({type(exc).__name__}: {exc}). Fix: see "
                "Zeus's own message; meter='nvml' or 'auto' read the GPUs without Zeus."
            ) from exc
        gpus = list(getattr(monitor, "gpu_indices", []) or [])
        cpus = list(getattr(monitor, "cpu_indices", []) or [])
        if not gpus and not cpus:
            raise MeterUnavailableError(
                "Zeus found nothing to measure here: no NVIDIA GPU it can read and no readable "
                "RAPL CPU counter (reading RAPL needs root or read access to "
                "/sys/class/powercap). Fix: use meter='estimate' (or 'auto') on this machine, "
                "or run where Zeus can read a GPU or RAPL."
            )
        return monitor

    def probe(self) -> Probe:
        """Installed or not, and what Zeus would read (never raises)."""
        v = zeus_version()
        try:
            monitor = self._monitor or self._make_monitor()
            self._monitor = monitor  # start() reuses it
        except LlemError as exc:
            return Probe("zeus", False, str(exc), (), "measured")
        except Exception as exc:  # never raise from probe
            return Probe("zeus", False, f"Zeus could not start: {exc!r}", (), "measured")
        devices = self._device_names(monitor)
        sampled = self._sampled(monitor)
        method = "sampled" if sampled else "measured"
        return Probe(
            "zeus",
            True,
            f"Zeus {v or '?'} ZeusMonitor reads " + (", ".join(devices) or "nothing"),
            tuple(devices),
            method,
        )

    def _nvml_index(self, cuda: int) -> int:
        if cuda in self._gpu_names:
            return self._gpu_names[cuda]
        return nvml_index_for_cuda_index(cuda)

    def _device_names(self, monitor: Any) -> list[str]:
        out = [f"gpu:{self._nvml_index(int(i))}" for i in getattr(monitor, "gpu_indices", []) or []]
        out += [f"cpu:{int(i)}" for i in getattr(monitor, "cpu_indices", []) or []]
        return out

    @staticmethod
    def _sampled(monitor: Any) -> set[int]:
        """Zeus GPU indices whose energy Zeus integrates from power (no energy counter)."""
        poller = getattr(monitor, "power_monitor", None)
        return {int(i) for i in (getattr(poller, "gpu_indices", None) or [])}

    def describe(self) -> str:
        """Provenance line."""
        return f"zeus {zeus_version() or '?'}: ZeusMonitor window (begin_window/end_window)"

    def versions(self) -> dict[str, str]:
        """Zeus's version."""
        v = zeus_version()
        return {"zeus": v} if v else {}

    def start(self) -> None:
        """Make the monitor (once) and open a Zeus window."""
        if self._monitor is None:
            self._monitor = self._make_monitor()
        self._key = f"llem-{os.getpid()}-{next(_keys)}"
        self._monitor.begin_window(self._key, sync_execution=self._sync())

    @staticmethod
    def _sync() -> bool:
        # Zeus synchronises through torch.cuda; where torch is not imported, nothing of
        # torch's is in flight on a GPU, and Zeus would fail looking for it
        return "torch" in sys.modules

    def sample(self) -> list[RawSample]:
        """No live readings (Zeus reports when its window ends)."""
        return []

    def stop(self) -> tuple[DeviceReading, ...]:
        """Close the Zeus window and turn its ``Measurement`` into readings."""
        key, self._key = self._key, None
        monitor = self._monitor
        if key is None or monitor is None:
            return ()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Zeus warns on a zero reading; the note says it
            zm = monitor.end_window(key, sync_execution=self._sync())
        return self.readings(zm, self._sampled(monitor))

    def readings(self, zm: Any, sampled: set[int] | frozenset[int] = frozenset()
                 ) -> tuple[DeviceReading, ...]:
        """The readings of a Zeus ``Measurement`` (``sampled``: the GPUs Zeus integrated)."""
        v = zeus_version() or "?"
        window_s = float(getattr(zm, "time", 0.0) or 0.0)
        out: list[DeviceReading] = []
        for cuda, joules in sorted((getattr(zm, "gpu_energy", None) or {}).items()):
            nvml = self._nvml_index(int(cuda))
            integrated = int(cuda) in sampled
            how = ("power integrated by Zeus's PowerMonitor (no energy counter)" if integrated
                   else "nvmlDeviceGetTotalEnergyConsumption counter")
            out.append(DeviceReading(
                f"gpu:{nvml}", "gpu", float(joules), "sampled" if integrated else "measured",
                f"zeus {v}: ZeusMonitor GPU {cuda} (CUDA index), {how}",
                {"zeus_version": v, "zeus_gpu_index": int(cuda), "nvml_index": nvml,
                 "zeus_window_s": window_s, "energy_counter": not integrated},
            ))
        for kind, attr in (("cpu", "cpu_energy"), ("ram", "dram_energy")):
            for pkg, joules in sorted((getattr(zm, attr, None) or {}).items()):
                out.append(DeviceReading(
                    f"{kind}:{int(pkg)}", kind, float(joules), "measured",
                    f"zeus {v}: ZeusMonitor RAPL package {pkg} "
                    + ("(CPU package counter)" if kind == "cpu" else "(DRAM counter)"),
                    {"zeus_version": v, "rapl_package": int(pkg), "zeus_window_s": window_s},
                ))
        return tuple(out)


__all__ = ["EXTRA", "TIMELINE_NOTE", "ZeusMeter", "cuda_index_for_nvml_device", "zeus_version"]
