"""What is here: the GPUs, the CPU and the optional packages, as typed records.

One room answers "what machine is this" for everything above it: config tier checks, the
capability matrix, the runner's skip rules and environment record, the sweep, the
backends, ``doctor`` and the CLI. GPUs are found through NVML, which does not initialise
CUDA in this process (initialising CUDA in a parent process forces vLLM to spawn its
workers and keeps memory on GPU 0). A machine with no NVML, or no GPU, is a machine with an
empty ``gpus`` tuple, never an error.

"This machine or a declared target" is decided in one place, :func:`where`: a config's
``experiment.target_gpu`` (or an explicit target) wins, else this machine; the answer says
which in words fit for a message ("this machine (CPU only)", "the target 'T4'").

Tests swap the machine with :func:`use_machine` and :meth:`Machine.fake`.

>>> m = Machine.fake(gpus=[("NVIDIA H100 80GB HBM3", 9.0)])
>>> m.gpu_count, m.cc, m.tier.name
(1, 9.0, 'hopper')
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llem.energy.nvml import PynvmlLibrary
from llem.errors import LlemError
from llem.spec.model import Tier
from llem.spec.queries import named_packages
from llem.spec.tiers import parse_target, tier_for

_MIB = 1024**2


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as NVML sees it.

    Attributes
    ----------
    index : int
        NVML index (NVML ignores ``CUDA_VISIBLE_DEVICES``).
    name : str
        Marketing name (``NVIDIA H100 80GB HBM3``).
    compute_capability : float
        ``major.minor`` as a number (9.0).
    memory_total_mib : float
        Memory of the whole GPU, MiB.
    uuid : str
        ``GPU-...`` identifier (stable across numberings).
    mig : bool
        True when MIG mode is on (energy then reads the whole GPU, not a slice).
    energy_counter : bool
        Whether NVML's total-energy counter reads on this GPU (Volta and newer).
    pci_bus_id : str
        ``00000000:3B:00.0`` (CUDA's ``PCI_BUS_ID`` order sorts by it), or "".
    mig_uuids : tuple of str
        The ``MIG-...`` UUIDs of its MIG devices (a ``CUDA_VISIBLE_DEVICES`` entry may name one).
    """

    index: int
    name: str
    compute_capability: float
    memory_total_mib: float = 0.0
    uuid: str = ""
    mig: bool = False
    energy_counter: bool = False
    pci_bus_id: str = ""
    mig_uuids: tuple[str, ...] = ()

    @property
    def tier(self) -> Tier:
        """The compute-capability tier of this GPU."""
        return tier_for(self.compute_capability)


@dataclass(frozen=True)
class Cpu:
    """The CPU: its model name and how many hardware threads the OS offers."""

    model: str
    threads: int


#: Optional packages the machine record reports: those the table asks about, then the ones
#: the backends and meters need.
PACKAGES: tuple[str, ...] = tuple(dict.fromkeys((
    *named_packages(), "torch", "transformers", "vllm", "tensorrt_llm", "pynvml", "codecarbon",
    "peft", "gguf", "accelerate", "zeus", "ray",
)))


