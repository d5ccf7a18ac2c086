"""One plugin registry: backends, meters and exporters registered, chosen from a config, run."""

from __future__ import annotations

import time
from configparser import ConfigParser
from pathlib import Path

import pytest

import llem
from llem import plugins
from llem.backends.base import BatchOutput, LoadInfo, RequestOutput
from llem.config import ExperimentConfig
from llem.energy.estimate import EstimateMeter
from llem.errors import ConfigError, UnknownNameError


class EchoBackend:
    """A plugin backend: 'generates' the prompt's words back, with real timings."""

    name = "echo"

    def load(self, config):
        self.max_new_tokens = config.decoder.max_new_tokens
        return LoadInfo(model_id=config.model, effective={"experiment.model": config.model},
                        skipped={"decoder.temperature": "echo does not sample"})

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, prompts, on_phase=None, max_new_tokens=None, min_new_tokens=None, seed=None):
        t0 = time.perf_counter()
        if on_phase:
            on_phase("prefill")
        out = []
        for p in prompts:
            words = p.split()[: max_new_tokens or self.max_new_tokens]
            times = []
            for _ in words:
                time.sleep(0.001)
                times.append(time.perf_counter() - t0)
            out.append(RequestOutput(p, " ".join(words), len(p.split()), len(words), tuple(times)))
        if on_phase:
            on_phase("decode")
        return BatchOutput(tuple(out), time.perf_counter() - t0, out[0].token_times_s[0] if out else 0.0,
                           t0_perf=t0)

    def release(self):
        pass


@pytest.fixture
def registered():
    saved = {k: dict(v) for k, v in plugins._registered.items()}
    plugins.register_backend("echo", EchoBackend)

    class QuietMeter(EstimateMeter):
        name = "quiet"

    plugins.register_meter("quiet", QuietMeter)
    yield
    for k, v in saved.items():
        plugins._registered[k].clear()
        plugins._registered[k].update(v)


def test_a_registered_backend_and_meter_are_chosen_from_a_config_and_run(registered):
    cfg = ExperimentConfig.from_dict({"backend": "echo", "meter": "quiet", "model": "any",
                                      "repeats": 1, "warmup": {"runs": 0},
                                      "decoder": {"max_new_tokens": 3, "temperature": 0.5},
                                      "sampling_interval_s": 0.01})
    assert cfg.backend == "echo" and cfg.backend_section is None
    r = llem.run(cfg, prompts=["one two three four", "five six"])
    assert r.backend == "echo" and r.complete and r.runs[0].output_tokens == 5
    assert r.texts == ["one two three", "five six"]
    assert r.skipped["decoder.temperature"] == "echo does not sample"
    assert "echo engine schedules requests itself" in " ".join(r.notes)


def test_yaml_and_the_option_table_accept_a_registered_name(registered):
    cfg = ExperimentConfig.from_yaml("backend: echo\nmeter: quiet\n")
    assert (cfg.backend, cfg.meter) == ("echo", "quiet")
    from llem.config import choices
    from llem.spec import param

    assert "echo" in choices(param("experiment.backend"))
    assert choices(param("experiment.backend"))[:3] == ("pytorch", "vllm", "tensorrt")


def test_an_unknown_name_is_refused_with_did_you_mean_and_the_fix():
    with pytest.raises(ConfigError) as e:
        ExperimentConfig(backend="pytorh")
    msg = str(e.value)
    assert "Did you mean 'pytorch'" in msg and "llem.register_backend(name, cls)" in msg
    with pytest.raises(ConfigError, match="llem.register_meter"):
        ExperimentConfig(meter="nvlm")
    with pytest.raises(UnknownNameError, match="Known backends: pytorch, tensorrt, vllm"):
        plugins.get("backend", "nope")


def test_a_plugin_is_checked_when_registered():
    class NotABackend:
        def load(self, config):
            pass

    with pytest.raises(plugins.BackendPluginError, match="lacks generate, count_tokens, release"):
        plugins.register_backend("broken", NotABackend)
    with pytest.raises(plugins.PluginError, match="must be a word"):
        plugins.register_backend("has space", EchoBackend)
    with pytest.raises(UnknownNameError, match="plugin kind"):
        plugins.names("widget")


def test_public_registration_functions_are_on_the_package():
    assert llem.register_backend is plugins.register_backend
    assert llem.register_meter is plugins.register_meter
    assert llem.register_exporter is plugins.register_exporter


def test_builtins_mirror_setup_cfg_entry_points():
    cfg = ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    for kind, k in plugins.KINDS.items():
        declared = dict(line.split(" = ") for line in cfg["options.entry_points"][k.group].strip().splitlines())
        assert declared == plugins.BUILTINS[kind], kind
