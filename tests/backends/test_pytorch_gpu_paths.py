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
