"""Drift tests: the three backends and the table's rows must agree on every engine argument.

A backend gets each argument's name, where it goes, its values and its read-back from the
rows (``spec.engine_args(backend)``). These tests fail, with the corrected mapping in the
message, when a backend and a row disagree:

1. every argument a backend passes is named by a row, or is one of its target's documented
   protocol arguments (``spec.engine_targets(backend)[target].protocol``);
2. every value a row allows translates in its backend, and a value the row refuses does not;
3. every row a backend claims (``backend in row.backends``) is consumed by that backend's
   translation, or is listed in :data:`HANDLED_ELSEWHERE` with where it is used;
4. a new decoder row with its engine names reaches all three engines with no backend edit.

vLLM and TensorRT-LLM run through their pure translation functions and the stand-in engine
modules of tests/backends/; PyTorch loads the built-in tiny-random-llama.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from llem import spec
from llem.backends import tensorrt as tb
from llem.backends import vllm as vb
from llem.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _load_test_module(name: str) -> types.ModuleType:
    """A tests/backends module (its stand-in engines), under a name pytest does not collect."""
    path = Path(__file__).parent / "backends" / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"_drift_{name}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses look their module up
    module_spec.loader.exec_module(module)
    return module


VT = _load_test_module("test_vllm_translate")
TT = _load_test_module("test_tensorrt_translate")

RUNNER = "the runner's measurement method and bookkeeping (llem/run.py, llem/sweep.py)"

#: Rows a backend claims without passing them to its engine as an argument, and where they
#: are used. An entry for a row that gained an engine_target, or that the backend no longer
#: claims, fails test_handled_elsewhere_is_current.
HANDLED_ELSEWHERE: dict[str, dict[str, str]] = {
    backend: {
        "experiment.model": "what to load: the target's protocol argument 'model' (vLLM, TensorRT-LLM) "
                            "or the from_pretrained path (PyTorch)",
        "experiment.backend": "chooses the backend (llem/run.py)",
        "experiment.prompts": RUNNER,
        "experiment.num_prompts": RUNNER,
        "experiment.max_input_tokens": "the backend cuts each prompt to it in generate(); TensorRT-LLM "
                                       "also sizes max_input_len with it when that is unset",
        "experiment.chat_template": "the backend renders each prompt in the tokenizer's chat template "
                                    "before encoding it (llem.prompts.chat.chat_prompting)",
        "experiment.repeats": RUNNER,
        "experiment.meter": RUNNER,
        "experiment.sampling_interval_s": RUNNER,
        "experiment.grid_intensity_g_per_kwh": RUNNER,
        "experiment.energy_scope": "the estimate meter's scope (llem.runner passes it to the meter "
                                   "factory, llem.energy.registry.create_meter)",
        "experiment.gpu_power_limit_w": "set through NVML around the run and put back "
                                        "(llem.energy.power_limit.RunPowerLimit, in llem.runner)",
        "experiment.target_gpu": "config validation and the capability matrix (llem/config.py)",
        "experiment.output_dir": RUNNER,
        "experiment.profile": RUNNER,
        "experiment.passthrough": "merged into the engine's keyword arguments; a key that repeats a "
                                  "named field is refused",
        "decoder.preset": "expanded into the other decoder fields by ExperimentConfig.resolved_decoder(), "
                          "which each backend reads",
        **{p.path: RUNNER for p in spec.PARAMS if p.section in ("warmup", "baseline", "study", "dataset")},
    }
    for backend in spec.BACKENDS
}
HANDLED_ELSEWHERE["pytorch"].update({
    "experiment.lora_adapter": "applied with peft after loading (llem.backends.pytorch.loading.load_adapter)",
    "experiment.lora_merge": "merges the peft adapter into the weights (llem.backends.pytorch.loading.load_adapter)",
    "decoder.seed": "the runner passes it per batch (generate(seed=...)), which seeds torch",
    "pytorch.batch_size": "the runner's batching (llem.run.make_batches)",
    "pytorch.batching_strategy": "the runner's batching (llem.run.make_batches)",
    "pytorch.max_tokens_per_batch": "the runner's batching (llem.run.make_batches)",
    "pytorch.torch_compile": "switches torch.compile on (llem.backends.pytorch.loading.compile_forward); "
                             "its options are the rows of the 'compile' target",
    "pytorch.num_processes": "not run in-process: the rule multi-process-needs-gpus skips it below 2 GPUs, "
                             "else the backend reports that llem runs one process",
})
HANDLED_ELSEWHERE["vllm"]["decoder.do_sample"] = "do_sample=False is sent as temperature=0 (vllm_sampling_kwargs)"
HANDLED_ELSEWHERE["tensorrt"]["decoder.do_sample"] = "do_sample=False is sent as top_k=1 (trtllm_sampling_kwargs)"
HANDLED_ELSEWHERE["tensorrt"]["tensorrt.engine_dir"] = "llem's engine cache folder (trtllm_engine_cache_dir)"

#: Sample values where the generic one would not take effect (or would need a download).
SAMPLES: dict[str, Any] = {
    "vllm.speculative_model": "owner/draft",
    "vllm.compilation_config": {"level": 3},
    "vllm.kv_cache_dtype": "fp8",
    "tensorrt.kv_cache_dtype": "fp8",
    "decoder.num_beams": 2,
    "pytorch.device_map": "cpu",
    "pytorch.max_memory": {"cpu": "2GiB"},
    "pytorch.assistant_model": "tiny-random-llama",
    "pytorch.revision": "main",
    "pytorch.dtype": "bfloat16",
    "pytorch.attn_implementation": "eager",
    "pytorch.cache_implementation": "static",
    "pytorch.torch_compile_backend": "eager",
    "pytorch.bnb_4bit_compute_dtype": "float32",
}


def sample(row: spec.Param) -> Any:
    """A value the table allows for ``row`` that differs from leaving it unset."""
    if row.path in SAMPLES:
        return SAMPLES[row.path]
    if row.choices:
        return row.choices[-1]
    if row.type == "bool":
        return True
    if row.type == "int":
        return int(max(row.min if row.min is not None else 0, 0)) + 2
    if row.type == "float":
        lo = row.min if row.min is not None else 0.0
        hi = row.max if row.max is not None else lo + 2.0
        return round(lo + (hi - lo) * 0.375, 4)
    if row.type == "dict":
        return {"k": 1}
    return "owner/value"


#: Settings a row needs before it takes effect that no rule of the table states.
NEEDS: dict[str, dict[str, Any]] = {
    "pytorch.max_memory": {"pytorch.device_map": "cpu"},  # the backend skips it without a device_map
}


def _rule_needs() -> dict[str, dict[str, Any]]:
    """From the rules: 'X only acts with Y on' (X set and Y not true) and 'X needs Y' (Y unset)."""
    out: dict[str, dict[str, Any]] = {}
    for rule in spec.RULES:
        if len(rule.when) != 2 or rule.when[0].op != "set":
            continue
        path, other = rule.when[0].path, rule.when[1]
        if other.op == "not_true":
            out.setdefault(path, {})[other.path] = True
        elif other.op == "unset":
            out.setdefault(path, {})[other.path] = sample(spec.param(other.path))
    return out


def context(backend: str, arg: spec.EngineArg) -> dict[str, Any]:
    """Other settings a row needs before it takes effect (from the table's rules where they say so)."""
    path = arg.path
    out: dict[str, Any] = {}
    if backend == "pytorch" and path in spec.rule("sampling-params-greedy").skip:
        out["decoder.do_sample"] = True
    beam_only = path in spec.rule("beam-params-single-beam").skip
    if beam_only or (backend == "vllm" and "beam" in arg.targets and path != "decoder.num_beams"):
        out["decoder.num_beams"] = 2
    if backend == "tensorrt" and "build_config" in arg.targets:
        out["tensorrt.builder_opt_level"] = 2  # a BuildConfig is passed only with a build-only field
    needs = {**_rule_needs(), **NEEDS}.get(path, {})
    out.update({k: v for k, v in needs.items() if k.split(".")[0] in ("decoder", backend)})
    return out


def standin(backend: str, values: dict[str, Any] | None = None, model: str = "owner/model") -> Any:
    """A config stand-in with every row of the backend's sections present and unset."""
    sections = {s: SimpleNamespace(**{p.name: None for p in spec.params(s)}) for s in ("decoder", backend)}
    cfg = SimpleNamespace(
        model=model, backend=backend, passthrough=None, max_input_tokens=None, lora_adapter=None,
        lora_merge=None, **sections,
    )
    for path, value in (values or {}).items():
        section, name = path.split(".")
        setattr(cfg if section == "experiment" else getattr(cfg, section), name, value)
    return cfg


def _names(backend: str, target: str) -> dict[str, str]:
    """What the table says goes to ``target``: engine name -> row path."""
    return {a.name: a.path for a in spec.engine_args(backend, target=target)}


def allowed_names(backend: str, target: str) -> set[str]:
    """Names a backend may pass to ``target``: rows, protocol arguments, nested config objects."""
    targets = spec.engine_targets(backend)
    nested = {name for name, t in targets.items() if t.parent == target}
    return set(_names(backend, target)) | set(targets[target].protocol) | nested


def unnamed_message(backend: str, target: str, name: str) -> str:
    mapping = {**_names(backend, target), **{k: "(protocol)" for k in spec.engine_targets(backend)[target].protocol}}
    return (
        f"{backend} passes {name!r} to {target} ({spec.engine_targets(backend)[target].display}), and no "
        f"row names it there. The table's mapping for {target}: {mapping}. Fix: give the row it comes from "
        f"engine_target={{{backend!r}: {target!r}}} (with engine_names={{{backend!r}: {name!r}}} if the "
        f"engine's name differs from the row's), or list {name!r} in the protocol of ({backend!r}, "
        f"{target!r}) in llem/spec/engines.py with the reason."
    )


# -- what the translation functions pass, per target ----------------------------------------


def passed(backend: str, cfg: Any) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The arguments the backend's translation passes for ``cfg``, per target, and what it skipped."""
    out: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    if backend == "vllm":
        (llm, s1), (sampling, s2), (beam, s3) = (
            vb.vllm_engine_kwargs(cfg), vb.vllm_sampling_kwargs(cfg), vb.vllm_beam_search_kwargs(cfg)
        )
        out = {"llm": llm, "sampling": sampling, "beam": beam}
        skipped = {**s1, **s2, **s3}
    elif backend == "tensorrt":
        (llm, s1), (sampling, s2) = tb.trtllm_llm_kwargs(cfg), tb.trtllm_sampling_kwargs(cfg)
        out = {"llm": llm, "sampling": sampling}
        skipped = {**s1, **s2}
    for name, target in spec.engine_targets(backend).items():
        if target.parent in out and isinstance(out[target.parent].get(name), dict):
            out[name] = out[target.parent][name]
    return out, skipped


ENGINE_BACKENDS = ("vllm", "tensorrt")


def everything_set(backend: str) -> list[dict[str, Any]]:
    """Configs that set every row the backend passes (in a few compatible groups)."""
    rows = {a.path: sample(a.row) for a in spec.engine_args(backend)}
    rows.pop("vllm.kv_cache_memory_bytes", None)  # it replaces gpu_memory_utilization
    plain = {k: v for k, v in rows.items() if k != "decoder.num_beams"}
    return [
        plain,
        {**plain, "decoder.do_sample": False},
        {**rows, "decoder.n": 3},
        # vLLM: the bytes that replace gpu_memory_utilization, the n-gram drafter; TensorRT-LLM: no
        # BuildConfig (the limits go to LLM only)
        {**rows, "vllm.kv_cache_memory_bytes": 2**30, "vllm.speculative_model": "ngram"} if backend == "vllm"
        else {**rows, "tensorrt.builder_opt_level": None},
    ]


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
def test_every_argument_the_translation_passes_is_named_by_a_row(backend):
    for values in everything_set(backend):
        cfg = standin(backend, values)
        cfg.max_input_tokens = 300
        out, _ = passed(backend, cfg)
        for target, kwargs in out.items():
            for name in kwargs:
                assert name in allowed_names(backend, target), unnamed_message(backend, target, name)


def _recorder(made: dict[str, list[dict]], kind: str, base: type) -> type:
    """A subclass of a stand-in engine class that records the keyword arguments it gets."""

    class Recorded(base):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs):
            made[kind].append(kwargs)
            super().__init__(**kwargs)

    return Recorded


