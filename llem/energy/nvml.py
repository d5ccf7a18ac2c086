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
NVML indices. :func:`llem.machine.nvml_gpus_for_cuda` translates CUDA ordinals (the runner
meters exactly the GPUs the backend placed the model on).

The counter does not move continuously: it updates every few to every hundred
milliseconds (about 10 Hz on some GPUs), and on recent GPUs the power reading is a mean
over about a second. The meter estimates the counter's update period from the readings it
takes (:func:`counter_period`, ``Measurement.counter_period_s``), so a window or phase
shorter than a few periods can be flagged. A counter that stops answering or goes
backwards mid-run raises :class:`~llem.errors.MeterReadError` rather than report a wrong
(negative) energy.

**Not yet run on real hardware**: the development machines have no GPU; this module is
tested against fake devices only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from llem.energy.base import Meter, MeterUnavailableError, Probe, RawSample, package_version
from llem.energy.conditions import gpu_conditions, own_pids
from llem.energy.measurement import DeviceReading
from llem.errors import LlemError, MeterReadError, missing_dependency

_MIB = 1024**2

#: Counter reads kept per GPU and window to estimate the update period.
_MAX_READS = 4096


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

    def power_mw(self) -> float | None:
        """Current power draw, mW; None where the GPU gives no power reading."""

    def memory_used_bytes(self) -> int | None:
        """Memory in use, bytes; None where the GPU does not say."""

    def memory_total_bytes(self) -> int:
        """Memory on the device, bytes."""

    def compute_capability(self) -> tuple[int, int]:
        """CUDA compute capability, ``(major, minor)``."""

    def power_limit_mw(self) -> int:
        """The power limit in force now, mW."""

    def power_limit_constraints_mw(self) -> tuple[int, int]:
        """The lowest and highest power limit the GPU accepts, mW."""

    def set_power_limit_mw(self, limit_mw: int) -> None:
        """Set the power limit, mW; :class:`NvmlPermissionError` when not permitted."""

    def mig_enabled(self) -> bool:
        """True when MIG mode is on."""

    def running_processes(self) -> list[int] | None:
        """Ids of the processes with a compute context on the GPU; None if unsupported."""

    def clock_event_reasons(self) -> int | None:
        """Why the clocks are held back now (NVML's bit mask); None if unsupported."""

    def temperature_c(self) -> float | None:
        """GPU temperature now, degrees C; None if unsupported."""


class NvmlSettingError(LlemError, RuntimeError):
    """NVML refused to change a GPU setting; the message says why."""


