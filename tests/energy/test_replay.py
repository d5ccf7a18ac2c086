"""The replay meter and the shipped synthetic recording."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from llem.energy.window import measure
from llem.testing import (
    Recording,
    ReplayMeter,
    list_recordings,
    load_recording,
    replay_measurement,
    synthesize_h100_decode,
)


def test_shipped_recording_is_labelled_synthetic():
    assert "h100-decode" in list_recordings()
    rec = load_recording("h100-decode")
    assert rec.synthetic and "SYNTHETIC" in rec.metadata["label"]
    assert any("NOT A MEASUREMENT" in n for n in rec.measurement.notes)
    assert all("SYNTHETIC" in r.source for r in rec.measurement.devices)


def test_shipped_file_is_what_the_generator_makes():
    text = (resources.files("llem") / "data" / "replay" / "h100-decode.json").read_text(encoding="utf-8")
    assert json.loads(text) == json.loads(json.dumps(synthesize_h100_decode().to_dict()))


def test_recording_looks_like_a_gpu_run():
    m = load_recording().measurement
    assert m.duration_s == pytest.approx(13.0) and m.interval_s == 0.1
    split = m.phase_energy_j(device="gpu:0")
    assert set(split) == {"idle", "warmup", "prefill", "decode"}
    assert split["decode"] > split["warmup"] > split["prefill"]
    assert 600 < m.peak_power_w < 720
    assert m.energy_j_by_device["gpu:0"] == pytest.approx(m.timeline[-3].energy_j)


def test_replay_measurement_keeps_methods_and_says_replay():
    m = replay_measurement("h100-decode")
    methods = {r.device: r.method for r in m.devices}
    assert methods == {"gpu:0": "measured", "cpu": "estimated", "ram": "estimated"}
    assert m.method == "estimated"
    assert "replay" in m.source and all("replay" in r.source for r in m.devices)


def test_replay_meter_through_a_window():
    meter = ReplayMeter(speed=100.0)
    with measure(meter=meter, interval_s=0.005) as w:
        w.mark("decode")
        import time

        time.sleep(0.05)  # about 5 s of the recording
    m = w.measurement
    assert set(m.energy_j_by_device) == {"gpu:0", "cpu", "ram"}
    assert m.devices[0].method == "measured" and "replay" in m.devices[0].source
    assert "replay" in m.source
    rec = load_recording().measurement
    replayed_s = m.devices[0].model_inputs["replayed_recording_s"]
    assert m.energy_j_by_device["gpu:0"] == pytest.approx(rec.energy_at(replayed_s, "gpu:0"), rel=1e-6)
    assert any(s.memory_mib for s in m.timeline if s.device == "gpu:0")


def test_replay_loops_and_holds(clock):
    rec = load_recording().measurement
    total = rec.energy_j_by_device["gpu:0"]
    looped = ReplayMeter(clock=clock)
    looped.start()
    clock.advance(2 * rec.duration_s + 1.0)
    gpu = next(r for r in looped.sample() if r[0] == "gpu:0")
    assert gpu[2] == pytest.approx(2 * total + rec.energy_at(1.0, "gpu:0"))
    held = ReplayMeter(clock=clock, loop=False)
    held.start()
    clock.advance(100.0)
    gpu = next(r for r in held.sample() if r[0] == "gpu:0")
    assert gpu[2] == pytest.approx(total)


def test_load_recording_variants(tmp_path):
    rec = synthesize_h100_decode(seed=1)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rec.to_dict()))
    assert load_recording(path).measurement == rec.measurement
    assert load_recording(rec.to_dict()).name == "h100-decode"
    assert isinstance(load_recording(rec.measurement), Recording)
    with pytest.raises(KeyError, match="Unknown recording 'h100-decod'"):
        load_recording("h100-decod")
    with pytest.raises(ValueError, match="schema"):
        load_recording({"schema": "other"})
