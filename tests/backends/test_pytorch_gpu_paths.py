"""GPU code paths of the PyTorch backend, run against fakes that behave like CUDA and dynamo.

- the per-token clock on a device whose work finishes after the host has queued it;
- release() of a compiled model (dynamo keeps compiled code alive until it is reset);
- the transformers floor that ``from_pretrained(dtype=...)`` needs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402

from llem.backends.pytorch import clock as clock_mod  # noqa: E402

pytestmark = pytest.mark.gpu_path



class FakeCudaDevice:
    """A device that runs queued work asynchronously, on a virtual clock.

    ``launch(s)`` queues ``s`` seconds of work and returns at once (as a CUDA kernel launch
    does); ``synchronize()`` waits until everything queued is done (``torch.cuda.synchronize``).
    ``perf_counter()`` is the host's clock.
    """

    LAUNCH_S = 1e-5

    def __init__(self) -> None:
        self.now = 100.0
        self.busy_until = self.now
        self.syncs = 0

    def perf_counter(self) -> float:
        return self.now

    def launch(self, seconds: float) -> None:
        self.busy_until = max(self.busy_until, self.now) + seconds
        self.now += self.LAUNCH_S

    def synchronize(self) -> None:
        self.syncs += 1
        self.now = max(self.now, self.busy_until)


def transformers_like_loop(dev: FakeCudaDevice, clock, *, prompt_len: int, steps: int,
                           prefill_s: float, decode_s: float) -> None:
    """The order of transformers' decoding loop (GenerationMixin._sample with StopCheck).

    The prefill's forward pass is launched; each step chooses its token, calls the stopping
    criteria, then StopCheck reads ``bool(unfinished_sequences.max() == 0)``, which waits
    for the device; the next step's forward pass is launched at the top of the loop.
    """
    ids = torch.zeros((2, prompt_len), dtype=torch.long)
    dev.launch(prefill_s)  # _prefill
    for step in range(steps):
        if step:
            dev.launch(decode_s)  # model_forward of the next position
        ids = torch.cat([ids, torch.ones((2, 1), dtype=torch.long)], dim=-1)
        clock(ids, None)  # stopping_criteria(input_ids, scores)
        dev.synchronize()  # StopCheck: bool(unfinished_sequences.max() == 0)


def test_every_token_is_stamped_when_the_device_has_finished_its_step(monkeypatch):
    dev = FakeCudaDevice()
    monkeypatch.setattr(clock_mod, "time", SimpleNamespace(perf_counter=dev.perf_counter))
    phases: list[str] = []
    clock = clock_mod.make_clock(phases.append, dev.synchronize)
    t0 = dev.perf_counter()
    transformers_like_loop(dev, clock, prompt_len=5, steps=6, prefill_s=0.050, decode_s=0.010)
    times = clock.token_times(5, t0)
    assert len(times) == 6 and phases == ["decode"]
    assert times[0] == pytest.approx(0.050, abs=1e-4)  # TTFT holds the whole prefill
    gaps = [b - a for a, b in zip(times, times[1:])]
    # each gap is one decode step: the first is not ~0, none is one step early
    assert gaps == pytest.approx([0.010] * 5, abs=1e-4)
    assert dev.syncs >= 2 * 6  # the clock's sync on every call, and transformers' own


def test_a_cpu_clock_never_synchronizes(monkeypatch):
    dev = FakeCudaDevice()
    monkeypatch.setattr(clock_mod, "time", SimpleNamespace(perf_counter=dev.perf_counter))
    clock = clock_mod.make_clock(None, None)
    clock(torch.zeros((1, 3), dtype=torch.long), None)
    assert dev.syncs == 0 and len(clock.steps) == 1


def test_the_clock_class_is_made_once_and_answers_do_not_stop_for_each_row():
    from transformers import StoppingCriteria

    a, b = clock_mod.make_clock(None, None), clock_mod.make_clock(None, None)
    assert type(a) is type(b) and isinstance(a, StoppingCriteria)  # no class made per generate call
    ids = torch.zeros((3, 4), dtype=torch.long)
    first = a(ids, None)
    assert first.tolist() == [False] * 3 and a(torch.zeros((3, 5), dtype=torch.long), None) is first
    assert a(torch.zeros((2, 6), dtype=torch.long), None).tolist() == [False] * 2  # fewer rows
    assert [n for _, n in a.steps] == [4, 5, 6] and b.steps == []


def test_as_a_streamer_the_clock_skips_the_prompt_and_stamps_each_step(monkeypatch):
    dev = FakeCudaDevice()
    monkeypatch.setattr(clock_mod, "time", SimpleNamespace(perf_counter=dev.perf_counter))
    phases: list[str] = []
    clock = clock_mod.make_clock(phases.append, None)
    t0 = dev.perf_counter()
    clock.put(torch.zeros((2, 5), dtype=torch.long))  # generate() hands over the prompt first
    assert clock.steps == [] and phases == []
    for _ in range(3):
        dev.launch(0.010)
        dev.synchronize()
        clock.put(torch.ones(2, dtype=torch.long))  # StopCheck: one token per row
    dev.launch(0.010)
    dev.synchronize()
    clock.put(torch.ones((1, 3), dtype=torch.long))  # an assisted step accepting 3 tokens
    clock.end()
    assert [n for _, n in clock.steps] == [6, 7, 8, 11] and phases == ["decode"]
    times = clock.token_times(5, t0)
    assert len(times) == 6 and times[3:] == [times[3]] * 3  # the accepted run shares its step's time
    assert times[0] == pytest.approx(0.010, abs=1e-4)


def test_the_clock_is_a_streamer_on_a_cpu_and_a_criterion_on_a_gpu_or_with_beams():
    clock = clock_mod.make_clock(None, None)
    assert clock_mod.clock_kwargs(clock, cuda=False, num_beams=1) == {"streamer": clock}
    for kw in ({"cuda": True, "num_beams": 1}, {"cuda": False, "num_beams": 4},
               {"cuda": False, "num_beams": 1, "taken": {"streamer": object()}}):
        got = clock_mod.clock_kwargs(clock, **kw)
        assert list(got) == ["stopping_criteria"] and list(got["stopping_criteria"]) == [clock]


def test_both_hand_overs_give_the_same_tokens_and_counts():
    import llem
    from llem.config import ExperimentConfig

    base = {"model": "tiny-random-llama", "repeats": 1, "meter": "none", "num_prompts": 4,
            "pytorch.batch_size": 2, "decoder.max_new_tokens": 10, "warmup.runs": 0}
    greedy = llem.run(ExperimentConfig.from_dict(base)).runs[0]  # streamer
    beams = llem.run(ExperimentConfig.from_dict({**base, "decoder.num_beams": 2})).runs[0]  # criterion
    for run in (greedy, beams):
        for q in run.requests:
            assert len(q.token_times_s) == q.output_tokens > 0
            assert list(q.token_times_s) == sorted(q.token_times_s) and q.token_times_s[0] > 0


def test_seeding_touches_only_the_generators_a_run_samples_from():
    calls = []
    fake = SimpleNamespace(
        default_generator=SimpleNamespace(manual_seed=lambda s: calls.append(("cpu", s))),
        cuda=SimpleNamespace(manual_seed_all=lambda s: calls.append(("cuda", s))),
    )
    clock_mod.seed_generators(fake, 7, cuda=False)
    clock_mod.seed_generators(fake, 8, cuda=True)
    assert calls == [("cpu", 7), ("cpu", 8), ("cuda", 8)]


def test_a_batch_is_seeded_only_when_it_samples(monkeypatch):
    import llem
    from llem.config import ExperimentConfig

    seeds = []
    monkeypatch.setattr(clock_mod, "seed_generators", lambda t, s, cuda: seeds.append(s))
    base = {"model": "tiny-random-llama", "repeats": 1, "meter": "none", "num_prompts": 4,
            "pytorch.batch_size": 2, "decoder.max_new_tokens": 4, "warmup.runs": 0,
            "decoder.seed": 5}
    llem.run(ExperimentConfig.from_dict({**base, "decoder.do_sample": False}))
    assert seeds == []  # greedy draws no random number: nothing to seed inside the window
    llem.run(ExperimentConfig.from_dict({**base, "decoder.do_sample": True}))
    assert seeds == [5, 6]  # one seed per batch, as before


# -- release() of a compiled model -------------------------------------------------------------


class FakeDynamo:
    """``torch.compile`` and ``torch._dynamo.reset`` as they keep memory.

    dynamo installs what it compiles on the code object of the compiled function (shared by
    every instance of the class), and that compiled code holds the function, so a bound
    ``model.forward`` keeps its model (and its weights) alive until ``reset()``.
    """

    def __init__(self) -> None:
        self.cache: dict[object, list] = {}
        self.resets = 0

    def compile(self, fn, **kwargs):
        def compiled(*args, **kw):
            return fn(*args, **kw)

        self.cache.setdefault(getattr(fn, "__code__", fn), []).append(compiled)
        return compiled

    def reset(self) -> None:
        self.cache.clear()
        self.resets += 1


@pytest.fixture
def dynamo(monkeypatch):
    fake = FakeDynamo()
    monkeypatch.setattr(torch, "compile", fake.compile)
    monkeypatch.setattr(torch._dynamo, "reset", fake.reset)
    return fake


def _config(**values):
    from llem.config import ExperimentConfig

    cfg = ExperimentConfig(model="tiny-random-llama")
    cfg.update({"decoder.max_new_tokens": 2, **values})
    return cfg


def test_release_frees_a_compiled_model(dynamo):
    import gc
    import weakref

    from llem.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    info = b.load(_config(**{"pytorch.torch_compile": True, "pytorch.torch_compile_backend": "eager"}))
    assert info.effective["pytorch.torch_compile"] is True and dynamo.cache
    assert b.generate(["Hello"]).requests[0].output_tokens >= 1
    ref = weakref.ref(b.model)
    b.release()
    gc.collect()
    assert ref() is None, "the released model is still alive (held by compiled code)"
    assert dynamo.resets == 1 and not dynamo.cache


def test_release_frees_a_model_transformers_compiled_itself(dynamo):
    import gc
    import weakref

    from llem.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    b.load(_config())
    # what transformers' get_compiled_call leaves on the model for a static cache's decode step
    b.model._compiled_call = torch.compile(b.model.__call__)
    ref = weakref.ref(b.model)
    b.release()
    gc.collect()
    assert ref() is None and dynamo.resets == 1


def test_release_of_an_eager_model_leaves_dynamo_alone(dynamo):
    from llem.backends.pytorch import PyTorchBackend

    b = PyTorchBackend()
    b.load(_config())
    b.release()
    assert dynamo.resets == 0


# -- the transformers floor ---------------------------------------------------------------------


def test_setup_cfg_asks_for_the_transformers_the_backend_needs():
    import configparser
    import re
    from pathlib import Path

    from llem.backends.pytorch.loading import TRANSFORMERS_MIN

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[2] / "setup.cfg")
    reqs = cfg["options.extras_require"]["pytorch"].split()
    (floor,) = [r for r in reqs if r.startswith("transformers")]
    found = re.fullmatch(r"transformers>=(\d+)\.(\d+)", floor)
    assert found, floor
    # from_pretrained(dtype=...) exists from 4.56 on: a lower floor installs a transformers
    # that ignores the dtype; a higher one asks for more than the backend needs
    assert (int(found[1]), int(found[2])) == TRANSFORMERS_MIN == (4, 56)


@pytest.mark.parametrize("version", ["4.46.3", "4.55.4"])
def test_an_older_transformers_is_refused_with_the_upgrade(version):
    from llem.backends.pytorch.loading import check_transformers
    from llem.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=rf"transformers {version} .*pip install -U 'transformers>=4.56'"):
        check_transformers(version)


@pytest.mark.parametrize("version", ["4.56.0", "4.57.1.dev0", "5.24.0", "unknown"])
def test_a_recent_transformers_passes(version):
    from llem.backends.pytorch.loading import check_transformers

    check_transformers(version)


def test_load_refuses_an_old_transformers_before_any_weight(monkeypatch):
    import transformers

    from llem.backends.pytorch import PyTorchBackend
    from llem.errors import MissingDependencyError

    calls = []
    monkeypatch.setattr(transformers, "__version__", "4.50.0")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        classmethod(lambda cls, *a, **k: calls.append(k)))
    with pytest.raises(MissingDependencyError, match="needs transformers>=4.56"):
        PyTorchBackend().load(_config())
    assert calls == []


def test_on_a_cpu_the_clock_pokes_the_sampler_after_each_step_and_never_on_a_gpu():
    from llem.backends.base import PhaseMarks

    phases: list[str] = []
    pokes: list[int] = []
    marks = PhaseMarks(phases.append, lambda: pokes.append(len(clock.steps)))
    clock = clock_mod.make_clock(marks, None)
    clock.put(torch.zeros((2, 5), dtype=torch.long))  # the prompt: no step yet
    for _ in range(3):
        clock.put(torch.ones(2, dtype=torch.long))
    clock(torch.zeros((2, 9), dtype=torch.long), None)  # beam search on a CPU: the criterion
    assert pokes == [1, 2, 3, 4] and phases == ["decode"]
    dev = FakeCudaDevice()
    gpu = clock_mod.make_clock(PhaseMarks(phases.append, lambda: pokes.append(-1)), dev.synchronize)
    gpu(torch.zeros((2, 6), dtype=torch.long), None)
    assert pokes == [1, 2, 3, 4]  # a GPU step leaves the sampler thread to read the meter
    plain = clock_mod.make_clock(phases.append, None)  # a plain callback has no on_step
    plain.put(torch.zeros((1, 2), dtype=torch.long))
    plain.put(torch.ones(1, dtype=torch.long))
    assert len(plain.steps) == 1
