"""The ``nvml`` meter: NVIDIA GPU energy, power and memory through NVML.

Two layers:

* a small device interface of llem's own (:class:`GpuDevice`, :class:`NvmlLibrary`):
  total-energy counter in mJ (None where unsupported), power in mW, memory used/total in
  bytes, compute capability, name, UUID;
* :class:`PynvmlLibrary`, the one thin layer that calls ``pynvml`` (package
  ``nvidia-ml-py``). Tests use :class:`llem.testing.FakeNvmlLibrary` instead.

Energy per GPU comes from ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver
loaded; Volta and newer) where the GPU supports it: the window's energy is the counter's
difference, method ``measured``. Where it is not supported the meter integrates
``nvmlDeviceGetPowerUsage`` readings (mW) by the trapezoid rule at each sample, method
``sampled``. The timeline's ``power_w`` is always ``nvmlDeviceGetPowerUsage`` (on recent
GPUs the driver averages it over about a second, so short spikes are smoothed).

NVML numbers GPUs in PCI order and ignores ``CUDA_VISIBLE_DEVICES``; ``devices`` here are
NVML indices. :func:`nvml_index_for_cuda_device` translates a CUDA ordinal.

**Not yet run on real hardware**: the development machines have no GPU; this module is
tested against fake devices only.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol, runtime_checkable

from llem.energy.base import Meter, MeterUnavailableError, Probe, RawSample, package_version
from llem.energy.conditions import gpu_conditions, own_pids
from llem.energy.measurement import DeviceReading
from llem.errors import LlemError, missing_dependency

_MIB = 1024**2


@runtime_checkable
class GpuDevice(Protocol):
    """What llem needs from one GPU."""

    index: int

    def name(self) -> str:
        """Marketing name, e.g. ``"NVIDIA H100 80GB HBM3"``."""

    def uuid(self) -> str:
        """``"GPU-..."`` identifier."""

    def total_energy_mj(self) -> int | None:
        """Energy counter in mJ since the driver loaded, or None if unsupported."""

    def power_mw(self) -> float:
        """Current power draw, mW."""

    def memory_used_bytes(self) -> int:
        """Memory in use, bytes."""

    def memory_total_bytes(self) -> int:
        """Memory on the device, bytes."""

    def compute_capability(self) -> tuple[int, int]:
        """CUDA compute capability, ``(major, minor)``."""

    def mig_enabled(self) -> bool:
        """True when MIG mode is on."""

    def running_processes(self) -> list[int] | None:
        """Ids of the processes with a compute context on the GPU; None if unsupported."""

    def clock_event_reasons(self) -> int | None:
        """Why the clocks are held back now (NVML's bit mask); None if unsupported."""

    def temperature_c(self) -> float | None:
        """GPU temperature now, degrees C; None if unsupported."""


@runtime_checkable
class NvmlLibrary(Protocol):
    """What llem needs from the NVML library."""

    def init(self) -> None:
        """Initialise NVML; raise MeterUnavailableError with the reason when it cannot."""

    def shutdown(self) -> None:
        """Release NVML."""

    def device_count(self) -> int:
        """Number of GPUs NVML sees."""

    def device(self, index: int) -> GpuDevice:
        """The GPU at NVML index ``index``."""

    def driver_version(self) -> str:
        """The driver's version string."""

    def version(self) -> str:
        """The Python binding's version."""


# ------------------------------------------------------------ the one pynvml layer
class PynvmlDevice:
    """A :class:`GpuDevice` backed by a pynvml handle."""

    def __init__(self, nv: Any, handle: Any, index: int) -> None:
        self._nv = nv
        self._h = handle
        self.index = index

    def name(self) -> str:
        """NvmlDeviceGetName."""
        n = self._nv.nvmlDeviceGetName(self._h)
        return n.decode() if isinstance(n, bytes) else str(n)

    def uuid(self) -> str:
        """NvmlDeviceGetUUID."""
        u = self._nv.nvmlDeviceGetUUID(self._h)
        return u.decode() if isinstance(u, bytes) else str(u)

    def total_energy_mj(self) -> int | None:
        """NvmlDeviceGetTotalEnergyConsumption (mJ); None where not supported."""
        try:
            return int(self._nv.nvmlDeviceGetTotalEnergyConsumption(self._h))
        except self._nv.NVMLError_NotSupported:
            return None

    def power_mw(self) -> float:
        """NvmlDeviceGetPowerUsage (mW)."""
        return float(self._nv.nvmlDeviceGetPowerUsage(self._h))

    def memory_used_bytes(self) -> int:
        """nvmlDeviceGetMemoryInfo().used."""
        return int(self._nv.nvmlDeviceGetMemoryInfo(self._h).used)

    def memory_total_bytes(self) -> int:
        """nvmlDeviceGetMemoryInfo().total."""
        return int(self._nv.nvmlDeviceGetMemoryInfo(self._h).total)

    def compute_capability(self) -> tuple[int, int]:
        """NvmlDeviceGetCudaComputeCapability."""
        major, minor = self._nv.nvmlDeviceGetCudaComputeCapability(self._h)
        return int(major), int(minor)

    def mig_enabled(self) -> bool:
        """NvmlDeviceGetMigMode: True when MIG is on now; False where MIG is not supported."""
        try:
            current, _pending = self._nv.nvmlDeviceGetMigMode(self._h)
        except self._nv.NVMLError:
            return False
        return bool(current)

    def running_processes(self) -> list[int] | None:
        """NvmlDeviceGetComputeRunningProcesses: the pids; None where not supported."""
        try:
            procs = self._nv.nvmlDeviceGetComputeRunningProcesses(self._h)
        except self._nv.NVMLError_NotSupported:
            return None
        return [int(p.pid) for p in procs]

    def clock_event_reasons(self) -> int | None:
        """NvmlDeviceGetCurrentClocksEventReasons (older: ...ThrottleReasons); None where not supported."""
        fn = getattr(self._nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if fn is None:
            fn = self._nv.nvmlDeviceGetCurrentClocksThrottleReasons
        try:
            return int(fn(self._h))
        except self._nv.NVMLError_NotSupported:
            return None

    def temperature_c(self) -> float | None:
        """NvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU), degrees C; None where not supported."""
        try:
            return float(self._nv.nvmlDeviceGetTemperature(self._h, self._nv.NVML_TEMPERATURE_GPU))
        except self._nv.NVMLError_NotSupported:
            return None


class PynvmlLibrary:
    """An :class:`NvmlLibrary` over ``pynvml`` (imported on first use)."""

    def _nv(self) -> Any:
        try:
            import pynvml
        except ImportError:
            raise missing_dependency("nvidia-ml-py", "nvidia", "reading NVIDIA GPU energy") from None
        return pynvml

    def init(self) -> None:
        """NvmlInit (reference-counted by NVML)."""
        nv = self._nv()
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            hint = ""
            if isinstance(exc, getattr(nv, "NVMLError_LibraryNotFound", ())):
                hint = " (no NVIDIA driver on this machine: libnvidia-ml.so was not found)"
            elif isinstance(exc, getattr(nv, "NVMLError_DriverNotLoaded", ())):
                hint = " (the NVIDIA kernel driver is not loaded)"
            elif isinstance(exc, getattr(nv, "NVMLError_NoPermission", ())):
                hint = " (this user may not open the GPU device files /dev/nvidia*)"
            raise MeterUnavailableError(f"NVML could not start: {exc}{hint}.") from None

    def shutdown(self) -> None:
        """NvmlShutdown."""
        try:
            self._nv().nvmlShutdown()
        except Exception:
            pass

    def device_count(self) -> int:
        """NvmlDeviceGetCount."""
        return int(self._nv().nvmlDeviceGetCount())

    def device(self, index: int) -> GpuDevice:
        """NvmlDeviceGetHandleByIndex."""
        nv = self._nv()
        return PynvmlDevice(nv, nv.nvmlDeviceGetHandleByIndex(index), index)

    def driver_version(self) -> str:
        """NvmlSystemGetDriverVersion."""
        v = self._nv().nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)

    def version(self) -> str:
        """The installed nvidia-ml-py version."""
        return package_version("nvidia-ml-py") or "unknown"


def _default_library() -> NvmlLibrary:
    return PynvmlLibrary()


# ------------------------------------------------------------------------ helpers
def gpu_indices(devices: Any) -> list[int] | None:
    """The NVML indices named in ``devices`` (ints or ``"gpu:N"``); None means all GPUs."""
    if devices is None:
        return None
    if isinstance(devices, (int, str)):
        devices = [devices]
    out = []
    for d in devices:
        if isinstance(d, bool):
            raise LlemError(f"Device {d!r} is not a GPU index; give ints or 'gpu:N' strings.")
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str) and d.startswith("gpu:") and d[4:].isdigit():
            out.append(int(d[4:]))
        elif isinstance(d, str) and d.isdigit():
            out.append(int(d))
    return out


