"""The PyTorch backend: Hugging Face transformers ``generate`` with real per-token timing.

Every field of the ``pytorch`` and ``decoder`` config sections maps to the real
transformers or torch setting; which setting, and where it goes (``from_pretrained``,
``BitsAndBytesConfig``, ``GenerationConfig``, ``torch.compile``), is in the table's rows
(``spec.engine_args("pytorch")``). A field left unset (None) is not passed, so transformers
uses its own default; after loading, the value transformers actually uses is read back
(from ``model.generation_config``, ``model.config`` and the weights' dtype) into
:attr:`LoadInfo.effective`.

The rooms, one job each:

- :mod:`~llem.backends.pytorch.backend`: :class:`PyTorchBackend`, the protocol (``load``,
  ``reconfigure``, ``generate``, ``count_tokens``, ``release``) over the others;
- :mod:`~llem.backends.pytorch.loading`: the model, tokenizer, quantization, placement,
  LoRA adapter, draft model and ``torch.compile`` (with its eager fallback), and the
  read-back of what loaded;
- :mod:`~llem.backends.pytorch.generation`: ``GenerationConfig`` from the table's rows and
  its read-back;
- :mod:`~llem.backends.pytorch.clock`: the per-token clock and one timed ``generate`` call;
- :mod:`~llem.backends.pytorch.failures`: not found, out of memory, missing packages and
  refused settings as llem's errors.

Who decides what has no effect: the table. The skip rules of ``llem/spec/rules.py`` are
applied by :func:`llem.run`, which leaves every field a rule skips unset in the config the
backend receives and reports the rule's reason (with ``[rule id]``) in
``result.skipped``; config validation refuses every combination a rule refuses before a
backend sees it. The backend does not decide those again. It reports the facts a rule
needs that only a load can tell (``LoadInfo.facts``: ``compile_failed``,
``model_prequantized``, ``model_greedy``), and in ``LoadInfo.skipped`` only what no rule
states: facts of the loaded model and its placement (``max_memory`` without a device map,
``low_cpu_mem_usage`` on transformers 5, an offloaded cache for a model not on a GPU,
``sliding_window`` for a model without one, ``lora_merge`` without an adapter,
``num_processes`` > 1 in llem's one process, ``temperature=0`` read as greedy, a failed
``torch.compile``).

Called directly (not through :func:`llem.run`), the backend passes each set field to its
engine target as asked, whatever a rule would say: transformers ignores a sampling
parameter under greedy decoding or ``length_penalty`` without beams, and refuses what it
cannot do with its own message, given as llem's error (``MissingDependencyError`` with the
install command for ``flash_attention_2`` without flash-attn or bitsandbytes absent,
``ConfigError`` for a combination transformers refuses). A field whose target the config
does not build has nothing to go to and is dropped without a report:
``torch_compile_mode``/``torch_compile_backend`` without ``torch_compile`` (no
``torch.compile`` call) and ``bnb_4bit_*`` without ``load_in_4bit``/``load_in_8bit`` (no
``BitsAndBytesConfig``). Check such a config with ``ExperimentConfig.skipped(facts)`` to
see the table's reasons.

torch and transformers are imported in :meth:`PyTorchBackend.load`, never at import.
"""

from __future__ import annotations

from llem.backends.pytorch.backend import PyTorchBackend
from llem.backends.pytorch.generation import BEAM_FIELDS, DECODER_FIELDS, SAMPLING_FIELDS
from llem.backends.pytorch.loading import torch_value

#: The table's ``"torch.<name>"`` engine values as torch objects (kept under its old name).
_torch_value = torch_value

__all__ = ["BEAM_FIELDS", "DECODER_FIELDS", "SAMPLING_FIELDS", "PyTorchBackend", "torch_value"]