@pytest.fixture
def recording_vllm(monkeypatch, engine_gpu):
    """vllm, a fake: records what LLM, SamplingParams and BeamSearchParams receive."""
    made: dict[str, list[dict]] = {"llm": [], "sampling": [], "beam": []}
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0-fake"
    mod.LLM = _recorder(made, "llm", VT.FakeLLM)
    mod.SamplingParams = _recorder(made, "sampling", VT.FakeParams)
    mod.EngineArgs = object  # not a dataclass: every argument goes through to LLM
    sp = types.ModuleType("vllm.sampling_params")
    sp.BeamSearchParams = _recorder(made, "beam", VT.FakeParams)
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    return made


def test_vllm_run_code_passes_only_named_arguments(recording_vllm):
    for values in everything_set("vllm"):
        backend = vb.VLLMBackend()
        backend.load(standin("vllm", values))
        # per-batch overrides (no seed: vLLM's engine is seeded once, no request is)
        backend.generate(["ab"], max_new_tokens=2, min_new_tokens=1)
        backend.release()
    nested = [t for t, target in spec.engine_targets("vllm").items() if target.parent == "llm"]
    for target, calls in recording_vllm.items():
        assert calls, f"the stand-in vLLM never built its {target} object"
        for kwargs in calls:
            for name in kwargs:
                assert name in allowed_names("vllm", target), unnamed_message("vllm", target, name)
            for inner in nested:
                for name in kwargs.get(inner, {}) if target == "llm" else ():
                    assert name in allowed_names("vllm", inner), unnamed_message("vllm", inner, name)


