"""What every check shares: the mode, the NVML library, the torch device, a load, a cache.

On a GPU machine the NVML library is llem's own pynvml layer
(:class:`~llem.energy.nvml.PynvmlLibrary`) and the PyTorch runs go to ``cuda:0``. With
``simulate=True`` the same checks run against llem's fake NVML devices, two fake H100s
whose energy counter updates every :data:`SIM_UPDATE_S` seconds, GPU 0 drawing
:data:`SIM_LOAD_W` while the kit's load runs and :data:`SIM_IDLE_W` otherwise, and the
PyTorch runs go to the CPU. Where this llem has the stand-in for the pynvml module
(``llem.testing.use_fake_pynvml``), the fakes sit under llem's real pynvml layer, so every
NVML call of llem and of the kit goes through the same code as on a GPU; otherwise they
are :class:`~llem.testing.FakeNvmlLibrary` devices and llem's ``nvml`` meter is swapped for
one over them. Either way :func:`llem.machine.get_machine` answers with the fake machine
for the kit's lifetime (:func:`simulated_nvml`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import llem.machine as machine_room
import llem.testing as testing
from llem import plugins
from llem.energy.nvml import NvmlLibrary, NvmlMeter, PynvmlLibrary
from llem.energy.registry import clear_probe_cache
from llem.machine import Machine, get_machine, probe, use_machine
from llem.testing import FakeGpu, FakeNvmlLibrary

#: Simulated GPUs: idle and loaded power, W, and how often their readings update, s.
SIM_IDLE_W = 70.0
SIM_LOAD_W = 350.0
SIM_UPDATE_S = 0.02


def _stepped_clock(period: float) -> Any:
    """A clock that moves in steps of ``period`` s, so fake readings update like NVML's."""
    return lambda: math.floor(time.perf_counter() / period) * period


#: The simulated power reading is the mean over this window, s (Hopper's is about 1 s; a
#: shorter one keeps the simulated windows short).
SIM_POWER_WINDOW_S = 0.1


class SimulatedLoad:
    """When the kit's load ran on the simulated GPU 0, on the fake devices' clock.

    ``period_s`` > 0 makes the clock move in steps of that many seconds (the devices'
    readings then update that often); 0 leaves it smooth.
    """

    def __init__(self, period_s: float = SIM_UPDATE_S) -> None:
        self.clock = _stepped_clock(period_s) if period_s > 0 else time.perf_counter
        self.born = self.clock()
        self.intervals: list[list[float | None]] = []

    def power_w(self, t: float) -> float:
        """Power of simulated GPU 0 at ``t`` s since the devices were made."""
        now = self.born + t
        for start, end in self.intervals:
            if start is not None and start <= now and (end is None or now < end):
                return SIM_LOAD_W
        return SIM_IDLE_W

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """GPU 0 draws the load power inside the block."""
        span: list[float | None] = [self.clock(), None]
        self.intervals.append(span)
        try:
            yield
        finally:
            span[1] = self.clock()


def fake_library(load: SimulatedLoad) -> FakeNvmlLibrary:
    """Two fake H100s: GPU 0 follows the kit's simulated load, GPU 1 stays idle."""
    clock = load.clock
    load.born = clock()  # the devices' time 0 (FakeGpu counts from its creation)
    gpus = [
        FakeGpu(0, power_w=load.power_w, clock=clock),
        FakeGpu(1, power_w=SIM_IDLE_W, clock=clock, counter_start_mj=987_654_321),
    ]
    return FakeNvmlLibrary(gpus, driver="fake-simulated")


@contextlib.contextmanager
def simulated_nvml(load: SimulatedLoad | None = None) -> Iterator[NvmlLibrary]:
    """The simulated GPUs as an NVML library, with llem's meter and machine seeing them inside.

    Under llem's real pynvml layer over ``llem.testing``'s pynvml stand-in where this llem
    has one (``load`` should then have a smooth clock: ``SimulatedLoad(0.0)``), else
    :func:`fake_library` with the ``nvml`` meter swapped for one over it.
    """
    if has_fake_pynvml():
        load = load or SimulatedLoad(0.0)
        fake = fake_pynvml(load)
        with _testing("use_fake_pynvml")(fake):
            library: NvmlLibrary = PynvmlLibrary()
            with use_machine(probe(library)):
                yield library
        return
    load = load or SimulatedLoad()
    library = fake_library(load)
    with _swap_meter("nvml", _simulated_meter(library)), use_machine(probe(library)):
        yield library


