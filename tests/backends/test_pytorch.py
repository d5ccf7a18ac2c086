"""The PyTorch backend on the built-in tiny model: every setting maps to the real thing."""

import importlib.util
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402

from llem.backends.base import Backend, Reconfigurable, ReloadNeeded  # noqa: E402
from llem.backends.pytorch import PyTorchBackend  # noqa: E402
from llem.errors import ConfigError, ModelNotFoundError, OutOfMemoryError  # noqa: E402

DECODER = ("temperature do_sample top_k top_p min_p typical_p repetition_penalty "
           "no_repeat_ngram_size max_new_tokens min_new_tokens num_beams length_penalty "
           "early_stopping seed preset").split()
PYTORCH = ("batch_size batching_strategy max_tokens_per_batch dtype attn_implementation "
           "torch_compile torch_compile_mode torch_compile_backend load_in_4bit load_in_8bit "
           "bnb_4bit_compute_dtype bnb_4bit_quant_type bnb_4bit_use_double_quant use_cache "
           "cache_implementation device_map max_memory low_cpu_mem_usage assistant_model "
           "num_assistant_tokens prompt_lookup_num_tokens output_scores revision "
           "trust_remote_code num_processes").split()
PROMPTS = ["Hello there", "What is the energy of one answer?"]


def ns_config(**settings):
    """A config stand-in where every field is unset unless given as 'section.field'."""
    cfg = SimpleNamespace(
        model="tiny-random-llama", backend="pytorch", passthrough=None, lora_adapter=None,
        lora_merge=None, max_input_tokens=512,
        decoder=SimpleNamespace(**dict.fromkeys(DECODER)),
        pytorch=SimpleNamespace(**dict.fromkeys(PYTORCH)),
    )
    cfg.decoder.max_new_tokens = 8
    for key, value in settings.items():
        section, _, name = key.rpartition("__") if "__" in key else ("", "", key)
        setattr(getattr(cfg, section) if section else cfg, name, value)
    return cfg


def load(**settings):
    b = PyTorchBackend()
    info = b.load(ns_config(**settings))
    return b, info


@pytest.fixture(scope="module")
def greedy():
    b, info = load()
    yield b, info
    b.release()


def test_is_a_backend(greedy):
    b, _ = greedy
    assert isinstance(b, Backend) and b.name == "pytorch"


def test_load_reads_back_effective_values(greedy):
    _, info = greedy
    eff = info.effective
    assert info.num_parameters and info.num_parameters > 100_000
    assert info.max_context_tokens == 2048
    assert eff["pytorch.dtype"] == "float32"
    assert eff["pytorch.device_map"] == "cpu"
    assert eff["pytorch.attn_implementation"] in ("sdpa", "eager")
    assert eff["decoder.do_sample"] is False
    assert eff["decoder.max_new_tokens"] == 8
    assert eff["decoder.num_beams"] == 1
    assert eff["pytorch.use_cache"] is True and eff["pytorch.cache_implementation"] == "dynamic"
    assert eff["pytorch.torch_compile"] is False
    assert eff["pytorch.trust_remote_code"] is False
    assert info.versions["torch"] == torch.__version__
    assert not info.skipped


def test_generate_times_every_token(greedy):
    b, _ = greedy
    phases = []
    out = b.generate(PROMPTS, on_phase=phases.append)
    assert phases == ["prefill", "decode"]
    assert len(out.requests) == 2 and out.duration_s > 0 and 0 < out.prefill_s <= out.duration_s
    for r in out.requests:
        assert 1 <= r.output_tokens <= 8
        assert len(r.token_times_s) == r.output_tokens
        assert r.ttft_s == pytest.approx(out.prefill_s)
        assert all(b >= a for a, b in zip(r.token_times_s, r.token_times_s[1:]))
        assert r.token_times_s[-1] <= out.duration_s
        assert len(r.itl_s) == r.output_tokens - 1
    lens = [b.count_tokens(p) for p in PROMPTS]
    assert [r.input_tokens for r in out.requests] == lens
    assert out.padding_tokens == max(lens) * 2 - sum(lens)
    assert out.total_input_tokens == sum(lens)
    assert out.decode_steps == max(r.output_tokens for r in out.requests)