@pytest.fixture
def recording_trtllm(monkeypatch, engine_gpu):
    """tensorrt_llm, a fake: records what LLM, its config objects and SamplingParams receive."""
    made: dict[str, list[dict]] = {"llm": [], "sampling": []}
    mod = types.ModuleType("tensorrt_llm")
    mod.__version__ = "0.99-fake"
    mod.LLM = _recorder(made, "llm", TT.FakeLLM)
    mod.SamplingParams = _recorder(made, "sampling", TT.Recorder)
    api = TT.fake_llmapi()
    mod.llmapi = api
    mod.BuildConfig = api.BuildConfig
    monkeypatch.setitem(sys.modules, "tensorrt_llm", mod)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", api)
    return made


def test_tensorrt_run_code_passes_only_named_arguments(recording_trtllm, tmp_path):
    for values in everything_set("tensorrt"):
        for _ in range(2):  # the second load reuses the saved engine (model=folder, tokenizer=...)
            backend = tb.TensorRTBackend()
            backend.load(standin("tensorrt", {**values, "tensorrt.engine_dir": str(tmp_path)}))
            backend.generate(["ab"], max_new_tokens=2, min_new_tokens=1, seed=5)
            backend.release()
    nested = [t for t, target in spec.engine_targets("tensorrt").items() if target.parent == "llm"]
    for target, calls in recording_trtllm.items():
        assert calls
        for kwargs in calls:
            for name in kwargs:
                assert name in allowed_names("tensorrt", target), unnamed_message("tensorrt", target, name)
            for inner in nested if target == "llm" else ():
                for name in getattr(kwargs.get(inner), "kwargs", {}):
                    assert name in allowed_names("tensorrt", inner), unnamed_message("tensorrt", inner, name)


