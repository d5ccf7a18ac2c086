"""A stand-in for the ``pynvml`` module (nvidia-ml-py 13) that behaves like the hardware.

:class:`FakePynvml` has the functions llem calls, under pynvml's names, with pynvml's
units and errors, so llem's real wrapper (:class:`llem.energy.nvml.PynvmlLibrary`,
:func:`llem.machine.probe`) runs in CI on a machine without a GPU.
:func:`llem.testing.use_fake_pynvml` makes ``import pynvml`` return the fake inside a
``with`` block.

What it imitates, as the real driver does it:

* ``nvmlInit``/``nvmlShutdown`` are reference-counted; any other call while the count is 0
  raises ``NVMLError_Uninitialized``, and so does a shutdown without an init;
* errors are ``NVMLError`` subclasses (``NVMLError_NotSupported``,
  ``NVMLError_NoPermission``, ``NVMLError_GpuIsLost``, ...); ``NVMLError(code)`` builds the
  subclass of that code and ``str()`` gives pynvml's message;
* energy in mJ (``nvmlDeviceGetTotalEnergyConsumption``: the integral of the power since the
  driver loaded, updated only every ``counter_period_s``, e.g. 0.1 s on GPUs whose counter
  ticks at 10 Hz), power in mW (``nvmlDeviceGetPowerUsage``: the mean over the last
  ``power_window_s``, 1 s on Hopper), memory in bytes, temperatures in degrees C;
* several GPUs with PCI bus ids and UUIDs; MIG: a GPU in MIG mode has MIG device handles
  (``MIG-`` UUIDs, their own memory, no energy or power reading of their own);
* a GPU without power readings or without an energy counter (``NotSupported``), a reading
  that stops working at a set time, a GPU that falls off the bus (``GpuIsLost``);
* power limits in mW that only a permitted user may set (``NoPermission`` otherwise).

Time is the injectable ``clock`` (seconds), so tests are deterministic.

>>> nv = FakePynvml([FakeNvmlGpu(power_w=100.0)], clock=lambda: 0.0)
>>> nv.nvmlInit(); nv.nvmlDeviceGetName(nv.nvmlDeviceGetHandleByIndex(0))
'NVIDIA H100 80GB HBM3'
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_MIB = 1024**2

#: (code, class name suffix, message) of the NVML errors, as pynvml names them.
ERRORS: tuple[tuple[int, str, str], ...] = (
    (1, "Uninitialized", "Uninitialized"),
    (2, "InvalidArgument", "Invalid Argument"),
    (3, "NotSupported", "Not Supported"),
    (4, "NoPermission", "Insufficient Permissions"),
    (5, "AlreadyInitialized", "Already Initialized"),
    (6, "NotFound", "Not Found"),
    (7, "InsufficientSize", "Insufficient Size"),
    (8, "InsufficientPower", "Insufficient External Power"),
    (9, "DriverNotLoaded", "Driver Not Loaded"),
    (10, "Timeout", "Timeout"),
    (11, "IrqIssue", "Interrupt Request Issue"),
    (12, "LibraryNotFound", "NVML Shared Library Not Found"),
    (13, "FunctionNotFound", "Function Not Found"),
    (14, "CorruptedInforom", "Corrupted infoROM"),
    (15, "GpuIsLost", "GPU is lost"),
    (16, "ResetRequired", "GPU requires restart"),
    (17, "OperatingSystem", "The operating system has blocked the request."),
    (18, "LibRmVersionMismatch", "RM has detected an NVML/RM version mismatch."),
    (19, "InUse", "In Use"),
    (20, "Memory", "Insufficient Memory"),
    (21, "NoData", "No Data"),
    (999, "Unknown", "Unknown Error"),
)


class NVMLError(Exception):
    """pynvml's error: ``NVMLError(code)`` is an instance of the subclass for ``code``."""

    _by_code: dict[int, type[NVMLError]] = {}
    _messages: dict[int, str] = {}
    value: int

    def __new__(cls, value: int = 999, *args: Any) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._by_code.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int = 999, *args: Any) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return NVMLError._messages.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def _error_class(code: int, suffix: str) -> type[NVMLError]:
    def new(cls: type[NVMLError], *args: Any) -> NVMLError:
        return NVMLError.__new__(cls, code)

    def init(self: NVMLError, *args: Any) -> None:
        Exception.__init__(self, code)

    return type(f"NVMLError_{suffix}", (NVMLError,), {"__new__": new, "__init__": init,
                                                      "__module__": __name__})