def test_batched_output_matches_single(greedy):
    """Left padding: a prompt gives the same greedy tokens alone and in a batch."""
    b, _ = greedy
    alone = b.generate([PROMPTS[0]]).requests[0].text
    batched = b.generate(PROMPTS).requests[0].text
    assert alone == batched


def test_per_batch_length_override(greedy):
    b, _ = greedy
    out = b.generate(PROMPTS, max_new_tokens=5, min_new_tokens=5)
    assert [r.output_tokens for r in out.requests] == [5, 5]


def test_truncation_to_max_input_tokens(greedy):
    b, _ = greedy
    long = "energy " * 400
    old = b.max_input_tokens
    b.max_input_tokens = 50
    try:
        out = b.generate([long, "short"])
    finally:
        b.max_input_tokens = old
    assert out.requests[0].truncated and out.requests[0].input_tokens == 50
    assert not out.requests[1].truncated


def test_sampling_fields_skipped_under_greedy():
    b, info = load(decoder__temperature=0.7, decoder__top_p=0.9, decoder__length_penalty=1.5)
    assert "greedy" in info.skipped["decoder.temperature"]
    assert "greedy" in info.skipped["decoder.top_p"]
    assert "beam search" in info.skipped["decoder.length_penalty"]
    assert "decoder.temperature" not in info.effective
    b.release()


def test_temperature_zero_means_greedy():
    b, info = load(decoder__temperature=0.0)
    assert info.effective["decoder.do_sample"] is False
    assert "greedy" in info.skipped["decoder.temperature"]
    b.release()
    with pytest.raises(ConfigError, match="temperature=0"):
        load(decoder__temperature=0.0, decoder__do_sample=True)


def test_sampling_is_seeded():
    b, info = load(decoder__do_sample=True, decoder__temperature=1.5, decoder__top_k=100,
                   decoder__min_p=0.001, decoder__typical_p=0.99, decoder__max_new_tokens=12)
    assert info.effective["decoder.temperature"] == 1.5
    assert info.effective["decoder.top_k"] == 100 and info.effective["decoder.min_p"] == 0.001
    a = [r.text for r in b.generate(PROMPTS, seed=7).requests]
    again = [r.text for r in b.generate(PROMPTS, seed=7).requests]
    other = [r.text for r in b.generate(PROMPTS, seed=8).requests]
    assert a == again and a != other
    b.release()


def test_repetition_settings_change_output():
    plain, _ = load(decoder__max_new_tokens=32)
    base = [r.text for r in plain.generate(PROMPTS).requests]
    plain.release()
    b, info = load(decoder__repetition_penalty=5.0, decoder__no_repeat_ngram_size=1,
                   decoder__max_new_tokens=32)
    assert info.effective["decoder.repetition_penalty"] == 5.0
    assert info.effective["decoder.no_repeat_ngram_size"] == 1
    assert [r.text for r in b.generate(PROMPTS).requests] != base
    b.release()


def test_beam_search():
    b, info = load(decoder__num_beams=3, decoder__length_penalty=0.5, decoder__early_stopping=True)
    assert info.effective["decoder.num_beams"] == 3
    assert info.effective["decoder.length_penalty"] == 0.5
    assert info.effective["decoder.early_stopping"] is True
    out = b.generate(PROMPTS)
    for r in out.requests:
        assert len(r.token_times_s) == r.output_tokens >= 1
    b.release()


def test_min_new_tokens():
    b, info = load(decoder__min_new_tokens=8, decoder__max_new_tokens=8)
    assert info.effective["decoder.min_new_tokens"] == 8
    assert [r.output_tokens for r in b.generate(PROMPTS).requests] == [8, 8]
    b.release()