# -- the table itself -----------------------------------------------------------------------------


def test_engine_fields_of_each_row_are_consistent():
    problems = []
    for row in spec.PARAMS:
        for what in ("engine_target", "engine_names", "engine_values", "engine_readback"):
            for backend in getattr(row, what):
                if backend not in row.backends:
                    problems.append(f"{row.path}.{what} names {backend!r}, which the row's backends "
                                    f"{row.backends} do not include")
                elif what != "engine_target" and backend not in row.engine_target:
                    problems.append(f"{row.path}.{what} names {backend!r} but engine_target has no "
                                    f"{backend!r}: add engine_target={{{backend!r}: ...}}")
        for backend in row.engine_target:
            known = spec.engine_targets(backend)
            for target in spec.engine_arg(backend, row.path).targets if backend in row.backends else ():
                if target not in known:
                    problems.append(f"{row.path} goes to {target!r} for {backend}; the targets are "
                                    f"{sorted(known)}")
        for backend, values in row.engine_values.items():
            if row.choices is not None and set(values) != set(row.choices):
                problems.append(f"{row.path}.engine_values[{backend!r}] covers {sorted(map(str, values))}, "
                                f"the row allows {list(row.choices)}: make them the same")
    assert not problems, "\n".join(problems)


# -- values -----------------------------------------------------------------------------------------


def enum_args(backend: str) -> list[spec.EngineArg]:
    return [a for a in spec.engine_args(backend) if a.allowed() is not None]


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
def test_every_value_a_row_allows_translates(backend):
    for arg in enum_args(backend):
        for value in arg.allowed():
            cfg = standin(backend, {**context(backend, arg), arg.path: value})
            out, skipped = passed(backend, cfg)
            expected = arg.translate(value)
            for target in arg.targets:
                got = out.get(target, {}).get(arg.name)
                assert got == expected, (
                    f"{arg.path}={value!r} is allowed by the row, and {backend} passed "
                    f"{target}.{arg.name}={got!r}; the table says {expected!r}. Corrected "
                    f"engine_values[{backend!r}] for {arg.path}: "
                    f"{ {v: arg.translate(v) for v in arg.allowed()} }"
                )


