"""The PyTorch backend on the built-in tiny model: every setting maps to the real thing."""

import importlib.util
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402

import llem  # noqa: E402
from llem.backends.base import Backend, Reconfigurable, ReloadNeeded  # noqa: E402
from llem.backends.pytorch import PyTorchBackend  # noqa: E402
from llem.config import ExperimentConfig  # noqa: E402
from llem.errors import ConfigError, MissingDependencyError, ModelNotFoundError, OutOfMemoryError  # noqa: E402
from llem.machine import Machine, get_machine, use_machine  # noqa: E402

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


def test_a_direct_call_passes_sampling_and_beam_fields_as_asked_and_reads_back_what_acts():
    """The backend does not decide the table's skip rules again: transformers gets the fields."""
    b, info = load(decoder__do_sample=False, decoder__temperature=0.7, decoder__top_p=0.9,
                   decoder__length_penalty=1.5)
    assert b._gen_config.temperature == 0.7 and b._gen_config.top_p == 0.9
    assert b._gen_config.length_penalty == 1.5
    assert not info.skipped  # the table, not the backend, says they have no effect
    # what acts under greedy decoding with one beam: no sampling field, no beam field
    assert info.effective["decoder.do_sample"] is False
    for path in ("decoder.temperature", "decoder.top_p", "decoder.length_penalty"):
        assert path not in info.effective
    assert b.generate(PROMPTS).requests[0].output_tokens >= 1
    b.release()


def test_temperature_zero_means_greedy():
    b, info = load(decoder__temperature=0.0)
    assert info.effective["decoder.do_sample"] is False
    assert "greedy" in info.skipped["decoder.temperature"]
    assert b._gen_config.do_sample is False and b._gen_config.temperature != 0.0
    b.release()
    # with do_sample=True the table refuses it, and so does transformers when called directly
    with pytest.raises(ConfigError, match=r"temperature 0 means greedy.*\[rule greedy-temperature-with-sampling\]"):
        ExperimentConfig.from_dict({"decoder": {"temperature": 0.0, "do_sample": True}})
    b, _ = load(decoder__temperature=0.0, decoder__do_sample=True)
    with pytest.raises(ConfigError, match=r"transformers refused the generation settings: `temperature`"):
        b.generate(PROMPTS)
    b.release()


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


def test_num_assistant_tokens_without_assistant_is_passed_as_asked_and_not_read_back():
    b, info = load(pytorch__num_assistant_tokens=4)
    assert b._gen_config.num_assistant_tokens == 4 and "assistant_model" not in b._gen_extra
    assert "pytorch.num_assistant_tokens" not in info.skipped
    assert "pytorch.num_assistant_tokens" not in info.effective and info.max_batch_size is None
    b.release()


def test_prompt_lookup_with_beams_is_not_assisted_generation():
    """Called directly, both go to transformers, which runs beam search: batches stay whole."""
    b, info = load(decoder__num_beams=2, pytorch__prompt_lookup_num_tokens=3)
    assert b._gen_config.prompt_lookup_num_tokens == 3
    assert info.max_batch_size is None and "pytorch.prompt_lookup_num_tokens" not in info.effective
    assert "pytorch.prompt_lookup_num_tokens" not in info.skipped
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


def test_use_cache_off_with_a_cache_implementation():
    with pytest.raises(ConfigError, match=r"use_cache=False turns the cache off.*\[rule cache-implementation-needs-cache\]"):
        ExperimentConfig.from_dict({"pytorch": {"use_cache": False, "cache_implementation": "static"}})
    # called directly, both are passed; with no cache no cache kind is in force
    b, info = load(pytorch__use_cache=False, pytorch__cache_implementation="static")
    assert b._gen_config.use_cache is False and b._gen_config.cache_implementation == "static"
    assert info.effective["pytorch.use_cache"] is False
    assert info.effective["pytorch.cache_implementation"] is None
    assert "pytorch.cache_implementation" not in info.skipped
    assert b.generate(PROMPTS).requests[0].output_tokens >= 1
    b.release()


def test_dtype_and_attention():
    b, info = load(pytorch__dtype="bfloat16", pytorch__attn_implementation="eager")
    assert info.effective["pytorch.dtype"] == "bfloat16"
    assert info.effective["pytorch.attn_implementation"] == "eager"
    b.release()
    with pytest.raises(ConfigError, match="dtype"):
        load(pytorch__dtype="float7")


@pytest.mark.skipif(bool(get_machine().gpus) or importlib.util.find_spec("flash_attn") is not None,
                    reason="flash_attention_2 can load here")
