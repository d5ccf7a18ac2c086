"""GPU code paths of the vLLM and TensorRT-LLM backends, against engines that schedule like the real ones.

- continuous batching: at most ``max_num_seqs`` (vLLM) / ``max_batch_size`` (TensorRT-LLM)
  requests run at once, the others are admitted as earlier ones finish, so prefill and
  decode overlap; the batch must then say it has no prefill/decode split;
- beam search on TensorRT-LLM returns every beam, best first: only the best one counts;
- vLLM's engine is seeded once, and no request carries a seed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from types import SimpleNamespace

import pytest

from llem.backends import tensorrt as tb
from llem.backends import vllm as vb
from llem.backends.phases import MIXED, OVERLAP, PhaseTracker, split_note
from llem.config import ExperimentConfig

pytestmark = pytest.mark.gpu_path


def config(backend: str, **values):
    cfg = ExperimentConfig(backend=backend, model="owner/model")
    cfg.update(values)
    return cfg


class Tokenizer:
    def encode(self, text):
        return [ord(c) % 97 for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"t{i}" for i in ids)


class Params:
    """SamplingParams / BeamSearchParams: the arguments become attributes, as in vLLM."""

    made: list[dict] = []

    def __init__(self, **kwargs):
        self.max_tokens = 16
        self.seed = None
        self.__dict__.update(kwargs)
        self.kwargs = kwargs
        Params.made.append(kwargs)


class Scheduler:
    """Continuous batching, step by step, as vLLM's and TensorRT-LLM's schedulers run it.

    At most ``slots`` requests run; the others wait in arrival order and are admitted when a
    running one finishes. A step gives each newly admitted request its first token (its
    prompt fits one step's token budget) and each running one its next token; a request
    finishes at its ``max_tokens``.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.order: list[str] = []
        self.limit: dict[str, int] = {}
        self.tokens: dict[str, int] = {}

    def add(self, rid: str, max_tokens: int) -> None:
        self.order.append(rid)
        self.limit[rid] = int(max_tokens)
        self.tokens[rid] = 0

    def unfinished(self) -> bool:
        return any(self.tokens[r] < self.limit[r] for r in self.order)

    def step(self) -> list[str]:
        """Advance one step; return the ids that got a token."""
        running = [r for r in self.order if 0 < self.tokens[r] < self.limit[r]]
        free = self.slots - len(running)
        admitted = [r for r in self.order if self.tokens[r] == 0][: max(0, free)]
        for r in running + admitted:
            self.tokens[r] += 1
        return running + admitted


# -- vLLM ------------------------------------------------------------------------------------


class VllmEngine:
    """vLLM's LLMEngine as llem drives it: outputs are cumulative, only requests with new tokens report."""

    def __init__(self, slots: int, seed):
        self.scheduler = Scheduler(slots)
        self.vllm_config = SimpleNamespace(
            model_config=SimpleNamespace(dtype="torch.float16", max_model_len=2048, seed=seed),
            scheduler_config=SimpleNamespace(max_num_seqs=slots),
        )

    def add_request(self, rid, prompt, params):
        self.scheduler.add(rid, params.max_tokens)

    def has_unfinished_requests(self):
        return self.scheduler.unfinished()

    def step(self):
        time.sleep(0.001)
        outs = []
        for rid in self.scheduler.step():
            n = self.scheduler.tokens[rid]
            seq = SimpleNamespace(text=f"out-{rid}", token_ids=list(range(n)))
            outs.append(SimpleNamespace(request_id=rid, outputs=[seq], finished=n >= self.scheduler.limit[rid]))
        return outs


class VllmLLM:
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.llm_engine = VllmEngine(kwargs.get("max_num_seqs") or 256, kwargs.get("seed", 0))
        VllmLLM.instances.append(self)

    def get_tokenizer(self):
        return Tokenizer()

    def beam_search(self, prompts, params):
        # sequences best first; a beam's tokens include the prompt
        return [SimpleNamespace(sequences=[
            SimpleNamespace(tokens=p["prompt_token_ids"] + [7] * params.max_tokens, text="best"),
            SimpleNamespace(tokens=p["prompt_token_ids"] + [8] * params.max_tokens, text="second"),
        ]) for p in prompts]


@pytest.fixture
def vllm_engine(monkeypatch, engine_gpu):
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0-fake"
    mod.LLM = VllmLLM
    mod.SamplingParams = Params
    mod.EngineArgs = object  # not a dataclass: every argument goes to LLM
    sp = types.ModuleType("vllm.sampling_params")
    sp.BeamSearchParams = Params
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    monkeypatch.setattr("llem.models.is_cached", lambda repo, filename="config.json": True)
    VllmLLM.instances.clear()
    Params.made.clear()
    return mod


def _vllm_batch(slots: int, prompts: int):
    backend = vb.VLLMBackend()
    backend.load(config("vllm", **{"vllm.max_num_seqs": slots, "decoder.max_new_tokens": 3}))
    phases: list[str] = []
    out = backend.generate([f"prompt {i}" for i in range(prompts)], on_phase=phases.append)
    backend.release()
    return out, phases


def test_vllm_batch_that_fits_keeps_its_split(vllm_engine):
    out, phases = _vllm_batch(slots=8, prompts=5)
    assert phases == ["prefill", "decode"] and out.no_phase_split == ""
    assert out.prefill_s == max(r.ttft_s for r in out.requests)
    assert all(r.output_tokens == 3 for r in out.requests)


def test_vllm_batch_larger_than_max_num_seqs_has_no_split(vllm_engine):
    out, phases = _vllm_batch(slots=2, prompts=5)
    # requests 2..4 wait while 0 and 1 decode: the steps in between do both
    assert phases == ["prefill", MIXED, "decode"]
    assert out.no_phase_split == OVERLAP
    assert all(r.output_tokens == 3 and len(r.token_times_s) == 3 for r in out.requests)
    # the last first token comes after the first requests had finished
    assert out.prefill_s == max(r.ttft_s for r in out.requests) > out.requests[0].token_times_s[-1]


def test_vllm_beam_search_has_no_split(vllm_engine):
    backend = vb.VLLMBackend()
    backend.load(config("vllm", **{"decoder.num_beams": 2, "decoder.max_new_tokens": 4}))
    phases: list[str] = []
    out = backend.generate(["ab", "cd"], on_phase=phases.append)
    backend.release()
    assert phases == [MIXED] and out.no_phase_split == vb.BEAM_NO_SPLIT
    assert [r.output_tokens for r in out.requests] == [4, 4]  # the best beam, as transformers


def test_vllm_seeds_the_engine_once_and_no_request(vllm_engine):
    backend = vb.VLLMBackend()
    info = backend.load(config("vllm", **{"decoder.seed": 7, "decoder.do_sample": True,
                                          "decoder.temperature": 0.8, "decoder.max_new_tokens": 2}))
    assert VllmLLM.instances[-1].kwargs["seed"] == 7
    assert info.effective["decoder.seed"] == 7 and "seeds the engine once" in info.effective["llem.seeding"]
    assert any("seeds the engine once" in n for n in info.notes)
    backend.generate(["ab"], max_new_tokens=2, min_new_tokens=1)
    with pytest.raises(TypeError):
        backend.generate(["ab"], seed=3)  # no per-batch seed to forward
    backend.release()
    assert Params.made and not any("seed" in kw for kw in Params.made)


def _run(backend: str, **fields):
    import llem

    cfg = ExperimentConfig.from_dict({
        "backend": backend, "model": "owner/model", "repeats": 1, "meter": "estimate",
        "sampling_interval_s": 0.02, "num_prompts": 4, "decoder.max_new_tokens": 3,
        "warmup.runs": 0, "baseline.seconds": 0.0, **fields})
    return llem.run(cfg)


def test_a_run_of_several_seeded_batches_never_seeds_a_request(vllm_engine):
    r = _run("vllm", **{"decoder.do_sample": True, "decoder.temperature": 0.7, "decoder.seed": 11})
    assert VllmLLM.instances[-1].kwargs["seed"] == 11
    assert r.effective_config["decoder.seed"] == 11
    assert Params.made and not any("seed" in kw for kw in Params.made)


def test_a_run_with_overlapping_phases_reports_no_phase_energy(vllm_engine):
    r = _run("vllm", **{"vllm.max_num_seqs": 2})
    run = r.runs[0]
    assert run.energy_j is not None and run.energy_j > 0
    assert run.prefill_energy_j is None and run.decode_energy_j is None  # not made up
    assert MIXED in run.measurement.phase_energy_j()  # the timeline says where
    assert any(n.startswith("Prefill and decode energy are not reported") for n in r.notes)


def test_a_run_that_fits_keeps_its_phase_energy(vllm_engine):
    r = _run("vllm", **{"vllm.max_num_seqs": 8})
    run = r.runs[0]
    assert run.prefill_energy_j is not None and run.decode_energy_j is not None
    assert not any("Prefill and decode energy" in n for n in r.notes)


def test_a_beam_search_run_saves_and_loads(vllm_engine):
    from llem.results import Result

    r = _run("vllm", **{"decoder.num_beams": 2})
    run = r.runs[0]
    assert run.prefill_s is None and run.decode_s is None and run.prefill_energy_j is None
    again = Result.from_dict(json.loads(r.to_json()))
    assert again.runs[0].prefill_s is None and again.runs[0].output_tokens == run.output_tokens


# -- TensorRT-LLM ------------------------------------------------------------------------------


class TrtEngine:
    """TensorRT-LLM's executor: in-flight batching in a thread, results streamed per request.

    ``generate_async(ids, sampling_params=..., streaming=True)`` returns a result that
    yields after each step that gave its request tokens; ``outputs`` holds one sequence per
    returned beam (``n``), best first.
    """

    def __init__(self, slots: int) -> None:
        self.scheduler = Scheduler(slots)
        self.cond = threading.Condition()
        self.step_no = 0
        self.thread: threading.Thread | None = None

    def submit(self, rid: str, max_tokens: int) -> None:
        with self.cond:
            self.scheduler.add(rid, max_tokens)
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _run(self) -> None:
        time.sleep(0.01)  # every request of the batch is submitted first
        while True:
            with self.cond:
                if not self.scheduler.unfinished():
                    self.cond.notify_all()
                    return
                self.scheduler.step()
                self.step_no += 1
                self.cond.notify_all()
            time.sleep(0.004)


class TrtResult:
    def __init__(self, engine: TrtEngine, rid: str, params) -> None:
        self.engine, self.rid = engine, rid
        kw = params.kwargs
        self.beams = kw.get("n") or 1  # beam search: n beams, best first
        self.outputs: list = []

    def _snapshot(self, n: int) -> None:
        self.outputs = [SimpleNamespace(text=f"beam{b}-{n}", token_ids=[b] * n) for b in range(self.beams)]

    def __iter__(self):
        sched, seen = self.engine.scheduler, 0
        while True:
            with self.engine.cond:
                self.engine.cond.wait_for(lambda s=seen: sched.tokens[self.rid] > s
                                          or not sched.unfinished(), timeout=2.0)
                n = sched.tokens[self.rid]
            if n > seen:
                seen = n
                self._snapshot(n)
                yield self
            if n >= sched.limit[self.rid]:
                return


class TrtLLM:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.tokenizer = Tokenizer()
        slots = kwargs.get("max_batch_size") or 8
        self.args = SimpleNamespace(build_config=SimpleNamespace(max_batch_size=slots), max_beam_width=None)
        self.engine = TrtEngine(slots)
        self.count = 0

    def generate_async(self, ids, sampling_params=None, streaming=False):
        rid = f"r{self.count}"
        self.count += 1
        self.engine.submit(rid, sampling_params.kwargs.get("max_tokens", 32))
        return TrtResult(self.engine, rid, sampling_params)

    def shutdown(self):
        pass


@pytest.fixture
def trt_engine(monkeypatch, engine_gpu):
    mod = types.ModuleType("tensorrt_llm")
    mod.__version__ = "0.99-fake"
    mod.LLM = TrtLLM
    mod.SamplingParams = Params
    api = types.ModuleType("tensorrt_llm.llmapi")
    api.QuantAlgo = SimpleNamespace()
    api.QuantConfig = api.KvCacheConfig = api.BuildConfig = Params
    mod.llmapi = api
    monkeypatch.setitem(sys.modules, "tensorrt_llm", mod)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", api)
    Params.made.clear()
    return mod


def _trt_batch(prompts: int, **values):
    backend = tb.TensorRTBackend()
    backend.load(config("tensorrt", **{"decoder.max_new_tokens": 3, **values}))
    phases: list[str] = []
    out = backend.generate([f"prompt {i}" for i in range(prompts)], on_phase=phases.append)
    backend.release()
    return out, phases


def test_tensorrt_beam_search_counts_the_best_beam_only(trt_engine):
    out, _ = _trt_batch(2, **{"decoder.num_beams": 4, "decoder.max_new_tokens": 5})
    assert Params.made[-1]["use_beam_search"] is True and Params.made[-1]["n"] == 4
    for r in out.requests:
        assert r.output_tokens == 5  # not 4 beams x 5 tokens
        assert r.text == "beam0-5"  # the best beam's text
        assert len(r.token_times_s) == 5


def test_tensorrt_beam_tokens_match_vllm_and_pytorch_counting():
    best = SimpleNamespace(token_ids=[1, 2, 3])
    other = SimpleNamespace(token_ids=[4, 5, 6])
    assert tb.returned_tokens([best, other], beam_search=True) == 3
    assert tb.returned_tokens([best, other], beam_search=False) == 6  # n sampled completions all cost
    assert tb.returned_tokens([], beam_search=True) == 0


def test_tensorrt_batch_that_fits_keeps_its_split(trt_engine):
    out, phases = _trt_batch(3, **{"tensorrt.max_batch_size": 8})
    assert phases == ["prefill", "decode"] and out.no_phase_split == ""
    assert all(r.output_tokens == 3 for r in out.requests)


def test_tensorrt_batch_larger_than_max_batch_size_has_no_split(trt_engine):
    out, phases = _trt_batch(5, **{"tensorrt.max_batch_size": 2})
    assert phases == ["prefill", MIXED, "decode"] and out.no_phase_split == OVERLAP
    assert all(r.output_tokens == 3 for r in out.requests)


# -- the tracker itself -----------------------------------------------------------------------


def test_phase_tracker_moves_forward_only():
    marks: list[str] = []
    t = PhaseTracker(marks.append, ["a", "b"])
    assert t.observe(0.1, {}) == "prefill"
    # a's first token: b's of the same step may still be on its way to Python
    assert t.observe(0.2, {"a": 1}) == "prefill"
    assert t.observe(0.25, {"a": 2}) == MIXED  # a decoded while b has nothing
    assert t.observe(0.3, {"a": 3}, finished=["a"]) == MIXED  # b still waits: no going back
    assert t.observe(0.4, {"b": 1}) == "decode" and t.all_first_s == 0.4
    assert marks == [MIXED, "decode"] and t.no_split == OVERLAP


def test_first_tokens_of_one_step_seen_one_by_one_keep_the_split():
    marks: list[str] = []
    t = PhaseTracker(marks.append, ["a", "b"])
    t.observe(0.1, {"a": 1})  # b's first token, made in the same step, arrives next
    t.observe(0.11, {"b": 1})
    t.observe(0.2, {"a": 2, "b": 2})
    assert marks == ["decode"] and t.no_split == "" and t.all_first_s == 0.11


def test_a_request_finished_with_its_first_token_does_not_make_a_mix():
    marks: list[str] = []
    t = PhaseTracker(marks.append, ["a", "b"])
    t.observe(0.1, {"a": 1}, finished=["a"])
    t.observe(0.2, {"b": 1}, finished=["b"])
    assert marks == ["decode"] and t.no_split == ""


def test_split_note_names_each_reason_once():
    assert split_note(["", ""]) is None
    note = split_note([OVERLAP, "", OVERLAP])
    assert note is not None and note.count(OVERLAP) == 1 and MIXED in note


def test_the_mixed_phase_is_a_phase_the_palette_knows():
    from llem.results.palette import PHASE_COLOURS

    assert MIXED in PHASE_COLOURS


def test_a_run_without_a_split_displays_and_reports(vllm_engine, tmp_path):
    r = _run("vllm", **{"decoder.num_beams": 2})
    text = str(r)
    assert "energy" in text
    bundle = r._repr_mimebundle_() if hasattr(r, "_repr_mimebundle_") else {"text/plain": repr(r)}
    assert "text/plain" in bundle
    r.save(tmp_path)
    from llem.report.content import build_report, run_rows, table_rows

    assert run_rows(r) and table_rows([r])
    build_report([r], charts=False)
    r.export(tmp_path / "runs.csv")


# -- the GPU check kit's engine checks (llem.gpucheck.issue15_checks), on these engines ----------


class _KitCtx:
    """The kit's context on a CUDA machine, as far as its engine checks ask."""

    simulate, cuda, quick = False, True, True

    def need_cuda(self, what=""):
        pass


def test_the_kits_beam_check_passes_on_best_beam_counting(trt_engine, monkeypatch):
    from llem.gpucheck import issue15_checks as i15

    monkeypatch.setattr(i15, "_importable", lambda module: True)
    monkeypatch.setattr("llem.models.is_cached", lambda repo, filename="config.json": True)
    got = i15.trt_beam_best_only(_KitCtx())
    assert got["status"] == "pass", got
    assert got["numbers"]["output_tokens"] == got["numbers"]["expected"] == 16  # 2 prompts x 8, not x 3 beams
    assert Params.made[-1]["n"] == 3


def test_the_kits_split_check_sees_an_overlap_and_a_fit(vllm_engine, monkeypatch):
    from llem.gpucheck import issue15_checks as i15

    monkeypatch.setattr(i15, "_importable", lambda module: True)
    got = i15.engine_phase_split(_KitCtx())
    assert got["status"] == "pass", got
    n = got["numbers"]
    assert n["over_prefill_j"] is None and n["over_decode_j"] is None
    assert n["fits_prefill_j"] is not None and n["fits_decode_j"] is not None
    assert [llm.kwargs["max_num_seqs"] for llm in VllmLLM.instances] == [2, 2]