#: Values rows refuse that backends used to translate (the seed's names and engine spellings).
REFUSED: dict[str, tuple[Any, ...]] = {
    "tensorrt.quantization": ("nvfp4", "int4_gptq", "int8_gptq", "fp8_rowwise", "fp8_block",
                              "int8_wo", "int4_wo", "W4A16_GPTQ", "w4a16_gptq", "FP8"),
    "tensorrt.kv_cache_dtype": ("fp8_e4m3", "nvfp4", "fp8_e5m2", "FP8"),
    "pytorch.dtype": ("fp16", "half", "bf16", "fp32", "auto", "torch.float16"),
    "vllm.quantization": ("marlin", "fp8_e5m2"),
    "decoder.early_stopping": ("never", 1),
}


def refused_values(arg: spec.EngineArg) -> tuple[Any, ...]:
    return (f"not-a-{arg.row.name}", *REFUSED.get(arg.path, ()))


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
def test_no_backend_translates_a_value_the_row_refuses(backend):
    for arg in enum_args(backend):
        for value in refused_values(arg):
            cfg = standin(backend, {**context(backend, arg), arg.path: value})
            try:
                out, _ = passed(backend, cfg)
            except ConfigError as exc:
                assert "Allowed:" in str(exc)
                continue
            got = {t: out.get(t, {}).get(arg.name) for t in arg.targets}
            pytest.fail(f"{backend} translated {arg.path}={value!r} to {got}, but the row refuses it "
                        f"(allowed: {list(arg.allowed())}). Refuse it (arg.translate), or add it to the "
                        "row's choices and engine_values if the engine really takes it.")


# -- every row a backend claims is consumed -------------------------------------------------------


def claimed(backend: str) -> list[spec.Param]:
    return [p for p in spec.PARAMS if backend in p.backends]


@pytest.mark.parametrize("backend", spec.BACKENDS)
def test_every_claimed_row_is_an_engine_argument_or_handled_elsewhere(backend):
    missing = [p.path for p in claimed(backend)
               if backend not in p.engine_target and p.path not in HANDLED_ELSEWHERE[backend]]
    assert not missing, (
        f"{backend} claims {missing} (backend in row.backends) but passes them to no engine target and "
        f"nothing says where they are used. Fix each: give the row engine_target={{{backend!r}: <one of "
        f"{sorted(spec.engine_targets(backend))}>}} and let the backend pass it, or add it to "
        f"HANDLED_ELSEWHERE[{backend!r}] with the place that uses it, or drop {backend!r} from its backends."
    )


@pytest.mark.parametrize("backend", spec.BACKENDS)
def test_handled_elsewhere_is_current(backend):
    stale = {path: why for path, why in HANDLED_ELSEWHERE[backend].items()
             if path not in spec.all_paths() or backend not in spec.param(path).backends
             or backend in spec.param(path).engine_target}
    assert not stale, f"HANDLED_ELSEWHERE[{backend!r}] lists rows that are engine arguments or not claimed: {stale}"


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
def test_every_engine_argument_row_is_consumed(backend):
    for arg in spec.engine_args(backend):
        value = sample(arg.row)
        out, skipped = passed(backend, standin(backend, {**context(backend, arg), arg.path: value}))
        for target in arg.targets:
            got = out.get(target, {}).get(arg.name)
            assert got == arg.translate(value) or arg.path in skipped, (
                f"{backend} claims {arg.path} for {target}.{arg.name}, but setting it to {value!r} passed "
                f"{got!r} there and skipped nothing. The table's mapping for {target}: "
                f"{_names(backend, target)}; the translation passed {out.get(target)}."
            )


def _real(backend: str, values: dict[str, Any]) -> Any:
    from llem.config import ExperimentConfig

    cfg = ExperimentConfig(backend=backend, model="owner/model")
    cfg.update(values)
    return cfg


#: Rows a backend handles itself, with the translation that uses them and a setting of them.
HANDLED_BY_THE_BACKEND: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {
    ("vllm", "decoder.do_sample"): (vb.vllm_sampling_kwargs, {"decoder.do_sample": False}),
    ("tensorrt", "decoder.do_sample"): (tb.trtllm_sampling_kwargs, {"decoder.do_sample": False}),
    ("vllm", "decoder.preset"): (vb.vllm_sampling_kwargs, {"decoder.preset": "creative"}),
    ("tensorrt", "decoder.preset"): (tb.trtllm_sampling_kwargs, {"decoder.preset": "creative"}),
    ("tensorrt", "tensorrt.engine_dir"): (lambda cfg: tb.trtllm_engine_cache_dir(cfg, {"model": "m"}),
                                          {"tensorrt.engine_dir": "/tmp/engines"}),
    ("tensorrt", "experiment.max_input_tokens"): (tb.trtllm_llm_kwargs, {"experiment.max_input_tokens": 300}),
    ("vllm", "experiment.passthrough"): (vb.vllm_engine_kwargs, {"experiment.passthrough": {"max_logprobs": 5}}),
    ("tensorrt", "experiment.passthrough"): (tb.trtllm_llm_kwargs, {"experiment.passthrough": {"max_logprobs": 5}}),
}


