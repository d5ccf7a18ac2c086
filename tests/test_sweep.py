"""Sweeps: expansion, skipped combinations, model reuse, study orders, resume, failures,
the YAML form, cold start, the widget, and the Ray executor (when ray is installed)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import llem
import llem.study as sw
from llem.backends.pytorch import PyTorchBackend
from llem.config import ExperimentConfig
from llem.errors import ConfigError, OutOfMemoryError, UnknownNameError

# the tiny model, 2 prompts, 3 new tokens, 1 measured run and no warmup: ~0.3 s a run
BASE = {
    "model": "tiny-random-llama",
    "prompts": ["Hello there", "Energy is"],
    "repeats": 1,
    "meter": "estimate",
    "sampling_interval_s": 0.02,
    "profile": "quick",
    "decoder": {"max_new_tokens": 3, "do_sample": False},
    "warmup": {"runs": 0},
    "study": {"cycles": 1, "order": "sequential"},
}


def base(**study):
    d = json.loads(json.dumps(BASE))
    d["study"].update(study)
    return d


@pytest.fixture
def loads(monkeypatch):
    """Count real model loads (and reconfigurations) of the pytorch backend."""
    n = {"load": 0, "reconfigure": 0}
    for name in n:
        orig = getattr(PyTorchBackend, name)

        def counted(self, cfg, _name=name, _orig=orig):
            n[_name] += 1
            return _orig(self, cfg)

        monkeypatch.setattr(PyTorchBackend, name, counted)
    return n


def labels(runs):
    return [(r.trial.label, r.cycle) for r in runs]


# ------------------------------------------------------------------------------ expansion
def test_grid_expands_to_the_cartesian_product_plus_variants():
    trials, skipped = sw.expand(base(), {"pytorch.batch_size": [1, 2, 4], "decoder.max_new_tokens": [2, 3]},
                                [{"pytorch.batch_size": 8, "decoder.max_new_tokens": 5}], machine_cc=None)
    assert skipped == []
    assert [t.label for t in trials] == [
        "batch_size=1, max_new_tokens=2", "batch_size=1, max_new_tokens=3",
        "batch_size=2, max_new_tokens=2", "batch_size=2, max_new_tokens=3",
        "batch_size=4, max_new_tokens=2", "batch_size=4, max_new_tokens=3",
        "batch_size=8, max_new_tokens=5"]
    assert trials[3].config.pytorch.batch_size == 2 and trials[3].config.decoder.max_new_tokens == 3
    assert len({t.key for t in trials}) == 7
    assert len({t.load_key for t in trials}) == 1  # all decode-time: one model for all


def test_grid_forms_and_mistakes():
    nested = sw.flatten_grid({"pytorch": {"batch_size": [1, 2]}, "model": ["tiny-random-llama"]})
    assert nested == {"pytorch.batch_size": [1, 2], "experiment.model": ["tiny-random-llama"]}
    with pytest.raises(ConfigError, match="must list the values"):
        sw.flatten_grid({"pytorch.batch_size": 4})
    with pytest.raises(UnknownNameError, match="batch_size"):
        sw.flatten_grid({"pytorch.batch_sise": [1]})
    with pytest.raises(ConfigError, match="study section"):
        sw.flatten_grid({"study.cycles": [1, 2]})
    assert sw.combinations() == [{}]
    trials, _ = sw.expand(base(), machine_cc=None)
    assert [t.label for t in trials] == ["base"]


def test_refused_combinations_are_listed_with_their_reason_and_never_run(tmp_path, loads):
    grid = {"pytorch.load_in_4bit": [True, None], "pytorch.load_in_8bit": [True, None]}
    variants = [{"decoder.temperature": 0.0, "decoder.do_sample": True}]
    trials, skipped = sw.expand(base(), grid, variants, machine_cc=None)
    refused = {s.label: s for s in skipped}
    assert set(refused) == {"load_in_4bit=True, load_in_8bit=True", "temperature=0.0, do_sample=True"}
    assert all(s.kind == "refused" for s in skipped)
    assert "either in 4-bit or in 8-bit" in refused["load_in_4bit=True, load_in_8bit=True"].reason
    assert "Fix:" in refused["temperature=0.0, do_sample=True"].reason
    # the sweep runs only what is left; the refused ones are in its result, with the reason
    res = llem.sweep(base(), {"pytorch.load_in_4bit": [True], "pytorch.load_in_8bit": [True]},
                     [{"pytorch.batch_size": 2}], results_dir=tmp_path, progress=False)
    assert [r.name for r in res.results] == ["batch_size=2 (cycle 1)"]
    assert [s.label for s in res.skipped] == ["load_in_4bit=True, load_in_8bit=True"]
    assert loads["load"] == 1
    assert "either in 4-bit or in 8-bit" in repr(res)


def test_combinations_beyond_the_tier_are_skipped():
    grid = {"pytorch.attn_implementation": ["sdpa", "flash_attention_2", "flash_attention_3"]}
    # this machine (a CPU) runs only sdpa
    trials, skipped = sw.expand(base(), grid, machine_cc=None)
    assert [t.label for t in trials] == ["attn_implementation=sdpa"]
    assert {s.kind for s in skipped} == {"tier"}
    assert "this machine (tier cpu)" in skipped[0].reason and "sdpa" in skipped[0].reason
    # an A100 (8.0) runs flash_attention_2 but not 3
    trials, skipped = sw.expand(base(), grid, target_gpu="8.0")
    assert [t.label for t in trials] == ["attn_implementation=sdpa", "attn_implementation=flash_attention_2"]
    assert "target '8.0'" in skipped[0].reason and "9.0" in skipped[0].reason
    # the base config's declared target counts too
    trials, skipped = sw.expand({**base(), "target_gpu": "T4"}, {"pytorch.dtype": ["float16", "bfloat16"]})
    assert [t.label for t in trials] == ["dtype=float16"]
    assert "bfloat16" in skipped[0].label and "7.5" in skipped[0].reason
    # a Ray sweep without a target leaves the tier to the workers
    trials, skipped = sw.expand(base(), grid, check_tier=False)
    assert len(trials) == 3 and skipped == []


def test_duplicate_points_run_once():
    trials, skipped = sw.expand(base(), {"pytorch.batch_size": [1, 2]}, [{"pytorch.batch_size": 2}],
                                machine_cc=None)
    assert len(trials) == 2
    assert skipped[0].kind == "duplicate" and "batch_size=2" in skipped[0].reason


def test_trials_are_grouped_by_load_time_settings():
    # dtype (load time) is the inner loop of the grid; trials are regrouped by it
    trials, _ = sw.expand(base(), {"pytorch.batch_size": [1, 2], "pytorch.dtype": ["float32", "float16"]},
                          machine_cc=None)
    assert [t.label for t in trials] == [
        "batch_size=1, dtype=float32", "batch_size=2, dtype=float32",
        "batch_size=1, dtype=float16", "batch_size=2, dtype=float16"]
    assert trials[0].load_key == trials[1].load_key != trials[2].load_key == trials[3].load_key
    assert "pytorch.dtype" in sw.load_time_paths("pytorch")
    assert "pytorch.batch_size" not in sw.load_time_paths("pytorch")


# ------------------------------------------------------------------------------ study orders
def _trials(n=2, **study):
    trials, _ = sw.expand(base(**study), {"pytorch.batch_size": list(range(1, n + 1))}, machine_cc=None)
    return trials, sw.Study.of(ExperimentConfig.from_dict(base(**study)))


def test_sequential_order_runs_each_configuration_back_to_back():
    trials, study = _trials(cycles=2, order="sequential", gap_s=1.0, cycle_gap_s=5.0)
    runs = sw.plan(trials, study)
    assert labels(runs) == [("batch_size=1", 0), ("batch_size=1", 1), ("batch_size=2", 0), ("batch_size=2", 1)]
    assert [r.gap_before_s for r in runs] == [0.0, 5.0, 1.0, 5.0]


def test_interleaved_order_alternates_configurations():
    trials, study = _trials(cycles=2, order="interleaved", gap_s=1.0, cycle_gap_s=5.0)
    runs = sw.plan(trials, study)
    assert labels(runs) == [("batch_size=1", 0), ("batch_size=2", 0), ("batch_size=1", 1), ("batch_size=2", 1)]
    assert [r.gap_before_s for r in runs] == [0.0, 1.0, 5.0, 1.0]


def test_shuffled_order_repeats_on_rerun_and_differs_between_studies():
    trials, study = _trials(n=6, cycles=3, order="shuffled")
    first = labels(sw.plan(trials, study))
    trials2, study2 = _trials(n=6, cycles=3, order="shuffled")
    assert labels(sw.plan(trials2, study2)) == first  # a rerun repeats the order
    assert sorted(first) == sorted(labels(sw.plan(trials, sw.Study(cycles=3, order="sequential"))))
    cycles = [[lb for lb, c in first if c == k] for k in range(3)]
    assert len({tuple(c) for c in cycles}) > 1  # each cycle has its own order
    other, study3 = _trials(n=7, cycles=3, order="shuffled")  # another study
    assert sw.study_seed(other, study3) != sw.study_seed(trials, study)
    assert [lb for lb, _ in labels(sw.plan(other, study3)) if lb != "batch_size=7"] != [lb for lb, _ in first]


def test_load_counts_per_order():
    trials, _ = sw.expand(base(), {"pytorch.batch_size": [1, 2], "pytorch.dtype": ["float32", "float16"]},
                          machine_cc=None)
    assert sw.count_loads(sw.plan(trials, sw.Study(cycles=3, order="sequential"))) == 2
    assert sw.count_loads(sw.plan(trials, sw.Study(cycles=3, order="interleaved"))) == 6
    assert sw.count_loads(sw.plan(trials, sw.Study(cycles=3, order="shuffled"))) >= 6
    # the groups a Ray actor each runs: neighbours sharing a load key, in plan order
    groups = sw.load_groups(sw.plan(trials, sw.Study(cycles=2, order="sequential")))
    assert [[(r.trial.label, r.cycle) for r in g] for g in groups] == [
        [("batch_size=1, dtype=float32", 0), ("batch_size=1, dtype=float32", 1),
         ("batch_size=2, dtype=float32", 0), ("batch_size=2, dtype=float32", 1)],
        [("batch_size=1, dtype=float16", 0), ("batch_size=1, dtype=float16", 1),
         ("batch_size=2, dtype=float16", 0), ("batch_size=2, dtype=float16", 1)]]
    interleaved = sw.plan(trials, sw.Study(cycles=2, order="interleaved"))
    assert [len(g) for g in sw.load_groups(interleaved)] == [2, 2, 2, 2]


# ------------------------------------------------------------------------------ running
def test_model_is_loaded_once_per_load_time_setting(tmp_path, loads):
    grid = {"pytorch.batch_size": [1, 2], "pytorch.dtype": ["float32", "float16"]}
    seen = []
    res = llem.sweep(base(cycles=2, order="sequential"), grid, results_dir=tmp_path,
                     progress=seen.append)
    assert loads["load"] == 2 == res.loads  # one per dtype, reused across batch sizes and cycles
    assert len(res.results) == 8 and not res.failures and res.complete
    by = res.by_trial()
    assert [len(v) for v in by.values()] == [2, 2, 2, 2]
    for r in res.results:
        assert r.effective_config["pytorch.batch_size"] == r.config["pytorch"]["batch_size"]
        assert r.effective_config["pytorch.dtype"] == r.config["pytorch"]["dtype"]
    reused = [r for r in res.results if any("reused" in n for n in r.notes)]
    assert len(reused) == 6
    # results landed in the folder as they finished, tagged with key and cycle
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 8
    meta = json.loads(files[0].read_text())["environment"]["sweep"]
    assert set(meta) >= {"key", "cycle", "label", "study"}
    assert {r.name for r in res.results} >= {"batch_size=1, dtype=float32 (cycle 2)"}
    assert (tmp_path / "_sweep" / "study.json").exists()
    assert [e.stage for e in seen][:2] == ["start", "run"] and seen[-1].stage == "done"
    assert seen[-1].done == 8 and seen[-1].eta_s == 0
    # a summary per configuration over cycles: median, spread, 95% interval
    row = res.summary()[0]
    st = row["tokens_per_s"]
    assert row["cycles"] == 2 and st.n == 2 and st.min <= st.median <= st.max
    assert st.ci95[0] <= st.mean <= st.ci95[1]
    assert "median" in res._repr_html_() and "batch_size=2, dtype=float16" in repr(res)


def test_a_reused_model_gives_the_same_settings_as_a_fresh_load(tmp_path):
    grid = {"decoder.max_new_tokens": [3, 5], "pytorch.batch_size": [1, 2]}
    res = llem.sweep(base(), grid, results_dir=tmp_path, progress=False)
    assert res.loads == 1
    last = res.results[-1]
    from llem.runner import run as run_one

    fresh = run_one(last.config)
    assert dict(last.effective_config) == dict(fresh.effective_config)
    assert dict(last.skipped) == dict(fresh.skipped)
    assert [n for n in last.notes if "reused" not in n] == list(fresh.notes)
    assert last.runs[0].output_tokens == fresh.runs[0].output_tokens == 5 * 2
    assert last.texts == fresh.texts  # greedy: the same text from the reused model


def test_two_decode_time_values_load_once_and_reuse_once(tmp_path, loads):
    executor = sw.LocalExecutor()
    res = llem.sweep(base(), {"decoder.max_new_tokens": [2, 3]}, executor=executor,
                     results_dir=tmp_path, progress=False)
    assert loads["load"] == 1 == res.loads and executor.backend.reuses == 1 == loads["reconfigure"]
    assert [r.runs[0].output_tokens for r in res.results] == [2 * 2, 3 * 2]  # 2 prompts each
    assert [any("reused" in n for n in r.notes) for r in res.results] == [False, True]


def test_a_backend_without_reconfigure_or_asking_for_a_reload_is_loaded_again(monkeypatch):
    from llem.backends.base import LoadInfo, ReloadNeeded

    made = []

    class Plain:
        name = "plain"

        def load(self, cfg):
            made.append(self)
            return LoadInfo(model_id="m")

        def release(self):
            pass

    class Refuses(Plain):
        def reconfigure(self, cfg):
            raise ReloadNeeded("this engine sets max_new_tokens while loading")

    cfg = ExperimentConfig.from_dict(base())
    for cls in (Plain, Refuses):
        made.clear()
        monkeypatch.setattr("llem.study.reuse.get_backend_class", lambda name, cls=cls: cls)
        kept = sw.KeptBackend()
        kept.load(cfg)
        info = kept.load(cfg)
        assert kept.loads == 2 and kept.reuses == 0 and len(made) == 2
        if cls is Refuses:
            assert any("sets max_new_tokens while loading" in n for n in info.notes)


def test_an_assistant_model_is_loaded_again_for_every_run(tmp_path, loads):
    cfg = {**base(), "pytorch": {"assistant_model": "tiny-random-llama"}}
    res = llem.sweep(cfg, {"decoder.max_new_tokens": [2, 3]}, results_dir=tmp_path, progress=False)
    assert loads["load"] == 2 == res.loads and not res.failures
    assert any("loaded again" in n and "assistant_model" in n for n in res.results[1].notes)
    assert [r.runs[0].output_tokens for r in res.results] == [2 * 2, 3 * 2]


def test_interrupted_sweep_resumes_with_only_the_missing_runs(tmp_path, loads):
    grid = {"pytorch.batch_size": [1, 2]}
    cfg = base(cycles=2, order="interleaved")
    landed = []

    def stop_after_two(result):
        landed.append(result.name)
        if len(landed) == 2:
            raise KeyboardInterrupt

    with pytest.raises(sw.SweepInterrupted, match="resume") as info:
        llem.sweep(cfg, grid, results_dir=tmp_path, progress=False, on_result=stop_after_two)
    partial = info.value.partial
    assert not partial.complete and len(partial.results) == 2
    assert len(list(tmp_path.glob("*.json"))) == 2
    again = []
    res = llem.sweep(cfg, grid, results_dir=tmp_path, progress=False, on_result=again.append)
    assert res.resumed == 2 and len(again) == 2  # only the two missing runs ran
    assert [r.name for r in again] == ["batch_size=1 (cycle 2)", "batch_size=2 (cycle 2)"]
    assert [sw.sweep_info(r)["cycle"] for r in again] == [1, 1]
    assert len(res.results) == 4 and res.complete
    assert len(list(tmp_path.glob("*.json"))) == 4
    # a third time nothing runs
    third = llem.sweep(cfg, grid, results_dir=tmp_path, progress=False, on_result=again.append)
    assert third.resumed == 4 and len(again) == 2
    # more cycles later: the same folder, only the new cycle runs
    more = llem.sweep(base(cycles=3, order="interleaved"), grid, results_dir=tmp_path, progress=False,
                      on_result=again.append)
    assert more.resumed == 4 and len(again) == 4 and len(more.results) == 6


def test_a_run_interrupted_mid_measurement_is_not_kept(tmp_path, monkeypatch):
    orig = PyTorchBackend.generate
    calls = {"n": 0}

    def stop_in_the_second_run(self, prompts, on_phase=None, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # 2 prompts a run, batch size 1: the second run's second batch
            raise KeyboardInterrupt
        return orig(self, prompts, on_phase, **kw)

    monkeypatch.setattr(PyTorchBackend, "generate", stop_in_the_second_run)
    grid = {"decoder.max_new_tokens": [2, 3]}
    with pytest.raises(sw.SweepInterrupted) as info:
        llem.sweep(base(), grid, results_dir=tmp_path, progress=False)
    assert [r.name for r in info.value.partial.results] == ["max_new_tokens=2 (cycle 1)"]
    assert len(list(tmp_path.glob("*.json"))) == 1  # the partial run was not saved as done
    monkeypatch.setattr(PyTorchBackend, "generate", orig)
    res = llem.sweep(base(), grid, results_dir=tmp_path, progress=False)
    assert res.resumed == 1
    assert [sw.sweep_info(r)["label"] for r in res.results] == ["max_new_tokens=2", "max_new_tokens=3"]


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    orig = PyTorchBackend.generate

    def oom_on_pairs(self, prompts, on_phase=None, **kw):
        if len(prompts) == 2:
            raise OutOfMemoryError("Out of memory generating a batch of 2 prompt(s). Lower pytorch.batch_size.")
        return orig(self, prompts, on_phase, **kw)

    monkeypatch.setattr(PyTorchBackend, "generate", oom_on_pairs)
    grid = {"pytorch.batch_size": [1, 2], "decoder.max_new_tokens": [3, 4]}
    res = llem.sweep(base(), grid, results_dir=tmp_path, progress=False)
    assert sorted(sw.sweep_info(r)["label"] for r in res.results) == ["batch_size=1, max_new_tokens=3",
                                                                      "batch_size=1, max_new_tokens=4"]
    assert sorted(f.label for f in res.failures) == ["batch_size=2, max_new_tokens=3",
                                                     "batch_size=2, max_new_tokens=4"]
    assert res.failures[0].error.startswith("OutOfMemoryError: Out of memory")
    assert "Traceback" in res.failures[0].traceback
    recorded = sorted((tmp_path / "_sweep").glob("failed-*.json"))
    assert len(recorded) == 2 and "OutOfMemoryError" in recorded[0].read_text()
    assert "failed: batch_size=2" in repr(res)
    # resuming retries the failed runs only; once they pass their failure record goes
    monkeypatch.setattr(PyTorchBackend, "generate", orig)
    again = llem.sweep(base(), grid, results_dir=tmp_path, progress=False)
    assert again.resumed == 2 and not again.failures and len(again.results) == 4
    assert not list((tmp_path / "_sweep").glob("failed-*.json"))


def test_cold_start_runs_each_measurement_in_a_fresh_process(tmp_path, loads):
    res = llem.sweep(base(cold_start=True), {"pytorch.batch_size": [2]}, results_dir=tmp_path, progress=False)
    assert loads["load"] == 0 and res.loads == 0  # nothing loaded in this process
    assert len(res.results) == 1 and res.results[0].complete
    assert res.results[0].effective_config["pytorch.batch_size"] == 2
    assert not list((tmp_path / "_sweep").glob("cold-*"))  # its scratch folder is gone


def test_cold_start_failure_is_recorded(tmp_path):
    res = llem.sweep({**base(cold_start=True), "model": "/nonexistent/model-dir"}, None,
                     results_dir=tmp_path, progress=False)
    assert not res.results and len(res.failures) == 1
    assert "ModelNotFoundError" in res.failures[0].error


# ------------------------------------------------------------------------------ YAML and CLI
SWEEP_YAML = """
model: tiny-random-llama
prompts: ["Hello there", "Energy is"]
repeats: 1
meter: estimate
sampling_interval_s: 0.02
decoder: {max_new_tokens: 3, do_sample: false}
warmup: {runs: 0}
study:
  cycles: 2
  order: interleaved