class NvmlPermissionError(NvmlSettingError, PermissionError):
    """Changing a GPU setting needs root (NVML's NVML_ERROR_NO_PERMISSION)."""


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
    """A :class:`GpuDevice` backed by a pynvml handle.

    A pynvml error becomes :class:`~llem.errors.MeterReadError` naming the GPU, the call and
    the fix (:func:`nvml_error`); a reading the GPU does not give (``NotSupported``: no
    energy counter before Volta, no power reading in some vGPU guests and MIG slices) is
    None instead.
    """

    def __init__(self, nv: Any, handle: Any, index: int) -> None:
        self._nv = nv
        self._h = handle
        self.index = index

    def _read(self, call: str, *args: Any, optional: bool = False) -> Any:
        """``nv.<call>(handle, *args)``; None for NotSupported when ``optional``."""
        nv = self._nv
        try:
            return getattr(nv, call)(self._h, *args)
        except getattr(nv, "NVMLError", Exception) as exc:
            if optional and isinstance(exc, getattr(nv, "NVMLError_NotSupported", ())):
                return None
            raise nvml_error(exc, call, f"gpu:{self.index}") from None

    def name(self) -> str:
        """NvmlDeviceGetName."""
        n = self._read("nvmlDeviceGetName")
        return n.decode() if isinstance(n, bytes) else str(n)

    def uuid(self) -> str:
        """NvmlDeviceGetUUID."""
        u = self._read("nvmlDeviceGetUUID")
        return u.decode() if isinstance(u, bytes) else str(u)

    def pci_bus_id(self) -> str:
        """nvmlDeviceGetPciInfo().busId (``"00000000:3B:00.0"``); "" where not given."""
        info = self._read("nvmlDeviceGetPciInfo", optional=True)
        bus = getattr(info, "busId", "") if info is not None else ""
        return bus.decode() if isinstance(bus, bytes) else str(bus)

    def total_energy_mj(self) -> int | None:
        """NvmlDeviceGetTotalEnergyConsumption (mJ); None where not supported."""
        mj = self._read("nvmlDeviceGetTotalEnergyConsumption", optional=True)
        return None if mj is None else int(mj)

    def power_mw(self) -> float | None:
        """NvmlDeviceGetPowerUsage (mW); None where the GPU gives no power reading."""
        mw = self._read("nvmlDeviceGetPowerUsage", optional=True)
        return None if mw is None else float(mw)

    def memory_used_bytes(self) -> int | None:
        """nvmlDeviceGetMemoryInfo().used; None where not supported."""
        info = self._read("nvmlDeviceGetMemoryInfo", optional=True)
        return None if info is None else int(info.used)

    def memory_total_bytes(self) -> int:
        """nvmlDeviceGetMemoryInfo().total (0 where not supported)."""
        info = self._read("nvmlDeviceGetMemoryInfo", optional=True)
        return 0 if info is None else int(info.total)

    def compute_capability(self) -> tuple[int, int]:
        """NvmlDeviceGetCudaComputeCapability."""
        major, minor = self._read("nvmlDeviceGetCudaComputeCapability")
        return int(major), int(minor)

    def mig_enabled(self) -> bool:
        """NvmlDeviceGetMigMode: True when MIG is on now; False where MIG is not supported."""
        try:
            current, _pending = self._nv.nvmlDeviceGetMigMode(self._h)
        except self._nv.NVMLError:
            return False
        return bool(current)

    def mig_uuids(self) -> tuple[str, ...]:
        """The ``MIG-...`` UUIDs of this GPU's MIG devices (empty when MIG is off)."""
        if not self.mig_enabled():
            return ()
        nv, out = self._nv, []
        try:
            slots = int(nv.nvmlDeviceGetMaxMigDeviceCount(self._h))
        except nv.NVMLError:
            return ()
        for i in range(slots):
            try:
                u = nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetMigDeviceHandleByIndex(self._h, i))
            except nv.NVMLError:  # an empty slot is NotFound
                continue
            out.append(u.decode() if isinstance(u, bytes) else str(u))
        return tuple(out)


    def power_limit_mw(self) -> int:
        """NvmlDeviceGetPowerManagementLimit (mW)."""
        return int(self._nv.nvmlDeviceGetPowerManagementLimit(self._h))

    def power_limit_constraints_mw(self) -> tuple[int, int]:
        """NvmlDeviceGetPowerManagementLimitConstraints: ``(min_mw, max_mw)``."""
        low, high = self._nv.nvmlDeviceGetPowerManagementLimitConstraints(self._h)
        return int(low), int(high)

    def set_power_limit_mw(self, limit_mw: int) -> None:
        """NvmlDeviceSetPowerManagementLimit (mW); NVML's refusals become llem's errors."""
        nv = self._nv
        try:
            nv.nvmlDeviceSetPowerManagementLimit(self._h, int(limit_mw))
        except getattr(nv, "NVMLError_NoPermission", ()) as exc:
            raise NvmlPermissionError(
                f"NVML refused to set GPU {self.index}'s power limit: {exc} (setting it needs "
                "root). Fix: run as root, or ask an administrator to set it with "
                f"'sudo nvidia-smi -i {self.index} -pl WATTS'."
            ) from None
        except nv.NVMLError as exc:
            raise NvmlSettingError(f"NVML refused to set GPU {self.index}'s power limit to "
                                   f"{int(limit_mw)} mW: {exc}.") from None


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


