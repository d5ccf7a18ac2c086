"""The vLLM backend's translation layer, and its run code driven by a stand-in engine.

Every expected argument name below is vLLM's own (see docs/engines.md for where each lives
in vLLM's source). The run-code tests install fake ``vllm`` and ``torch`` modules, so they
exercise load/generate/release without a GPU; the real generation test at the end is
marked ``vllm`` and runs only where vLLM and a CUDA GPU are present.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import sys
import types
from types import SimpleNamespace

import pytest

from llem.backends import vllm as vb
from llem.config import ExperimentConfig
from llem.errors import BackendUnavailableError, ConfigError, LlemError, MissingDependencyError
from llem.machine import Gpu, Machine, use_machine, visible_gpus

DECODER_FIELDS = (
    "temperature do_sample top_k top_p min_p typical_p repetition_penalty presence_penalty "
    "frequency_penalty no_repeat_ngram_size max_new_tokens min_new_tokens num_beams "
    "length_penalty early_stopping seed ignore_eos n"
).split()
VLLM_FIELDS = (
    "dtype max_num_seqs max_num_batched_tokens gpu_memory_utilization tensor_parallel_size "
    "pipeline_parallel_size enable_prefix_caching enable_chunked_prefill kv_cache_dtype "
    "block_size max_model_len enforce_eager quantization swap_space cpu_offload_gb "
    "speculative_model num_speculative_tokens disable_custom_all_reduce kv_cache_memory_bytes "
    "compilation_config attention_backend flash_attn_version trust_remote_code revision"
).split()

#: EngineArgs field names that llem may emit (vLLM arg_utils.py, see docs/engines.md).
VLLM_ENGINE_ARGS = {
    "model",
    "seed",
    "speculative_config",
    "attention_config",
    *(f for f in VLLM_FIELDS if f not in {"speculative_model", "num_speculative_tokens"}),
} - {"flash_attn_version"}
#: SamplingParams field names (vLLM sampling_params.py).
VLLM_SAMPLING_ARGS = {
    "n",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "ignore_eos",
    "max_tokens",
    "min_tokens",
}
#: BeamSearchParams field names.
VLLM_BEAM_ARGS = {"beam_width", "max_tokens", "ignore_eos", "temperature", "length_penalty"}

HAVE_REAL_CONFIG = importlib.util.find_spec("llem.config") is not None


def standin(model="owner/model", max_input_tokens=None, passthrough=None, decoder=None, vllm=None):
    """A plain stand-in config: every field present, None = unset."""
    dec = {f: None for f in DECODER_FIELDS} | (decoder or {})
    eng = {f: None for f in VLLM_FIELDS} | (vllm or {})
    return SimpleNamespace(
        model=model,
        backend="vllm",
        max_input_tokens=max_input_tokens,
        passthrough=passthrough,
        decoder=SimpleNamespace(**dec),
        vllm=SimpleNamespace(**eng),
        tensorrt=None,
    )


def real(decoder=None, vllm=None, passthrough=None, model="owner/model", max_input_tokens=None):
    """The same settings on a real ExperimentConfig (skips if llem.config is unusable).

    llem's own defaults (seed 42, max_new_tokens 128, trust_remote_code False...) are set
    there too; tests compare against :func:`baseline` to see only what the settings add.
    """
    if not HAVE_REAL_CONFIG:
        pytest.skip("llem.config is not there yet")
    try:
        from llem.config import ExperimentConfig
    except Exception as exc:  # noqa: BLE001 - a config module under construction
        pytest.skip(f"llem.config does not import: {exc}")
    cfg = ExperimentConfig(backend="vllm", model=model)
    values: dict = {"decoder": decoder or {}, "vllm": vllm or {}}
    if passthrough:
        values["passthrough"] = passthrough
    if max_input_tokens is not None:
        values["max_input_tokens"] = max_input_tokens
    cfg.update(values)
    return cfg


@pytest.fixture(params=["standin", "real"])
def make(request):
    """Build a config from section dicts, as a stand-in or as a real ExperimentConfig."""
    if request.param == "standin":
        return lambda **kw: standin(**kw)
    return lambda **kw: real(**kw)


def added(fn, cfg, make):
    """What ``fn`` returns for ``cfg`` beyond what it returns for an unset config."""
    kwargs, skipped = fn(cfg)
    base, base_skipped = fn(make())
    extra = {k: v for k, v in kwargs.items() if base.get(k, object()) != v}
    return extra, {k: v for k, v in skipped.items() if k not in base_skipped}


# -- engine arguments -----------------------------------------------------------------


def test_unset_config_passes_only_the_model():
    kwargs, skipped = vb.vllm_engine_kwargs(standin())
    assert kwargs == {"model": "owner/model"}
    assert skipped == {}


def test_model_override_is_what_gets_loaded():
    kwargs, _ = vb.vllm_engine_kwargs(standin(), model="/models/local")
    assert kwargs["model"] == "/models/local"


def test_same_name_fields_pass_under_vllms_names(make):
    values = {
        "dtype": "bfloat16",
        "max_num_seqs": 64,
        "max_num_batched_tokens": 4096,
        "gpu_memory_utilization": 0.8,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "enable_prefix_caching": False,
        "enable_chunked_prefill": True,
        "kv_cache_dtype": "fp8_e5m2",
        "block_size": 32,
        "max_model_len": 2048,
        "enforce_eager": True,
        "quantization": "awq",
        "swap_space": 2.0,
        "cpu_offload_gb": 1.5,
        "disable_custom_all_reduce": True,
        "compilation_config": {"level": 3},
        "attention_backend": "FLASHINFER",
        "trust_remote_code": True,
        "revision": "abc123",
    }
    kwargs, skipped = added(vb.vllm_engine_kwargs, make(vllm=values), make)
    assert kwargs == values
    assert skipped == {}
    assert set(kwargs) <= VLLM_ENGINE_ARGS


def test_float32_dtype_is_passed(make):
    # vLLM accepts float32 (the seed's precision list said fp16/bf16 only).
    kwargs, _ = vb.vllm_engine_kwargs(make(vllm={"dtype": "float32"}))
    assert kwargs["dtype"] == "float32"


def test_speculative_fields_become_speculative_config(make):
    cfg = make(vllm={"speculative_model": "owner/draft", "num_speculative_tokens": 4})
    kwargs, skipped = vb.vllm_engine_kwargs(cfg)
    assert kwargs["speculative_config"] == {"model": "owner/draft", "num_speculative_tokens": 4}
    assert "speculative_model" not in kwargs and "num_speculative_tokens" not in kwargs
    assert skipped == {}


@pytest.mark.parametrize("name", ["ngram", "[ngram]"])
def test_ngram_drafter_is_a_method_not_a_model(name):
    cfg = standin(vllm={"speculative_model": name, "num_speculative_tokens": 3})
    kwargs, _ = vb.vllm_engine_kwargs(cfg)
    assert kwargs["speculative_config"] == {"method": "ngram", "num_speculative_tokens": 3}


def test_speculative_tokens_without_a_draft_are_skipped():
    kwargs, skipped = vb.vllm_engine_kwargs(standin(vllm={"num_speculative_tokens": 3}))
    assert "speculative_config" not in kwargs
    assert "speculative_model" in skipped["vllm.num_speculative_tokens"]


def test_kv_cache_bytes_with_gpu_memory_utilization():
    with pytest.raises(ConfigError, match=r"replaces gpu_memory_utilization.*\[rule vllm-kv-bytes-and-utilization\]"):
        ExperimentConfig.from_dict({"backend": "vllm", "vllm": {"kv_cache_memory_bytes": 2**30,
                                                                "gpu_memory_utilization": 0.5}})
    # called directly, both go to vLLM as asked (it sizes the cache by the bytes)
    cfg = standin(vllm={"kv_cache_memory_bytes": 2**30, "gpu_memory_utilization": 0.5})
    kwargs, skipped = vb.vllm_engine_kwargs(cfg)
    assert kwargs["kv_cache_memory_bytes"] == 2**30 and kwargs["gpu_memory_utilization"] == 0.5
    assert skipped == {}


def test_flash_attn_version_goes_into_attention_config():
    kwargs, _ = vb.vllm_engine_kwargs(standin(vllm={"flash_attn_version": 3}))
    assert kwargs["attention_config"] == {"flash_attn_version": 3}


def test_decoder_seed_seeds_the_engine_not_each_request(make):
    kwargs, _ = vb.vllm_engine_kwargs(make(decoder={"seed": 7}))
    assert kwargs["seed"] == 7
    sampling, skipped = vb.vllm_sampling_kwargs(make(decoder={"seed": 7}))
    assert "seed" not in sampling and "decoder.seed" not in skipped


def test_passthrough_is_merged(make):
    kwargs, _ = vb.vllm_engine_kwargs(make(passthrough={"max_logprobs": 5}))
    assert kwargs["max_logprobs"] == 5


def test_passthrough_repeating_a_produced_argument_is_refused():
    cfg = standin(
        vllm={"speculative_model": "owner/draft", "num_speculative_tokens": 2},
        passthrough={"speculative_config": {"method": "ngram"}},
    )
    with pytest.raises(ConfigError, match="speculative_config"):
        vb.vllm_engine_kwargs(cfg)


def test_lora_is_reported_as_skipped():
    cfg = standin()
    cfg.lora_adapter = "owner/adapter"
    _, skipped = vb.vllm_engine_kwargs(cfg)
    assert "LoRA" in skipped["experiment.lora_adapter"]


# -- sampling arguments ---------------------------------------------------------------


def test_unset_decoder_passes_nothing():
    assert vb.vllm_sampling_kwargs(standin()) == ({}, {})


def test_llem_defaults_of_a_real_config_are_passed():
    # A real ExperimentConfig has llem-level defaults; they reach vLLM as set values.
    cfg = real()
    engine, _ = vb.vllm_engine_kwargs(cfg)
    sampling, _ = vb.vllm_sampling_kwargs(cfg)
    assert engine["model"] == "owner/model"
    assert set(engine) <= VLLM_ENGINE_ARGS
    assert set(sampling) <= VLLM_SAMPLING_ARGS
    assert engine.get("seed") == cfg.decoder.seed
    assert sampling.get("max_tokens") == cfg.decoder.max_new_tokens


def test_decoder_fields_map_to_sampling_params(make):
    decoder = {
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "max_new_tokens": 64,
        "min_new_tokens": 8,
        "seed": 3,
        "ignore_eos": True,
        "n": 2,
    }
    kwargs, skipped = vb.vllm_sampling_kwargs(make(decoder=decoder))
    assert kwargs == {
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "max_tokens": 64,
        "min_tokens": 8,
        "ignore_eos": True,
        "n": 2,
    }
    assert skipped == {}
    assert set(kwargs) <= VLLM_SAMPLING_ARGS


def test_do_sample_false_is_greedy_temperature_zero():
    cfg = standin(decoder={"do_sample": False, "temperature": 0.8, "top_p": 0.9, "top_k": 5})
    kwargs, skipped = vb.vllm_sampling_kwargs(cfg)
    # greedy is temperature 0 in vLLM; the rest goes as asked (the table's rule, not the
    # translation, says it has no effect: see test_run_skips_..._by_the_table below)
    assert kwargs == {"temperature": 0.0, "top_p": 0.9, "top_k": 5}
    assert skipped == {}


def test_do_sample_true_changes_nothing():
    kwargs, skipped = vb.vllm_sampling_kwargs(standin(decoder={"do_sample": True}))
    assert kwargs == {} and skipped == {}


def test_fields_vllm_lacks_are_skipped_with_a_reason():
    cfg = standin(decoder={"typical_p": 0.9, "no_repeat_ngram_size": 3, "length_penalty": 1.2})
    kwargs, skipped = vb.vllm_sampling_kwargs(cfg)
    assert kwargs == {}
    assert "typical_p" in skipped["decoder.typical_p"]
    assert "no_repeat_ngram_size" in skipped["decoder.no_repeat_ngram_size"]
    # length_penalty is a BeamSearchParams field: sampling has no place for it, and with one
    # beam the table's rule beam-params-single-beam says why (not the translation)
    assert "decoder.length_penalty" not in skipped


# -- beam search ----------------------------------------------------------------------


def test_beam_search_is_chosen_by_num_beams():
    assert not vb.vllm_uses_beam_search(standin())
    assert not vb.vllm_uses_beam_search(standin(decoder={"num_beams": 1}))
    assert vb.vllm_uses_beam_search(standin(decoder={"num_beams": 4}))


def test_beam_search_kwargs(make):
    decoder = {"num_beams": 4, "max_new_tokens": 32, "length_penalty": 0.8, "top_p": 0.9}
    kwargs, skipped = vb.vllm_beam_search_kwargs(make(decoder=decoder))
    assert {"beam_width": 4, "max_tokens": 32, "length_penalty": 0.8}.items() <= kwargs.items()
    assert set(kwargs) <= VLLM_BEAM_ARGS
    assert "top_p" in skipped["decoder.top_p"]


def test_beam_search_has_no_early_stopping_in_vllm():
    # A real config refuses early_stopping for vLLM outright; the translation skips it too.
    cfg = standin(decoder={"num_beams": 2, "early_stopping": True})
    kwargs, skipped = vb.vllm_beam_search_kwargs(cfg)
    assert "early_stopping" not in kwargs
    assert "early_stopping" in skipped["decoder.early_stopping"]


def test_beam_search_max_tokens_defaults_to_sampling_params_default():
    kwargs, _ = vb.vllm_beam_search_kwargs(standin(decoder={"num_beams": 2}))
    assert kwargs["max_tokens"] == vb.BEAM_DEFAULT_MAX_TOKENS == 16


# -- pure helpers ---------------------------------------------------------------------


def test_truncate_ids():
    assert vb.truncate_ids([1, 2, 3], None) == ([1, 2, 3], False)
    assert vb.truncate_ids([1, 2, 3], 3) == ([1, 2, 3], False)
    assert vb.truncate_ids([1, 2, 3, 4], 2) == ([1, 2], True)


def test_token_times_share_the_time_of_the_update_that_brought_them():
    events = [(0.5, 1), (0.6, 1), (0.7, 3), (0.9, 4)]
    assert vb.token_times_from_counts(events) == (0.5, 0.7, 0.7, 0.9)
    assert vb.token_times_from_counts([]) == ()
    assert vb.token_times_from_counts([(0.1, 0)]) == ()


def test_effective_values_are_read_back_from_the_engine_config():
    conf = SimpleNamespace(
        model_config=SimpleNamespace(dtype="torch.bfloat16", max_model_len=4096),
        cache_config=SimpleNamespace(block_size=16, gpu_memory_utilization=0.9),
        scheduler_config=SimpleNamespace(max_num_seqs=256),
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
        offload_config=SimpleNamespace(cpu_offload_gb=0.0),
    )
    eff = vb.effective_from_vllm_config(conf)
    assert eff["vllm.dtype"] == "torch.bfloat16"
    assert eff["vllm.max_model_len"] == 4096
    assert eff["vllm.block_size"] == 16
    assert eff["vllm.max_num_seqs"] == 256
    assert eff["vllm.cpu_offload_gb"] == 0.0
    assert "vllm.quantization" not in eff


def test_read_back_records_engine_defaults_for_unset_fields():
    params = SimpleNamespace(temperature=1.0, top_k=0, max_tokens=None, seed=None)
    eff = vb.read_back(params, vb.SAMPLING_READBACK, {"max_tokens": 12})
    assert eff == {"decoder.temperature": 1.0, "decoder.top_k": 0, "decoder.max_new_tokens": 12}


# -- run code against a stand-in engine ---------------------------------------------------


class FakeTokenizer:
    def encode(self, text):
        return [ord(c) % 97 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"t{i}" for i in ids)


class FakeParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeEngine:
    """Delivers one token per request per step; the first step delivers two (a batch)."""

    def __init__(self):
        self.requests = {}
        self.vllm_config = SimpleNamespace(
            model_config=SimpleNamespace(dtype="torch.float16", max_model_len=2048),
            cache_config=SimpleNamespace(block_size=16),
        )

    def add_request(self, rid, prompt, params):
        limit = params.kwargs.get("max_tokens", 16)
        self.requests[rid] = {"ids": prompt["prompt_token_ids"], "n": 0, "max": limit}

    def has_unfinished_requests(self):
        return any(r["n"] < r["max"] for r in self.requests.values())

    def step(self):
        outs = []
        for rid, r in self.requests.items():
            if r["n"] >= r["max"]:
                continue
            r["n"] = min(r["max"], r["n"] + (2 if r["n"] == 0 else 1))
            seq = SimpleNamespace(text=f"out-{rid}", token_ids=list(range(r["n"])))
            outs.append(SimpleNamespace(request_id=rid, outputs=[seq], finished=r["n"] >= r["max"]))
        return outs


class FakeLLM:
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.llm_engine = FakeEngine()
        FakeLLM.instances.append(self)

    def get_tokenizer(self):
        return FakeTokenizer()

    def beam_search(self, prompts, params):
        return [
            SimpleNamespace(sequences=[SimpleNamespace(tokens=p["prompt_token_ids"] + [5, 6], text="x")])
            for p in prompts
        ]


@dataclasses.dataclass
class FakeEngineArgs:  # an "older vLLM": no attention_backend, no swap_space
    model: str = ""
    dtype: str = "auto"
    seed: int = 0
    gpu_memory_utilization: float = 0.9


@pytest.fixture
def fake_vllm(monkeypatch, engine_gpu):
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0-fake"
    mod.LLM = FakeLLM
    mod.SamplingParams = FakeParams
    mod.EngineArgs = FakeEngineArgs
    sp = types.ModuleType("vllm.sampling_params")
    sp.BeamSearchParams = FakeParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    monkeypatch.delenv("VLLM_ATTENTION_BACKEND", raising=False)
    FakeLLM.instances.clear()
    return mod  # engine_gpu: the GPU is llem.machine's answer (NVML), never torch's


def test_load_generate_release_with_a_stand_in_engine(fake_vllm):
    cfg = standin(
        max_input_tokens=4,
        decoder={"max_new_tokens": 3, "temperature": 0.0},
        vllm={"dtype": "float16", "swap_space": 1.0, "attention_backend": "FLASHINFER"},
    )
    backend = vb.VLLMBackend()
    info = backend.load(cfg)
    llm = FakeLLM.instances[-1]
    # Arguments this (fake) vLLM lacks are not passed and are reported.
    assert "swap_space" not in llm.kwargs
    assert "swap_space" in info.skipped["vllm.swap_space"]
    assert "attention_backend" not in llm.kwargs
    assert os.environ["VLLM_ATTENTION_BACKEND"] == "FLASHINFER"
    assert llm.kwargs["dtype"] == "float16"
    assert info.device == "Fake GPU"
    assert info.effective["vllm.dtype"] == "torch.float16"
    assert info.max_context_tokens == 2048
    assert "per engine step" in info.effective["llem.token_timing"]
    assert info.versions["vllm"] == "0.0-fake"
    assert info.effective["decoder.max_new_tokens"] == 3
    assert info.effective["decoder.temperature"] == 0.0

    phases = []
    out = backend.generate(["hello world", "hi"], on_phase=phases.append)
    assert phases == ["prefill", "decode"]
    assert [r.input_tokens for r in out.requests] == [4, 2]
    assert [r.truncated for r in out.requests] == [True, False]
    assert out.total_input_tokens == 6
    for r in out.requests:
        assert r.output_tokens == 3
        assert len(r.token_times_s) == 3
        assert r.token_times_s[0] == r.token_times_s[1]  # two tokens in the first step
        assert list(r.token_times_s) == sorted(r.token_times_s)
        assert r.ttft_s is not None and r.ttft_s <= out.prefill_s <= out.duration_s
    assert backend.count_tokens("abc") == 3
    backend.release()
    backend.release()  # twice is fine
    with pytest.raises(LlemError, match="load"):
        backend.generate(["x"])


def test_beam_search_run_has_no_per_token_times(fake_vllm):
    cfg = standin(decoder={"num_beams": 2, "max_new_tokens": 2})
    backend = vb.VLLMBackend()
    info = backend.load(cfg)
    assert "none per token" in info.effective["llem.token_timing"]
    out = backend.generate(["ab"])
    r = out.requests[0]
    assert r.output_tokens == 2 and r.text == "t5 t6"  # the prompt is not in the text
    assert r.token_times_s == ()
    assert math.isnan(out.prefill_s)


def test_missing_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'llem\[vllm\]'"):
        vb.VLLMBackend().load(standin())


def test_no_cuda_gpu_is_refused_with_the_reason(fake_vllm, monkeypatch):
    with use_machine(Machine.fake()), pytest.raises(BackendUnavailableError,
                                                    match=r"needs an NVIDIA GPU with CUDA.*without GPUs"):
        vb.VLLMBackend().load(standin())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BackendUnavailableError, match="CUDA_VISIBLE_DEVICES='' hides them"):
        vb.VLLMBackend().load(standin())
    assert not FakeLLM.instances  # refused before an engine was built


@pytest.mark.gpu_path
def test_the_gpu_named_is_the_first_one_cuda_sees(monkeypatch):
    gpus = [Gpu(0, "A", 8.0, uuid="GPU-aa11", mig=True, mig_uuids=("MIG-a1",)),
            Gpu(1, "B", 9.0, uuid="GPU-bb22")]

    def first(visible):
        return next(iter(visible_gpus(gpus, visible)), None)

    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert first(None).name == "A"
    assert first("1,0").name == "B"
    assert first("GPU-bb").name == "B"
    assert first("MIG-a1").name == "A"  # a MIG device is a slice of its GPU
    assert first("MIG-xyz") is None  # CUDA stops at an entry that names no device
    assert first("") is None and first("-1") is None
    assert visible_gpus([], None) == ()
    monkeypatch.delenv("CUDA_DEVICE_ORDER")  # CUDA's default: the fastest GPU is device 0
    assert first(None).name == "B"


def test_run_skips_sampling_fields_under_greedy_by_the_table(fake_vllm, engine_run):
    r, made = engine_run(fake_vllm, "vllm", **{"decoder.do_sample": False, "decoder.temperature": 0.8,
                                               "decoder.top_p": 0.9, "decoder.top_k": 5})
    for path in ("decoder.temperature", "decoder.top_p", "decoder.top_k"):
        assert "[rule sampling-params-greedy]" in r.skipped[path]
    # vLLM never received them: greedy decoding, temperature 0
    assert made and all(kw.get("temperature") == 0.0 and "top_p" not in kw and "top_k" not in kw
                        for kw in made)
    assert r.runs[0].output_tokens == 6 and r.environment["gpu"] == "Fake GPU"


def test_run_skips_beam_fields_with_one_beam_by_the_table(fake_vllm, engine_run):
    r, made = engine_run(fake_vllm, "vllm", **{"decoder.length_penalty": 1.2})
    assert made and not any("length_penalty" in kw for kw in made)
    why = r.skipped["decoder.length_penalty"]
    assert why.startswith("length_penalty and early_stopping only act in beam search")
    assert "[rule beam-params-single-beam]" in why


# -- a real generation, where vLLM and a GPU are present --------------------------------------


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.vllm
@pytest.mark.gpu
def test_real_vllm_generation():
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (pip install 'llem[vllm]'; needs CUDA)")
    if not _cuda_available():
        pytest.skip("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    model = os.environ.get("LLEM_TEST_VLLM_MODEL", "tiny-random-llama")
    cfg = standin(
        model=model,
        max_input_tokens=64,
        decoder={"max_new_tokens": 8, "temperature": 0.0, "ignore_eos": True},
        vllm={"gpu_memory_utilization": 0.3, "enforce_eager": True, "max_model_len": 512},
    )
    backend = vb.VLLMBackend()
    try:
        info = backend.load(cfg)
        out = backend.generate(["The capital of France is", "Energy is"])
    finally:
        backend.release()
    assert info.device
    for r in out.requests:
        assert r.output_tokens == 8
        assert len(r.token_times_s) == 8
        assert 0 < r.token_times_s[0] <= r.token_times_s[-1] <= out.duration_s