ERROR_CLASSES: dict[str, type[NVMLError]] = {}
for _code, _suffix, _msg in ERRORS:
    _cls = _error_class(_code, _suffix)
    NVMLError._by_code[_code] = _cls
    NVMLError._messages[_code] = _msg
    ERROR_CLASSES[_cls.__name__] = _cls
    globals()[_cls.__name__] = _cls
CODES: dict[str, int] = {suffix: code for code, suffix, _ in ERRORS}


def error(name: str | int) -> NVMLError:
    """The NVML error ``name`` (``"NotSupported"``) or code (3), as pynvml raises it."""
    code = name if isinstance(name, int) else CODES[name]
    return NVMLError(code)


#: pynvml's clock event reason bits (``nvmlClocksEventReason*``; the older name is
#: ``nvmlClocksThrottleReason*``), and a few other constants llem reads.
CLOCK_EVENT_REASONS: dict[str, int] = {
    "None": 0x0, "GpuIdle": 0x1, "ApplicationsClocksSetting": 0x2, "SwPowerCap": 0x4,
    "HwSlowdown": 0x8, "SyncBoost": 0x10, "SwThermalSlowdown": 0x20, "HwThermalSlowdown": 0x40,
    "HwPowerBrakeSlowdown": 0x80, "DisplayClockSetting": 0x100,
}


@dataclass
class FakeMigDevice:
    """One MIG device (a slice of a GPU in MIG mode)."""

    uuid: str = ""
    profile: str = "1g.10gb"
    memory_total_mib: float = 9984.0
    memory_used_mib: float | Callable[[float], float] = 13.0
    gpu_instance_id: int = 0
    compute_instance_id: int = 0


@dataclass
class FakeNvmlGpu:
    """One physical GPU as the fake driver shows it.

    Attributes
    ----------
    name, uuid, pci_bus_id : str
        ``uuid`` and ``pci_bus_id`` default to values made from the GPU's index
        (``GPU-...``, ``00000000:XX:00.0``).
    compute_capability : tuple of int
    power_w : float or callable
        Watts, constant or ``f(seconds since the fake was made)``.
    power_supported, energy_counter, memory_supported : bool
        Whether the power reading, the total-energy counter (Volta and newer) and memory
        info answer; otherwise the call raises ``NVMLError_NotSupported``.
    counter_period_s : float
        How often the energy counter updates (0: at every read).
    power_window_s : float
        The power reading is the mean over this many seconds (0: instantaneous).
    counter_start_mj : int
        The counter at time 0 (it counts since the driver loaded).
    memory_total_mib : float
    memory_used_mib : float or callable
        MiB, constant or ``f(t)``; processes' memory is added to it.
    mig : bool or None
        MIG mode on/off; None: the GPU cannot do MIG (``GetMigMode`` is not supported).
    mig_devices : list of FakeMigDevice
        The MIG devices while MIG mode is on.
    processes : list of (pid, used_mib)
        Compute processes ``GetComputeRunningProcesses`` lists.
    clocks_event_reasons : int or callable
        Bit mask (``CLOCK_EVENT_REASONS``), constant or ``f(t)``.
    temperature_c : float or callable
    power_limit_w, default_power_limit_w : float
    power_limit_range_w : tuple of float
        ``(min, max)`` the limit may be set within.
    """

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = ""
    pci_bus_id: str = ""
    compute_capability: tuple[int, int] = (9, 0)
    power_w: float | Callable[[float], float] = 300.0
    power_supported: bool = True
    energy_counter: bool = True
    memory_supported: bool = True
    counter_period_s: float = 0.0
    power_window_s: float = 0.0
    counter_start_mj: int = 123_456_789
    memory_total_mib: float = 81559.0
    memory_used_mib: float | Callable[[float], float] = 1024.0
    mig: bool | None = False
    mig_devices: list[FakeMigDevice] = field(default_factory=list)
    processes: list[tuple[int, float]] = field(default_factory=list)
    clocks_event_reasons: int | Callable[[float], int] = 0
    temperature_c: float | Callable[[float], float] = 45.0
    power_limit_w: float = 700.0
    default_power_limit_w: float = 700.0
    power_limit_range_w: tuple[float, float] = (200.0, 700.0)


