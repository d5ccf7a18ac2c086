"""The backend protocol the runner drives, and the records a backend returns.

A backend loads a model for an :class:`~llem.config.ExperimentConfig`, generates a batch
of prompts with real per-token timing, and releases what it holds. Everything heavy (torch,
transformers, vllm, tensorrt_llm) is imported inside the backend's methods, never at import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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
        From the start of the batch to its first token, seconds.
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
    """

    requests: tuple[RequestOutput, ...]
    duration_s: float
    prefill_s: float
    padding_tokens: int = 0
    total_input_tokens: int = 0
    decode_steps: int = 0
    t0_perf: float | None = None


@dataclass(frozen=True)
class LoadInfo:
    """What loading a model resolved: effective settings and skipped parameters.

    ``effective`` maps ``section.field`` to the value the engine actually used;
    ``skipped`` maps ``section.field`` to the reason it had no effect.
    ``max_batch_size`` is set when the engine cannot take larger batches in this setting
    (transformers' assisted generation runs one prompt at a time); ``notes`` are short
    sentences about choices made on the user's behalf; ``model_path`` is the local folder
    the weights came from, when local.
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


#: Called by a backend during generation: ``on_phase("prefill" | "decode")``.
PhaseCallback = Callable[[str], None]


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
