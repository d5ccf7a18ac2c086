"""The ``env.*`` facts the skip rules read, and who produces each one.

A rule's condition on ``env.x`` never fires unless something supplies ``x`` at run time, so
each fact names its producer:

- ``machine``: :meth:`llem.machine.Machine.facts` (GPUs, compute capability, packages),
  known before the model is loaded;
- ``load``: the backend's :class:`~llem.backends.base.LoadInfo` ``facts``, known once the
  model is loaded, or its ``probe_facts(config)`` where the checkpoint answers before
  loading (vLLM: ``model_prequantized`` from the checkpoint's config);
- ``outputs``: the runner, from what the measured runs generated;
- ``check``: a structural check of the rule itself (:data:`llem.spec.rules.CHECKS`).

``env.packages.NAME`` is one fact per import name (from the machine).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    """One environment fact: its name (without ``env.``), its producer and what it means."""

    name: str
    producer: str
    help: str


#: Producers, in the order a run learns their facts.
PRODUCERS = ("machine", "load", "outputs", "check")

ENV_FACTS: tuple[Fact, ...] = (
    Fact("gpu_count", "machine", "how many NVIDIA GPUs the machine has"),
    Fact("cc", "machine", "the compute capability of the GPU a run uses, CUDA's device 0 (None: no "
                          "visible GPU)"),
    Fact("cuda", "machine", "whether a run here sees an NVIDIA GPU (CUDA_VISIBLE_DEVICES may hide them)"),
    Fact("packages", "machine", "import name -> installed, for the packages the table names"),
    Fact("compile_failed", "load", "torch.compile failed and the model runs eager"),
    Fact("model_prequantized", "load", "the checkpoint carries its own quantization config"),
    Fact("default_dtype", "load", "the dtype the weights load in when pytorch.dtype is unset (transformers "
                                  "5: the checkpoint's; 4.x: float32)"),
    Fact("model_greedy", "load", "the model's own generation config decodes greedily (do_sample unset "
                                 "means greedy there)"),
    Fact("prompt_overlap", "outputs", "the outputs copy word n-grams from their prompts"),
    Fact("fp8_requested", "check", "an fp8 quantization was asked for"),
    Fact("bnb_requested", "check", "bitsandbytes 4-bit or 8-bit loading was asked for"),
)


def fact(path: str) -> Fact:
    """The fact an ``env.*`` path reads (``env.packages.flash_attn`` reads ``packages``).

    Raises
    ------
    KeyError
        For a path that no producer supplies.
    """
    name = path.removeprefix("env.").split(".", 1)[0]
    for f in ENV_FACTS:
        if f.name == name:
            return f
    raise KeyError(f"no producer supplies {path!r}; known facts: {', '.join(f.name for f in ENV_FACTS)}")


__all__ = ["ENV_FACTS", "PRODUCERS", "Fact", "fact"]
