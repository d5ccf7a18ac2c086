"""Result objects: statistics, JSON round trip, the store, comparison, display."""

import json
import math
import os

import pytest

from llem.energy.measurement import DeviceReading, Measurement, PhaseMark, Sample
from llem.results import (
    RequestRecord,
    Result,
    ResultFileError,
    RunMeasurement,
    Stat,
    compare,
    load_result,
    load_results,
    percentile,
    t_critical_95,
)


def measurement(energy_j=2.0, method="estimated"):
    return Measurement(
        duration_s=1.0, energy_j=energy_j, energy_j_by_device={"cpu": energy_j},
        devices=(DeviceReading("cpu", "cpu", energy_j, method, "estimate: CPU time x 4 W/thread"),),
        method=method, source="estimate: CPU time x 4 W/thread", meter="estimate",
        timeline=(Sample(0.0, "cpu", 2.0, 0.0), Sample(1.0, "cpu", 2.0, energy_j)),
        phases=(PhaseMark(0.1, "prefill"), PhaseMark(0.3, "decode")), t0_perf=100.0,
    )


def run(i, tps, energy_j=2.0, method="estimated"):
    reqs = tuple(
        RequestRecord(prompt_id=f"p{k}", prompt=f"prompt {k}", text=f"text {k}", input_tokens=5,
                      output_tokens=4, batch=0, batch_start_s=0.0,
                      token_times_s=(0.01, 0.02, 0.035, 0.05))
        for k in range(2)
    )
    return RunMeasurement(
        index=i, duration_s=8 / tps, prefill_s=0.01, decode_s=8 / tps - 0.01, num_requests=2,
        input_tokens=10, output_tokens=8, padding_tokens=2, decode_waste_tokens=0,
        num_batches=1, tokens_per_s=tps, requests_per_s=tps / 4, energy_j=energy_j,
        dynamic_energy_j=None, prefill_energy_j=0.4, decode_energy_j=1.4,
        energy_per_token_j=energy_j / 8, dynamic_energy_per_token_j=None,
        energy_per_request_j=energy_j / 2, dynamic_energy_per_request_j=None,
        peak_memory_mib=300.0, memory_source="process RSS peak, sampled",
        flops_estimate=2 * 1000 * 18, requests=reqs, measurement=measurement(energy_j, method),
    )


def result(name=None, batch_size=1, tps=(100.0, 110.0, 90.0), **kw):
    return Result(
        model="tiny-random-llama", backend="pytorch", runs=tuple(run(i, t) for i, t in enumerate(tps)),
        config={"model": "tiny-random-llama", "profile": "quick",
                "pytorch": {"batch_size": batch_size, "dtype": None}},
        effective_config={"pytorch.batch_size": batch_size, "pytorch.dtype": "float32"},
        skipped={"decoder.temperature": "no effect with greedy decoding"},
        environment={"device": "cpu", "tier": "cpu"}, notes=("a note",),
        warmup={"passes": 1}, config_hash="abc123", created_at="2026-11-01T10:00:00+00:00",
        name=name, **kw,
    )


def test_t_table():
    assert t_critical_95(1) == 12.706
    assert t_critical_95(2) == 4.303
    assert t_critical_95(30) == 2.042
    assert t_critical_95(35) == 2.042  # conservative: next smaller listed df
    assert t_critical_95(1000) == 1.960
    with pytest.raises(ValueError):
        t_critical_95(0)


def test_stat_mean_and_ci():
    s = Stat.of([100.0, 110.0, 90.0])
    assert s.mean == pytest.approx(100.0) and s.std == pytest.approx(10.0) and s.n == 3
    assert s.ci95_half == pytest.approx(4.303 * 10.0 / math.sqrt(3))
    lo, hi = s.ci95
    assert lo < 100 < hi
    one = Stat.of([5.0, None])
    assert one.mean == 5.0 and one.ci95_half is None and one.ci95 is None
    assert Stat.of([]).mean is None and Stat.of([]).format() == "n/a"
    assert "95% CI, n=3" in s.format("tok/s")


def test_percentile():
    assert percentile([], 50) is None
    assert percentile([3.0], 90) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)