@pytest.mark.parametrize("case", sorted(HANDLED_BY_THE_BACKEND), ids=lambda c: f"{c[0]}-{c[1]}")
def test_rows_a_backend_handles_itself_change_its_output(case):
    backend, path = case
    assert path in HANDLED_ELSEWHERE[backend]
    translate, values = HANDLED_BY_THE_BACKEND[case]
    if path == "decoder.preset":  # a preset is expanded by the real config (resolved_decoder)
        given, unset = _real(backend, {"decoder": {"preset": values[path]}}), _real(backend, {})
    else:
        given, unset = standin(backend, values), standin(backend)
    assert translate(given) != translate(unset), (
        f"{backend} ignores {path}={values[path]!r}; HANDLED_ELSEWHERE says: {HANDLED_ELSEWHERE[backend][path]}"
    )


# -- read-back ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ENGINE_BACKENDS)
def test_readback_follows_the_rows(backend):
    # A resolved config with a distinct value at every path a row names: each row reads its own.
    def tree(paths: dict[str, Any]) -> Any:
        root: dict[str, Any] = {}
        for path, value in paths.items():
            node = root
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node.setdefault(leaf, value)

        def ns(d):
            return SimpleNamespace(**{k: ns(v) if isinstance(v, dict) else v for k, v in d.items()})

        return ns(root)

    args = [a for a in spec.engine_args(backend) if a.readback]
    resolved = tree({a.readback[0]: f"value of {a.path}" for a in args})
    read = vb.effective_from_vllm_config(resolved) if backend == "vllm" else tb.effective_from_llm_args(resolved)
    expected = {a.path: f"value of {a.path}" for a in args}
    wrong = {p: read.get(p) for p in expected if read.get(p) != expected[p]}
    assert not wrong, f"{backend} read back {wrong}; the rows' engine_readback say {expected}"
    sampling = vb.SAMPLING_READBACK if backend == "vllm" else tb.TRT_SAMPLING_READBACK
    assert sampling == _names_by_path(backend, "sampling")
    if backend == "vllm":
        assert vb.BEAM_READBACK == _names_by_path("vllm", "beam")


def _names_by_path(backend: str, target: str) -> dict[str, str]:
    return {a.path: a.name for a in spec.engine_args(backend, target=target)}


# -- PyTorch: tiny-random-llama, with the calls to transformers and torch recorded -----------------