def nvml_error(exc: BaseException, call: str, gpu: str) -> MeterReadError:
    """The llem error for a pynvml error ``exc`` raised by ``call`` on ``gpu``, with the fix."""
    kind = type(exc).__name__.removeprefix("NVMLError_")
    fixes = {
        "GpuIsLost": "the GPU fell off the bus. Check nvidia-smi and the kernel log (dmesg, Xid "
                     "errors); the GPU needs a reset (nvidia-smi -r) or a reboot",
        "NoPermission": "this user may not read it. Run as a user with access to /dev/nvidia*, "
                        "or use experiment.meter='estimate'",
        "NotSupported": "this GPU gives no such reading (some vGPU guests and MIG slices do not). "
                        "Run on the bare-metal GPU, or use experiment.meter='estimate'",
        "Uninitialized": "NVML was shut down while llem read it (something called nvmlShutdown "
                         "once too often). Run again; report it if it repeats",
    }
    fix = fixes.get(kind, "Run again; if it repeats, check the GPU with nvidia-smi -q, or use "
                          "experiment.meter='estimate'")
    return MeterReadError(f"NVML could not read {gpu}: {call} failed ({exc}). Fix: {fix}.")


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
        nv = self._nv()
        try:
            return int(nv.nvmlDeviceGetCount())
        except nv.NVMLError as exc:
            raise nvml_error(exc, "nvmlDeviceGetCount", "the GPUs") from None

    def device(self, index: int) -> GpuDevice:
        """NvmlDeviceGetHandleByIndex."""
        nv = self._nv()
        try:
            return PynvmlDevice(nv, nv.nvmlDeviceGetHandleByIndex(index), index)
        except nv.NVMLError as exc:
            raise nvml_error(exc, "nvmlDeviceGetHandleByIndex", f"gpu:{index}") from None

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


def counter_period(times_s: Sequence[float], counter_mj: Sequence[float]) -> float | None:
    """How often an energy counter updates, s, from reads of it at ``times_s``; None if unknown.

    The period is the mean time between the reads that saw a new value. It is known only
    when some reads saw none (the counter is slower than the reads) and there were at least
    three changes; when every read saw a new value the counter updates at least as often as
    it was read, and None is returned.

    >>> counter_period([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], [0, 0, 10, 10, 20, 20, 30])
    0.1
    """
    changes = [t for t, v, v0 in zip(times_s[1:], counter_mj[1:], counter_mj) if v != v0]
    if len(changes) < 3 or len(changes) == len(times_s) - 1:
        return None
    return round((changes[-1] - changes[0]) / (len(changes) - 1), 6)


# -------------------------------------------------------------------------- meter
class _Gpu:
    __slots__ = ("dev", "device", "counter0", "counted", "e_j", "p_prev", "peak_mib", "n", "name", "cc",
                 "powered", "reads_t", "reads_mj", "cond0")

    def __init__(self, dev: GpuDevice) -> None:
        self.dev = dev
        self.device = f"gpu:{dev.index}"
        self.name = dev.name()
        self.cc = dev.compute_capability()
        self.counter0 = dev.total_energy_mj()
        self.counted = self.counter0 is not None
        self.powered = True  # whether the GPU gives power readings
        self.e_j = 0.0
        self.p_prev: float | None = None
        self.peak_mib: float | None = None
        self.n = 0
        self.reads_t: list[float] = []
        self.reads_mj: list[int] = []
        self.cond0: dict[str, Any] = {}

    @property
    def words(self) -> str:
        return f"{self.device} ({self.name})"


