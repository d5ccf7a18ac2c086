"""Prefill and decode of engines that batch continuously (vLLM, TensorRT-LLM).

A static batch (the PyTorch backend) has one boundary: every row gets its first token in
the same step, and from then on the batch decodes. An engine with its own scheduler admits
at most ``max_num_seqs`` (vLLM) or ``max_batch_size`` (TensorRT-LLM) requests at a time and
admits the others as earlier ones finish, so some requests decode while others are still
queued or being prefilled, in the same engine steps. Their energy cannot be split between
prefill and decode by time, and llem does not apportion it by a model.

:class:`PhaseTracker` follows each request's token count as the engine reports it and marks

- ``prefill`` while no request has decoded yet (no request has its first token and is
  still generating);
- :data:`MIXED` (``prefill+decode``) from the first observation at which a request that
  has decoded (two tokens or more) is still generating while another has none: an engine
  step decoded the one while the other was queued or still being prefilled. One token
  is not enough: the first tokens of one step reach Python one request at a time (each
  TensorRT-LLM stream has its own thread), so a request seen with its first token while
  another shows none may only be ahead in the queue of updates, not in the engine;
- ``decode`` once every request has its first token.

The phases only move forward. A batch that passed through :data:`MIXED` has no
prefill/decode split: :attr:`PhaseTracker.no_split` says why, the backend puts that in
``BatchOutput.no_phase_split``, and the runner then reports no prefill or decode energy
for the run (:func:`split_note` is the sentence it adds to the result's notes). Marks are
made when an observation arrives (after an engine step returns, or a streamed update
reaches Python), which is when the next steps' work is decided.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llem.backends.base import PhaseCallback

#: The phase of engine steps that prefill some requests while decoding others.
MIXED = "prefill+decode"

#: Why a batch that went through :data:`MIXED` has no split.
OVERLAP = ("prefill and decode overlapped: the engine admitted some requests while others were "
           "already decoding (continuous batching, more prompts than it runs at once)")


class PhaseTracker:
    """Marks ``prefill``, :data:`MIXED` and ``decode`` from per-request token counts.

    Parameters
    ----------
    on_phase : callable
        Called with the new phase name at each change (the backend has called it with
        ``prefill`` at the batch's start).
    requests : iterable of hashable
        The batch's request ids.

    Attributes
    ----------
    all_first_s : float or None
        When every request had its first token (the ``t`` of that :meth:`observe`).
    no_split : str
        Why the batch has no prefill/decode split; ``""`` while it has one.
    """

    def __init__(self, on_phase: PhaseCallback, requests: Iterable[Any]) -> None:
        self.on_phase = on_phase
        self.counts: dict[Any, int] = {rid: 0 for rid in requests}
        self.finished: set[Any] = set()
        self.phase = "prefill"
        self.all_first_s: float | None = None
        self.no_split = ""

    def observe(self, t: float, counts: Mapping[Any, int], finished: Iterable[Any] = ()) -> str:
        """Take the token counts reported at time ``t`` (seconds); return the phase now.

        ``counts`` holds the requests this observation reported (tokens so far);
        ``finished`` those that are done.
        """
        for rid, n in counts.items():
            if rid in self.counts:
                self.counts[rid] = max(self.counts[rid], int(n))
        self.finished.update(rid for rid in finished if rid in self.counts)
        waiting = any(n == 0 and rid not in self.finished for rid, n in self.counts.items())
        decoding = any(n > 1 and rid not in self.finished for rid, n in self.counts.items())
        if not waiting:
            self._enter("decode", t)
        elif decoding and self.phase == "prefill":
            self._enter(MIXED, t)
        return self.phase

    def _enter(self, phase: str, t: float) -> None:
        if phase == self.phase:
            return
        if phase == MIXED:
            self.no_split = OVERLAP
        if phase == "decode":
            self.all_first_s = t
        self.phase = phase
        self.on_phase(phase)


def split_note(reasons: Sequence[str]) -> str | None:
    """The result note for batches without a prefill/decode split (None when all had one)."""
    found = list(dict.fromkeys(r for r in reasons if r))
    if not found:
        return None
    return ("Prefill and decode energy are not reported for this run: " + "; ".join(found)
            + ". Its energy is measured whole; the timeline marks those stretches "
            f"{MIXED!r}.")


def run_phases(batches: Sequence[Any]) -> tuple[float | None, float | None, str | None]:
    """A run's prefill and decode time from its batches, and the note when it has no split.

    Returns
    -------
    prefill_s, decode_s : float or None
        Summed over the batches (``BatchOutput.prefill_s`` and the rest of each batch);
        None when a batch showed no first token (its ``prefill_s`` is NaN).
    note : str or None
        :func:`split_note` of the batches' ``no_phase_split``: not None means the run
        reports no prefill or decode energy.
    """
    if any(math.isnan(b.prefill_s) for b in batches):
        prefill_s = decode_s = None
    else:
        prefill_s = sum(b.prefill_s for b in batches)
        decode_s = sum(b.duration_s - b.prefill_s for b in batches)
    return prefill_s, decode_s, split_note([getattr(b, "no_phase_split", "") for b in batches])


__all__ = ["MIXED", "OVERLAP", "PhaseTracker", "run_phases", "split_note"]
