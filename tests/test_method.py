"""Issue 9's 'done means' for the measurement method, on the built-in tiny model.

A run in the publication profile records the warmup passes, whether latency converged, the
thermal wait (with the power recorded through it) and the idle baseline's spread.
"""

import pytest

pytest.importorskip("torch")

import llem  # noqa: E402
from llem.config import ExperimentConfig  # noqa: E402
from llem.results import Result  # noqa: E402


@pytest.fixture(scope="module")
def publication_result():
    cfg = ExperimentConfig.from_dict({
        "model": "tiny-random-llama", "profile": "publication", "meter": "estimate",
        "repeats": 2, "num_prompts": 2, "sampling_interval_s": 0.02,
        "decoder": {"max_new_tokens": 4},
        # the publication defaults (5 passes, 60 s floor, 30 s baseline) shortened for a test;
        # the profile itself is what is checked
        "warmup": {"runs": 2, "adaptive": True, "window": 2, "max_runs": 4, "cv_threshold": 0.9,
                   "thermal_floor_s": 0.3},
        "baseline": {"seconds": 5.0},  # the shortest baseline the publication profile takes
    })
    return llem.run(cfg)


def test_warmup_passes_and_convergence_are_recorded(publication_result):
    w = publication_result.warmup
    assert w["adaptive"] is True
    assert 2 <= w["passes"] <= 4 and len(w["latencies_s"]) == w["passes"]
    assert isinstance(w["converged"], bool)


def test_thermal_wait_is_recorded_with_its_power(publication_result):
    thermal = publication_result.thermal
    assert thermal is not None and thermal.duration_s >= 0.3
    assert len(thermal.timeline) >= 2  # the sampler kept recording through the wait
    assert publication_result.effective_config["warmup.thermal_floor_s"] == 0.3


def test_baseline_and_its_spread_are_recorded(publication_result):
    for run in publication_result.runs:
        m = run.measurement
        assert m.baseline_power_w is not None and m.baseline_spread_w is not None
        assert m.dynamic_energy_j is not None


def test_profile_is_kept_and_not_marked_quick(publication_result):
    assert publication_result.config["profile"] == "publication"
    assert "not for publication" not in repr(publication_result)


def test_all_of_it_survives_the_round_trip(publication_result):
    back = Result.from_dict(publication_result.to_dict())
    assert back.warmup == publication_result.warmup
    assert back.thermal.duration_s == publication_result.thermal.duration_s
    assert back.runs[0].measurement.baseline_spread_w == publication_result.runs[0].measurement.baseline_spread_w


def test_quick_profile_is_marked_not_for_publication():
    cfg = ExperimentConfig.from_dict({
        "model": "tiny-random-llama", "meter": "estimate", "repeats": 1, "num_prompts": 1,
        "decoder": {"max_new_tokens": 2}, "sampling_interval_s": 0.02,
    })
    r = llem.run(cfg)
    assert r.config["profile"] == "quick"
    assert "not for publication" in repr(r)
    assert r.warmup["passes"] == 1  # the quick profile's single warmup pass