def test_summary_and_shortcuts():
    r = result()
    assert r.summary["tokens_per_s"].mean == pytest.approx(100.0)
    assert r.tokens_per_s.n == 3
    assert r.method == "estimated" and "CPU time" in r.energy_source
    assert r.texts == ["text 0", "text 1"]
    run0 = r.runs[0]
    assert run0.ttft_p50_s == 0.01 and run0.itl_p50_s == pytest.approx(0.015)
    assert run0.padding_fraction == pytest.approx(2 / 12)
    with pytest.raises(AttributeError):
        r.no_such_thing  # noqa: B018


def test_json_round_trip_is_lossless():
    r = result(name="a")
    d = json.loads(r.to_json())
    assert d["schema"] == "llem.result/1" and d["method"] == "estimated"
    assert d["summary"]["tokens_per_s"]["n"] == 3
    back = Result.from_dict(d)
    assert back == r
    assert back.runs[0].measurement == r.runs[0].measurement
    assert back.runs[0].requests[0].itl_s == r.runs[0].requests[0].itl_s
    assert back.to_dict() == r.to_dict()


def test_from_dict_refuses_other_schema():
    d = result().to_dict()
    d["schema"] = "llem.result/99"
    with pytest.raises(ValueError, match="schema"):
        Result.from_dict(d)


def test_save_is_atomic_and_loads(tmp_path):
    r = result()
    path = r.save(tmp_path / "out")
    assert path.exists() and path.suffix == ".json"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert load_result(path) == r


def test_save_defaults_to_output_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = Result(model="m", backend="pytorch", config={"output_dir": "here"})
    assert r.save().resolve().parent == tmp_path / "here"


def test_save_failure_leaves_no_temp_file(tmp_path, monkeypatch):
    r = result()

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        r.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_results_reports_corrupt_files_and_keeps_the_others(tmp_path):
    a = result(name="a")
    b = Result(**{**{f: getattr(result(name="b"), f) for f in ("model", "backend", "runs", "config")},
                  "created_at": "2026-11-02T00:00:00+00:00", "name": "b"})
    a.save(tmp_path)
    b.save(tmp_path)
    (tmp_path / "broken.json").write_text('{"runs": [')
    (tmp_path / "other.json").write_text('{"hello": 1}')
    (tmp_path / "bad-run.json").write_text(json.dumps({"runs": [{"index": 0}], "model": "m",
                                                       "backend": "pytorch"}))
    with pytest.warns(UserWarning) as caught:
        loaded = load_results(tmp_path)
    assert [r.name for r in loaded] == ["a", "b"]
    assert len(loaded.errors) == 3 and len(caught) == 3
    msgs = " ".join(loaded.errors.values())
    assert "not valid JSON" in msgs and "does not hold a llem result" in msgs
    assert "cannot rebuild" in msgs
    with pytest.raises(ResultFileError, match="does not exist"):
        load_result(tmp_path / "missing.json")
    with pytest.raises(ResultFileError):
        load_results(tmp_path / "nope")


def test_compare_lines_up_differing_fields():
    c = compare([result(name="bs1", batch_size=1), result(name="bs4", batch_size=4,
                                                           tps=(300.0, 310.0))])
    assert c.varying == ("pytorch.batch_size",)
    rows = c.rows()
    assert [r["pytorch.batch_size"] for r in rows] == [1, 4]
    assert rows[1]["tokens_per_s"] == pytest.approx(305.0)
    assert rows[0]["method"] == "estimated"
    text = repr(c)
    assert "pytorch.batch_size" in text and "(estimated)" in text
    assert "<table" in c._repr_html_()
    same = compare([result(), result()])
    assert same.varying == () and "no setting differs" in repr(same)
    with pytest.raises(ValueError):
        compare([])


def test_display_text_and_html():
    r = result()
    text = repr(r)
    assert "throughput" in text and "tok/s" in text
    assert "TTFT" in text and "ITL" in text and "p90" in text
    assert "ESTIMATED" in text and "CPU time" in text
    assert "peak memory" in text and "quick profile, not for publication" in text
    assert "decoder.temperature" in text
    bundle = r._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert "estimated" in bundle["text/html"]