def test_flash_attention_called_directly_without_its_package_says_how_to_install_it():
    with pytest.raises(MissingDependencyError) as err:
        load(pytorch__attn_implementation="flash_attention_2")
    msg = str(err.value)
    assert "FlashAttention2" in msg and "pip install flash-attn" in msg and "sdpa" in msg


def test_placement_and_process_settings():
    b, info = load(pytorch__num_processes=2, pytorch__max_memory={"cpu": "2GiB"},
                   pytorch__low_cpu_mem_usage=True, pytorch__revision="main",
                   pytorch__output_scores=True)
    # llem runs in one process whatever the machine: the GPU count is the table's rule
    assert "accelerate launch" in info.skipped["pytorch.num_processes"]
    assert "devices" not in info.skipped["pytorch.num_processes"]
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


def test_compile_options_without_compile(monkeypatch):
    with pytest.raises(ConfigError, match=r"unless torch_compile is on.*\[rule compile-mode-needs-compile\]"):
        ExperimentConfig.from_dict({"pytorch": {"torch_compile_mode": "reduce-overhead"}})
    # called directly: there is no torch.compile call to give the mode to
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    b, info = load(pytorch__torch_compile_mode="reduce-overhead")
    assert calls == [] and info.effective["pytorch.torch_compile"] is False
    assert "pytorch.torch_compile_mode" not in info.effective and not info.skipped
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
                    decoder__length_penalty=2.0, pytorch__cache_implementation="offloaded_static",
                    max_input_tokens=4)
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
    assert "offloads the cache" in again.skipped["pytorch.cache_implementation"]
    assert b._gen_config.length_penalty == fresh._gen_config.length_penalty == 2.0
    assert "decoder.length_penalty" not in again.effective  # one beam: not in force
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
    with pytest.raises(ConfigError, match="transformers refused the generation settings: `max_new_tokens`"):
        b.reconfigure(ns_config(decoder__max_new_tokens=0))  # the table refuses it; a stand-in does not
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


def test_bnb_4bit_options_without_4bit(monkeypatch):
    with pytest.raises(ConfigError, match=r"only configures 4-bit.*\[rule bnb_4bit_quant_type-needs-4bit\]"):
        ExperimentConfig.from_dict({"pytorch": {"bnb_4bit_quant_type": "nf4"}})
    # called directly: without a load flag there is no BitsAndBytesConfig to give it to
    import transformers

    monkeypatch.setattr(transformers, "BitsAndBytesConfig", None)  # any use would fail
    b, info = load(pytorch__bnb_4bit_quant_type="nf4")
    assert info.effective["pytorch.load_in_4bit"] is False and not info.skipped
    assert "pytorch.bnb_4bit_quant_type" not in info.effective
    b.release()


def test_4bit_and_8bit_together():
    with pytest.raises(ConfigError, match=r"either in 4-bit or in 8-bit.*\[rule 4bit-and-8bit\]"):
        ExperimentConfig.from_dict({"pytorch": {"load_in_4bit": True, "load_in_8bit": True}})
    if importlib.util.find_spec("bitsandbytes") is None:  # called directly: the package first
        with pytest.raises(MissingDependencyError, match=r"bitsandbytes.*pip install 'llem\[pytorch\]'"):
            load(pytorch__load_in_4bit=True, pytorch__load_in_8bit=True)
    else:  # then transformers' own refusal, as llem's error
        with pytest.raises(ConfigError, match="transformers refused the quantization settings: load_in_4bit"):
            load(pytorch__load_in_4bit=True, pytorch__load_in_8bit=True)


# --------------------------------------- through llem.run: the table's skip rules, not the backend's
def run_config(**fields):
    base = {"model": "tiny-random-llama", "repeats": 1, "meter": "estimate", "sampling_interval_s": 0.02,
            "num_prompts": 1, "decoder.max_new_tokens": 4, "warmup.runs": 0}
    base.update(fields)
    return ExperimentConfig.from_dict(base)


def run_kept(cfg, machine=None):
    """``llem.run`` with a backend the test keeps, to read what the backend was given."""
    backend = PyTorchBackend()
    with use_machine(machine or Machine.fake()):
        result = llem.run(cfg, backend=backend)
    return result, backend


def test_run_skips_sampling_fields_under_greedy_by_the_table():
    r, b = run_kept(run_config(**{"decoder.do_sample": False, "decoder.temperature": 0.7,
                                  "decoder.top_p": 0.9}))
    for path in ("decoder.temperature", "decoder.top_p"):
        assert r.skipped[path].startswith("do_sample is False (greedy decoding)")
        assert "[rule sampling-params-greedy]" in r.skipped[path]
        assert path not in r.effective_config
    # the backend never received them
    assert b._gen_config.temperature != 0.7 and b._gen_config.top_p != 0.9
    assert r.effective_config["decoder.do_sample"] is False
    b.release()