@pytest.fixture
def recording_transformers(monkeypatch):
    """Record what from_pretrained, BitsAndBytesConfig, GenerationConfig.update and torch.compile get."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    made: dict[str, list[dict]] = {t: [] for t in spec.engine_targets("pytorch")}

    def record(target, kwargs):  # llem's own calls only, not transformers' calls to itself
        caller = sys._getframe(2).f_globals.get("__name__", "")
        if caller == "llem.backends.pytorch" or caller.startswith("llem.backends.pytorch."):
            made[target].append(dict(kwargs))

    def spy(target, original):
        def call(*args, **kwargs):
            record(target, kwargs)
            return original(*args, **kwargs)

        return call

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        spy("from_pretrained", transformers.AutoModelForCausalLM.from_pretrained))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        spy("tokenizer", transformers.AutoTokenizer.from_pretrained))
    update = transformers.GenerationConfig.update

    def recorded_update(self, **kwargs):
        record("generation", kwargs)
        return update(self, **kwargs)

    monkeypatch.setattr(transformers.GenerationConfig, "update", recorded_update)

    # Patch the classes, not the module's attributes: loading a model can put a fresh
    # 'transformers' module object in sys.modules, which holds the same classes.
    bnb_init = transformers.BitsAndBytesConfig.__init__

    def recorded_bnb_init(self, **kwargs):
        record("quantization_config", kwargs)
        bnb_init(self, **kwargs)

    monkeypatch.setattr(transformers.BitsAndBytesConfig, "__init__", recorded_bnb_init)

    def compile_(fn, **kwargs):  # record, do not compile (dynamo takes seconds on a CPU)
        record("compile", kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", compile_)
    return made


def pt_load(values: dict[str, Any]) -> tuple[Any, Any]:
    from llem.backends.pytorch import PyTorchBackend

    cfg = standin("pytorch", {"decoder.max_new_tokens": 4, **values}, model="tiny-random-llama")
    cfg.max_input_tokens = 64
    backend = PyTorchBackend()
    return backend, backend.load(cfg)


HAVE_BNB = importlib.util.find_spec("bitsandbytes") is not None


def _pt_rows(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items()
            if HAVE_BNB or not (k.startswith("pytorch.bnb_") or k.startswith("pytorch.load_in"))}


PT_GROUPS = [
    {"decoder.do_sample": True, "decoder.temperature": 0.7, "decoder.top_k": 20, "decoder.top_p": 0.9,
     "decoder.min_p": 0.05, "decoder.typical_p": 0.9, "decoder.repetition_penalty": 1.1,
     "decoder.no_repeat_ngram_size": 3, "decoder.min_new_tokens": 1, "pytorch.dtype": "float32",
     "pytorch.attn_implementation": "eager", "pytorch.use_cache": True, "pytorch.cache_implementation": "static",
     "pytorch.device_map": "cpu", "pytorch.max_memory": {"cpu": "2GiB"}, "pytorch.low_cpu_mem_usage": True,
     "pytorch.output_scores": True, "pytorch.revision": "main", "pytorch.trust_remote_code": False,
     "pytorch.torch_compile": True, "pytorch.torch_compile_mode": "default",
     "pytorch.torch_compile_backend": "eager"},
    {"decoder.num_beams": 2, "decoder.length_penalty": 0.8, "decoder.early_stopping": True},
    {"pytorch.assistant_model": "tiny-random-llama", "pytorch.num_assistant_tokens": 3},
    {"pytorch.prompt_lookup_num_tokens": 3},
    {"pytorch.load_in_4bit": True, "pytorch.bnb_4bit_compute_dtype": "float32",
     "pytorch.bnb_4bit_quant_type": "nf4", "pytorch.bnb_4bit_use_double_quant": True},
    {"pytorch.load_in_8bit": True},
]


def test_pytorch_passes_only_named_arguments(recording_transformers):
    for values in PT_GROUPS:
        values = _pt_rows(values)
        if not values:
            continue
        backend, _ = pt_load(values)
        recording_transformers["generate"].append(dict(backend._gen_extra))
        backend.release()
    silent = [t for t, calls in recording_transformers.items()
              if not calls and (HAVE_BNB or t != "quantization_config")]
    assert not silent, f"the spies saw no call to {silent}: the test no longer watches them"
    for target, calls in recording_transformers.items():
        for kwargs in calls:
            for name in kwargs:
                assert name in allowed_names("pytorch", target), unnamed_message("pytorch", target, name)


def pt_received(made: dict[str, list[dict]], backend: Any, target: str, name: str) -> Any:
    """What the tiny model's load gave ``target`` for ``name`` (the first call: the model, not a draft)."""
    if target == "generation":
        return getattr(backend._gen_config, name, None)
    if target == "generate":
        return backend._gen_extra.get(name)
    calls = [c for c in made[target] if name in c]
    return calls[0][name] if calls else None


def _expected_pt(arg: spec.EngineArg, value: Any) -> Any:
    import torch

    from llem.backends.pytorch import _torch_value

    return _torch_value(torch, arg.translate(value))


def table_skips_here(backend: str, values: dict[str, Any]) -> dict[str, str]:
    """What the table's skip rules leave unset on this machine: ``llem.run`` never passes it on."""
    from llem.config import ExperimentConfig
    from llem.machine import get_machine

    cfg = ExperimentConfig.from_dict({"backend": backend, **values})
    return cfg.skipped(get_machine().facts())


def _pt_check(made, arg: spec.EngineArg, value: Any) -> None:
    if (arg.path.startswith("pytorch.bnb_") or arg.path.startswith("pytorch.load_in")) and not HAVE_BNB:
        return
    values = {**context("pytorch", arg), arg.path: value}
    here = table_skips_here("pytorch", values)
    if arg.path in here:  # e.g. flash_attention_2 on a machine without a GPU
        assert "[rule " in here[arg.path], here[arg.path]
        return
    for calls in made.values():
        calls.clear()
    backend, info = pt_load(values)
    try:
        for target in arg.targets:
            got = pt_received(made, backend, target, arg.name)
            if arg.path == "pytorch.assistant_model":
                ok = got is backend.assistant_model and got is not None  # the loaded draft model
            else:
                ok = got == _expected_pt(arg, value)
            assert ok or arg.path in info.skipped, (
                f"pytorch claims {arg.path} for {target}.{arg.name}, but {arg.path}={value!r} gave "
                f"{target} {got!r} and skipped nothing. The table's mapping for {target}: "
                f"{_names('pytorch', target)}."
            )
    finally:
        backend.release()


