"""``PyTorchBackend``: the backend protocol over the loading, generation and clock rooms."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from llem.backends.base import (
    BatchOutput,
    LoadInfo,
    PhaseCallback,
    ReloadNeeded,
    cuda_ordinals,
    load_time_values,
)
from llem.backends.loadsteps import library_bars_as_steps, step
from llem.backends.pytorch.clock import timed_generate
from llem.backends.pytorch.failures import free_accelerator_memory
from llem.backends.pytorch.generation import Decode, decode_settings, split_passthrough
from llem.backends.pytorch.loading import (
    Loaded,
    check_generate_passthrough,
    check_transformers,
    load_draft,
    load_model,
    probe_facts,
    trial_compile,
    uncompile,
)
from llem.backends.table import decoder_of, refuse_untranslatable
from llem.backends.table import field as _get
from llem.errors import missing_dependency
from llem.prompts.chat import ChatPrompting, chat_prompting


class PyTorchBackend:
    """Run a causal language model with Hugging Face transformers.

    Attributes
    ----------
    model, tokenizer
        The loaded transformers objects (None before :meth:`load` and after
        :meth:`release`).
    assistant_model, assistant_tokenizer
        The draft model of assisted generation, when ``pytorch.assistant_model`` is set.
    info : LoadInfo or None
        What the last :meth:`load` (or :meth:`reconfigure`) resolved.
    device : str
        Where the weights are (``cpu``, ``cuda:0``).
    max_input_tokens : int or None
        Prompts are cut to this many tokens (their start kept, and a chat template's
        generation prompt).
    chat : ChatPrompting or None
        How prompts become tokens (``experiment.chat_template``): in the tokenizer's chat
        template or as plain text, and why.
    """

    name = "pytorch"

    def __init__(self) -> None:
        self.model: Any = None
        self.tokenizer: Any = None
        self.assistant_model: Any = None
        self.assistant_tokenizer: Any = None
        self.info: LoadInfo | None = None
        self.device: str = "cpu"
        self.max_input_tokens: int | None = None
        self.chat: ChatPrompting | None = None
        self._gen_config: Any = None
        self._gen_extra: dict[str, Any] = {}
        self._loaded: Loaded | None = None
        self._decode: Decode | None = None

    # ------------------------------------------------------------------ loading
    def probe_facts(self, config: Any) -> dict[str, Any]:
        """The facts of the table's skip rules that the checkpoint's config tells before loading.

        ``default_dtype``: the dtype an unset ``pytorch.dtype`` loads
        (:func:`~llem.backends.pytorch.loading.probe_facts`); ``{}`` when it cannot be read.
        """
        return probe_facts(config)

    def load(self, config: Any) -> LoadInfo:
        """Load the model, tokenizer, adapter and generation settings for ``config``.

        Two halves: the load-time settings (weights, dtype, quantization, attention,
        placement, adapter, compile), then the decode-time ones, applied by the same code
        as :meth:`reconfigure`.

        Returns
        -------
        LoadInfo
            With ``effective`` (``section.field`` -> value transformers uses), ``skipped``
            (what the backend could not apply, and why) and ``facts`` (``compile_failed``,
            ``model_prequantized``, ``model_greedy``, ``default_dtype`` with an unset dtype,
            for the table's skip rules).

        Raises
        ------
        MissingDependencyError
            torch, transformers, bitsandbytes, peft, gguf or an attention package absent
            when needed, or transformers older than 4.56.
        ModelNotFoundError
            The model or adapter cannot be found.
        ConfigError
            A value the table refuses, or transformers refuses the combination of settings.
        """
        step("importing torch and transformers")
        try:
            import torch
            import transformers
        except ImportError as exc:
            pkg = "torch" if "torch" in str(exc) and "transformers" not in str(exc) else "transformers"
            raise missing_dependency(pkg, "pytorch", "the pytorch backend") from None

        check_transformers(transformers.__version__)
        t_start = time.perf_counter()
        refuse_untranslatable(config, "pytorch", decoder=decoder_of(config))
        passthrough = split_passthrough(_get(config, "passthrough") or {})
        check_generate_passthrough(config, passthrough["generate"], torch, transformers)
        with library_bars_as_steps():  # transformers' bars become steps (llem.backends.loadsteps)
            loaded = load_model(config, passthrough["load"], torch, transformers)
            self._loaded = loaded
            self.model, self.tokenizer, self.device = loaded.model, loaded.tokenizer, loaded.device
            step("setting up generation")
            self._apply(config, passthrough["generate"])
            if loaded.compiled:
                step("a first generation, to see that torch.compile works")
                trial_compile(loaded, self._gen_config, self._gen_extra, torch)
        self.info = self._load_info(time.perf_counter() - t_start)
        return self.info

    def reconfigure(self, config: Any) -> LoadInfo:
        """Apply ``config``'s decode-time settings to the loaded model, without loading it.

        The decoder section, cache, speculation by prompt lookup, output scores, the
        ``generate`` pass-through arguments and ``max_input_tokens`` are set as
        :meth:`load` sets them; the model, tokenizer and adapter stay as loaded.

        Returns
        -------
        LoadInfo
            As :meth:`load` would return for ``config``, with ``load_s`` the time this
            call took.

        Raises
        ------
        ReloadNeeded
            No model is loaded, a load-time setting of ``config`` differs from the loaded
            model's, or an ``assistant_model`` is used (transformers takes the draft
            model with the generation settings, so it is loaded again).
        ConfigError
            transformers refuses the generation settings.
        """
        loaded = self._loaded
        if self.model is None or loaded is None:
            raise ReloadNeeded("PyTorchBackend.reconfigure: no model is loaded; call load(config).")
        wanted = load_time_values(config)
        changed = [p for p, v in wanted.items() if loaded.load_values.get(p) != v]
        if changed:
            raise ReloadNeeded(
                f"PyTorchBackend.reconfigure: load-time setting(s) {', '.join(changed)} differ "
                "from the loaded model's; load the model again."
            )
        if _get(_get(config, "pytorch"), "assistant_model"):
            raise ReloadNeeded(
                "PyTorchBackend.reconfigure: pytorch.assistant_model is set; the draft model "
                "is set up with the generation settings, so the model is loaded again."
            )
        t0 = time.perf_counter()
        refuse_untranslatable(config, "pytorch", decoder=decoder_of(config))
        self._apply(config, split_passthrough(_get(config, "passthrough") or {})["generate"])
        self.info = self._load_info(time.perf_counter() - t0)
        return self.info

    def _apply(self, config: Any, passthrough: dict[str, Any]) -> None:
        """The decode-time half of :meth:`load`: the draft model, generation settings, readback."""
        loaded = self._loaded
        if loaded is None:
            raise RuntimeError("PyTorchBackend._apply called before the model was loaded.")
        draft = None
        name = _get(_get(config, "pytorch"), "assistant_model")
        if name:
            draft = load_draft(name, self.model, self.tokenizer, self.device)
            self.assistant_model, self.assistant_tokenizer = draft.model, draft.tokenizer
        decode = decode_settings(self.model, self.tokenizer, config, on_gpu=self.device.startswith("cuda"),
                                 compiled=loaded.compiled, draft=draft, passthrough=passthrough)
        self._decode = decode
        self._gen_config, self._gen_extra = decode.gen_config, decode.extra
        self.max_input_tokens = _get(config, "max_input_tokens")
        self.chat = chat_prompting(self.tokenizer, _get(config, "chat_template"), loaded.spec.name)

    def _load_info(self, load_s: float) -> LoadInfo:
        """The LoadInfo of the load-time half and the decode-time half now in force."""
        loaded, decode, chat = self._loaded, self._decode, self.chat
        if loaded is None or decode is None or chat is None:
            raise RuntimeError("PyTorchBackend._load_info called before load().")
        return LoadInfo(
            model_id=loaded.spec.name,
            num_parameters=loaded.num_parameters,
            load_s=load_s,
            effective={**loaded.effective, **decode.effective, **chat.effective},
            skipped={**loaded.skipped, **decode.skipped},
            versions=dict(loaded.versions),
            device=self.device,
            max_context_tokens=loaded.max_context_tokens,
            max_batch_size=decode.max_batch_size,
            notes=(*loaded.notes, *decode.notes, chat.note),
            model_path=loaded.spec.id_or_path if loaded.spec.is_local else None,
            facts=dict(loaded.facts),
            cuda_devices=cuda_ordinals(p.device for p in getattr(loaded.model, "parameters", list)()),
        )

    # --------------------------------------------------------------- generation
    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in the model's tokens as it is given them.

        Special tokens included, and the chat template's tokens when one is applied
        (:attr:`chat`).
        """
        if self.chat is not None:
            return self.chat.count(str(text))
        return len(self.tokenizer(str(text))["input_ids"])

    def generate(
        self,
        prompts: Sequence[Any],
        on_phase: PhaseCallback | None = None,
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        seed: int | None = None,
    ) -> BatchOutput:
        """Generate one left-padded batch, timing every token.

        Parameters
        ----------
        prompts : sequence of str (or objects whose ``str`` is the prompt)
            The batch.
        on_phase : callable, optional
            Called with ``"prefill"`` just before generation starts and ``"decode"`` when
            the first token exists.
        max_new_tokens, min_new_tokens : int, optional
            Override the configured lengths for this batch (synthetic prompts with an
            exact output length).
        seed : int, optional
            Seeds torch's generators before this batch, for reproducible sampling.

        Raises
        ------
        OutOfMemoryError
            With the settings to lower.
        ConfigError
            transformers refuses the generation settings when generating.
        """
        if self.model is None or self._loaded is None:
            raise RuntimeError("PyTorchBackend.generate called before load() or after release().")
        return timed_generate(
            self.model, self.tokenizer, self._gen_config, self._gen_extra, prompts,
            device=self.device, dtype=self._loaded.dtype, limit=self.max_input_tokens,
            on_phase=on_phase, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, seed=seed,
            chat=self.chat,
        )

    def release(self) -> None:
        """Free the model, tokenizer and assistant; safe to call twice.

        A compiled model is uncompiled first (its own ``forward`` back, dynamo reset: see
        :func:`~llem.backends.pytorch.loading.uncompile`), then garbage is collected and
        the CUDA allocator's cache handed back, so the weights leave the GPU.
        """
        had = self.model is not None
        if self._loaded is not None:
            import torch

            uncompile(self._loaded, torch)
        self.model = self.tokenizer = self.assistant_model = self.assistant_tokenizer = None
        self._gen_config, self._gen_extra = None, {}
        self._loaded = self._decode = self.chat = None
        if had:
            free_accelerator_memory()
