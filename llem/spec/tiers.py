"""GPU tiers (the compute-capability ladder) and the compute capability of known GPUs."""

from __future__ import annotations

import re

from llem.spec.model import Tier

#: The ladder, lowest first. ``cpu`` is a tier of its own: no CUDA at all.
TIERS: tuple[Tier, ...] = (
    Tier("cpu", "CPU only", None, ("any laptop",), "runs pytorch on the CPU; no CUDA kernels"),
    Tier("legacy", "below 7.0 (Pascal and older)", 0.0, ("P100", "GTX 1080"), "CUDA, fp16"),
    Tier("volta", "7.x (Volta, Turing)", 7.0, ("V100", "T4", "RTX 2080"),
         "tensor cores; NVML energy counter"),
    Tier("ampere", "8.0+ (Ampere)", 8.0, ("A100", "A10", "RTX 3090"),
         "bfloat16, tf32, flash_attention_2, vLLM fp8 weight-only"),
    Tier("ada", "8.9 (Ada Lovelace)", 8.9, ("L4", "L40S", "RTX 4090"),
         "fp8 tensor cores (TensorRT-LLM fp8)"),
    Tier("hopper", "9.0+ (Hopper and newer)", 9.0, ("H100", "H200", "GH200"),
         "flash_attention_3, fp8 KV cache"),
)

#: Compute capability of common NVIDIA GPUs (from NVIDIA's published CUDA GPU list).
KNOWN_GPUS: dict[str, float] = {
    "P100": 6.0, "GTX 1080": 6.1, "P40": 6.1,
    "V100": 7.0, "T4": 7.5, "RTX 2080": 7.5, "RTX 2080 TI": 7.5,
    "A100": 8.0, "A30": 8.0, "A10": 8.6, "A10G": 8.6, "A40": 8.6, "RTX 3090": 8.6,
    "RTX A6000": 8.6,
    "L4": 8.9, "L40": 8.9, "L40S": 8.9, "RTX 4090": 8.9, "RTX 6000 ADA": 8.9,
    "H100": 9.0, "H200": 9.0, "GH200": 9.0, "H800": 9.0,
    "B200": 10.0, "GB200": 10.0, "RTX 5090": 12.0,
}


def tier_for(cc: float | None) -> Tier:
    """The tier of compute capability ``cc`` (None means no GPU: the ``cpu`` tier)."""
    if cc is None:
        return TIERS[0]
    best = TIERS[1]
    for tier in TIERS[1:]:
        if tier.min_cc is not None and cc + 1e-9 >= tier.min_cc:
            best = tier
    return best


def parse_target(target: str | float | int | None) -> float | None:
    """Turn a target GPU (``"cpu"``, ``"9.0"``, ``8.6``, ``"H100"``, ``"NVIDIA A100-SXM4"``) into a cc.

    Returns None for ``cpu``. Raises ValueError naming what is accepted.
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise ValueError(f"target GPU must be 'cpu', a compute capability or a GPU name, not {target!r}")
    if isinstance(target, (int, float)):
        cc = float(target)
    else:
        text = str(target).strip()
        if text.lower() == "cpu":
            return None
        if re.fullmatch(r"\d+(\.\d+)?", text):
            cc = float(text)
        else:
            cc = _cc_from_name(text)
    if not 3.0 <= cc <= 13.0:
        raise ValueError(f"compute capability {cc} is outside 3.0..13.0")
    return cc


def _cc_from_name(name: str) -> float:
    upper = re.sub(r"^NVIDIA\s+", "", name.upper()).replace("GEFORCE ", "")
    # longest key first so "RTX 2080 TI" wins over "RTX 2080" and "A100" over "A10"
    for key in sorted(KNOWN_GPUS, key=len, reverse=True):
        if re.search(rf"(^|[\s-]){re.escape(key)}($|[\s-])", upper):
            return KNOWN_GPUS[key]
    known = ", ".join(sorted(KNOWN_GPUS))
    raise ValueError(
        f"unknown GPU {name!r}: give its compute capability as a number (e.g. '8.6') "
        f"or one of the known names: {known}"
    )


def tier_name(cc: float | None) -> str:
    """Short name of the tier of ``cc``."""
    return tier_for(cc).name