def nvml_index_for_cuda_device(cuda_index: int, library: NvmlLibrary | None = None) -> int:
    """The NVML index of CUDA device ``cuda_index``, honouring ``CUDA_VISIBLE_DEVICES``.

    Handles the common forms (integers, ``GPU-`` UUIDs or their prefixes). With no
    ``CUDA_VISIBLE_DEVICES`` the two numberings are taken to agree (both PCI order when
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; CUDA's default "fastest first" can differ on
    mixed-GPU machines).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return cuda_index
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if cuda_index >= len(entries):
        raise LlemError(
            f"CUDA device {cuda_index} does not exist: CUDA_VISIBLE_DEVICES={visible!r} "
            f"makes {len(entries)} device(s) visible."
        )
    e = entries[cuda_index]
    if e.isdigit():
        return int(e)
    lib = library or _default_library()
    lib.init()
    try:
        for i in range(lib.device_count()):
            if lib.device(i).uuid().startswith(e):
                return i
    finally:
        lib.shutdown()
    raise LlemError(f"CUDA_VISIBLE_DEVICES entry {e!r} matches no GPU NVML sees.")


# -------------------------------------------------------------------------- meter
class _Gpu:
    __slots__ = ("dev", "device", "counter0", "counted", "e_j", "p_prev", "peak_mib", "n", "name", "cc",
                 "cond0")

    def __init__(self, dev: GpuDevice) -> None:
        self.dev = dev
        self.device = f"gpu:{dev.index}"
        self.name = dev.name()
        self.cc = dev.compute_capability()
        self.counter0 = dev.total_energy_mj()
        self.counted = self.counter0 is not None
        self.e_j = 0.0
        self.p_prev: float | None = None
        self.peak_mib = 0.0
        self.n = 0
        self.cond0: dict[str, Any] = {}


class NvmlMeter(Meter):
    """Energy, power and memory of NVIDIA GPUs (``measured`` by counter, else ``sampled``).

    Parameters
    ----------
    devices : iterable of int or "gpu:N", optional
        NVML indices to read; all GPUs when None.
    library : NvmlLibrary, optional
        Where devices come from (pynvml by default; a fake in tests).
    clock : callable
        Time source for power integration.
    """

    name = "nvml"

    def __init__(
        self, devices: Any = None, *, library: NvmlLibrary | None = None, clock: Any = time.perf_counter
    ) -> None:
        self.indices = gpu_indices(devices)
        self.library = library or _default_library()
        self._clock = clock
        self._gpus: list[_Gpu] = []
        self._driver = ""

    @property
    def cache_key(self) -> str:
        """Which GPUs."""
        return f"nvml/{self.indices}"

    def probe(self) -> Probe:
        """Start NVML, list the GPUs and whether each has the energy counter."""
        try:
            self.library.init()
        except (MeterUnavailableError, LlemError, ImportError) as exc:
            return Probe("nvml", False, str(exc), (), "measured")
        except Exception as exc:  # never raise from probe
            return Probe("nvml", False, f"NVML could not start: {exc!r}", (), "measured")
        try:
            n = self.library.device_count()
            if n == 0:
                return Probe("nvml", False, "NVML started but sees no GPU.", (), "measured")
            wanted = self._wanted(n)
            parts, devices, methods = [], [], set()
            for i in wanted:
                dev = self.library.device(i)
                counted = dev.total_energy_mj() is not None
                major, minor = dev.compute_capability()
                parts.append(
                    f"gpu:{i} {dev.name()} (cc {major}.{minor}, "
                    + ("energy counter" if counted else "no energy counter: power sampled")
                    + ")"
                )
                devices.append(f"gpu:{i}")
                methods.add("measured" if counted else "sampled")
            method = "sampled" if "sampled" in methods else "measured"
            return Probe(
                "nvml",
                True,
                f"driver {self.library.driver_version()}: " + "; ".join(parts),
                tuple(devices),
                method,
            )
        except Exception as exc:
            return Probe("nvml", False, f"NVML started but reading the GPUs failed: {exc}", (), "measured")
        finally:
            self.library.shutdown()

    def _wanted(self, n: int) -> list[int]:
        if self.indices is None:
            return list(range(n))
        bad = [i for i in self.indices if not 0 <= i < n]
        if bad:
            raise LlemError(
                f"GPU index {bad[0]} does not exist: NVML sees {n} GPU(s), indices 0..{n - 1}. "
                "(NVML indices ignore CUDA_VISIBLE_DEVICES; see nvml_index_for_cuda_device.)"
            )
        return list(dict.fromkeys(self.indices))

    def describe(self) -> str:
        """Provenance line."""
        if not self._gpus:
            return (
                "nvml: nvmlDeviceGetTotalEnergyConsumption counter, else integrated nvmlDeviceGetPowerUsage"
            )
        return "; ".join(self._source(g) for g in self._gpus)

    @staticmethod
    def _source(g: _Gpu) -> str:
        if g.counted:
            return f"nvml: {g.name} nvmlDeviceGetTotalEnergyConsumption (mJ counter)"
        return f"nvml: {g.name} nvmlDeviceGetPowerUsage integrated (trapezoid over {g.n} samples)"

    def versions(self) -> dict[str, str]:
        """nvidia-ml-py and driver versions."""
        out = {"nvidia-ml-py": self.library.version()}
        if self._driver:
            out["nvidia-driver"] = self._driver
        return out

    def start(self) -> None:
        """Start NVML and take each GPU's starting counter."""
        self.library.init()
        try:
            self._driver = self.library.driver_version()
            self._gpus = [_Gpu(self.library.device(i)) for i in self._wanted(self.library.device_count())]
            if not self._gpus:
                raise MeterUnavailableError("NVML sees no GPU.")
            for g in self._gpus:  # the first interval integrates from here
                g.p_prev = g.dev.power_mw() / 1000.0
            self._t_prev = self._clock()
            ours = own_pids()  # after the energy references: this time is measured too
            for g in self._gpus:
                g.cond0 = gpu_conditions(g.dev, ours)
        except BaseException:
            self.library.shutdown()
            raise

    def sample(self) -> list[RawSample]:
        """Power, cumulative energy and memory of each GPU."""
        now = self._clock()
        dt = now - self._t_prev
        self._t_prev = now
        out: list[RawSample] = []
        for g in self._gpus:
            dev = g.dev
            p = dev.power_mw() / 1000.0
            if g.counted:
                mj = dev.total_energy_mj()
                g.e_j = ((mj or 0) - (g.counter0 or 0)) / 1000.0
            elif g.p_prev is not None:
                g.e_j += 0.5 * (g.p_prev + p) * dt
            g.p_prev = p
            mib = dev.memory_used_bytes() / _MIB
            if mib > g.peak_mib:
                g.peak_mib = mib
            g.n += 1
            out.append((g.device, p, g.e_j, mib))
        return out

    def stop(self) -> tuple[DeviceReading, ...]:
        """Shut NVML down; per-GPU totals up to the last sample (and the conditions at start and end)."""
        ours = own_pids()
        ends = [gpu_conditions(g.dev, ours) for g in self._gpus]
        self.library.shutdown()
        out = []
        for g, end in zip(self._gpus, ends):
            out.append(
                DeviceReading(
                    g.device,
                    "gpu",
                    g.e_j,
                    "measured" if g.counted else "sampled",
                    self._source(g),
                    {
                        "name": g.name,
                        "compute_capability": float(f"{g.cc[0]}.{g.cc[1]}"),
                        "energy_counter": g.counted,
                        "counter_start_mj": g.counter0,
                        "samples": g.n,
                        "driver": self._driver,
                        "conditions": {"start": g.cond0, "end": end},
                    },
                    peak_memory_mib=g.peak_mib,
                )
            )
        return tuple(out)