@dataclass(frozen=True)
class Machine:
    """The GPUs, CPU and optional packages of one machine.

    Attributes
    ----------
    gpus : tuple of Gpu
        Empty when there is no NVIDIA GPU (or no NVML to see one).
    cpu : Cpu
    packages : mapping of str to bool
        Import name -> installed (found without importing it).
    driver : str
        The NVIDIA driver version, or "".
    gpu_note : str
        Why no GPU was found ("NVML library not found", ...), or "".
    source : str
        ``"nvml"``, ``"none"`` (no NVML), ``"fake"`` or ``"null"``.
    """

    gpus: tuple[Gpu, ...] = ()
    cpu: Cpu = field(default_factory=lambda: Cpu("unknown", 1))
    packages: Mapping[str, bool] = field(default_factory=dict)
    driver: str = ""
    gpu_note: str = ""
    source: str = "null"

    @property
    def gpu_count(self) -> int:
        """How many NVIDIA GPUs are here."""
        return len(self.gpus)

    @property
    def run_gpu(self) -> Gpu | None:
        """The GPU a run uses: the one CUDA numbers 0 under ``CUDA_VISIBLE_DEVICES``.

        The backends put a one-device model there (PyTorch ``cuda:0``, vLLM and
        TensorRT-LLM their first rank). None when there is no GPU or the variable hides
        them all.
        """
        seen = visible_gpus(self.gpus)
        return seen[0] if seen else None

    @property
    def cc(self) -> float | None:
        """The compute capability of :attr:`run_gpu` (None: none visible, the ``cpu`` tier).

        Not the highest on the machine: on a node with an A100 and a V100 a run on the V100
        cannot use what needs 8.0. A set of GPUs asks :meth:`cc_of` (the weakest decides).
        """
        gpu = self.run_gpu
        return gpu.compute_capability if gpu is not None else None

    def cc_of(self, indices: Iterable[int] | None = None) -> float | None:
        """The lowest compute capability among the GPUs ``indices`` (all when None).

        A setting runs on a set of GPUs only if it runs on the weakest of them.
        """
        chosen = [g for g in self.gpus if indices is None or g.index in set(indices)]
        return min((g.compute_capability for g in chosen), default=None)

    @property
    def tier(self) -> Tier:
        """The tier of :attr:`cc`."""
        return tier_for(self.cc)

    def has(self, package: str) -> bool:
        """Whether the import name ``package`` is installed here."""
        if package in self.packages:
            return bool(self.packages[package])
        return _installed(package)

    def facts(self) -> dict[str, Any]:
        """The ``env.*`` facts the table's skip rules read: ``gpu_count``, ``cc``, ``packages``."""
        return {
            "gpu_count": self.gpu_count,
            "cc": self.cc,
            "cuda": self.run_gpu is not None,
            "packages": {name: self.has(name) for name in PACKAGES},
        }

    def describe(self) -> str:
        """One line: the GPUs (or "CPU only") and the CPU."""
        if self.gpus:
            names = ", ".join(f"{g.name} (cc {g.compute_capability:g})" for g in self.gpus)
            return f"{names}; CPU {self.cpu.model}"
        return f"CPU only ({self.cpu.model}, {self.cpu.threads} threads)"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record of the machine (for a result's environment)."""
        return {
            "gpus": [gpu_record(g) for g in self.gpus],
            "cpu": self.cpu.model,
            "cpu_threads": self.cpu.threads,
            "driver": self.driver,
            "tier": self.tier.name,
        }

    @classmethod
    def fake(
        cls,
        gpus: Sequence[tuple[str, float] | Gpu] = (),
        packages: Mapping[str, bool] | None = None,
        cpu: str = "Fake CPU",
        threads: int = 2,
    ) -> Machine:
        """A machine for tests: ``gpus`` as ``(name, cc)`` pairs or :class:`Gpu` records.

        Packages not named in ``packages`` are reported as not installed.
        """
        made = tuple(
            g if isinstance(g, Gpu) else Gpu(i, g[0], float(g[1]), 81559.0, f"GPU-fake-{i}", False, True)
            for i, g in enumerate(gpus)
        )
        known = {name: False for name in PACKAGES}
        known.update(packages or {})
        return cls(made, Cpu(cpu, threads), known, "", "" if made else "a fake machine without GPUs",
                   "fake")


#: The machine with nothing: no GPU, an unknown CPU, no optional package.
NULL_MACHINE = Machine(packages={name: False for name in PACKAGES}, gpu_note="nothing was probed",
                       source="null")


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _nvml_gpus(library: Any = None) -> tuple[tuple[Gpu, ...], str, str]:
    """GPUs NVML sees, the driver version, and why there are none (never raises)."""
    library = library if library is not None else PynvmlLibrary()
    try:
        library.init()
    except Exception as exc:  # noqa: BLE001 - no NVML means no GPU here
        return (), "", str(exc) or f"NVML could not start ({type(exc).__name__})"
    try:
        driver = library.driver_version()
        out = open_gpus(library)
        return out, driver, "" if out else "NVML sees no GPU"
    except Exception as exc:  # noqa: BLE001
        return (), "", f"NVML failed while listing GPUs ({type(exc).__name__}: {exc})"
    finally:
        try:
            library.shutdown()
        except Exception:  # noqa: BLE001
            pass


def open_gpus(library: Any) -> tuple[Gpu, ...]:
    """The GPUs of an NVML ``library`` already initialised by the caller, as :class:`Gpu` records.

    For code that holds NVML open (the power limit) and asks :func:`visible_gpus` which
    of them CUDA sees; errors of the library propagate.
    """
    out = []
    for i in range(library.device_count()):
        dev = library.device(i)
        major, minor = dev.compute_capability()
        try:
            counter = dev.total_energy_mj() is not None
        except Exception:  # noqa: BLE001
            counter = False
        mig = bool(_optional(dev, "mig_enabled", False))
        bus = str(_optional(dev, "pci_bus_id", "") or "")
        migs = tuple(_optional(dev, "mig_uuids", ()) or ()) if mig else ()
        out.append(Gpu(i, dev.name(), float(f"{major}.{minor}"), dev.memory_total_bytes() / _MIB,
                       dev.uuid(), mig, counter, bus, migs))
    return tuple(out)


def _optional(dev: Any, method: str, default: Any) -> Any:
    """``dev.<method>()``, or ``default`` when the device lacks it or it fails."""
    fn = getattr(dev, method, None)
    try:
        return fn() if callable(fn) else default
    except Exception:  # noqa: BLE001 - an extra the probe can do without
        return default


def gpu_record(g: Gpu) -> dict[str, Any]:
    """A JSON-safe record of one GPU (the machine record's and the metered GPUs' form)."""
    return {"index": g.index, "name": g.name, "compute_capability": g.compute_capability,
            "memory_total_mib": g.memory_total_mib, "uuid": g.uuid, "mig": g.mig,
            "energy_counter": g.energy_counter, "pci_bus_id": g.pci_bus_id}


def probe(library: Any = None) -> Machine:
    """Look at this machine now (NVML for GPUs, find_spec for packages); never raises."""
    gpus, driver, note = _nvml_gpus(library)
    return Machine(
        gpus=gpus,
        cpu=Cpu(cpu_model(), os.cpu_count() or 1),
        packages={name: _installed(name) for name in PACKAGES},
        driver=driver,
        gpu_note=note,
        source="nvml" if gpus else "none",
    )


_current: Machine | None = None
_override: list[Machine] = []


def get_machine(refresh: bool = False) -> Machine:
    """Return this machine, probed once per process (``refresh=True`` looks again).

    Inside :func:`use_machine` it is the machine given there.
    """
    global _current
    if _override:
        return _override[-1]
    if _current is None or refresh:
        _current = probe()
    return _current


@contextlib.contextmanager
def use_machine(machine: Machine) -> Iterator[Machine]:
    """Make :func:`get_machine` return ``machine`` inside the block (for tests and demos)."""
    _override.append(machine)
    try:
        yield machine
    finally:
        _override.pop()


_UNSET: Any = object()


def _bus_key(bus_id: str) -> tuple[int, int, int]:
    """``(domain, bus, device)`` of ``0000:3B:00.0`` / ``00000000:3B:00.0``; unknown sorts last."""
    parts = bus_id.strip().split(":")
    try:
        if len(parts) == 3:
            return int(parts[0], 16), int(parts[1], 16), int(parts[2].split(".")[0], 16)
    except ValueError:
        pass
    return (1 << 32, 0, 0)


def cuda_order(gpus: Sequence[Gpu], order: str | None = _UNSET) -> tuple[Gpu, ...]:
    """``gpus`` in the order CUDA numbers them before ``CUDA_VISIBLE_DEVICES`` applies.

    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``: by PCI bus id (NVML's order). Unset or
    ``FASTEST_FIRST`` (CUDA's default): fastest first, which llem takes as the highest
    compute capability, then the most memory, then PCI order; on a machine whose GPUs are
    all the same model that is PCI order too (:func:`cuda_order_is_certain` says when it
    is a guess).
    """
    order = os.environ.get("CUDA_DEVICE_ORDER") if order is _UNSET else order
    pci = sorted(gpus, key=lambda g: (_bus_key(g.pci_bus_id), g.index))
    if (order or "").strip().upper() == "PCI_BUS_ID":
        return tuple(pci)
    return tuple(sorted(pci, key=lambda g: (-g.compute_capability, -g.memory_total_mib)))


def cuda_order_is_certain(gpus: Sequence[Gpu], order: str | None = _UNSET) -> bool:
    """False when CUDA's fastest-first numbering had to be guessed (GPUs of different models)."""
    order = os.environ.get("CUDA_DEVICE_ORDER") if order is _UNSET else order
    return (order or "").strip().upper() == "PCI_BUS_ID" or len({g.name for g in gpus}) <= 1


def _match_entry(entry: str, gpus: Sequence[Gpu]) -> Gpu | None:
    """The GPU a ``GPU-``/``MIG-`` entry of ``CUDA_VISIBLE_DEVICES`` names, or None."""
    if entry.startswith("MIG-GPU-"):  # the older form MIG-GPU-<uuid>/<gi>/<ci>
        parent = entry[4:].split("/")[0]
        hits = [g for g in gpus if g.uuid.startswith(parent)]
    elif entry.startswith("MIG-"):
        hits = [g for g in gpus if any(u.startswith(entry) for u in g.mig_uuids)]
        if not hits:  # MIG devices not listed (no permission to read them): the one MIG GPU
            unlisted = [g for g in gpus if g.mig and not g.mig_uuids]
            hits = unlisted if len(unlisted) == 1 else []
    else:
        hits = [g for g in gpus if g.uuid.startswith(entry)]
    return hits[0] if len(hits) == 1 else None


def visible_gpus(gpus: Sequence[Gpu], visible: str | None = _UNSET,
                 order: str | None = _UNSET) -> tuple[Gpu, ...]:
    """The GPUs CUDA numbers 0, 1, 2... in this process, honouring the CUDA environment.

    ``visible`` is ``CUDA_VISIBLE_DEVICES`` (read from the environment when not given; None
    means unset: every GPU) and ``order`` is ``CUDA_DEVICE_ORDER``. Entries are indices
    (in ``order``), ``GPU-`` UUIDs or unique prefixes, or MIG ids (``MIG-<uuid>``, or the
    older ``MIG-GPU-<uuid>/<gi>/<ci>``), which give the GPU the MIG device is a slice of.
    As CUDA does, the list ends at the first entry that names no GPU (``-1`` hides all),
    and an empty value hides every GPU. This is the one mapping from CUDA's numbering to
    NVML's: the runner's meter, vLLM and TensorRT-LLM all ask it.

    >>> gpus = [Gpu(0, "A", 8.0, uuid="GPU-aa", pci_bus_id="00000000:18:00.0"),
    ...         Gpu(1, "A", 8.0, uuid="GPU-bb", pci_bus_id="00000000:3B:00.0")]
    >>> [g.index for g in visible_gpus(gpus, None)], [g.index for g in visible_gpus(gpus, "1,0")]
    ([0, 1], [1, 0])
    >>> [g.index for g in visible_gpus(gpus, "GPU-b,-1,0")], visible_gpus(gpus, "")
    ([1], ())
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is _UNSET else visible
    ordered = cuda_order(gpus, order)
    if visible is None:
        return ordered
    out: list[Gpu] = []
    for raw in visible.split(","):
        entry = raw.strip()
        if entry.isdigit():
            gpu = ordered[int(entry)] if int(entry) < len(ordered) else None
        elif entry.startswith(("GPU-", "MIG-")):
            gpu = _match_entry(entry, ordered)
        else:
            gpu = None
        if gpu is None:
            break
        if gpu not in out:
            out.append(gpu)
    return tuple(out)


def nvml_gpus_for_cuda(cuda_devices: Iterable[int], gpus: Sequence[Gpu] | None = None,
                       visible: str | None = _UNSET, order: str | None = _UNSET) -> tuple[Gpu, ...]:
    """The GPUs (NVML records, so ``g.index`` is the NVML index) of CUDA devices ``cuda_devices``.

    ``gpus`` defaults to this machine's; ``visible`` and ``order`` as in
    :func:`visible_gpus`. Repeated devices are given once, in the order first named.

    Raises
    ------
    LlemError
        For a CUDA device this process cannot see, saying what is visible.
    """
    gpus = get_machine().gpus if gpus is None else gpus
    seen = visible_gpus(gpus, visible, order)
    out: list[Gpu] = []
    for d in dict.fromkeys(int(d) for d in cuda_devices):
        if not 0 <= d < len(seen):
            env = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is _UNSET else visible
            raise LlemError(
                f"CUDA device {d} is not one NVML can match: this process sees {len(seen)} GPU(s) "
                f"(NVML lists {len(gpus)}; CUDA_VISIBLE_DEVICES={env!r}). Fix: name the GPUs in "
                "CUDA_VISIBLE_DEVICES by index or GPU-/MIG- UUID, as nvidia-smi -L lists them.")
        out.append(seen[d])
    return tuple(out)


@dataclass(frozen=True)
class Where:
    """A place settings are checked against: this machine or a declared target GPU.

    Attributes
    ----------
    cc : float or None
        Its compute capability (None: no CUDA, the ``cpu`` tier).
    words : str
        How a message names it: ``this machine (CPU only)``, ``the target 'T4'``.
    target : str or None
        The target as given, or None for this machine.
    """

    cc: float | None
    words: str
    target: str | None = None

    @property
    def tier(self) -> Tier:
        """The tier of :attr:`cc`."""
        return tier_for(self.cc)

    @property
    def is_target(self) -> bool:
        """True for a declared target, False for this machine."""
        return self.target is not None


def where(target: str | float | None = None, machine: Machine | None = None) -> Where:
    """Decide what settings are checked against: ``target`` when given, else this machine.

    Raises
    ------
    ValueError
        For a target that is not 'cpu', a compute capability or a known GPU name.
    """
    if target is not None:
        cc = parse_target(target)
        return Where(cc, f"the target {str(target)!r}", str(target))
    m = machine or get_machine()
    gpu = m.run_gpu  # the GPU a run here uses, not the best one on the machine
    if gpu is None:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        return Where(None, "this machine (CPU only)" if not m.gpus else
                     f"this machine (no GPU visible: CUDA_VISIBLE_DEVICES={hidden!r})")
    return Where(gpu.compute_capability,
                 f"this machine ({gpu.name}, compute capability {gpu.compute_capability:g})")


__all__ = [
    "NULL_MACHINE", "PACKAGES", "Cpu", "Gpu", "Machine", "Where", "cpu_model", "cuda_order",
    "cuda_order_is_certain", "get_machine", "gpu_record", "nvml_gpus_for_cuda", "probe", "use_machine",
    "open_gpus", "visible_gpus", "where",
]