sweep:
  grid:
    pytorch:
      batch_size: [1, 2]
  variants:
    - {pytorch.load_in_4bit: true, pytorch.load_in_8bit: true}
  results_dir: out
"""


def test_yaml_sweep_block(tmp_path, capsys):
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP_YAML)
    spec = sw.load_sweep(f)
    assert spec.grid == {"pytorch": {"batch_size": [1, 2]}}
    assert spec.variants == [{"pytorch.load_in_4bit": True, "pytorch.load_in_8bit": True}]
    assert spec.base.study.cycles == 2 and spec.base.study.order == "interleaved"
    assert spec.results_dir == str(tmp_path / "out")
    # ExperimentConfig ignores the block, so the same file is also a plain config
    assert ExperimentConfig.load(f).study.cycles == 2
    code = sw.sweep_command(f, progress=False)
    assert code == 0
    out = capsys.readouterr().out
    assert "batch_size=1" in out and "2 cycle(s), interleaved order" in out
    assert "skipped (refused): load_in_4bit=True, load_in_8bit=True" in out
    assert len(list((tmp_path / "out").glob("*.json"))) == 4
    assert sw.sweep_command(f, progress=False) == 0  # resumed: nothing left to run


def test_yaml_mistakes_are_named(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("model: tiny-random-llama\nsweep:\n  grdi: {pytorch.batch_size: [1]}\n")
    with pytest.raises(UnknownNameError, match="Did you mean 'grid'"):
        sw.load_sweep(f)
    assert sw.sweep_command(f, progress=False) == 2
    assert "bad.yaml" in capsys.readouterr().err
    g = tmp_path / "plain.yaml"
    g.write_text("model: tiny-random-llama\n")
    with pytest.raises(ConfigError, match="no sweep block"):
        sw.load_sweep(g)
    h = tmp_path / "scalar.yaml"
    h.write_text("model: tiny-random-llama\nsweep: {grid: {pytorch.batch_size: 4}}\n")
    with pytest.raises(ConfigError, match="scalar.yaml.*must list the values"):
        sw.load_sweep(h)


def test_llem_sweep_is_the_plain_function_of_llem_study():
    import inspect

    assert llem.sweep is sw.sweep and inspect.isfunction(llem.sweep)
    assert "llem.sweep" not in sys.modules
    assert not (Path(llem.__file__).parent / "sweep.py").exists()  # no module of that name


def test_cycle_stat():
    st = sw.CycleStat.of([3.0, 1.0, 2.0, None])
    assert (st.median, st.min, st.max, st.spread, st.n) == (2.0, 1.0, 3.0, 2.0, 3)
    lo, hi = st.ci95
    assert lo < 2.0 < hi and round(hi - 2.0, 3) == round(4.303 * 1.0 / 3 ** 0.5, 3)
    assert sw.CycleStat.of([5.0]).ci95 is None
    assert sw.CycleStat.of([]).median is None


# ------------------------------------------------------------------------------ the widget
def test_widget_shows_progress_chart_and_report(tmp_path):
    pytest.importorskip("ipywidgets")
    from llem.widgets.sweep import SweepWidget

    res = llem.sweep(base(cycles=2), {"pytorch.batch_size": [1, 2]}, results_dir=tmp_path, progress=False)
    w = SweepWidget(total=4, trials=["batch_size=1", "batch_size=2"],
                    skipped=[sw.Skipped("x=1", {"x": 1}, "refused for a reason")])
    assert "waiting for the first result" in w.chart.value
    w.update(sw.SweepProgress("run", 1, 0, 4, 0, "batch_size=2 (cycle 1)", 12.0, 3.0))
    assert w.bar.value == 1 and w.bar.max == 4
    assert "1/4 runs" in w.status.value and "ETA 0:12" in w.status.value
    assert "batch_size=2 (cycle 1)" in w.status.value
    for r in res.results:
        w.add_result(r)
    assert w.chart.value.count("<circle") == 4 and "(estimated)" in w.chart.value
    w.update(sw.SweepProgress("done", 4, 0, 4))
    assert w.bar.bar_style == "success"
    w.finish(res, full_report=False)
    assert "batch_size=2" in w.report.value and "median" in w.report.value
    assert "refused for a reason" in w.skipped.value
    assert "4/4 runs" in repr(w)


def test_in_a_notebook_the_sweep_shows_its_widget(tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    import llem.widgets.sweep as wmod

    shown = []
    monkeypatch.setattr("llem.study.api._in_notebook", lambda: True)
    monkeypatch.setattr(wmod.SweepWidget, "show", lambda self: shown.append(self))
    res = llem.sweep(base(), {"pytorch.batch_size": [1, 2]}, [{"pytorch.batch_size": 0}],
                     results_dir=tmp_path)
    (w,) = shown
    assert w.bar.value == w.bar.max == 2 and w.bar.bar_style == "success"
    assert "2/2 runs" in w.status.value and "done" in w.status.value
    assert w.chart.value.count("<circle") == 2
    assert "batch_size=0" in w.skipped.value
    assert "batch_size=2" in w.report.value and len(res.results) == 2
    if importlib.util.find_spec("llem.report") is not None:  # the full report, framed
        assert "<iframe srcdoc=" in w.report.value
        out = res.report(tmp_path / "sweep.html")
        assert Path(out).exists() and "batch_size=2 (cycle 1)" in Path(out).read_text()


# ------------------------------------------------------------------------------ Ray
class FakeRay:
    """The two questions RayExecutor asks a cluster."""

    def __init__(self, total, nodes):
        self.total, self._nodes = total, nodes

    def cluster_resources(self):
        return self.total

    def nodes(self):
        return [{"Alive": True, "Resources": r} for r in self._nodes] + [{"Alive": False, "Resources": {"GPU": 64}}]


def test_ray_tasks_reserve_what_they_measure():
    cfg = ExperimentConfig.from_dict(base())
    tp2 = ExperimentConfig.from_dict({"backend": "vllm", "model": "tiny-random-llama",
                                      "vllm": {"tensor_parallel_size": 2}})
    assert sw.gpus_needed(cfg) == 1 and sw.gpus_needed(tp2) == 2
    gpus = FakeRay({"GPU": 12, "CPU": 64}, [{"GPU": 8, "CPU": 32}, {"GPU": 4, "CPU": 32}])
    # a run reads every GPU of its node: by default a trial gets a node of its own
    assert sw.RayExecutor().task_options(cfg, gpus) == {"num_gpus": 8, "num_cpus": 1}
    assert sw.RayExecutor(whole_node=False).task_options(tp2, gpus) == {"num_gpus": 2, "num_cpus": 1}
    tagged = FakeRay({"GPU": 12, "llem_node": 2}, [{"GPU": 8, "llem_node": 1}, {"GPU": 4, "llem_node": 1}])
    assert sw.RayExecutor().task_options(tp2, tagged) == {
        "num_gpus": 2, "num_cpus": 1, "resources": {"llem_node": 1}}
    cpus = FakeRay({"CPU": 6}, [{"CPU": 2}, {"CPU": 4}])
    assert sw.RayExecutor().task_options(cfg, cpus) == {"num_cpus": 4}
    cpus_tagged = FakeRay({"CPU": 6, "llem_node": 2}, [{"CPU": 2, "llem_node": 1}, {"CPU": 4, "llem_node": 1}])
    assert sw.RayExecutor().task_options(cfg, cpus_tagged) == {"resources": {"llem_node": 1}, "num_cpus": 0}
    assert sw.RayExecutor(resources={"num_gpus": 1}).task_options(cfg, gpus) == {"num_gpus": 1}


def test_a_local_ray_is_started_on_the_loopback_and_an_address_is_used_as_given(monkeypatch):
    calls = []

    class Ray:
        def is_initialized(self):
            return False

        def init(self, **kw):
            calls.append(kw)

    monkeypatch.setitem(sys.modules, "ray", Ray())
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sw.RayExecutor()._ray()
    sw.RayExecutor("ray://head:10001", init_kwargs={"namespace": "x"})._ray()
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    sw.RayExecutor()._ray()  # joins the cluster named in the environment
    assert calls[0] == {"address": None, "_node_ip_address": "127.0.0.1", "include_dashboard": False,
                        "log_to_driver": False}
    assert calls[1] == {"address": "ray://head:10001", "include_dashboard": False, "log_to_driver": False,
                        "namespace": "x"}
    assert "_node_ip_address" not in calls[2]


@pytest.fixture(scope="module")
def local_ray():
    try:
        import ray
    except ImportError:
        pytest.skip("ray is not installed (pip install 'llem[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             _node_ip_address="127.0.0.1")  # the loopback only
    yield ray
    ray.shutdown()


def test_ray_executor_retries_a_trial_whose_worker_died(tmp_path, local_ray):
    marker = tmp_path / "crashed-once"

    def crash_once_then_run(config, prompts=None):
        # the first trial to start kills its worker process mid-trial, once
        import os
        from pathlib import Path

        if not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)
        from llem.runner import run

        return run(config, prompts)

    executor = sw.RayExecutor(max_retries=2, run=crash_once_then_run)
    opts = executor.task_options(ExperimentConfig.from_dict(base()), local_ray)
    assert opts == {"num_cpus": 2}  # a CPU node: one trial takes the whole node
    seen = []
    res = llem.sweep(base(), {"pytorch.batch_size": [1, 2]}, executor=executor, results_dir=tmp_path,
                     progress=seen.append)
    assert marker.exists()  # a worker died...
    assert not res.failures and len(res.results) == 2  # ...and its trial was retried
    assert sorted(r.name for r in res.results) == ["batch_size=1 (cycle 1)", "batch_size=2 (cycle 1)"]
    assert all(r.complete and r.environment.get("host") for r in res.results)
    assert len(list(tmp_path.glob("*.json"))) == 2  # streamed back to this folder
    assert seen[-1].stage == "done" and seen[-1].done == 2
    assert any("Tier checks were left to the Ray workers" in n for n in res.notes)


def test_ray_trials_sharing_a_load_key_load_the_model_once(tmp_path, local_ray):
    res = llem.sweep(base(), {"decoder.max_new_tokens": [2, 3]}, executor="ray", results_dir=tmp_path,
                     progress=False)
    assert not res.failures and len(res.results) == 2
    assert res.loads == 1  # counted inside the one actor that ran both trials
    assert [r.runs[0].output_tokens for r in res.results] == [2 * 2, 3 * 2]
    assert [any("reused" in n for n in r.notes) for r in res.results] == [False, True]
    assert res.results[0].environment["host"] == res.results[1].environment["host"]


def test_ray_executor_records_a_failing_trial(tmp_path, local_ray):
    res = llem.sweep({**base(), "model": "/nonexistent/model-dir"}, {"pytorch.batch_size": [1]},
                     executor="ray", results_dir=tmp_path, progress=False)
    assert not res.results and "ModelNotFoundError" in res.failures[0].error
    assert Path(tmp_path / "_sweep").is_dir()


def test_a_kept_backend_passes_on_what_its_backend_probes_before_loading(monkeypatch):
    from llem import plugins
    from llem.config import ExperimentConfig
    from llem.study.reuse import KeptBackend

    class Probing:
        name = "probing"

        def probe_facts(self, cfg):
            return {"model_prequantized": True}

    monkeypatch.setitem(plugins._registered["backend"], "probing", type(
        "ProbingBackend", (Probing,), {"load": None, "generate": None, "count_tokens": None,
                                       "release": lambda self: None}))
    kept = KeptBackend()
    assert kept.probe_facts(ExperimentConfig(backend="probing")) == {"model_prequantized": True}
    assert KeptBackend().probe_facts(ExperimentConfig()) == {}  # pytorch probes nothing
