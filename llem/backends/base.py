"""The backend protocol the runner drives, and the records a backend returns.

A backend loads a model for an :class:`~llem.config.ExperimentConfig`, generates a batch
of prompts with real per-token timing, and releases what it holds. Everything heavy (torch,
transformers, vllm, tensorrt_llm) is imported inside the backend's methods, never at import.

A backend may also offer ``reconfigure(config) -> LoadInfo`` (see :class:`Reconfigurable`):
apply a config's decode-time settings to the model already loaded. A sweep keeps one
backend across runs that share their load-time settings (:func:`load_time_values`) and
calls ``reconfigure`` instead of loading again; a backend without the method, or whose
``reconfigure`` raises :class:`ReloadNeeded`, is released and loaded again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from llem import spec
from llem.errors import LlemError
from llem.timing import TokenTimes


@dataclass(frozen=True)
class RequestOutput(TokenTimes):
    """What one prompt produced, with times in seconds from the batch's start.

    Attributes
    ----------
    prompt : str
        The prompt as given.
    text : str
        The generated text (prompt excluded).
    input_tokens : int
        Prompt length in tokens after truncation.
    output_tokens : int
        Number of generated tokens.
    token_times_s : tuple of float
        Time each generated token became available, seconds since the batch started.
        ``token_times_s[0]`` is the time to first token.
    truncated : bool
        True when the prompt was cut to ``max_input_tokens``.
    """

    prompt: str
    text: str
    input_tokens: int
    output_tokens: int
    token_times_s: tuple[float, ...] = ()
    truncated: bool = False


@dataclass(frozen=True)
class BatchOutput:
    """A generated batch: the per-request outputs and the batch's own timings.

    Attributes
    ----------
    requests : tuple of RequestOutput
        One per prompt, in the order given.
    duration_s : float
        Wall time of the whole batch, seconds.
    prefill_s : float
        From the start of the batch until every request had its first token, seconds
        (NaN when no first token is observable). With ``no_phase_split`` empty it is the
        boundary between the batch's prefill and decode.
    padding_tokens : int
        Pad tokens added to the prompts (left padding to the longest prompt).
    total_input_tokens : int
        Sum of the prompts' lengths in tokens, padding excluded.
    decode_steps : int
        Generated positions per row (the longest output); rows that finished early still
        occupy the batch for these steps.
    t0_perf : float or None
        ``time.perf_counter()`` at the batch's start, so token times can be placed on the
        energy timeline.
    no_phase_split : str
        Why the batch's time and energy cannot be split between prefill and decode, or
        ``""`` when they can. An engine that batches continuously overlaps the two when it
        admits requests while others decode (:mod:`llem.backends.phases`); one that returns
        only at the end (vLLM's beam search) shows no first token.
    """

    requests: tuple[RequestOutput, ...]
    duration_s: float
    prefill_s: float
    padding_tokens: int = 0
    total_input_tokens: int = 0
    decode_steps: int = 0
    t0_perf: float | None = None
    no_phase_split: str = ""


@dataclass(frozen=True)
class LoadInfo:
    """What loading a model resolved: effective settings and skipped parameters.

    ``effective`` maps ``section.field`` to the value the engine actually used;
    ``skipped`` maps ``section.field`` to the reason it had no effect.
    ``max_batch_size`` is set when the engine cannot take larger batches in this setting
    (transformers' assisted generation runs one prompt at a time); ``notes`` are short
    sentences about choices made on the user's behalf; ``model_path`` is the local folder
    the weights came from, when local. ``cuda_devices`` are the CUDA ordinals (as this
    process numbers them, after ``CUDA_VISIBLE_DEVICES``) the model was placed on, empty on
    the CPU: the runner meters exactly those GPUs (:func:`cuda_ordinals` reads them from a
    device map; an engine with tensor/pipeline parallelism uses devices ``0..tp*pp-1``).
    """

    model_id: str
    num_parameters: int | None = None
    load_s: float = 0.0
    effective: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    max_context_tokens: int | None = None
    max_batch_size: int | None = None
    notes: tuple[str, ...] = ()
    model_path: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    cuda_devices: tuple[int, ...] = ()


def cuda_ordinals(devices: Iterable[Any]) -> tuple[int, ...]:
    """The CUDA ordinals among ``devices``, sorted, each once.

    Each item is what a device map or a tensor holds: an int (a CUDA ordinal, as
    transformers' ``hf_device_map`` gives), ``"cuda"``/``"cuda:N"``, or a ``torch.device``;
    ``"cpu"``, ``"disk"``, ``"meta"`` and ``"mps"`` are not CUDA devices. ``"cuda"`` without an
    index is device 0 (llem never changes the current device).

    >>> cuda_ordinals([0, "cuda:1", "cpu", "disk", 1])
    (0, 1)
    """
    out: set[int] = set()
    for d in devices:
        if isinstance(d, bool):
            continue
        if isinstance(d, int):
            out.add(d)
            continue
        kind, index = getattr(d, "type", None), getattr(d, "index", None)
        if kind is None:
            kind, _, num = str(d).partition(":")
            index = int(num) if num.isdigit() else None
        if kind == "cuda":
            out.add(int(index or 0))
    return tuple(sorted(out))


def parallel_devices(engine_kwargs: Mapping[str, Any]) -> tuple[int, ...]:
    """The CUDA devices an engine built with ``engine_kwargs`` uses: ``0..tp*pp-1``.

    vLLM's ``LLM`` and TensorRT-LLM's LLM API both take ``tensor_parallel_size`` and
    ``pipeline_parallel_size`` (1 when not given) and put their workers on the visible
    GPUs from 0 up.

    >>> parallel_devices({"tensor_parallel_size": 2}), parallel_devices({})
    ((0, 1), (0,))
    """
    tp = int(engine_kwargs.get("tensor_parallel_size") or 1)
    pp = int(engine_kwargs.get("pipeline_parallel_size") or 1)
    return tuple(range(max(1, tp) * max(1, pp)))


#: Called by a backend during generation: ``on_phase("prefill" | "decode")``.
PhaseCallback = Callable[[str], None]


class PhaseMarks:
    """The runner's ``on_phase``: marks phases, and carries ``on_step`` for between decoding steps.

    ``marks(name)`` marks a phase. ``marks.on_step()``, called by a backend after each
    decoding step on the thread that generates, takes the energy sample that is due then
    (:meth:`~llem.energy.window.MeasurementWindow.poke`), so the sampler thread need not
    wake beside the model's threads. A backend finds it with ``getattr(on_phase,
    "on_step", None)``; a plain callable has none, and calling it is never required.
    """

    __slots__ = ("_mark", "on_step")

    def __init__(self, mark: Callable[[str], Any], on_step: Callable[[], None]) -> None:
        self._mark = mark
        self.on_step = on_step

    def __call__(self, name: str) -> None:
        """Mark the start of phase ``name`` now."""
        self._mark(name)


@runtime_checkable
class Backend(Protocol):
    """What the runner needs from a backend."""

    name: str

    def load(self, config: Any) -> LoadInfo:
        """Load the model and tokenizer for ``config``; return what was resolved."""
        ...

    def generate(
        self, prompts: Sequence[str], on_phase: PhaseCallback | None = None
    ) -> BatchOutput:
        """Generate one batch with real per-token timing, calling ``on_phase`` at phase changes.

        A backend may also accept the keyword arguments ``max_new_tokens``,
        ``min_new_tokens`` (per-batch output length, for synthetic prompts) and ``seed``
        (seed its generators before the batch); the runner passes each only when the
        backend's ``generate`` signature names it.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in the model's tokens."""
        ...

    def release(self) -> None:
        """Free the model and any device memory; safe to call twice."""
        ...


@runtime_checkable
class ProbesFacts(Protocol):
    """A backend that tells some ``env.*`` facts before loading (optional).

    ``probe_facts(config)`` returns facts of the table's skip rules (``llem/spec/facts.py``,
    producer ``load``) that the checkpoint answers without loading weights, such as
    ``model_prequantized``; the runner evaluates the rules on them before the load, so a
    skipped field never reaches the engine.
    """

    def probe_facts(self, config: Any) -> dict[str, Any]:
        """Facts known before loading; ``{}`` when nothing can be read."""
        ...


class ReloadNeeded(LlemError):
    """Raised by ``reconfigure`` when the config cannot be applied to the loaded model.

    The caller releases the backend and loads the model again. The message says why
    (nothing is loaded, a load-time setting differs, the setting is made at load time
    by this engine...).
    """


@runtime_checkable
class Reconfigurable(Backend, Protocol):
    """A backend that can take new decode-time settings without loading the model again.

    ``reconfigure`` is optional: the runner never calls it; a sweep does, between runs
    whose :func:`load_time_values` agree.
    """

    def reconfigure(self, config: Any) -> LoadInfo:
        """Apply ``config``'s decode-time settings to the loaded model; return the new LoadInfo.

        The LoadInfo describes the model as it now runs (the load-time part as loaded, the
        decode-time part from ``config``); its ``load_s`` is the time reconfiguring took.

        Raises
        ------
        ReloadNeeded
            ``config`` needs a fresh load (nothing loaded, other load-time settings, or
            settings this engine only applies while loading).
        ConfigError
            The engine refuses ``config``'s settings.
        """
        ...


def load_time_paths(backend: str) -> list[str]:
    """The load-time settings of ``backend``: rows with ``load_time=True`` in llem.spec.

    Those of the ``experiment`` section (model, adapter...) and of ``backend``'s section.
    """
    return [f"{p.section}.{p.name}" for p in spec.params()
            if p.load_time and p.section in ("experiment", backend)]


def load_time_values(config: Any) -> dict[str, Any]:
    """``section.field`` -> value of the settings that decide what ``config`` loads.

    The :func:`load_time_paths` of the config's backend, plus ``experiment.passthrough``
    (its ``load`` part goes to the loader). Two configs with equal values can share one
    loaded model.
    """
    values: dict[str, Any] = {}
    for path in load_time_paths(getattr(config, "backend", None) or "pytorch"):
        section, _, name = path.partition(".")
        holder = config if section == "experiment" else getattr(config, section, None)
        values[path] = getattr(holder, name, None)
    values["experiment.passthrough"] = getattr(config, "passthrough", None)
    return values
