"""Finding meters: entry points, the built-in fallback, plugin checks, unknown names."""

from __future__ import annotations

import pytest

from llem import plugins
from llem.energy import registry
from llem.energy.base import CompositeMeter, NullMeter
from llem.energy.estimate import EstimateMeter
from llem.errors import UnknownNameError


@pytest.fixture(autouse=True)
def clean_registry():
    saved = dict(plugins._registered["meter"])
    yield
    plugins._registered["meter"].clear()
    plugins._registered["meter"].update(saved)
    registry.clear_probe_cache()


def test_builtins_resolve_by_name():
    from llem.energy.codecarbon import CodeCarbonMeter
    from llem.energy.nvml import NvmlMeter
    from llem.energy.rapl import RaplMeter
    from llem.testing import ReplayMeter

    expected = {
        "nvml": NvmlMeter,
        "rapl": RaplMeter,
        "estimate": EstimateMeter,
        "codecarbon": CodeCarbonMeter,
        "replay": ReplayMeter,
    }
    for name, cls in expected.items():
        assert registry.get_meter_class(name) is cls


def test_builtins_are_declared_as_entry_points():
    eps = plugins._entry_points(registry.GROUP)
    if not eps:
        pytest.skip("llem's package metadata is not installed")
    assert {n: ep.value for n, ep in eps.items() if n in registry.BUILTIN_METERS} == registry.BUILTIN_METERS


def test_fallback_without_package_metadata(monkeypatch):
    monkeypatch.setattr(plugins, "_entry_points", lambda group: {})
    plugins._registered["meter"].clear()
    assert registry.get_meter_class("estimate") is EstimateMeter
    assert "nvml" in registry.meter_names()


def test_unknown_name_says_what_exists():
    with pytest.raises(UnknownNameError) as e:
        registry.create_meter("nvlm")
    msg = str(e.value)
    assert "Unknown meter 'nvlm'" in msg and "Did you mean 'nvml'?" in msg
    for name in ("auto", "codecarbon", "estimate", "none", "nvml", "rapl", "replay"):
        assert name in msg


def test_plugin_is_checked_when_registered():
    class NotAMeter:
        def start(self):
            pass

    with pytest.raises(registry.MeterPluginError, match="lacks probe, sample, stop"):
        registry.register_meter("broken", NotAMeter)

    class NeedsArgs(EstimateMeter):
        def __init__(self, path):
            super().__init__()

    with pytest.raises(registry.MeterPluginError, match="requires path"):
        registry.register_meter("needs", NeedsArgs)
    with pytest.raises(registry.MeterPluginError, match="reserved"):
        registry.register_meter("auto", EstimateMeter)


def test_registered_plugin_is_found_and_built():
    class MyMeter(EstimateMeter):
        name = "mine"

    registry.register_meter("mine", MyMeter)
    assert "mine" in registry.meter_names()
    assert isinstance(registry.create_meter("mine"), MyMeter)
    with pytest.raises(registry.MeterPluginError, match="already registered"):
        registry.register_meter("mine", EstimateMeter)


def test_entry_point_plugin_is_loaded_and_checked(monkeypatch):
    class FakeEP:
        def __init__(self, name, obj):
            self.name, self.value, self._obj = name, f"fake:{name}", obj

        def load(self):
            return self._obj

    monkeypatch.setattr(
        plugins,
        "_entry_points",
        lambda group: {"good": FakeEP("good", EstimateMeter), "bad": FakeEP("bad", object)},
    )
    assert registry.get_meter_class("good") is EstimateMeter
    with pytest.raises(registry.MeterPluginError, match="lacks"):
        registry.get_meter_class("bad")


def test_instances_pass_through_and_non_meters_are_refused():
    m = EstimateMeter()
    assert registry.create_meter(m) is m
    with pytest.raises(registry.MeterPluginError, match="not a meter"):
        registry.create_meter(object())


def test_none_and_auto():
    assert isinstance(registry.create_meter("none"), NullMeter)
    auto = registry.create_meter("auto")
    assert isinstance(auto, CompositeMeter) and auto.label.startswith("auto: ")


def test_auto_plan_on_this_machine_kind():
    """On machines without NVML and RAPL (the dev/CI kind) auto is the estimate."""
    from llem.energy.nvml import NvmlMeter
    from llem.energy.rapl import RaplMeter

    plan = registry.auto_plan()
    has_gpu = NvmlMeter().probe().available
    has_rapl = RaplMeter().probe().available
    assert ("nvml" in plan) == has_gpu
    assert ("rapl" in plan) == has_rapl
    if not has_gpu and not has_rapl:
        assert plan == ["estimate"]


def test_auto_says_why_asked_for_gpus_are_not_measured(monkeypatch):
    from llem.energy.nvml import NvmlMeter
    from llem.energy.window import measure

    if NvmlMeter().probe().available:
        pytest.skip("this machine has NVML")
    with measure(meter="auto", devices=[0], interval_s=0.01) as m:
        pass
    assert any("GPU(s) [0] asked for but not measured" in n for n in m.measurement.notes)
    assert "gpu:0" not in m.measurement.energy_j_by_device


def test_rapl_skips_become_measurement_notes(powercap):
    from llem.energy.rapl import RaplMeter
    from llem.energy.window import measure

    powercap.standard(psys=True)
    with measure(meter=RaplMeter(root=powercap.root), interval_s=0.01) as m:
        pass
    assert any("rapl: intel-rapl:1 (psys): skipped" in n for n in m.measurement.notes)
    assert m.measurement.method == "measured"