def _unmeterable(gpu: str) -> str:
    return (f"{gpu} gives neither an energy counter nor a power reading through NVML (some vGPU "
            "guests and MIG set-ups do not); its energy cannot be read. Fix: run on the bare-metal "
            "GPU, or use experiment.meter='estimate'")


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

    @property
    def counter_period_s(self) -> float | None:
        """The slowest energy-counter update period seen in the last window, s (None: not known)."""
        periods = [p for g in self._gpus if g.counted
                   if (p := counter_period(g.reads_t, g.reads_mj)) is not None]
        return max(periods) if periods else None

    def probe(self) -> Probe:
        """Start NVML, list the GPUs and check each gives an energy counter or power, and memory."""
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
                powered = dev.power_mw() is not None
                if not counted and not powered:
                    return Probe("nvml", False, _unmeterable(f"gpu:{i} {dev.name()}") + ".", (), "measured")
                major, minor = dev.compute_capability()
                what = ["energy counter" if counted else "no energy counter: power sampled"]
                if not powered:
                    what.append("no power reading: power from the counter")
                if dev.memory_used_bytes() is None:
                    what.append("no memory reading")
                parts.append(f"gpu:{i} {dev.name()} (cc {major}.{minor}, " + ", ".join(what) + ")")
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
                "(NVML indices ignore CUDA_VISIBLE_DEVICES; see llem.machine.nvml_gpus_for_cuda.)"
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
        """Start NVML and take each GPU's starting counter.

        Raises
        ------
        MeterUnavailableError
            No GPU, or a GPU that gives neither an energy counter nor a power reading.
        MeterReadError
            NVML failed while reading a GPU (the message names it and the fix).
        """
        self.library.init()
        try:
            self._driver = self.library.driver_version()
            self._gpus = [_Gpu(self.library.device(i)) for i in self._wanted(self.library.device_count())]
            if not self._gpus:
                raise MeterUnavailableError(
                    "NVML sees no GPU to read" + (" (no GPU was asked for)." if self.indices == [] else "."))
            t = self._clock()
            for g in self._gpus:  # the first interval integrates from here
                mw = g.dev.power_mw()
                g.powered = mw is not None
                if not g.counted and not g.powered:
                    raise MeterUnavailableError(_unmeterable(g.words) + ".")
                g.p_prev = None if mw is None else mw / 1000.0
                if g.counted:
                    g.reads_t.append(t)
                    g.reads_mj.append(int(g.counter0 or 0))
            ours = own_pids()  # after the energy references: this time is measured too
            for g in self._gpus:
                g.cond0 = gpu_conditions(g.dev, ours)
        except BaseException:
            self.library.shutdown()
            raise
        self._t_prev = t

    def _energy_now(self, g: _Gpu, now: float) -> None:
        """Update ``g.e_j`` from the counter; raise MeterReadError rather than go wrong."""
        mj = g.dev.total_energy_mj()
        if mj is None or mj < (g.counter0 or 0):
            what = ("stopped answering (nvmlDeviceGetTotalEnergyConsumption: Not Supported)" if mj is None
                    else f"went backwards, from {g.counter0} to {mj} mJ (the driver was reloaded or "
                         "the GPU reset)")
            raise MeterReadError(
                f"The energy counter of {g.words} {what} after {g.n} reading(s), mid-measurement: "
                "this window's GPU energy cannot be known, so llem stops instead of reporting a "
                "wrong figure. Fix: run again; if it repeats, check the GPU with nvidia-smi -q -d "
                "POWER, or use experiment.meter='estimate'.")
        g.e_j = (mj - (g.counter0 or 0)) / 1000.0
        if len(g.reads_mj) < _MAX_READS:  # enough to tell the period; bounded for long runs
            g.reads_t.append(now)
            g.reads_mj.append(mj)

    def sample(self) -> list[RawSample]:
        """Power, cumulative energy and memory of each GPU."""
        now = self._clock()
        dt = now - self._t_prev
        self._t_prev = now
        out: list[RawSample] = []
        for g in self._gpus:
            dev = g.dev
            mw = dev.power_mw() if g.powered else None
            p = None if mw is None else mw / 1000.0
            if g.counted:
                e_before = g.e_j
                self._energy_now(g, now)
                if p is None and dt > 0:  # no power reading: the counter's mean over the interval
                    p = (g.e_j - e_before) / dt
            elif p is None:
                raise MeterReadError(
                    f"The power reading of {g.words} stopped answering mid-measurement "
                    "(nvmlDeviceGetPowerUsage) and it has no energy counter: this window's GPU "
                    "energy cannot be known. Fix: run again, or use experiment.meter='estimate'.")
            elif g.p_prev is not None:
                g.e_j += 0.5 * (g.p_prev + p) * dt
            g.p_prev = p
            used = dev.memory_used_bytes()
            mib = None if used is None else used / _MIB
            if mib is not None and (g.peak_mib is None or mib > g.peak_mib):
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
            period = counter_period(g.reads_t, g.reads_mj) if g.counted else None
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
                        "counter_period_s": period,
                        "power_reading": g.powered,
                        "samples": g.n,
                        "driver": self._driver,
                        "conditions": {"start": g.cond0, "end": end},
                    },
                    peak_memory_mib=g.peak_mib,
                )
            )
        return tuple(out)