def test_prompt_lookup_runs_one_prompt_at_a_time():
    b, info = load(pytorch__prompt_lookup_num_tokens=3)
    assert info.max_batch_size == 1
    assert info.effective["pytorch.prompt_lookup_num_tokens"] == 3
    (r,) = b.generate(["the energy the energy the energy"]).requests
    assert len(r.token_times_s) == r.output_tokens >= 1
    b.release()


def test_assistant_model():
    b, info = load(pytorch__assistant_model="tiny-random-llama", pytorch__num_assistant_tokens=4)
    assert info.effective["pytorch.assistant_model"] == "tiny-random-llama"
    assert info.effective["pytorch.num_assistant_tokens"] == 4
    assert info.max_batch_size == 1
    # the assistant is the model itself, so every draft is accepted: same text as plain greedy
    b2, _ = load()
    assert b.generate([PROMPTS[1]]).requests[0].text == b2.generate([PROMPTS[1]]).requests[0].text
    b.release()
    b2.release()


def test_num_assistant_tokens_without_assistant_is_skipped():
    b, info = load(pytorch__num_assistant_tokens=4)
    assert "assistant_model" in info.skipped["pytorch.num_assistant_tokens"]
    b.release()


def test_speculation_with_beams_is_skipped():
    b, info = load(decoder__num_beams=2, pytorch__prompt_lookup_num_tokens=3)
    assert "beam search" in info.skipped["pytorch.prompt_lookup_num_tokens"]
    assert info.max_batch_size is None
    b.release()


@pytest.mark.parametrize("impl", ["static", "offloaded_static", "sliding_window"])
def test_cache_implementation(impl):
    b, info = load(pytorch__cache_implementation=impl)
    if impl == "static":
        assert info.effective["pytorch.cache_implementation"] == "static"
        assert "pytorch.cache_implementation" not in info.skipped
    else:
        assert info.effective["pytorch.cache_implementation"] == "dynamic"
        assert info.skipped["pytorch.cache_implementation"]
    assert all(r.output_tokens for r in b.generate(PROMPTS).requests)
    b.release()


def test_use_cache_off_skips_cache_implementation():
    b, info = load(pytorch__use_cache=False, pytorch__cache_implementation="static")
    assert info.effective["pytorch.use_cache"] is False
    assert "use_cache" in info.skipped["pytorch.cache_implementation"]
    assert b.generate(PROMPTS).requests[0].output_tokens >= 1
    b.release()


def test_dtype_and_attention():
    b, info = load(pytorch__dtype="bfloat16", pytorch__attn_implementation="eager")
    assert info.effective["pytorch.dtype"] == "bfloat16"
    assert info.effective["pytorch.attn_implementation"] == "eager"
    b.release()
    b, info = load(pytorch__attn_implementation="flash_attention_2")
    assert "GPU" in info.skipped["pytorch.attn_implementation"] or "flash" in \
        info.skipped["pytorch.attn_implementation"]
    b.release()
    with pytest.raises(ConfigError, match="dtype"):
        load(pytorch__dtype="float7")


def test_placement_and_process_settings():
    b, info = load(pytorch__num_processes=2, pytorch__max_memory={"cpu": "2GiB"},
                   pytorch__low_cpu_mem_usage=True, pytorch__revision="main",
                   pytorch__output_scores=True)
    assert "2 devices" in info.skipped["pytorch.num_processes"]
    assert "device_map" in info.skipped["pytorch.max_memory"]
    assert "pytorch.low_cpu_mem_usage" in info.skipped
    assert info.effective["pytorch.num_processes"] == 1
    assert info.effective["pytorch.output_scores"] is True
    assert b.generate(PROMPTS).requests[0].output_tokens >= 1
    b.release()
    b, info = load(pytorch__device_map="cpu", pytorch__max_memory={"cpu": "2GiB"})
    assert info.effective["pytorch.max_memory"] == {"cpu": "2GiB"}
    b.release()


def _compile_fails_at_once(fn, **kw):
    raise RuntimeError("backend failed to compile")


def _compile_fails_on_first_call(fn, **kw):
    def compiled(*args, **kwargs):
        raise RuntimeError("backend failed on the first call")

    return compiled


