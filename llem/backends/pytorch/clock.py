"""The per-token clock and one timed ``generate`` call of the PyTorch backend.

Per-token times come from an object that transformers calls once per decoding step, right
after the step's tokens are chosen: it reads ``time.perf_counter()`` and changes nothing.
It is handed to ``generate`` in one of two ways (:func:`clock_kwargs`):

- as a **streamer** on a CPU, for greedy decoding, sampling and assisted generation:
  transformers' ``StopCheck`` gives it each step's tokens (``streamer.put``), so a step
  costs one Python call (the first ``put`` is the prompt, before prefill);
- as a **stopping criterion** that never stops, on a GPU and for beam search (which takes
  no streamer): transformers ORs every criterion's answer into a tensor, one more small
  tensor operation per step (~15 µs on the development machine, 0.4% of a tiny-model step
  on a CPU; nothing next to a GPU step, where the clock synchronizes anyway).

In assisted generation one step may accept several tokens at once; they share that step's
time.

On a CPU the clock also pokes the energy window after each step (``on_phase.on_step``, see
:class:`~llem.backends.base.PhaseMarks`): the sample due then is read on this thread, in
passing, instead of by the sampler thread waking beside torch's.

On a GPU the clock synchronizes the device on every call. transformers launches a step's
kernels and calls the stopping criteria *before* its own end-of-step synchronization (the
``unfinished_sequences.max() == 0`` check of its ``StopCheck``), so a clock that read the
time without synchronizing would stamp each step when its kernels were queued, one step
early: the first inter-token gap would read ~0 and the time per output token would be low
by about 1/(n-1). Synchronizing here costs nothing extra, since transformers waits for the
same work a moment later. (The criterion is kept on a GPU although a streamer's tokens
arrive after a device copy that also waits: transformers may defer that copy by a step on
some devices, which would stamp every token one step late.)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

from llem.backends.base import BatchOutput, PhaseCallback, RequestOutput
from llem.backends.pytorch.failures import is_out_of_memory, out_of_memory, refused


class TokenClock:
    """Timestamps each decoding step; as a stopping criterion it never stops generation.

    ``steps`` holds ``(perf_counter_time, sequence_length)`` per step; the first is the
    end of prefill (the first token exists); after each stamp on a CPU it calls
    ``on_phase.on_step`` when the callback has one. Called as a stopping criterion
    (``clock(input_ids, scores)``), ``sync`` (``torch.cuda.synchronize`` on a GPU, None on
    a CPU) is called before every stamp; as a streamer, :meth:`put` stamps (transformers
    hands it the prompt first, then each step's tokens).
    """

    def __init__(self, on_phase: PhaseCallback | None, sync: Any = None) -> None:
        self.on_phase = on_phase
        self.sync = sync
        # on a CPU, the energy samples due between steps are taken here (see PhaseMarks);
        # a GPU step leaves the CPU free for the sampler thread, and its reads cost more
        self.on_step = getattr(on_phase, "on_step", None) if sync is None else None
        self.steps: list[tuple[float, int]] = []
        self._false: Any = None
        self._length: int | None = None  # the streamer's sequence length so far

    def __call__(self, input_ids: Any, scores: Any = None, **kwargs: Any) -> Any:
        """Stamp this step once its work is done; return "do not stop" for every row of ``input_ids``."""
        if self.sync is not None:
            self.sync()  # every step: the step's kernels may still be running (see the module notes)
        now = time.perf_counter()
        steps = self.steps
        steps.append((now, int(input_ids.shape[-1])))
        if len(steps) == 1 and self.on_phase is not None:
            self.on_phase("decode")
        if self.on_step is not None:
            self.on_step()
        f = self._false
        if f is None or f.shape[0] != input_ids.shape[0]:  # the first step (or the batch shrank)
            import torch

            f = self._false = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return f

    def put(self, value: Any) -> None:
        """The streamer's call: the prompt's ids first, then each step's new tokens.

        A step's tokens come as one per row (shape ``(batch,)``) or, in assisted
        generation, as the accepted run (shape ``(1, n)``).
        """
        now = time.perf_counter()
        if self._length is None:  # the prompt, handed over before prefill
            self._length = int(value.shape[-1])
            return
        self._length += int(value.shape[-1]) if value.dim() > 1 else 1
        steps = self.steps
        steps.append((now, self._length))
        if len(steps) == 1 and self.on_phase is not None:
            self.on_phase("decode")
        if self.on_step is not None:
            self.on_step()

    def end(self) -> None:
        """The streamer's last call: nothing to do."""

    def token_times(self, prompt_len: int, t0: float) -> list[float]:
        """Time of each generated position (seconds since ``t0``), in order."""
        times: list[float] = []
        prev = prompt_len
        for t, length in self.steps:
            new = max(0, length - prev)
            times.extend([t - t0] * new)
            prev = max(prev, length)
        return times


_CLOCK_CLASS: Any = None


def make_clock(on_phase: PhaseCallback | None, sync: Any) -> Any:
    """A :class:`TokenClock` that is also a transformers ``StoppingCriteria``."""
    global _CLOCK_CLASS
    if _CLOCK_CLASS is None:  # made once: transformers is imported only when a model runs
        from transformers import StoppingCriteria

        _CLOCK_CLASS = type("_Clock", (TokenClock, StoppingCriteria), {})
    return _CLOCK_CLASS(on_phase, sync)


def seed_generators(torch: Any, seed: int, cuda: bool) -> None:
    """Seed the generators a run samples from: the CPU's and, on a GPU, every CUDA device's.

    ``torch.manual_seed`` does the same and also asks every other device backend torch
    knows (MPS, XPU, custom devices) whether it is there: 0.2-0.8 ms per call on the
    development machine, inside the measured window at every batch; seeding the CPU
    generator alone takes microseconds.
    """
    torch.default_generator.manual_seed(seed)
    if cuda:
        torch.cuda.manual_seed_all(seed)


def clock_kwargs(clock: TokenClock, *, cuda: bool, num_beams: int | None,
                 taken: Any = ()) -> dict[str, Any]:
    """How ``generate`` gets ``clock``: ``{"streamer": clock}`` or ``{"stopping_criteria": [...]}``.

    A streamer on a CPU without beam search (beam search takes no streamer) when the
    caller's own ``generate`` arguments (``taken``) hold no streamer; else the stopping
    criterion (see the module notes).
    """
    if not cuda and (num_beams or 1) <= 1 and "streamer" not in taken:
        return {"streamer": clock}
    from transformers import StoppingCriteriaList

    return {"stopping_criteria": StoppingCriteriaList([clock])}


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
    override them for this batch, ``seed`` seeds torch's generators first when the
    decoding samples (:func:`seed_generators`; greedy and beam search draw no random
    number, so they are not seeded); ``chat`` (a
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
    hook = clock_kwargs(clock, cuda=cuda, num_beams=gen_config.num_beams, taken=gen_extra)
    if seed is not None and gen_config.do_sample:
        seed_generators(torch, int(seed), cuda)

    if on_phase is not None:
        on_phase("prefill")
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=gen_config, **gen_extra, **hook)
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
