"""FlashAttention gating and the GPU a run uses: table rules, checked against fake machines.

FlashAttention-2/3 take float16/bfloat16 only and run on the GPU (transformers warns, then
the kernels fail); compute-capability checks ask the GPU a run uses (CUDA's device 0),
not the best GPU on the machine.
"""

from __future__ import annotations

import pytest

from llem.config import ExperimentConfig
from llem.machine import Gpu, Machine, use_machine, where
from llem.spec.render import tier_facts

pytestmark = pytest.mark.gpu_path

HOPPER = tier_facts(9.0)  # a Hopper node with every package the table names


@pytest.fixture(autouse=True)
def _pci_order(monkeypatch):
    # the GPUs below numbered as NVML lists them; CUDA's default order (fastest first) is
    # tested on its own in test_cuda_default_order_puts_the_fastest_first
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def skipped(facts, **values):
    cfg = ExperimentConfig(backend="pytorch")
    cfg.update(values)
    return cfg.skipped(facts)


@pytest.mark.parametrize("attn", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_in_float32_is_skipped(attn):
    why = skipped(HOPPER, **{"pytorch.attn_implementation": attn, "pytorch.dtype": "float32"})
    assert "[rule flash-attention-needs-half-precision]" in why["pytorch.attn_implementation"]
    assert "float16 and bfloat16 only" in why["pytorch.attn_implementation"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_flash_attention_in_half_precision_runs(dtype):
    assert "pytorch.attn_implementation" not in skipped(
        HOPPER, **{"pytorch.attn_implementation": "flash_attention_2", "pytorch.dtype": dtype})


@pytest.mark.parametrize("where_to", ["cpu", "disk"])
def test_flash_attention_with_weights_off_the_gpu_is_skipped(where_to):
    why = skipped(HOPPER, **{"pytorch.attn_implementation": "flash_attention_2", "pytorch.dtype": "bfloat16",
                             "pytorch.device_map": where_to})
    assert "[rule flash-attention-needs-gpu-weights]" in why["pytorch.attn_implementation"]
    assert "pytorch.attn_implementation" not in skipped(
        HOPPER, **{"pytorch.attn_implementation": "flash_attention_2", "pytorch.dtype": "bfloat16",
                   "pytorch.device_map": "cuda:0"})


def test_an_unset_dtype_is_judged_by_what_the_checkpoint_loads():
    fa2 = {"pytorch.attn_implementation": "flash_attention_2"}
    why = skipped({**HOPPER, "default_dtype": "float32"}, **fa2)
    assert "[rule flash-attention-needs-half-precision-weights]" in why["pytorch.attn_implementation"]
    assert "pytorch.attn_implementation" not in skipped({**HOPPER, "default_dtype": "bfloat16"}, **fa2)
    assert "pytorch.attn_implementation" not in skipped(HOPPER, **fa2)  # unknown: nothing is claimed


def test_the_pytorch_backend_reads_the_default_dtype_before_loading():
    pytest.importorskip("transformers")
    from llem.backends.pytorch import PyTorchBackend
    from llem.backends.pytorch.loading import default_dtype

    assert PyTorchBackend().probe_facts(ExperimentConfig(model="tiny-random-llama")) == {"default_dtype": "float32"}
    assert PyTorchBackend().probe_facts(ExperimentConfig(model="/no/such/model")) == {}

    class Conf:
        dtype = "torch.bfloat16"

    assert default_dtype(Conf(), "5.24.0") == "bfloat16"  # transformers 5: the checkpoint's
    assert default_dtype(Conf(), "4.57.1") == "float32"  # 4.x: float32 unless asked
    assert default_dtype(object(), "5.24.0") is None  # only the weights could tell


def test_a_run_never_hands_flash_attention_to_float32_weights(monkeypatch):
    pytest.importorskip("torch")
    import llem

    hopper = Machine.fake([("NVIDIA H100 80GB HBM3", 9.0)], packages={"flash_attn": True})
    cfg = ExperimentConfig.from_dict({
        "model": "tiny-random-llama", "meter": "estimate", "repeats": 1, "warmup.runs": 0,
        "baseline.seconds": 0.0, "num_prompts": 1, "decoder.max_new_tokens": 2,
        "pytorch.attn_implementation": "flash_attention_2"})
    with use_machine(hopper):
        r = llem.run(cfg)
    why = r.skipped["pytorch.attn_implementation"]
    assert "[rule flash-attention-needs-half-precision-weights]" in why  # tiny-random-llama is float32
    assert r.effective_config["pytorch.attn_implementation"] != "flash_attention_2"
    assert r.environment["facts"]["default_dtype"] == "float32"


# -- the GPU a run uses ---------------------------------------------------------------------


MIXED_NODE = Machine.fake([Gpu(0, "Tesla V100", 7.0, uuid="GPU-v100"), Gpu(1, "NVIDIA A100", 8.0, uuid="GPU-a100"),
                           Gpu(2, "NVIDIA H100", 9.0, uuid="GPU-h100")], packages={"flash_attn": True})


def test_compute_capability_is_the_run_gpus_not_the_best(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert MIXED_NODE.cc == 7.0 and MIXED_NODE.facts()["cc"] == 7.0  # CUDA's device 0
    assert MIXED_NODE.tier.name == "volta"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert MIXED_NODE.cc == 9.0 and MIXED_NODE.run_gpu.name == "NVIDIA H100"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a100")
    assert MIXED_NODE.cc == 8.0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert MIXED_NODE.cc is None and MIXED_NODE.facts()["cuda"] is False


def test_cuda_default_order_puts_the_fastest_first(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    assert MIXED_NODE.run_gpu.name == "NVIDIA H100" and MIXED_NODE.cc == 9.0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")  # an index in that order: the slowest
    assert MIXED_NODE.cc == 7.0


def test_flash_attention_is_gated_on_the_gpu_the_run_uses(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fa2 = {"pytorch.attn_implementation": "flash_attention_2", "pytorch.dtype": "float16"}
    why = skipped(MIXED_NODE.facts(), **fa2)  # device 0 is the V100, though an H100 is there
    assert "[rule flash-attention-2-needs-ampere]" in why["pytorch.attn_implementation"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert "pytorch.attn_implementation" not in skipped(MIXED_NODE.facts(), **fa2)


def test_where_names_the_gpu_the_run_uses(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    here = where(None, MIXED_NODE)
    assert here.cc == 7.0 and "Tesla V100" in here.words
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    hidden = where(None, MIXED_NODE)
    assert hidden.cc is None and "CUDA_VISIBLE_DEVICES='-1'" in hidden.words
    with use_machine(MIXED_NODE):
        cfg = ExperimentConfig(backend="pytorch")
        cfg.update({"pytorch.attn_implementation": "flash_attention_2"})
        assert cfg.tier_problems(where().cc)  # checked against no GPU, not the best one