def has_fake_pynvml() -> bool:
    """Whether ``llem.testing`` has the stand-in for the pynvml module (``use_fake_pynvml``)."""
    return all(hasattr(testing, n) for n in ("use_fake_pynvml", "FakePynvml", "FakeNvmlGpu"))


def _testing(name: str) -> Any:
    """``llem.testing.<name>``, looked up when used (older llems lack the pynvml stand-in)."""
    return getattr(testing, name)


def fake_pynvml(load: SimulatedLoad) -> Any:
    """A ``FakePynvml`` over two fake H100s; GPU 0 follows ``load``, GPU 1 stays idle."""
    gpu = _testing("FakeNvmlGpu")
    every = {"counter_period_s": SIM_UPDATE_S, "power_window_s": SIM_POWER_WINDOW_S}
    gpus = [gpu(power_w=load.power_w, **every),
            gpu(power_w=SIM_IDLE_W, counter_start_mj=987_654_321, **every)]
    fake = _testing("FakePynvml")(gpus, clock=load.clock, driver="fake-simulated")
    load.born = load.clock() - fake.now()  # the fake's time 0
    return fake


class Context:
    """The state the checks share.

    Attributes
    ----------
    simulate : bool
        True: fake NVML devices and the CPU.
    library : NvmlLibrary
        Where NVML readings come from.
    torch : module or None
        torch, when importable.
    device : str
        ``cuda:0`` on a GPU machine, else ``cpu``.
    nvml_index : int or None
        The NVML index of the GPU the PyTorch runs use (``cuda:0``), else the first GPU's.
    cache : dict
        Results one check leaves for another (the counter's update period, llem runs).
    """

    def __init__(self, simulate: bool = False, quick: bool = False) -> None:
        self.simulate = simulate
        self.quick = quick or simulate
        self.sim_load = SimulatedLoad(0.0 if has_fake_pynvml() else SIM_UPDATE_S)
        self.library: NvmlLibrary = PynvmlLibrary()
        self.cache: dict[str, Any] = {}
        self.notes: list[str] = []
        self._stack = contextlib.ExitStack()
        self.torch = _import_torch()
        self.cuda = bool(not simulate and self.torch is not None and _cuda_available(self.torch))
        self.device = "cuda:0" if self.cuda else "cpu"
        self.machine: Machine = get_machine()
        self.nvml_index: int | None = None

    # ---------------------------------------------------------------- set-up
    def __enter__(self) -> Context:
        if self.simulate:
            self.library = self._stack.enter_context(simulated_nvml(self.sim_load))
            self.machine = get_machine()
        self.nvml_index = self._find_nvml_index()
        if self.cuda and self.torch is not None:
            # start CUDA now (the detection check runs in a fresh process of its own), so
            # the first load and the first run do not pay for the context's creation
            with contextlib.suppress(Exception):
                self.torch.zeros(1, device="cuda:0")
                self.torch.cuda.synchronize()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def _find_nvml_index(self) -> int | None:
        gpus = self.machine.gpus
        if not gpus:
            return None
        if self.cuda and self.torch is not None:
            uuid = cuda_uuid(self.torch, 0)
            for g in gpus:
                if uuid and g.uuid.replace("GPU-", "").lower() == uuid.lower():
                    return g.index
        first = first_cuda_gpu(self.machine)
        return first.index if first is not None else gpus[0].index

    def need_gpu(self, what: str = "this check") -> None:
        """Raise Skip unless a real CUDA GPU or the simulated devices are here."""
        from llem.gpucheck.kit import Skip

        if self.nvml_index is None:
            raise Skip(f"{what} needs an NVIDIA GPU, and NVML sees none here"
                       + (f" ({self.machine.gpu_note})" if self.machine.gpu_note else ""))

    def need_cuda(self, what: str = "this check") -> None:
        """Raise Skip unless torch runs on a CUDA GPU here (never in simulate)."""
        from llem.gpucheck.kit import Skip

        if not self.cuda:
            why = ("the simulated run uses the CPU" if self.simulate else
                   "torch is not installed" if self.torch is None else
                   f"torch {self.torch.__version__} sees no CUDA GPU")
            raise Skip(f"{what} needs CUDA ({why})")

    def after_check(self) -> None:
        """Between checks: collect garbage and return cached CUDA memory."""
        import gc

        gc.collect()
        if self.cuda and self.torch is not None:
            with contextlib.suppress(Exception):
                self.torch.cuda.synchronize()
                self.torch.cuda.empty_cache()

    # ---------------------------------------------------------------- reading
    @contextlib.contextmanager
    def nvml(self) -> Iterator[Any]:
        """The GPU the runs use, as llem's device interface, with NVML started."""
        self.need_gpu()
        self.library.init()
        try:
            yield self.library.device(int(self.nvml_index or 0))
        finally:
            self.library.shutdown()

    # ---------------------------------------------------------------- loading
    @contextlib.contextmanager
    def load(self, required: bool = True) -> Iterator[None]:
        """Keep the GPU busy inside the block (matrix products; simulated: GPU 0's power).

        Without CUDA (torch absent or sees no GPU) this raises Skip, or, with
        ``required=False``, leaves the GPU idle.
        """
        if not self.simulate and not self.cuda and not required:
            yield
            return
        if self.simulate:
            with self.sim_load.running():
                yield
            return
        self.need_cuda("a GPU load")
        stop = threading.Event()
        errors: list[BaseException] = []
        thread = threading.Thread(target=_matmul_loop, args=(self.torch, stop, errors),
                                  name="llem-gpucheck-load", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)
            if errors:
                raise RuntimeError(f"the GPU load failed: {errors[0]!r}")


