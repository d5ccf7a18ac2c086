"""Drift tests: the table and the code that acts on it must agree.

- every ``env.*`` fact a rule reads has a producer that really supplies it;
- the capability matrix's claim for each capability x backend x tier agrees with what
  config validation plus the skip rules decide for a config that uses the capability there.
"""

from __future__ import annotations

import pytest

from llem import spec
from llem.config import ExperimentConfig
from llem.errors import ConfigError
from llem.machine import PACKAGES, Machine
from llem.spec.facts import ENV_FACTS, fact
from llem.spec.render import tier_facts
from llem.spec.rules import _CHECK_FACTS, RULES


def _env_paths() -> list[tuple[str, str]]:
    return [(r.id, c.path) for r in RULES for c in r.when if c.path.startswith("env.")]


@pytest.mark.parametrize(("rule", "path"), _env_paths())
def test_every_env_fact_a_rule_reads_has_a_producer(rule, path):
    try:
        f = fact(path)
    except KeyError as e:
        pytest.fail(f"rule {rule} reads {path}, which nothing produces: {e}. Add a Fact to "
                    "llem/spec/facts.py and make its producer supply it.")
    if f.producer == "machine":
        facts = Machine.fake().facts()
        assert f.name in facts, f"Machine.facts() lacks {f.name!r} that rule {rule} reads"
        if path.startswith("env.packages."):
            name = path.removeprefix("env.packages.")
            assert name in PACKAGES and name in facts["packages"], \
                f"rule {rule} reads {path} but llem.machine.PACKAGES does not probe {name!r}"
    elif f.producer == "check":
        assert path in _CHECK_FACTS.values(), f"{path} is said to come from a check, but no check sets it"


def test_load_facts_come_from_the_pytorch_backend():
    pytest.importorskip("torch")
    from llem.backends.pytorch import PyTorchBackend

    backend = PyTorchBackend()
    try:
        info = backend.load(ExperimentConfig(model="tiny-random-llama"))
    finally:
        backend.release()
    wanted = {f.name for f in ENV_FACTS if f.producer == "load"}
    assert wanted <= set(info.facts), f"LoadInfo.facts lacks {sorted(wanted - set(info.facts))}"
    assert info.facts["compile_failed"] is False and info.facts["model_prequantized"] is False
    assert info.facts["model_greedy"] is True  # tiny-random-llama's generation config does not sample


def test_every_fact_is_read_by_a_rule_or_a_record():
    read = {fact(p).name for _, p in _env_paths()}
    # cuda is recorded for the matrix and the environment; the rest must drive a rule
    unused = {f.name for f in ENV_FACTS} - read - {"cuda"}
    assert not unused, f"facts no rule reads: {sorted(unused)}; drop them or add the rule"


# ------------------------------------------------------------------- the matrix vs config
def _config_decides(backend: str, settings: dict, cc: float | None) -> tuple[bool, str]:
    """Whether config validation and the skip rules let ``settings`` act on tier ``cc``."""
    try:
        cfg = ExperimentConfig(backend=backend)
        cfg.update(settings)
        cfg.validate()
    except (ConfigError, ValueError) as e:
        return False, f"refused: {e}"
    problems = cfg.tier_problems(cc)
    if problems:
        return False, f"tier: {problems}"
    skipped = cfg.skipped(tier_facts(cc))  # a node of the tier with every package
    hit = {p: why for p, why in skipped.items() if p in settings}
    if hit:
        return False, f"skipped: {hit}"
    return True, "runs"


_TIERS = [None, 7.0, 7.5, 8.0, 8.6, 8.9, 9.0]
_CELLS = [(c.name, b, cc) for c in spec.CAPABILITIES for b in spec.BACKENDS for cc in _TIERS]


@pytest.mark.parametrize(("name", "backend", "cc"), _CELLS)
def test_the_matrix_agrees_with_config_validation_and_skip_rules(name, backend, cc):
    cap = spec.capability(name)
    level, why = spec.capability_at(cap, backend, cc)
    says_runs = level in ("yes", "partial")
    settings = cap.settings.get(backend)
    if settings:
        runs, how = _config_decides(backend, settings, cc)
        assert says_runs == runs, (
            f"matrix says {name} on {backend} at cc {cc} is {level!r} ({why}); config says {how}. "
            f"Fix the capability row's support/settings or the gates of {sorted(settings)}.")
    else:
        # no setting turns it on: the backend itself must be able to run on the tier
        backend_ok = not ExperimentConfig(backend=backend).tier_problems(cc)
        if not backend_ok:
            assert not says_runs, f"matrix says {name} on {backend} runs at cc {cc}, but the backend cannot"
        if cap.support[backend].level == "no":
            assert level == "no"


def test_every_capability_a_backend_supports_says_how_to_turn_it_on_or_is_inherent():
    inherent = {"continuous_batching", "paged_attention", "cpu"}
    for cap in spec.CAPABILITIES:
        for b in spec.BACKENDS:
            if cap.support[b].level != "no" and cap.name not in inherent and cap.params:
                turned_on = cap.settings.get(b)
                # partial support llem does not drive (LoRA, draft models on the engines), the
                # pytorch fp8_kv_cache "partial" (a different cache, int4/int8), kernels the
                # engine picks itself, and TensorRT-LLM's enable_chunked_context (no llem field yet)
                if (cap.name, b) in {("chunked_prefill", "tensorrt"),("fp8_kv_cache", "pytorch"), ("lora", "vllm"), ("lora", "tensorrt"),
                                     ("torch_compile", "vllm"), ("speculative_decoding", "tensorrt"),
                                     ("flash_attention_2", "tensorrt"), ("flash_attention_3", "tensorrt")}:
                    continue
                assert turned_on, f"{cap.name} on {b} is {cap.support[b].level!r} but has no settings"
                for path in turned_on:
                    spec.param(path)  # every setting names a row


def _backends_producing_load_facts():
    for r in RULES:
        for c in r.when:
            if c.path.startswith("env.") and fact(c.path).producer == "load":
                for b in r.backends:
                    yield r.id, fact(c.path).name, b


@pytest.mark.parametrize(("rule", "name", "backend"), sorted(set(_backends_producing_load_facts())))
def test_every_backend_a_load_fact_rule_applies_to_produces_the_fact(rule, name, backend, tmp_path):
    """A rule on a load fact fires only if the backend it applies to supplies the fact."""
    import json
    import shutil

    pytest.importorskip("transformers")
    from llem import plugins

    cls = plugins.get("backend", backend)
    if backend == "pytorch":
        pytest.importorskip("torch")
        b = cls()
        try:
            produced = b.load(ExperimentConfig(model="tiny-random-llama")).facts
        finally:
            b.release()
    else:
        probe = getattr(cls, "probe_facts", None)
        assert probe is not None, (f"rule {rule} reads {name!r} for {backend}, but {cls.__name__} "
                                   "neither loads on this machine nor has probe_facts(config)")
        from llem.models import resolve_model

        src = resolve_model("tiny-random-llama").id_or_path
        model = tmp_path / "model"
        shutil.copytree(src, model)
        plain = cls().probe_facts(ExperimentConfig(backend=backend, model=str(model)))
        conf = json.loads((model / "config.json").read_text())
        conf["quantization_config"] = {"quant_method": "awq", "bits": 4}
        (model / "config.json").write_text(json.dumps(conf))
        quantized = cls().probe_facts(ExperimentConfig(backend=backend, model=str(model)))
        if name == "model_prequantized":
            assert plain[name] is False and quantized[name] is True
        produced = plain
    assert name in produced, f"{backend} does not produce {name!r}, which rule {rule} reads"
