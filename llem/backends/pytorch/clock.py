"""The per-token clock and one timed ``generate`` call of the PyTorch backend.

Per-token times come from a stopping criterion that transformers calls once per decoding
step, right after the step's tokens are chosen: it reads ``time.perf_counter()`` and
never stops generation. It works for greedy, sampling, beam search and assisted
generation (where one step may accept several tokens at once; they share that step's
time).

On a GPU the clock synchronizes the device on every call. transformers launches a step's
kernels and calls the stopping criteria *before* its own end-of-step synchronization (the
``unfinished_sequences.max() == 0`` check of its ``StopCheck``), so a clock that read the
time without synchronizing would stamp each step when its kernels were queued, one step
early: the first inter-token gap would read ~0 and the time per output token would be low
by about 1/(n-1). Synchronizing here costs nothing extra, since transformers waits for the
same work a moment later.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

from llem.backends.base import BatchOutput, PhaseCallback, RequestOutput
from llem.backends.pytorch.failures import is_out_of_memory, out_of_memory, refused


class TokenClock:
    """A stopping criterion that timestamps each decoding step and never stops generation.

    ``steps`` holds ``(perf_counter_time, sequence_length)`` per call; the first call is
    the end of prefill (the first token exists). ``sync`` (``torch.cuda.synchronize`` on a
    GPU, None on a CPU) is called before every stamp.
    """

    def __init__(self, on_phase: PhaseCallback | None, sync: Any = None) -> None:
        self.on_phase = on_phase
        self.sync = sync
        self.steps: list[tuple[float, int]] = []
        self._false: Any = None

    def __call__(self, input_ids: Any, scores: Any = None, **kwargs: Any) -> Any:
        """Stamp this step once its work is done; return "do not stop" for every row of ``input_ids``."""
        if self.sync is not None:
            self.sync()  # every step: the step's kernels may still be running (see the module notes)
        first = not self.steps
        self.steps.append((time.perf_counter(), int(input_ids.shape[-1])))
        if first and self.on_phase is not None:
            self.on_phase("decode")
        f = self._false
        if f is None or f.shape[0] != input_ids.shape[0] or f.device != input_ids.device:
            import torch

            f = self._false = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return f

    def token_times(self, prompt_len: int, t0: float) -> list[float]:
        """Time of each generated position (seconds since ``t0``), in order."""
        times: list[float] = []
        prev = prompt_len
        for t, length in self.steps:
            new = max(0, length - prev)
            times.extend([t - t0] * new)
            prev = max(prev, length)
        return times


def make_clock(on_phase: PhaseCallback | None, sync: Any) -> Any:
    """A :class:`TokenClock` that is also a transformers ``StoppingCriteria``."""
    from transformers import StoppingCriteria

    class _Clock(TokenClock, StoppingCriteria):
        pass

    return _Clock(on_phase, sync)


def left_padded(tokenizer: Any, texts: Sequence[str], limit: int | None,
                chat: Any = None) -> tuple[Any, Any, list[int], list[int]]:
    """Token ids cut to ``limit`` (the start kept) and left-padded, with their attention mask.

    With ``chat`` (a :class:`~llem.prompts.chat.ChatPrompting`), the ids are its
    encoding (the chat template's tokens included) and its cut (which keeps the
    template's generation prompt).

    Returns
    -------
    input_ids, attention_mask : torch.Tensor
    lengths : list of int
        Each prompt's length after the cut.
    full_lengths : list of int
        Each prompt's length before it.
    """
    import torch

    if chat is not None:
        ids = chat.encode_batch(texts)
    else:
        ids = tokenizer(list(texts), return_attention_mask=False)["input_ids"]
    full = [len(x) for x in ids]
    if limit is not None:
        ids = [chat.truncate(x, limit)[0] if chat is not None else x[: int(limit)] for x in ids]
    lengths = [len(x) for x in ids]
    width = max(lengths)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    return input_ids, mask, lengths, full


def timed_generate(
    model: Any,
    tokenizer: Any,
    gen_config: Any,
    gen_extra: dict[str, Any],
    prompts: Sequence[Any],
    *,
    device: str,
    dtype: str,
    limit: int | None = None,
    on_phase: PhaseCallback | None = None,
    max_new_tokens: int | None = None,
    min_new_tokens: int | None = None,
    seed: int | None = None,
    chat: Any = None,
) -> BatchOutput:
    """Generate one left-padded batch with ``model.generate``, timing every token.

    ``gen_config`` and ``gen_extra`` are the generation settings (see
    :mod:`llem.backends.pytorch.generation`); ``max_new_tokens``/``min_new_tokens``
    override them for this batch, ``seed`` seeds torch first; ``chat`` (a
    :class:`~llem.prompts.chat.ChatPrompting`) turns the prompts into token ids.
    ``device`` and ``dtype`` name the model's placement in an out-of-memory message.

    Raises
    ------
    OutOfMemoryError
        With the settings to lower.
    ConfigError
        transformers refused the generation settings when generating.
    """
    import torch
    from transformers import StoppingCriteriaList

    texts = [str(p) for p in prompts]
    input_ids, mask, in_lens, full_lens = left_padded(tokenizer, texts, limit, chat)
    padded_len = int(input_ids.shape[1])
    enc = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}

    if max_new_tokens is not None or min_new_tokens is not None:
        gen_config = copy.copy(gen_config)
        if max_new_tokens is not None:
            gen_config.max_new_tokens = int(max_new_tokens)
        if min_new_tokens is not None:
            gen_config.min_new_tokens = int(min_new_tokens)
    cuda = device.startswith("cuda")
    clock = make_clock(on_phase, torch.cuda.synchronize if cuda else None)
    if seed is not None:
        torch.manual_seed(int(seed))

    if on_phase is not None:
        on_phase("prefill")
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=gen_config,
                                 stopping_criteria=StoppingCriteriaList([clock]), **gen_extra)
        if cuda:
            torch.cuda.synchronize()
    except (RuntimeError, MemoryError) as exc:
        if is_out_of_memory(exc):
            raise out_of_memory(len(texts), gen_config.max_new_tokens, dtype, device, exc) from None
        raise
    except ValueError as exc:  # a setting passed as asked that generate() refuses
        raise refused("generation settings", exc) from None
    t_end = time.perf_counter()

    seqs = out.sequences if hasattr(out, "sequences") else out
    gen = seqs[:, padded_len:].tolist()
    eos = gen_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else []))
    positions = clock.token_times(padded_len, t0)
    requests = []
    for i, row in enumerate(gen):
        n = len(row)
        for j, t in enumerate(row):
            if t in eos_ids:
                n = j + 1  # the end-of-sequence token was generated and cost a step
                break
        times = positions[:n]
        if len(times) < n:  # a step the clock did not see (should not happen)
            times = times + [t_end - t0] * (n - len(times))
        requests.append(RequestOutput(
            prompt=texts[i],
            text=tokenizer.decode(row[:n], skip_special_tokens=True),
            input_tokens=in_lens[i],
            output_tokens=n,
            token_times_s=tuple(times),
            truncated=limit is not None and full_lens[i] > limit,
        ))
    return BatchOutput(
        requests=tuple(requests),
        duration_s=t_end - t0,
        prefill_s=(clock.steps[0][0] - t0) if clock.steps else (t_end - t0),
        padding_tokens=padded_len * len(texts) - sum(in_lens),
        total_input_tokens=sum(in_lens),
        decode_steps=len(positions),
        t0_perf=t0,
    )