def _matmul_loop(torch: Any, stop: threading.Event, errors: list[BaseException]) -> None:
    try:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        a = torch.randn(8192, 8192, device="cuda:0", dtype=dtype)
        b = torch.randn(8192, 8192, device="cuda:0", dtype=dtype)
        while not stop.is_set():
            for _ in range(8):
                a = torch.tanh(a @ b)
            torch.cuda.synchronize()
        del a, b
    except BaseException as exc:  # noqa: BLE001 - reported by the caller
        errors.append(exc)


def _import_torch() -> Any:
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception:  # noqa: BLE001 - a broken torch is no torch
        return None
    return torch


def _cuda_available(torch: Any) -> bool:
    try:
        return bool(torch.cuda.is_available()) and torch.cuda.device_count() > 0
    except Exception:  # noqa: BLE001
        return False


def first_cuda_gpu(machine: Machine) -> Any:
    """The GPU CUDA numbers 0 here, as :mod:`llem.machine` maps it (None: none visible).

    Asked of ``llem.machine.visible_gpus`` where this llem has it, else of
    ``first_visible_gpu``; without either, the first GPU NVML lists.
    """
    visible = getattr(machine_room, "visible_gpus", None)
    if callable(visible):
        got = visible(machine.gpus)
        return got[0] if got else None
    first = getattr(machine_room, "first_visible_gpu", None)
    if callable(first):
        return first(machine.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    return machine.gpus[0] if machine.gpus else None


def cuda_uuid(torch: Any, index: int) -> str:
    """The UUID of CUDA device ``index`` without ``GPU-`` (``""`` where torch cannot tell)."""
    try:
        u = torch.cuda.get_device_properties(index).uuid
    except Exception:  # noqa: BLE001 - older torch has no uuid
        return ""
    return str(u).replace("GPU-", "")


def _simulated_meter(library: NvmlLibrary) -> type:
    class SimulatedNvmlMeter(NvmlMeter):
        """llem's NVML meter over the kit's fake devices (simulate mode only)."""

        def __init__(self, devices: Any = None, **kw: Any) -> None:
            kw.setdefault("library", library)
            super().__init__(devices, **kw)

    return SimulatedNvmlMeter


@contextlib.contextmanager
def _swap_meter(name: str, cls: type) -> Iterator[None]:
    """Make ``name`` resolve to ``cls`` inside the block, then to what it was."""
    before = plugins.get("meter", name)
    plugins.register_meter(name, cls, replace=True)
    clear_probe_cache()
    try:
        yield
    finally:
        plugins.register_meter(name, before, replace=True)
        clear_probe_cache()


def environment_versions(torch: Any) -> dict[str, str]:
    """torch, CUDA, transformers and nvidia-ml-py versions (what is installed)."""
    from llem.energy.base import package_version

    out = {"torch": getattr(torch, "__version__", "") if torch is not None else ""}
    cuda = getattr(getattr(torch, "version", None), "cuda", None)
    if cuda:
        out["cuda"] = str(cuda)
    for dist in ("transformers", "nvidia-ml-py", "zeus", "accelerate", "flash-attn"):
        v = package_version(dist)
        if v:
            out[dist] = v
    out["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return out
