"""doctor(): what was found and why others were not."""

from __future__ import annotations

from llem.energy.doctor import EnergyDoctor, doctor


def test_doctor_lists_every_meter_with_a_reason():
    d = doctor(refresh=True)
    assert isinstance(d, EnergyDoctor)
    names = {p.name for p in d.meters}
    assert {"nvml", "rapl", "estimate", "codecarbon", "replay"} <= names
    assert all(p.reason for p in d.meters)
    assert d.meter("estimate").available
    text = str(d)
    for n in names:
        assert n in text
    assert 'meter="auto" uses:' in text and "W/thread" in text
    bundle = d._repr_mimebundle_()
    assert bundle["text/plain"] == text and "<table>" in bundle["text/html"]
    assert d.auto and d.cpu["watts_per_thread"] > 0
    if not d.meter("nvml").available:
        assert d.gpus == [] and "GPUs: none found" in text