def test_run_skips_sampling_under_the_models_greedy_default_and_beam_fields_with_one_beam():
    r, b = run_kept(run_config(**{"decoder.temperature": 0.7, "decoder.length_penalty": 1.5}))
    assert r.environment["facts"]["model_greedy"] is True  # the backend's load fact
    why = r.skipped["decoder.temperature"]
    assert "greedy" in why and "[rule sampling-params-model-greedy]" in why
    assert "decoder.temperature" not in r.effective_config and r.effective_config["decoder.do_sample"] is False
    why = r.skipped["decoder.length_penalty"]
    assert "beam search" in why and "[rule beam-params-single-beam]" in why
    assert b._gen_config.length_penalty != 1.5  # unset before the load: never received
    b.release()


def test_run_skips_num_assistant_tokens_without_an_assistant_by_the_table():
    r, b = run_kept(run_config(**{"pytorch.num_assistant_tokens": 4}))
    why = r.skipped["pytorch.num_assistant_tokens"]
    assert "assistant model" in why and "[rule assistant-tokens-without-assistant]" in why
    assert b._gen_config.num_assistant_tokens != 4 and "pytorch.num_assistant_tokens" not in r.effective_config
    b.release()


def test_run_skips_prompt_lookup_with_beams_by_the_table_and_keeps_whole_batches():
    r, b = run_kept(run_config(**{"decoder.num_beams": 2, "pytorch.prompt_lookup_num_tokens": 3,
                                  "num_prompts": 2, "pytorch.batch_size": 2}))
    why = r.skipped["pytorch.prompt_lookup_num_tokens"]
    assert "one beam" in why and "[rule prompt-lookup-with-beams]" in why
    assert b._gen_config.prompt_lookup_num_tokens is None  # never received
    assert r.effective_config["pytorch.batch_size"] == 2 and "pytorch.batch_size" not in r.skipped
    assert r.runs[0].num_batches == 1
    b.release()


@pytest.mark.parametrize(("attn", "machine", "rule"), [
    ("flash_attention_2", Machine.fake(), "flash-attention-needs-gpu"),
    ("flash_attention_3", Machine.fake(), "flash-attention-needs-gpu"),
    ("flash_attention_2", Machine.fake([("Tesla T4", 7.5)], packages={"flash_attn": True}),
     "flash-attention-2-needs-ampere"),
    ("flash_attention_3", Machine.fake([("NVIDIA A100", 8.0)], packages={"flash_attn_interface": True}),
     "flash-attention-3-needs-hopper"),
    ("flash_attention_3", Machine.fake([("NVIDIA H100", 9.0)]), "flash-attention-3-needs-package"),
])
def test_run_skips_flash_attention_the_machine_cannot_run_by_the_table(attn, machine, rule):
    r, b = run_kept(run_config(**{"pytorch.attn_implementation": attn}), machine)
    assert f"[rule {rule}]" in r.skipped["pytorch.attn_implementation"]
    # the load ran without it: transformers' own default attention
    assert r.effective_config["pytorch.attn_implementation"] in ("sdpa", "eager")
    b.release()


def test_run_with_enough_gpus_reports_only_that_llem_runs_one_process():
    two = Machine.fake([("NVIDIA A100", 8.0), ("NVIDIA A100", 8.0)])
    r, b = run_kept(run_config(**{"pytorch.num_processes": 2}), two)
    why = r.skipped["pytorch.num_processes"]
    assert "accelerate launch" in why and "[rule" not in why  # no rule fired: 2 GPUs are here
    assert r.effective_config["pytorch.num_processes"] == 1
    b.release()


def test_run_skips_bitsandbytes_when_the_machine_lacks_it_by_the_table():
    r, b = run_kept(run_config(**{"pytorch.load_in_8bit": True}), Machine.fake())
    why = r.skipped["pytorch.load_in_8bit"]
    assert "bitsandbytes" in why and "[rule bnb-needs-package]" in why
    assert r.effective_config["pytorch.load_in_8bit"] is False  # loaded unquantized
    b.release()


def test_run_reports_a_compile_failure_with_the_tables_rule(monkeypatch):
    monkeypatch.setattr(torch, "compile", _compile_fails_at_once)
    r, b = run_kept(run_config(**{"pytorch.torch_compile": True}))
    assert r.environment["facts"]["compile_failed"] is True
    assert "[rule torch-compile-may-fail]" in r.skipped["pytorch.torch_compile"]
    assert r.effective_config["pytorch.torch_compile"] is False
    b.release()
