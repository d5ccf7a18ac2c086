"""Where each backend's engine arguments go: the calls and config objects rows name as targets.

A row says where it goes with ``engine_target`` (see :class:`llem.spec.model.Param`); these
rows say what each target is, which nested config object sits in which call, and which
arguments llem passes there that no row names (``protocol``: the model to load, or an
argument derived from a row, such as TensorRT-LLM's ``use_beam_search``). Facts and sources:
``docs/engines.md``.
"""

from __future__ import annotations

from llem.spec.model import EngineTarget as T

ENGINE_TARGETS: tuple[T, ...] = (
    # --- PyTorch (Hugging Face transformers) ---------------------------------------------------
    T("pytorch", "from_pretrained", "AutoModelForCausalLM.from_pretrained",
      protocol={"gguf_file": "the model's GGUF file, when llem.models resolves the model to one"}),
    T("pytorch", "tokenizer", "AutoTokenizer.from_pretrained", passthrough=False,
      protocol={"gguf_file": "the model's GGUF file, when llem.models resolves the model to one"}),
    T("pytorch", "quantization_config", "BitsAndBytesConfig (quantization_config)",
      parent="from_pretrained", passthrough=False),
    T("pytorch", "generation", "GenerationConfig",
      protocol={
          "return_dict_in_generate": "set with pytorch.output_scores: the scores come back in a dict",
          "disable_compile": "set when llem compiled the forward pass itself (pytorch.torch_compile), "
                             "or torch_compile is False",
          "pad_token_id": "the tokenizer's pad token, when the model's generation config has none",
      }),
    T("pytorch", "generate", "model.generate", note="keyword arguments of the generate() call",
      protocol={
          "tokenizer": "the model's tokenizer, for universal assisted decoding (an assistant with "
                       "another vocabulary)",
          "assistant_tokenizer": "the assistant's tokenizer, in that same case",
      }),
    T("pytorch", "compile", "torch.compile", passthrough=False),
    # --- vLLM ----------------------------------------------------------------------------------
    T("vllm", "llm", "LLM / EngineArgs",
      protocol={"model": "what to load: experiment.model resolved to a local path or hub id"}),
    T("vllm", "speculative_config", "EngineArgs.speculative_config", parent="llm",
      passthrough=False,
      protocol={"method": "'ngram' when vllm.speculative_model is 'ngram' (a drafter, not a model)"}),
    T("vllm", "attention_config", "EngineArgs.attention_config",
      parent="llm", passthrough=False),
    T("vllm", "sampling", "SamplingParams",
      note="no request is seeded: decoder.seed seeds the engine once (LLM(seed=...))"),
    T("vllm", "beam", "BeamSearchParams", note="beam search runs through LLM.beam_search"),
    # --- TensorRT-LLM --------------------------------------------------------------------------
    T("tensorrt", "llm", "LLM",
      protocol={
          "model": "what to load: experiment.model resolved, or a cached engine folder",
          "tokenizer": "the model's tokenizer, when a cached engine folder is loaded",
      }),
    T("tensorrt", "quant_config", "QuantConfig", parent="llm", note="QuantAlgo members, by name",
      passthrough=False),
    T("tensorrt", "kv_cache_config", "KvCacheConfig", parent="llm", passthrough=False),
    T("tensorrt", "build_config", "BuildConfig",
      note="passed only when a field only it takes is set; the LLM's size limits are then copied in",
      parent="llm", passthrough=False),
    T("tensorrt", "sampling", "SamplingParams",
      protocol={
          "use_beam_search": "True when decoder.num_beams > 1",
          "best_of": "decoder.num_beams, when decoder.n asks for fewer returned sequences",
      }),
)

__all__ = ["ENGINE_TARGETS"]