@pytest.mark.parametrize("failing", [_compile_fails_at_once, _compile_fails_on_first_call])
def test_compile_failure_falls_back_to_eager(monkeypatch, failing):
    # The failure is staged: a made-up backend name is refused by the table before torch sees it.
    monkeypatch.setattr(torch, "compile", failing)
    b, info = load(pytorch__torch_compile=True, pytorch__torch_compile_backend="inductor")
    assert info.effective["pytorch.torch_compile"] is False
    assert "eager" in info.skipped["pytorch.torch_compile"]
    assert b.generate(PROMPTS).requests[0].output_tokens >= 1
    b.release()


def test_a_compile_backend_the_table_refuses_is_not_passed():
    with pytest.raises(ConfigError, match="torch_compile_backend='no-such-backend'.*Allowed: inductor"):
        load(pytorch__torch_compile=True, pytorch__torch_compile_backend="no-such-backend")


def test_compile_options_without_compile_are_skipped():
    b, info = load(pytorch__torch_compile_mode="reduce-overhead")
    assert "torch_compile" in info.skipped["pytorch.torch_compile_mode"]
    b.release()


@pytest.mark.slow  # dynamo tracing takes ~5 s even with the eager backend
def test_compile_with_eager_backend():
    b, info = load(pytorch__torch_compile=True, pytorch__torch_compile_backend="eager")
    assert info.effective["pytorch.torch_compile"] is True
    assert info.effective["pytorch.torch_compile_backend"] == "eager"
    assert b.generate(PROMPTS).requests[0].output_tokens >= 1
    b.release()


def test_lora_adapter_merged_and_not():
    base, _ = load()
    plain = [r.text for r in base.generate(PROMPTS).requests]
    base.release()
    outs = []
    for merge in (False, True):
        b, info = load(lora_adapter="tiny-random-llama-lora", lora_merge=merge)
        assert info.effective["experiment.lora_merge"] is merge
        assert info.effective["experiment.lora_adapter"].endswith("tiny-random-llama-lora")
        outs.append([r.text for r in b.generate(PROMPTS).requests])
        b.release()
    assert outs[0] == outs[1] != plain


def test_lora_merge_without_adapter_is_skipped():
    b, info = load(lora_merge=True)
    assert "lora_adapter" in info.skipped["experiment.lora_merge"]
    b.release()


def test_passthrough():
    b, info = load(passthrough={"generate": {"bad_words_ids": [[5]]}})
    assert b._gen_config.bad_words_ids == [[5]]
    b.release()
    with pytest.raises(ConfigError, match="named config fields"):
        load(decoder__num_beams=2, passthrough={"generate": {"num_beams": 3}})


def test_model_not_found_offline():
    with pytest.raises(ModelNotFoundError) as info:
        load(model="nobody-here/no-such-model-xyz")
    assert "nobody-here/no-such-model-xyz" in str(info.value)
    assert "tiny-random-llama" in str(info.value)


def test_out_of_memory_names_settings_to_lower(greedy, monkeypatch):
    b, _ = greedy

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(b.model, "generate", boom)
    with pytest.raises(OutOfMemoryError) as info:
        b.generate(PROMPTS)
    msg = str(info.value)
    for name in ("batch_size", "max_new_tokens", "dtype", "load_in_8bit"):
        assert name in msg


def test_release_twice_and_generate_after_release():
    b, _ = load()
    b.release()
    b.release()
    with pytest.raises(RuntimeError, match="load"):
        b.generate(PROMPTS)


