"""Shared test settings: never reach a model hub, keep threads and caches local."""

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