def test_every_pytorch_engine_argument_row_is_consumed(recording_transformers):
    for arg in spec.engine_args("pytorch"):
        _pt_check(recording_transformers, arg, sample(arg.row))


def test_every_value_a_pytorch_row_allows_translates(recording_transformers):
    for arg in enum_args("pytorch"):
        for value in arg.allowed():
            _pt_check(recording_transformers, arg, value)


def test_pytorch_translates_no_value_the_row_refuses():
    pytest.importorskip("transformers")
    for arg in enum_args("pytorch"):
        for value in refused_values(arg):
            with pytest.raises(ConfigError, match="Allowed:"):
                backend, _ = pt_load({**context("pytorch", arg), arg.path: value})
                backend.release()


# -- adding a decoder parameter is one row plus its engine names -----------------------------------

NEW_ROW = textwrap.dedent('''
    import json
    import llem.spec.queries as q
    from llem.spec import Param

    # The one edit: a row with its engine names (here a hypothetical sampling cutoff; transformers'
    # GenerationConfig really has epsilon_cutoff, the vLLM and TensorRT-LLM names are made up and
    # checked against the translation functions only).
    row = Param("epsilon_cutoff", "decoder", "float", "Drop tokens below this probability.",
                min=0.0, max=1.0,
                engine_target={"pytorch": "generation", "vllm": ("sampling", "beam"), "tensorrt": "sampling"},
                engine_names={"vllm": "epsilon", "tensorrt": "epsilon_threshold"})
    q.PARAMS = q.PARAMS + (row,)
    q._BY_PATH[row.path] = row

    from types import SimpleNamespace
    from llem import spec
    from llem.backends import tensorrt as tb
    from llem.backends import vllm as vb
    from llem.backends.pytorch import PyTorchBackend
    from llem.config import ExperimentConfig

    out = {}
    cfg = ExperimentConfig(backend="vllm", model="owner/model", decoder={"epsilon_cutoff": 0.02, "num_beams": 1})
    out["config"] = cfg.decoder.epsilon_cutoff
    out["vllm_sampling"] = vb.vllm_sampling_kwargs(cfg)[0].get("epsilon")
    out["vllm_beam"] = vb.vllm_beam_search_kwargs(cfg)[0].get("epsilon")
    out["vllm_readback"] = vb.SAMPLING_READBACK.get("decoder.epsilon_cutoff")
    cfg = ExperimentConfig(backend="tensorrt", model="owner/model", decoder={"epsilon_cutoff": 0.02})
    out["tensorrt_sampling"] = tb.trtllm_sampling_kwargs(cfg)[0].get("epsilon_threshold")
    out["tensorrt_readback"] = tb.TRT_SAMPLING_READBACK.get("decoder.epsilon_cutoff")
    cfg = ExperimentConfig(backend="pytorch", model="tiny-random-llama",
                           decoder={"epsilon_cutoff": 0.02, "do_sample": True, "max_new_tokens": 2})
    backend = PyTorchBackend()
    info = backend.load(cfg)
    out["pytorch_generation_config"] = backend._gen_config.epsilon_cutoff
    out["pytorch_effective"] = info.effective.get("decoder.epsilon_cutoff")
    out["pytorch_generates"] = backend.generate(["Hello"]).requests[0].output_tokens
    backend.release()
    out["reference"] = "`decoder.epsilon_cutoff`" in spec.reference_markdown()
    print("RESULT" + json.dumps(out))
''')


def test_a_new_decoder_row_reaches_every_engine_without_a_backend_edit():
    pytest.importorskip("transformers")
    pytest.importorskip("traitlets")
    run = subprocess.run([sys.executable, "-c", NEW_ROW], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, run.stderr[-3000:]
    out = json.loads(line[0].removeprefix("RESULT"))
    assert out == {
        "config": 0.02,
        "vllm_sampling": 0.02,
        "vllm_beam": 0.02,
        "vllm_readback": "epsilon",
        "tensorrt_sampling": 0.02,
        "tensorrt_readback": "epsilon_threshold",
        "pytorch_generation_config": 0.02,
        "pytorch_effective": 0.02,
        "pytorch_generates": out["pytorch_generates"],
        "reference": True,
    }
    assert out["pytorch_generates"] >= 1
