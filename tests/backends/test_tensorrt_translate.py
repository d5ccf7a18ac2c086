"""The TensorRT-LLM backend's translation layer, and its run code on a stand-in engine.

Expected names are TensorRT-LLM's LLM API names (docs/engines.md says where each lives).
The run-code tests install a fake ``tensorrt_llm`` package and a fake ``torch``; the real
generation test at the end is marked ``tensorrt`` and runs only with TensorRT-LLM and a GPU.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from llem.backends import tensorrt as tb
from llem.errors import BackendUnavailableError, ConfigError, LlemError, MissingDependencyError
from llem.machine import Machine, use_machine

DECODER_FIELDS = (
    "temperature do_sample top_k top_p min_p typical_p repetition_penalty presence_penalty "
    "frequency_penalty no_repeat_ngram_size max_new_tokens min_new_tokens num_beams "
    "length_penalty early_stopping seed ignore_eos n"
).split()
TRT_FIELDS = (
    "dtype max_batch_size max_input_len max_seq_len max_num_tokens tp_size pp_size "
    "quantization kv_cache_dtype kv_cache_free_gpu_memory_fraction enable_kv_cache_reuse "
    "builder_opt_level engine_dir"
).split()

#: LLM API argument names llem may emit (tensorrt_llm/llmapi/llm_args.py).
TRT_LLM_ARGS = {
    "model",
    "dtype",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "max_batch_size",
    "max_input_len",
    "max_seq_len",
    "max_num_tokens",
    "max_beam_width",
    "quant_config",
    "kv_cache_config",
    "build_config",
    "trust_remote_code",
    "revision",
}
#: SamplingParams field names (tensorrt_llm/sampling_params.py).
TRT_SAMPLING_ARGS = {
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "no_repeat_ngram_size",
    "seed",
    "ignore_eos",
    "max_tokens",
    "min_tokens",
    "n",
    "best_of",
    "use_beam_search",
    "length_penalty",
    "early_stopping",
}

HAVE_REAL_CONFIG = importlib.util.find_spec("llem.config") is not None


def standin(model="owner/model", max_input_tokens=None, passthrough=None, decoder=None, tensorrt=None):
    """A plain stand-in config: every field present, None = unset."""
    dec = {f: None for f in DECODER_FIELDS} | (decoder or {})
    trt = {f: None for f in TRT_FIELDS} | (tensorrt or {})
    return SimpleNamespace(
        model=model,
        backend="tensorrt",
        max_input_tokens=max_input_tokens,
        passthrough=passthrough,
        decoder=SimpleNamespace(**dec),
        vllm=None,
        tensorrt=SimpleNamespace(**trt),
    )


def real(decoder=None, tensorrt=None, passthrough=None, model="owner/model", max_input_tokens=None):
    """The same settings on a real ExperimentConfig (skips if llem.config is unusable)."""
    if not HAVE_REAL_CONFIG:
        pytest.skip("llem.config is not there yet")
    try:
        from llem.config import ExperimentConfig
    except Exception as exc:  # noqa: BLE001 - a config module under construction
        pytest.skip(f"llem.config does not import: {exc}")
    cfg = ExperimentConfig(backend="tensorrt", model=model)
    values: dict = {"decoder": decoder or {}, "tensorrt": tensorrt or {}}
    if passthrough:
        values["passthrough"] = passthrough
    if max_input_tokens is not None:
        values["max_input_tokens"] = max_input_tokens
    cfg.update(values)
    return cfg


@pytest.fixture(params=["standin", "real"])
def make(request):
    if request.param == "standin":
        return lambda **kw: standin(**kw)
    return lambda **kw: real(**kw)


def added(fn, cfg, make):
    """What ``fn`` returns for ``cfg`` beyond what it returns for an unset config."""
    kwargs, skipped = fn(cfg)
    base, base_skipped = fn(make())
    extra = {k: v for k, v in kwargs.items() if base.get(k, object()) != v}
    return extra, {k: v for k, v in skipped.items() if k not in base_skipped}


# -- LLM arguments ----------------------------------------------------------------------


def test_unset_config_passes_only_the_model():
    assert tb.trtllm_llm_kwargs(standin()) == ({"model": "owner/model"}, {})


def test_real_config_defaults_stay_within_llm_api_names():
    cfg = real()
    kwargs, _ = tb.trtllm_llm_kwargs(cfg)
    sampling, _ = tb.trtllm_sampling_kwargs(cfg)
    assert set(kwargs) <= TRT_LLM_ARGS
    assert set(sampling) <= TRT_SAMPLING_ARGS
    # llem's max_input_tokens sizes the engine's input when max_input_len is unset.
    assert kwargs["max_input_len"] == cfg.max_input_tokens


def test_fields_get_llm_api_names(make):
    cfg = make(
        tensorrt={
            "dtype": "bfloat16",
            "tp_size": 2,
            "pp_size": 1,
            "max_batch_size": 16,
            "max_input_len": 256,
            "max_seq_len": 512,
            "max_num_tokens": 4096,
        }
    )
    kwargs, skipped = added(tb.trtllm_llm_kwargs, cfg, make)
    assert kwargs == {
        "dtype": "bfloat16",
        "tensor_parallel_size": 2,
        "pipeline_parallel_size": 1,
        "max_batch_size": 16,
        "max_input_len": 256,
        "max_seq_len": 512,
        "max_num_tokens": 4096,
    }
    assert skipped == {}
    assert "tp_size" not in kwargs and "pp_size" not in kwargs


def test_max_input_tokens_sizes_the_engine_input():
    kwargs, _ = tb.trtllm_llm_kwargs(standin(max_input_tokens=300))
    assert kwargs["max_input_len"] == 300
    kwargs, _ = tb.trtllm_llm_kwargs(standin(max_input_tokens=300, tensorrt={"max_input_len": 128}))
    assert kwargs["max_input_len"] == 128


def test_legacy_max_output_len_becomes_max_seq_len():
    cfg = standin(tensorrt={"max_input_len": 100})
    cfg.tensorrt.max_output_len = 50
    kwargs, skipped = tb.trtllm_llm_kwargs(cfg)
    assert kwargs["max_seq_len"] == 150 and "max_output_len" not in kwargs
    cfg = standin()
    cfg.tensorrt.max_output_len = 50
    kwargs, _ = tb.trtllm_llm_kwargs(cfg)
    assert kwargs["max_seq_len"] == tb.TRTLLM_DEFAULT_MAX_INPUT_LEN + 50
    cfg = standin(tensorrt={"max_seq_len": 400})
    cfg.tensorrt.max_output_len = 50
    kwargs, skipped = tb.trtllm_llm_kwargs(cfg)
    assert kwargs["max_seq_len"] == 400
    assert "max_seq_len" in skipped["tensorrt.max_output_len"]


@pytest.mark.parametrize(
    ("ours", "algo"),
    [
        ("fp8", "FP8"),
        ("int8_sq", "W8A8_SQ_PER_CHANNEL"),
        ("int4_awq", "W4A16_AWQ"),
        ("w4a8_awq", "W4A8_AWQ"),
        ("int8_weight_only", "W8A16"),
        ("int4_weight_only", "W4A16"),
    ],
)
def test_quantization_names_become_quant_algos(make, ours, algo):
    kwargs, _ = tb.trtllm_llm_kwargs(make(tensorrt={"quantization": ours}))
    assert kwargs["quant_config"] == {"quant_algo": algo}
    assert algo in tb.QUANT_ALGOS


@pytest.mark.parametrize("name", ["w4a16_gptq", "W4A16_GPTQ", "int4_gptq", "nvfp4", "fp8_block"])
def test_names_the_row_refuses_are_not_translated(name):
    # The table allows six quantization names (tensorrt.quantization); a QuantAlgo member or
    # another name is refused by the config, and the translation refuses it too.
    with pytest.raises(ConfigError, match="Allowed: fp8, int8_sq, int4_awq"):
        tb.trtllm_llm_kwargs(standin(tensorrt={"quantization": name}))


def test_unknown_quantization_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match="int8_sq"):
        tb.trtllm_llm_kwargs(standin(tensorrt={"quantization": "int8_sqq"}))


@pytest.mark.parametrize(("ours", "algo"), [("fp8", "FP8"), ("int8", "INT8")])
def test_kv_cache_dtype_becomes_kv_cache_quant_algo(make, ours, algo):
    cfg = make(tensorrt={"kv_cache_dtype": ours, "quantization": "fp8"})
    kwargs, _ = tb.trtllm_llm_kwargs(cfg)
    assert kwargs["quant_config"] == {"quant_algo": "FP8", "kv_cache_quant_algo": algo}


def test_auto_kv_cache_dtype_passes_nothing_and_e5m2_is_refused():
    kwargs, _ = tb.trtllm_llm_kwargs(standin(tensorrt={"kv_cache_dtype": "auto"}))
    assert "quant_config" not in kwargs
    with pytest.raises(ConfigError, match="fp8_e5m2"):
        tb.trtllm_llm_kwargs(standin(tensorrt={"kv_cache_dtype": "fp8_e5m2"}))


def test_kv_cache_config_fields(make):
    cfg = make(tensorrt={"kv_cache_free_gpu_memory_fraction": 0.6, "enable_kv_cache_reuse": False})
    kwargs, _ = tb.trtllm_llm_kwargs(cfg)
    assert kwargs["kv_cache_config"] == {
        "free_gpu_memory_fraction": 0.6,
        "enable_block_reuse": False,
    }


def test_builder_opt_level_makes_a_build_config_with_the_limits(make):
    cfg = make(tensorrt={"builder_opt_level": 4, "max_batch_size": 8, "max_seq_len": 1024})
    kwargs, _ = tb.trtllm_llm_kwargs(cfg)
    build = kwargs["build_config"]
    assert build["opt_level"] == 4
    assert build["max_batch_size"] == 8 and build["max_seq_len"] == 1024
    assert kwargs["max_batch_size"] == 8  # also the runtime limit


def test_beam_search_needs_max_beam_width_at_build(make):
    kwargs, _ = tb.trtllm_llm_kwargs(make(decoder={"num_beams": 3}))
    assert kwargs["max_beam_width"] == 3


def test_engine_dir_is_not_an_llm_argument(make, tmp_path):
    kwargs, _ = tb.trtllm_llm_kwargs(make(tensorrt={"engine_dir": str(tmp_path)}))
    assert "engine_dir" not in kwargs


def test_passthrough_merges_and_collisions_are_refused():
    kwargs, _ = tb.trtllm_llm_kwargs(standin(passthrough={"enable_chunked_prefill": True}))
    assert kwargs["enable_chunked_prefill"] is True
    cfg = standin(tensorrt={"tp_size": 2}, passthrough={"tensor_parallel_size": 4})
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        tb.trtllm_llm_kwargs(cfg)


# -- engine cache -----------------------------------------------------------------------


def test_engine_cache_dir_depends_on_build_settings(tmp_path):
    cfg = standin(model="owner/My Model", tensorrt={"engine_dir": str(tmp_path)})
    a, _ = tb.trtllm_llm_kwargs(cfg)
    path_a = tb.trtllm_engine_cache_dir(cfg, a, "1.0")
    assert path_a.parent == tmp_path and path_a.name.startswith("My_Model-")
    b = dict(a, dtype="float16")
    assert tb.trtllm_engine_cache_dir(cfg, b, "1.0") != path_a
    assert tb.trtllm_engine_cache_dir(cfg, a, "1.1") != path_a
    runtime_only = dict(a, kv_cache_config={"free_gpu_memory_fraction": 0.5})
    assert tb.trtllm_engine_cache_dir(cfg, runtime_only, "1.0") == path_a
    assert tb.trtllm_engine_cache_dir(standin(), a, "1.0") is None


# -- sampling arguments ---------------------------------------------------------------


def test_unset_decoder_passes_nothing_and_trt_then_decodes_greedily():
    assert tb.trtllm_sampling_kwargs(standin()) == ({}, {})


def test_decoder_fields_map_to_sampling_params(make):
    decoder = {
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.2,
        "no_repeat_ngram_size": 3,
        "max_new_tokens": 64,
        "min_new_tokens": 4,
        "seed": 3,
        "ignore_eos": True,
        "n": 2,
    }
    kwargs, skipped = tb.trtllm_sampling_kwargs(make(decoder=decoder))
    assert kwargs == {
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.2,
        "no_repeat_ngram_size": 3,
        "max_tokens": 64,
        "min_tokens": 4,
        "seed": 3,
        "ignore_eos": True,
        "n": 2,
    }
    assert skipped == {}
    assert set(kwargs) <= TRT_SAMPLING_ARGS


def test_do_sample_false_is_top_k_one():
    cfg = standin(decoder={"do_sample": False, "temperature": 0.9, "top_p": 0.8, "top_k": 20})
    kwargs, skipped = tb.trtllm_sampling_kwargs(cfg)
    # greedy is top_k=1 in TensorRT-LLM; the rest goes as asked (the table's rule says it has
    # no effect: see test_run_skips_..._by_the_table below)
    assert kwargs == {"top_k": 1, "temperature": 0.9, "top_p": 0.8}
    assert skipped == {}


def test_beam_search(make):
    decoder = {"num_beams": 4, "length_penalty": 0.7, "early_stopping": True}
    kwargs, skipped = added(tb.trtllm_sampling_kwargs, make(decoder=decoder), make)
    assert kwargs == {"use_beam_search": True, "n": 4, "length_penalty": 0.7, "early_stopping": 1}
    assert skipped == {}


def test_beam_search_with_fewer_returned_sequences_uses_best_of():
    kwargs, _ = tb.trtllm_sampling_kwargs(standin(decoder={"num_beams": 4, "n": 2}))
    assert kwargs["use_beam_search"] is True
    assert kwargs["n"] == 2 and kwargs["best_of"] == 4


def test_beam_only_fields_are_passed_and_missing_fields_are_skipped():
    cfg = standin(decoder={"length_penalty": 1.2, "early_stopping": False, "typical_p": 0.9})
    kwargs, skipped = tb.trtllm_sampling_kwargs(cfg)
    # SamplingParams takes them with one beam too; the table's rule beam-params-single-beam
    # says they have no effect there (through llem.run they arrive unset)
    assert kwargs == {"length_penalty": 1.2, "early_stopping": 0}
    assert set(skipped) == {"decoder.typical_p"} and "typical_p" in skipped["decoder.typical_p"]


# -- building the engine's objects ----------------------------------------------------------


class Recorder:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def fake_llmapi():
    api = types.ModuleType("tensorrt_llm.llmapi")
    api.QuantAlgo = SimpleNamespace(**{name: f"QA.{name}" for name in (*tb.QUANT_ALGOS, "INT8")})
    api.QuantConfig = type("QuantConfig", (Recorder,), {})
    api.KvCacheConfig = type("KvCacheConfig", (Recorder,), {})
    api.BuildConfig = type("BuildConfig", (Recorder,), {})
    return api


def test_build_llm_objects_uses_the_engines_classes():
    api = fake_llmapi()
    kwargs = {
        "model": "m",
        "quant_config": {"quant_algo": "FP8", "kv_cache_quant_algo": "INT8"},
        "kv_cache_config": {"enable_block_reuse": False},
        "build_config": {"opt_level": 2},
    }
    out = tb.build_llm_objects(kwargs, api, api.BuildConfig)
    assert out["quant_config"].kwargs == {"quant_algo": "QA.FP8", "kv_cache_quant_algo": "QA.INT8"}
    assert out["kv_cache_config"].kwargs == {"enable_block_reuse": False}
    assert out["build_config"].kwargs == {"opt_level": 2}
    assert kwargs["quant_config"] == {"quant_algo": "FP8", "kv_cache_quant_algo": "INT8"}


# -- run code against a stand-in TensorRT-LLM ---------------------------------------------


class FakeTokenizer:
    def encode(self, text):
        return [ord(c) % 97 for c in text]


class FakeResult:
    """A streamed request: two tokens in the first update, then one per update."""

    def __init__(self, ids, max_tokens):
        self.ids = ids
        self.max_tokens = max_tokens
        self.outputs = [SimpleNamespace(text="", token_ids=[])]

    def __iter__(self):
        n = 0
        while n < self.max_tokens:
            n = min(self.max_tokens, n + (2 if n == 0 else 1))
            self.outputs = [SimpleNamespace(text=f"gen{n}", token_ids=list(range(n)))]
            yield self


class FakeLLM:
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.tokenizer = FakeTokenizer()
        self.args = SimpleNamespace(
            dtype="float16",
            tensor_parallel_size=1,
            build_config=SimpleNamespace(max_batch_size=8, max_seq_len=2048, opt_level=None),
        )
        self.saved = None
        self.shut = False
        FakeLLM.instances.append(self)

    def generate_async(self, ids, sampling_params=None, streaming=False):
        return FakeResult(ids, sampling_params.kwargs.get("max_tokens", 32))

    def save(self, path):
        self.saved = path
        Path(path, "config.json").write_text("{}")
        Path(path, "rank0.engine").write_bytes(b"")

    def shutdown(self):
        self.shut = True


@pytest.fixture
def fake_trtllm(monkeypatch, engine_gpu):
    mod = types.ModuleType("tensorrt_llm")
    mod.__version__ = "0.99-fake"
    mod.LLM = FakeLLM
    mod.SamplingParams = Recorder
    api = fake_llmapi()
    mod.llmapi = api
    mod.BuildConfig = api.BuildConfig
    monkeypatch.setitem(sys.modules, "tensorrt_llm", mod)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", api)
    FakeLLM.instances.clear()
    return mod  # engine_gpu: the GPU is llem.machine's answer (NVML), never torch's


def test_load_generate_release_with_a_stand_in_engine(fake_trtllm, tmp_path):
    cfg = standin(
        max_input_tokens=4,
        decoder={"max_new_tokens": 3},
        tensorrt={"quantization": "fp8", "engine_dir": str(tmp_path)},
    )
    backend = tb.TensorRTBackend()
    info = backend.load(cfg)
    llm = FakeLLM.instances[-1]
    assert llm.kwargs["quant_config"].kwargs == {"quant_algo": "QA.FP8"}
    assert llm.kwargs["max_input_len"] == 4
    assert info.effective["llem.engine"].startswith("built and saved to")
    assert llm.saved and Path(llm.saved).parent == tmp_path
    assert info.effective["tensorrt.max_batch_size"] == 8
    assert info.effective["llem.trtllm_llm_class"] == "tensorrt_llm.LLM"
    assert info.device == "Fake GPU"
    assert info.effective["decoder.max_new_tokens"] == 3
    assert info.effective["decoder.do_sample"] is False  # TensorRT-LLM's greedy default

    phases = []
    out = backend.generate(["hello world", "hi"], on_phase=phases.append)
    assert phases == ["prefill", "decode"]
    assert [r.input_tokens for r in out.requests] == [4, 2]
    assert [r.truncated for r in out.requests] == [True, False]
    for r in out.requests:
        assert r.output_tokens == 3 and r.text == "gen3"
        assert len(r.token_times_s) == 3
        assert r.token_times_s[0] == r.token_times_s[1]
        assert list(r.token_times_s) == sorted(r.token_times_s)
    assert out.prefill_s == max(r.ttft_s for r in out.requests)
    assert backend.count_tokens("abc") == 3
    backend.release()
    assert llm.shut
    backend.release()
    with pytest.raises(LlemError, match="load"):
        backend.generate(["x"])

    # A second run with the same settings loads the saved engine instead of building.
    again = tb.TensorRTBackend()
    info2 = again.load(cfg)
    llm2 = FakeLLM.instances[-1]
    assert info2.effective["llem.engine"].startswith("reused")
    assert llm2.kwargs["model"] == llm.saved
    assert llm2.kwargs["tokenizer"] == "owner/model"
    assert "quant_config" not in llm2.kwargs and llm2.saved is None
    again.release()


def test_tensorrt_engine_llm_of_trtllm_1x_is_preferred(fake_trtllm, monkeypatch):
    engine_mod = types.ModuleType("tensorrt_llm._tensorrt_engine")

    class EngineLLM(FakeLLM):
        pass

    EngineLLM.__module__ = "tensorrt_llm._tensorrt_engine"
    engine_mod.LLM = EngineLLM
    monkeypatch.setitem(sys.modules, "tensorrt_llm._tensorrt_engine", engine_mod)
    backend = tb.TensorRTBackend()
    info = backend.load(standin())
    assert isinstance(FakeLLM.instances[-1], EngineLLM)
    assert info.effective["llem.trtllm_llm_class"] == "tensorrt_llm._tensorrt_engine.LLM"
    assert "not cached" in info.effective["llem.engine"]
    backend.release()


def test_results_that_cannot_stream_give_no_token_times(fake_trtllm, monkeypatch):
    class Blocking:
        def __init__(self, n):
            self.n = n

        def result(self):
            return SimpleNamespace(outputs=[SimpleNamespace(text="b", token_ids=[1] * self.n)])

    monkeypatch.setattr(FakeLLM, "generate_async", lambda self, ids, **kw: Blocking(2))
    backend = tb.TensorRTBackend()
    backend.load(standin())
    out = backend.generate(["ab"])
    assert out.requests[0].output_tokens == 2 and out.requests[0].token_times_s == ()
    assert math.isnan(out.prefill_s)
    assert "none per token" in backend.load_info.effective["llem.token_timing"]
    backend.release()


def test_gguf_model_is_refused(fake_trtllm, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="GGUF"):
        tb.TensorRTBackend().load(standin(model=str(gguf)))


def test_missing_tensorrt_llm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'llem\[tensorrt\]'"):
        tb.TensorRTBackend().load(standin())


def test_no_cuda_gpu_is_refused_with_the_reason(fake_trtllm):
    with use_machine(Machine.fake()), pytest.raises(BackendUnavailableError,
                                                    match=r"TensorRT-LLM backend needs an NVIDIA GPU with CUDA"):
        tb.TensorRTBackend().load(standin())
    assert not FakeLLM.instances  # refused before an engine was built


def test_run_skips_sampling_and_beam_fields_by_the_table(fake_trtllm, engine_run):
    r, made = engine_run(fake_trtllm, "tensorrt", **{"decoder.do_sample": False, "decoder.top_p": 0.8,
                                                     "decoder.temperature": 0.9, "decoder.length_penalty": 1.2})
    for path in ("decoder.temperature", "decoder.top_p"):
        assert "[rule sampling-params-greedy]" in r.skipped[path]
    assert "[rule beam-params-single-beam]" in r.skipped["decoder.length_penalty"]
    # TensorRT-LLM never received them: greedy decoding, top_k=1
    assert made and all(kw.get("top_k") == 1 and not {"top_p", "temperature", "length_penalty"} & set(kw)
                        for kw in made)
    assert r.runs[0].output_tokens == 6 and r.environment["gpu"] == "Fake GPU"


# -- a real generation, where TensorRT-LLM and a GPU are present ------------------------------


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_real_tensorrt_generation(tmp_path):
    if importlib.util.find_spec("tensorrt_llm") is None:
        pytest.skip("TensorRT-LLM is not installed (pip install 'llem[tensorrt]'; needs CUDA)")
    if not _cuda_available():
        pytest.skip("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    model = os.environ.get("LLEM_TEST_TRTLLM_MODEL", "tiny-random-llama")
    cfg = standin(
        model=model,
        max_input_tokens=64,
        decoder={"max_new_tokens": 8, "ignore_eos": True},
        tensorrt={
            "dtype": "float16",
            "max_batch_size": 4,
            "max_seq_len": 128,
            "kv_cache_free_gpu_memory_fraction": 0.3,
            "engine_dir": str(tmp_path),
        },
    )
    backend = tb.TensorRTBackend()
    try:
        info = backend.load(cfg)
        out = backend.generate(["The capital of France is", "Energy is"])
    finally:
        backend.release()
    assert info.device
    for r in out.requests:
        assert r.output_tokens == 8
        assert len(r.token_times_s) in (0, 8)  # 0 only where streaming was unavailable