@dataclass(frozen=True)
class _Handle:
    """A device handle (pynvml's ``c_nvmlDevice_t``): a GPU, or one MIG device of it."""

    gpu: int
    mig: int | None = None


class _Struct:
    """A plain record with attributes (pynvml returns ctypes structures)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k}: {v!r}" for k, v in self.__dict__.items()) + "}"


def _at(value: Any, t: float) -> Any:
    return value(t) if callable(value) else value


class _Energy:
    """The integral of a GPU's power over time, J (exact for a constant, else 1 ms steps)."""

    STEP_S = 0.001

    def __init__(self, power: float | Callable[[float], float]) -> None:
        self.power = power
        self._cum = [0.0]  # J at k * STEP_S

    def joules(self, t: float) -> float:
        if t <= 0:
            return 0.0
        p = self.power
        if not callable(p):
            return float(p) * t
        h = self.STEP_S
        k = int(t / h)
        while len(self._cum) <= k:
            i = len(self._cum) - 1
            self._cum.append(self._cum[-1] + float(p((i + 0.5) * h)) * h)
        frac = t - k * h
        return self._cum[k] + float(p(k * h + 0.5 * frac)) * frac


class FakePynvml:
    """A fake ``pynvml`` module over :class:`FakeNvmlGpu` records.

    Parameters
    ----------
    gpus : sequence of FakeNvmlGpu
        The GPUs in NVML (PCI) order.
    clock : callable
        Seconds; time 0 is when the fake is made.
    driver : str
        What ``nvmlSystemGetDriverVersion`` says.
    init_error : str, optional
        An error name (``"LibraryNotFound"``, ``"DriverNotLoaded"``) ``nvmlInit`` raises.
    allow_power_limit : bool
        Whether ``nvmlDeviceSetPowerManagementLimit`` is permitted (root); else it raises
        ``NVMLError_NoPermission``.

    Attributes
    ----------
    refcount : int
        Inits minus shutdowns (what NVML holds).
    inits, shutdowns : int
        Successful calls of each.
    calls : dict
        Function name -> number of calls.
    """

    NVMLError = NVMLError
    NVML_SUCCESS = 0
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1

    def __init__(
        self,
        gpus: Sequence[FakeNvmlGpu] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        driver: str = "550.54.15",
        init_error: str | None = None,
        allow_power_limit: bool = False,
    ) -> None:
        self.gpus = list(gpus)
        for i, g in enumerate(self.gpus):
            g.uuid = g.uuid or f"GPU-{i:08x}-fake-4000-8000-{i:012x}"
            g.pci_bus_id = g.pci_bus_id or f"00000000:{0x18 + 0x10 * i:02X}:00.0"
            for j, m in enumerate(g.mig_devices):
                m.uuid = m.uuid or f"MIG-{i:08x}-{j:04x}-4000-8000-{i:06x}{j:06x}"
        self._clock = clock
        self._t0 = clock()
        self.driver = driver
        self.init_error = init_error
        self.allow_power_limit = allow_power_limit
        self.refcount = 0
        self.inits = 0
        self.shutdowns = 0
        self.calls: dict[str, int] = {}
        self._energy = [_Energy(g.power_w) for g in self.gpus]
        self._failures: list[tuple[str, int | None, float, int]] = []
        self._lost: dict[int, float] = {}
        for name, code in CODES.items():
            setattr(self, f"NVML_ERROR_{_snake(name)}", code)
        for cls_name, cls in ERROR_CLASSES.items():
            setattr(self, cls_name, cls)
        for reason, bit in CLOCK_EVENT_REASONS.items():
            setattr(self, f"nvmlClocksEventReason{reason}", bit)
            setattr(self, f"nvmlClocksThrottleReason{reason}", bit)

    # ------------------------------------------------------------- test controls
    def now(self) -> float:
        """Seconds since the fake was made."""
        return self._clock() - self._t0

    def fail(self, function: str, error_name: str = "NotSupported", *, gpu: int | None = None,
             after_s: float = 0.0) -> None:
        """From ``after_s`` on, ``function`` (a pynvml name) raises ``error_name`` (on ``gpu``, or all)."""
        self._failures.append((function, gpu, after_s, CODES[error_name]))

    def lose(self, gpu: int, after_s: float = 0.0) -> None:
        """From ``after_s`` on, every call on GPU ``gpu`` raises ``NVMLError_GpuIsLost``."""
        self._lost[gpu] = after_s

    # --------------------------------------------------------------- the machinery
    def _enter(self, name: str, handle: _Handle | None = None) -> float:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.refcount <= 0:
            raise error("Uninitialized")
        t = self.now()
        if handle is not None:
            if not isinstance(handle, _Handle) or not 0 <= handle.gpu < len(self.gpus):
                raise error("InvalidArgument")
            if handle.gpu in self._lost and t >= self._lost[handle.gpu]:
                raise error("GpuIsLost")
        for fn, gpu, after, code in self._failures:
            if fn == name and t >= after and (gpu is None or (handle is not None and handle.gpu == gpu)):
                raise NVMLError(code)
        return t

    def _gpu(self, h: _Handle) -> FakeNvmlGpu:
        return self.gpus[h.gpu]

    def _mig(self, h: _Handle) -> FakeMigDevice:
        assert h.mig is not None
        return self.gpus[h.gpu].mig_devices[h.mig]

    def _physical_only(self, h: _Handle) -> FakeNvmlGpu:
        if h.mig is not None:
            raise error("NotSupported")
        return self._gpu(h)

    def _energy_j(self, i: int, t: float) -> float:
        return self._energy[i].joules(t)

    # -------------------------------------------------------------------- library
    def nvmlInit(self) -> None:
        """Start NVML (reference-counted)."""
        self.calls["nvmlInit"] = self.calls.get("nvmlInit", 0) + 1
        if self.init_error:
            raise error(self.init_error)
        self.refcount += 1
        self.inits += 1

    def nvmlInitWithFlags(self, flags: int) -> None:
        """``nvmlInit`` with flags (ignored)."""
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        """Release one reference; ``NVMLError_Uninitialized`` when none is held."""
        self._enter("nvmlShutdown")
        self.refcount -= 1
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        """The driver version string."""
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetNVMLVersion(self) -> str:
        """NVML's version string."""
        self._enter("nvmlSystemGetNVMLVersion")
        return "12." + self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        """CUDA driver version as an int (12040 is 12.4)."""
        self._enter("nvmlSystemGetCudaDriverVersion")
        return 12040

    def nvmlErrorString(self, result: int) -> str:
        """The message pynvml gives for error code ``result``."""
        return NVMLError._messages.get(result, "Unknown Error")

    # ---------------------------------------------------------------- enumeration
    def nvmlDeviceGetCount(self) -> int:
        """Physical GPUs (MIG devices are not counted)."""
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        """The handle of GPU ``index`` (``InvalidArgument`` out of range)."""
        self._enter("nvmlDeviceGetHandleByIndex")
        if not isinstance(index, int) or not 0 <= index < len(self.gpus):
            raise error("InvalidArgument")
        return _Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        """The handle of the GPU or MIG device with this UUID (``NotFound`` otherwise)."""
        self._enter("nvmlDeviceGetHandleByUUID")
        u = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        for i, g in enumerate(self.gpus):
            if g.uuid == u:
                return _Handle(i)
            for j, m in enumerate(g.mig_devices if g.mig else ()):
                if m.uuid == u:
                    return _Handle(i, j)
        raise error("NotFound")

    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str | bytes) -> _Handle:
        """The handle of the GPU at this PCI bus id (``NotFound`` otherwise)."""
        self._enter("nvmlDeviceGetHandleByPciBusId")
        want = bus_id.decode() if isinstance(bus_id, bytes) else str(bus_id)
        for i, g in enumerate(self.gpus):
            if _norm_bus(g.pci_bus_id) == _norm_bus(want):
                return _Handle(i)
        raise error("NotFound")

    def nvmlDeviceGetIndex(self, handle: _Handle) -> int:
        """NVML index of a GPU."""
        self._enter("nvmlDeviceGetIndex", handle)
        return handle.gpu

    # ---------------------------------------------------------------- identity
    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        """Marketing name (a MIG device adds its profile)."""
        self._enter("nvmlDeviceGetName", handle)
        g = self._gpu(handle)
        return g.name if handle.mig is None else f"{g.name} MIG {self._mig(handle).profile}"

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        """``GPU-...`` (``MIG-...`` for a MIG device)."""
        self._enter("nvmlDeviceGetUUID", handle)
        return self._gpu(handle).uuid if handle.mig is None else self._mig(handle).uuid

    def nvmlDeviceGetPciInfo(self, handle: _Handle) -> _Struct:
        """PCI info: ``busId`` (``"00000000:18:00.0"``), ``domain``, ``bus``, ``device``."""
        self._enter("nvmlDeviceGetPciInfo", handle)
        bus = self._gpu(handle).pci_bus_id
        domain, b, d = (int(x, 16) for x in _norm_bus(bus).split(".")[0].split(":"))
        return _Struct(busId=bus, busIdLegacy=bus[-12:], domain=domain, bus=b, device=d,
                       pciDeviceId=0x233010DE, pciSubSystemId=0x16C110DE)

    def nvmlDeviceGetCudaComputeCapability(self, handle: _Handle) -> tuple[int, int]:
        """``(major, minor)``."""
        self._enter("nvmlDeviceGetCudaComputeCapability", handle)
        return self._gpu(handle).compute_capability

    # ------------------------------------------------------------------ readings
    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: Any = None) -> _Struct:
        """``total``, ``free``, ``used`` in bytes (a MIG device's own memory)."""
        t = self._enter("nvmlDeviceGetMemoryInfo", handle)
        g = self._gpu(handle)
        if not g.memory_supported:
            raise error("NotSupported")
        if handle.mig is not None:
            m = self._mig(handle)
            total, used = m.memory_total_mib, float(_at(m.memory_used_mib, t))
        else:
            total = g.memory_total_mib
            used = float(_at(g.memory_used_mib, t)) + sum(mib for _, mib in g.processes)
        total_b, used_b = int(total * _MIB), int(min(used, total) * _MIB)
        return _Struct(total=total_b, free=total_b - used_b, used=used_b)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        """Energy in mJ since the driver loaded, as of the counter's last update."""
        t = self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
        g = self._physical_only(handle)
        if not g.energy_counter:
            raise error("NotSupported")
        if g.counter_period_s > 0:
            t = math.floor(t / g.counter_period_s + 1e-9) * g.counter_period_s
        return int(g.counter_start_mj + self._energy_j(handle.gpu, t) * 1000.0)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        """mW: the mean over the last ``power_window_s`` (instantaneous when 0)."""
        t = self._enter("nvmlDeviceGetPowerUsage", handle)
        g = self._physical_only(handle)
        if not g.power_supported:
            raise error("NotSupported")
        w = min(g.power_window_s, t)
        if w > 0:
            watts = (self._energy_j(handle.gpu, t) - self._energy_j(handle.gpu, t - w)) / w
        else:
            watts = float(_at(g.power_w, t))
        return int(round(watts * 1000.0))

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int = 0) -> int:
        """Degrees C of the GPU die."""
        t = self._enter("nvmlDeviceGetTemperature", handle)
        g = self._physical_only(handle)
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise error("InvalidArgument")
        return int(round(float(_at(g.temperature_c, t))))

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        """Bit mask of why the clocks are below their maximum."""
        t = self._enter("nvmlDeviceGetCurrentClocksEventReasons", handle)
        return int(_at(self._physical_only(handle).clocks_event_reasons, t))

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: _Handle) -> int:
        """The older name of ``nvmlDeviceGetCurrentClocksEventReasons``."""
        t = self._enter("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        return int(_at(self._physical_only(handle).clocks_event_reasons, t))

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[_Struct]:
        """Processes with a compute context: ``pid``, ``usedGpuMemory`` (bytes)."""
        self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        g = self._gpu(handle)
        return [_Struct(pid=pid, usedGpuMemory=int(mib * _MIB), gpuInstanceId=0xFFFFFFFF,
                        computeInstanceId=0xFFFFFFFF) for pid, mib in g.processes]

    # ----------------------------------------------------------------------- MIG
    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        """``[current, pending]`` (``NotSupported`` on GPUs without MIG)."""
        self._enter("nvmlDeviceGetMigMode", handle)
        g = self._physical_only(handle)
        if g.mig is None:
            raise error("NotSupported")
        return [int(g.mig), int(g.mig)]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        """How many MIG devices this GPU can hold (7 on A100/H100)."""
        self._enter("nvmlDeviceGetMaxMigDeviceCount", handle)
        g = self._physical_only(handle)
        if g.mig is None:
            raise error("NotSupported")
        return max(7, len(g.mig_devices))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        """The MIG device at slot ``index`` (``NotFound`` for an empty slot)."""
        self._enter("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        g = self._physical_only(handle)
        if g.mig is None:
            raise error("NotSupported")
        if not g.mig or not 0 <= index < len(g.mig_devices):
            raise error("NotFound")
        return _Handle(handle.gpu, index)

    def nvmlDeviceIsMigDeviceHandle(self, handle: _Handle) -> int:
        """1 for a MIG device handle, else 0."""
        self._enter("nvmlDeviceIsMigDeviceHandle", handle)
        return int(handle.mig is not None)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: _Handle) -> _Handle:
        """The GPU a MIG device is a slice of."""
        self._enter("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
        if handle.mig is None:
            raise error("InvalidArgument")
        return _Handle(handle.gpu)

    # ---------------------------------------------------------------- power limit
    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        """The power limit, mW."""
        self._enter("nvmlDeviceGetPowerManagementLimit", handle)
        return int(self._physical_only(handle).power_limit_w * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        """The limit in force, mW."""
        self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
        return int(self._physical_only(handle).power_limit_w * 1000)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        """The default limit, mW."""
        self._enter("nvmlDeviceGetPowerManagementDefaultLimit", handle)
        return int(self._physical_only(handle).default_power_limit_w * 1000)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> list[int]:
        """``[min, max]`` settable limit, mW."""
        self._enter("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        lo, hi = self._physical_only(handle).power_limit_range_w
        return [int(lo * 1000), int(hi * 1000)]

    def nvmlDeviceSetPowerManagementLimit(self, handle: _Handle, limit: int) -> None:
        """Set the limit, mW: ``NoPermission`` unless allowed, ``InvalidArgument`` out of range."""
        self._enter("nvmlDeviceSetPowerManagementLimit", handle)
        g = self._physical_only(handle)
        if not self.allow_power_limit:
            raise error("NoPermission")
        lo, hi = g.power_limit_range_w
        if not lo * 1000 <= limit <= hi * 1000:
            raise error("InvalidArgument")
        g.power_limit_w = limit / 1000.0


def _snake(camel: str) -> str:
    out = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(camel))
    return out.upper()


def _norm_bus(bus_id: str) -> str:
    """A PCI bus id with an 8-digit domain (NVML accepts ``0000:3B:00.0`` for ``00000000:3B:00.0``)."""
    domain, _, rest = bus_id.strip().upper().partition(":")
    return f"{int(domain, 16):08X}:{rest}" if rest.count(":") == 1 else bus_id.strip().upper()


__all__ = ["CLOCK_EVENT_REASONS", "ERRORS", "FakeMigDevice", "FakeNvmlGpu", "FakePynvml", "NVMLError",
           "error"]