def test_reconfigure_applies_decode_time_settings_to_the_loaded_model():
    assert isinstance(PyTorchBackend(), Reconfigurable)  # reuse is part of the protocol
    b, info = load(decoder__max_new_tokens=3)
    model = b.model
    assert [r.output_tokens for r in b.generate(PROMPTS).requests] == [3, 3]
    cfg = ns_config(decoder__max_new_tokens=5, decoder__do_sample=True, decoder__temperature=0.7,
                    decoder__length_penalty=2.0, max_input_tokens=4)
    again = b.reconfigure(cfg)
    assert b.model is model  # not loaded again
    out = b.generate(PROMPTS).requests
    assert [r.output_tokens for r in out] == [5, 5]  # the next generate takes the new length
    assert [r.input_tokens for r in out] == [4, 4] and all(r.truncated for r in out)
    assert again.effective["decoder.max_new_tokens"] == 5
    assert again.effective["decoder.temperature"] == 0.7
    assert again.load_s < info.load_s
    # the same LoadInfo as a fresh load of that config would give
    fresh = PyTorchBackend()
    fresh_info = fresh.load(cfg)
    assert again.effective == fresh_info.effective and again.skipped == fresh_info.skipped
    assert "decoder.length_penalty" in again.skipped
    assert again.notes == fresh_info.notes and again.max_batch_size == fresh_info.max_batch_size
    # and back: a sampling field is no longer in force under greedy decoding
    back = b.reconfigure(ns_config(decoder__max_new_tokens=2))
    assert "decoder.temperature" not in back.effective and back.effective["decoder.max_new_tokens"] == 2
    assert [r.output_tokens for r in b.generate(PROMPTS).requests] == [2, 2]
    fresh.release()
    b.release()


def test_reconfigure_asks_for_a_reload_when_it_cannot_apply_the_config():
    b = PyTorchBackend()
    with pytest.raises(ReloadNeeded, match="no model is loaded"):
        b.reconfigure(ns_config())
    b.load(ns_config())
    with pytest.raises(ReloadNeeded, match="pytorch.dtype"):
        b.reconfigure(ns_config(pytorch__dtype="float16"))  # a load-time setting
    with pytest.raises(ConfigError, match="greedy"):
        b.reconfigure(ns_config(decoder__temperature=0.0, decoder__do_sample=True))
    b.release()
    with pytest.raises(ReloadNeeded, match="no model is loaded"):
        b.reconfigure(ns_config())
    # the draft model is set up with the generation settings: the backend asks for a reload
    a, _ = load(pytorch__assistant_model="tiny-random-llama")
    with pytest.raises(ReloadNeeded, match="assistant_model"):
        a.reconfigure(ns_config(pytorch__assistant_model="tiny-random-llama", decoder__max_new_tokens=2))
    a.release()


needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="bitsandbytes is not installed")


@needs_bnb
def test_bitsandbytes_8bit_on_cpu():
    b, info = load(pytorch__load_in_8bit=True)
    assert info.effective["pytorch.load_in_8bit"] is True
    assert info.effective["pytorch.device_map"] == {"": "cpu"} or "cpu" in str(
        info.effective["pytorch.device_map"])
    out = b.generate(PROMPTS)
    assert all(len(r.token_times_s) == r.output_tokens >= 1 for r in out.requests)
    b.release()


@needs_bnb
def test_bitsandbytes_4bit_on_cpu():
    b, info = load(pytorch__load_in_4bit=True, pytorch__bnb_4bit_compute_dtype="float32",
                   pytorch__bnb_4bit_quant_type="nf4", pytorch__bnb_4bit_use_double_quant=True)
    eff = info.effective
    assert eff["pytorch.load_in_4bit"] is True
    assert eff["pytorch.bnb_4bit_quant_type"] == "nf4"
    assert eff["pytorch.bnb_4bit_use_double_quant"] is True
    assert "float32" in str(eff["pytorch.bnb_4bit_compute_dtype"])
    _, plain = load()
    # logical parameter count, not packed 4-bit storage
    assert info.num_parameters == plain.num_parameters
    out = b.generate(PROMPTS)
    assert all(len(r.token_times_s) == r.output_tokens >= 1 for r in out.requests)
    b.release()


def test_bnb_4bit_options_without_4bit_are_skipped():
    b, info = load(pytorch__bnb_4bit_quant_type="nf4")
    assert "load_in_4bit" in info.skipped["pytorch.bnb_4bit_quant_type"]
    b.release()
    with pytest.raises(ConfigError, match="choose one"):
        load(pytorch__load_in_4bit=True, pytorch__load_in_8bit=True)