def test_measured_energy_is_not_called_estimated():
    r = Result(model="m", backend="pytorch", runs=(run(0, 100.0, method="measured"),))
    assert "measured" in repr(r) and "ESTIMATED" not in repr(r)


def test_display_never_raises():
    class Broken:
        method = "estimated"

        @property
        def source(self):
            raise RuntimeError("broken source")

    bad = run(0, 100.0)
    object.__setattr__(bad, "measurement", Broken())
    r = Result(model="m", backend="pytorch", runs=(bad,))
    text = repr(r)
    assert "display failed" in text
    bundle = r._repr_mimebundle_()
    assert bundle["text/plain"] == text and "text/html" in bundle


def test_empty_result_displays():
    r = Result(model="m", backend="pytorch", complete=False)
    assert "INCOMPLETE" in repr(r) and "n/a" in repr(r)
    assert r.texts == [] and r.method == "none"


def test_summary_figures_complete_and_show_their_unit():
    """A new user's ``res.energy<TAB>`` finds the figures, and a figure reads like the summary."""
    r = result(tps=(100.0, 110.0, 90.0))
    assert "energy_per_token_j" in dir(r) and "tokens_per_s" in dir(r) and "runs" in dir(r)
    text = repr(r.energy_per_token_j)
    assert text == "250 mJ ± 0 (95% CI, n=3)"
    assert repr(r.tokens_per_s).startswith("100 tok/s ± ") and "values" not in repr(r.tokens_per_s)
    assert r.tokens_per_s == Stat.of([100.0, 110.0, 90.0])  # the label is not part of equality
    assert repr(Stat.of([2.0])) == "Stat(2, n=1)"
    assert "figure" not in Stat.of([1.0, 2.0]).to_dict()


# ------------------------------------------------------------------------- DataFrames
def test_result_to_dataframe_has_a_row_per_run_and_unit_named_columns():
    pd = pytest.importorskip("pandas")
    r = result(name="b1", tps=(100.0, 110.0, 90.0))
    df = r.to_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert list(df["run"]) == [0, 1, 2]
    assert list(df["tokens_per_s"]) == [100.0, 110.0, 90.0]
    assert list(df["energy_per_token_j"]) == [0.25, 0.25, 0.25]
    assert (df["config.pytorch.batch_size"] == 1).all() and (df["result_name"] == "b1").all()
    assert set(df["energy_method"]) == {"estimated"}
    # the columns hold SI values; attrs say which label and unit each figure column has
    assert df.attrs["units"]["ttft_p50_s"] == ("TTFT p50", "s")
    assert df.attrs["units"]["energy_per_token_j"] == ("energy per output token", "J")
    assert df.attrs["units"]["tokens_per_s"] == ("throughput", "tok/s")
    assert df["ttft_p50_s"].iloc[0] == pytest.approx(0.01)


def test_a_list_of_results_gives_one_frame():
    pytest.importorskip("pandas")
    import llem
    from llem.results import ResultList

    rs = [result(name="b1", tps=(100.0, 110.0)), result(name="b4", batch_size=4, tps=(200.0, 210.0, 190.0))]
    df = llem.to_dataframe(rs)
    assert len(df) == 5
    assert df.groupby("result_name")["tokens_per_s"].mean().to_dict() == {"b1": 105.0, "b4": 200.0}
    assert sorted(set(df["config.pytorch.batch_size"])) == [1, 4]
    same = ResultList(rs).to_dataframe()
    assert same.equals(df)
    one = llem.to_dataframe(rs[0])
    assert len(one) == 2


def test_to_dataframe_reads_result_files(tmp_path):
    pytest.importorskip("pandas")
    import llem

    a, b = result(name="a"), result(name="b")
    a.save(tmp_path), b.save(tmp_path)
    df = llem.to_dataframe(tmp_path)
    assert sorted(set(df["result_name"])) == ["a", "b"] and len(df) == 6


def test_to_dataframe_without_pandas_says_how_to_install(monkeypatch):
    import sys

    from llem.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pandas.*pip install 'llem\[data\]'"):
        result().to_dataframe()
    import llem

    with pytest.raises(MissingDependencyError, match="llem.to_dataframe"):
        llem.to_dataframe([result()])
