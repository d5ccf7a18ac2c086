"""Shared test settings: never reach a model hub, keep threads and caches local."""

import os
import signal
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A suite started in the background by a shell without job control (`make test &`) inherits
# Ctrl-C ignored, and Python then leaves it ignored: the tests that send a real SIGINT (to
# this process, or to a CLI they start, which inherits an ignored signal but not a handler)
# would see nothing. Give Ctrl-C its usual meaning here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _restore_library_progress_bars():
    """The CLI silences transformers' progress bars for its whole process; a test runs the CLI
    in-process, so put that global state back after every test."""
    env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    logging = sys.modules.get("transformers.utils.logging")
    enabled = logging.is_progress_bar_enabled() if logging is not None else True
    yield
    if env is None:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    else:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = env
    logging = sys.modules.get("transformers.utils.logging")
    if logging is not None:
        (logging.enable_progress_bar if enabled else logging.disable_progress_bar)()


def _no_cuda_question(*args):
    raise AssertionError("a backend asked torch what GPU is here (that initialises CUDA in this "
                         "process); llem.machine answers it through NVML")


@pytest.fixture
def engine_gpu(monkeypatch):
    """One GPU as NVML reports it, and a stand-in torch whose CUDA must not be asked about it.

    For the engine backends' run code (vLLM, TensorRT-LLM) on a machine without a GPU: the
    GPU they name comes from :func:`llem.machine.get_machine`; freeing memory may ask
    ``torch.cuda.is_initialized``.
    """
    import types
    from types import SimpleNamespace

    from llem.machine import Gpu, Machine, use_machine

    torch = types.ModuleType("torch")
    torch.__version__ = "0-fake"
    torch.cuda = SimpleNamespace(is_available=_no_cuda_question, get_device_name=_no_cuda_question,
                                 device_count=_no_cuda_question, get_device_capability=_no_cuda_question,
                                 is_initialized=lambda: False, empty_cache=lambda: None)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with use_machine(Machine.fake([Gpu(0, "Fake GPU", 8.0, uuid="GPU-fake0")])) as machine:
        yield machine


@pytest.fixture
def engine_run(engine_gpu, monkeypatch):
    """``llem.run`` of a quick config on a stand-in engine, recording what its SamplingParams got.

    ``engine_run(module, backend, **fields)`` swaps ``module.SamplingParams`` (the fake
    ``vllm`` or ``tensorrt_llm``) for a subclass that records its keyword arguments, runs two
    prompts of 3 new tokens with estimated energy, and returns ``(result, calls)``.
    """
    def run(module, backend, **fields):
        import llem
        from llem.config import ExperimentConfig

        calls = []
        base = module.SamplingParams

        class Recorded(base):
            def __init__(self, **kwargs):
                calls.append(kwargs)
                super().__init__(**kwargs)

        monkeypatch.setattr(module, "SamplingParams", Recorded)
        # the stand-in engine loads nothing from the model hub: its id counts as cached
        monkeypatch.setattr("llem.models.is_cached", lambda repo, filename="config.json": True)
        cfg = ExperimentConfig.from_dict({
            "backend": backend, "model": "owner/model", "repeats": 1, "meter": "estimate",
            "sampling_interval_s": 0.02, "num_prompts": 2, "decoder.max_new_tokens": 3,
            "warmup.runs": 0, **fields})
        return llem.run(cfg), calls

    return run
