"""Bad input gets one llem error naming the input and the fix (issue 14, classes 2, 3, 4, 6).

Never a Python error, a hang or unbounded memory; the same field given twice is refused; a
hub id fails fast when there is no network. Each class is tested where the input enters:
config loading (``llem._input``, ``llem.config``), model resolution (``llem.models``), the
sweep grid (``llem.study``) and result files (``llem.results.store``), and through the
faces (the CLI's one ``Error:`` line, the magic's UsageError).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llem
from llem import _input, models, spec
from llem.config import ExperimentConfig
from llem.errors import ConfigError, LlemError, ModelNotFoundError
from llem.models import check_hub_access, resolve_adapter, resolve_model
from llem.results import Result, RunMeasurement, load_result, load_results
from llem.results.store import ResultFileError, parse_result
from llem.study import grid as grid_mod
from llem.study.grid import MAX_TRIALS, count_points, expand, flatten_grid
from llem.study.sweepfile import load_sweep, sweep_command


def bomb(levels: int = 9, width: int = 10, indent: str = "") -> str:
    """YAML anchors whose last alias expands to ``width ** levels`` strings."""
    lines = [f"{indent}a0: &a0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def refused(fn, *args, match: str = "", error: type[Exception] = ConfigError, **kw) -> str:
    """Call ``fn``: it must raise llem's ``error`` (no other exception), matching ``match``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            fn(*args, **kw)
    msg = str(info.value)
    assert match in msg, msg
    assert "Fix" in msg or "fix" in msg, msg
    return msg


# ===================================================== class 2: hangs and unbounded memory
def test_an_alias_bomb_inside_passthrough_is_refused_at_load_with_the_limit():
    text = "model: tiny-random-llama\npassthrough:\n  load:\n" + bomb(indent="    ")
    t0 = time.perf_counter()
    msg = refused(ExperimentConfig.from_yaml, text, match="1,000,000")
    assert time.perf_counter() - t0 < 2.0
    assert "alias" in msg


@pytest.mark.parametrize("where", ["top", "section", "grid", "deep"])
def test_one_check_covers_a_bomb_at_any_depth_and_in_any_section(where):
    body = {
        "top": bomb(),
        "section": "pytorch:\n  max_memory:\n" + bomb(indent="    "),
        "grid": "sweep:\n  grid:\n" + bomb(indent="    "),
        "deep": "passthrough:\n  load:\n    a:\n      b:\n        c:\n" + bomb(indent="          "),
    }[where]
    refused(_input.load_yaml, body, match="1,000,000")


def test_a_bomb_built_in_python_is_refused_by_the_row_check():
    leaf = ["x"] * 10
    for _ in range(8):
        leaf = [leaf] * 10  # shared lists: 10**9 items once written out
    msg = refused(ExperimentConfig, passthrough={"load": {"x": leaf}}, match="experiment.passthrough")
    assert "1,000,000" in msg
    cfg = ExperimentConfig()
    refused(setattr, cfg, "passthrough", {"load": {"x": leaf}}, match="1,000,000")
    assert cfg.passthrough is None  # nothing was kept


def test_data_that_holds_itself_is_refused():
    refused(ExperimentConfig.from_yaml, "passthrough: &a {load: *a}\n", match="holds itself")
    loop: dict = {}
    loop["x"] = loop
    refused(ExperimentConfig, passthrough=loop, match="holds itself")


def test_shared_values_are_counted_as_written_out_but_walked_once():
    shared = list(range(1000))
    _input.check_data({"a": [shared] * 900})  # 900k values: under the limit
    with pytest.raises(_input.InputRefused, match="1,000,000"):
        _input.check_data({"a": [shared] * 1100})


def test_every_numeric_row_of_the_table_has_an_upper_bound():
    open_ended = [p.path for p in spec.PARAMS if p.type in ("int", "float") and p.max is None]
    assert open_ended == []


@pytest.mark.parametrize("path", ["experiment.num_prompts", "dataset.count", "dataset.input_len",
                                  "dataset.output_len", "decoder.min_new_tokens", "vllm.max_model_len"])
def test_huge_counts_and_lengths_are_refused_by_the_table(path):
    backend = path.split(".")[0] if path.split(".")[0] in ("vllm",) else "pytorch"
    msg = refused(ExperimentConfig.from_dict, {"backend": backend, path: 10**12}, match=path)
    assert "<=" in msg


def test_synthetic_length_is_checked_against_the_context_before_any_prompt_is_made(monkeypatch):
    import llem.runner as runner

    def never(*a, **k):
        raise AssertionError("synthetic prompts were generated")

    monkeypatch.setattr(runner, "synthetic_prompts", never)
    cfg = ExperimentConfig(model="tiny-random-llama", prompts="synthetic", repeats=1, meter="none",
                           dataset={"input_len": 4000, "output_len": 8})
    msg = refused(llem.run, cfg, match="dataset.input_len=4000")
    assert "context of 2048" in msg and "at most 2040" in msg


def test_a_huge_grid_is_counted_from_its_sizes_and_refused_before_expanding(monkeypatch, tmp_path):
    import llem.study.api as api

    def no_expansion(*a, **k):
        raise AssertionError("the grid was expanded")

    monkeypatch.setattr(api, "expand", no_expansion)
    grid = {"decoder.seed": list(range(100)), "decoder.top_k": list(range(100)),
            "pytorch.batch_size": list(range(1, 41))}
    t0 = time.perf_counter()
    count, words = count_points(grid, [{"decoder.seed": 1}])
    assert count == 400_001 and words == "100 seed x 100 top_k x 40 batch_size + 1 variant"
    msg = refused(llem.sweep, {"model": "tiny-random-llama"}, grid, results_dir=tmp_path,
                  progress=False, match="400,000 trials")
    assert time.perf_counter() - t0 < 5
    assert f"max_trials={MAX_TRIALS:,}" in msg and "--max-trials 400000" in msg
    assert not any(tmp_path.iterdir())  # nothing was planned or written


def test_max_trials_is_the_confirmation(monkeypatch, tmp_path):
    grid = {"decoder.seed": [1, 2, 3]}
    refused(llem.sweep, {"model": "tiny-random-llama"}, grid, results_dir=tmp_path, progress=False,
            max_trials=2, match="3 trials")
    grid_mod.check_count(3, "3 seed", 3)  # allowed at the limit
    grid_mod.check_count(10**9, "a lot", None)  # None: no limit


def test_expansion_is_one_pass_over_the_points(monkeypatch):
    copies = []
    original = ExperimentConfig.copy

    def counted(self):
        copies.append(1)
        return original(self)

    monkeypatch.setattr(ExperimentConfig, "copy", counted)
    base = ExperimentConfig(model="tiny-random-llama")
    trials, skipped = expand(base, {"decoder.seed": list(range(60))}, machine_cc=None)
    assert len(trials) == 60 and not skipped
    assert len(copies) == 61  # the base once, then one copy per point: linear, not quadratic


def test_the_command_line_refuses_a_huge_sweep_file_and_names_the_option(tmp_path, capsys):
    f = tmp_path / "big.yaml"
    f.write_text(yaml.safe_dump({"model": "tiny-random-llama", "sweep": {"grid": {
        "decoder.seed": list(range(50)), "decoder.top_k": list(range(50))}}}))
    assert sweep_command(f, progress=False) == 2
    err = capsys.readouterr().err
    assert "2,500 trials (50 seed x 50 top_k)" in err and "--max-trials 2500" in err
    assert sweep_command(f, progress=False, max_trials=10) == 2


def test_the_planning_line_shows_the_count(tmp_path, capsys):
    res = llem.sweep({"model": "tiny-random-llama", "repeats": 1, "meter": "none", "num_prompts": 1,
                      "decoder": {"max_new_tokens": 2}, "study": {"cycles": 2}},
                     {"decoder.seed": [1, 2]}, results_dir=tmp_path, progress=True)
    assert len(res.results) == 4
    assert "llem sweep: planning 2 trials (2 seed), 2 cycles each: 4 runs" in capsys.readouterr().err


# ============================================================ class 3: foreign errors
DEEP_YAML = "passthrough:\n  load:\n    x: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_JSON = '{"passthrough": {"load": ' + "[" * 100_000 + "]" * 100_000 + "}}"


@pytest.mark.parametrize("load, text, match", [
    (ExperimentConfig.from_yaml, DEEP_YAML, "nested more than"),
    (ExperimentConfig.from_yaml, "passthrough: " + "{a: " * 3000 + "1" + "}" * 3000, "nested more than"),
    (ExperimentConfig.from_json, DEEP_JSON, "nested more than"),
    (ExperimentConfig.from_yaml, "num_prompts: " + "9" * 5000, "5000 digits"),
    (ExperimentConfig.from_yaml, "passthrough: {load: {x: " + "9" * 5000 + "}}", "5000 digits"),
    (ExperimentConfig.from_json, '{"num_prompts": ' + "9" * 5000 + "}", "5000 digits"),
    (ExperimentConfig.from_json, '{"num_prompts": -' + "9" * 5000 + "}", "5000 digits"),
])
def test_deep_nesting_and_huge_integers_are_config_errors(load, text, match):
    refused(load, text, match=match)


def test_deep_and_huge_values_from_python_are_config_errors():
    deep: list = []
    node = deep
    for _ in range(5000):
        node.append([])
        node = node[0]
    refused(ExperimentConfig, passthrough={"load": {"x": deep}}, match="nested more than 64")
    refused(ExperimentConfig, num_prompts=10**5000, match="digits")
    refused(ExperimentConfig, backend=10**5000, match="digits")
    refused(ExperimentConfig, passthrough={"load": {"x": 10**5000}}, match="100 digits")


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    p = tmp_path / "latin.yaml"
    p.write_bytes("model: caf\xe9\n".encode("latin-1"))
    msg = refused(ExperimentConfig.load, p, match="not UTF-8")
    assert str(p) in msg and "0xe9" in msg and "save it as UTF-8" in msg
    s = tmp_path / "sweep.yaml"
    s.write_bytes("model: caf\xe9\nsweep: {grid: {decoder.seed: [1]}}\n".encode("latin-1"))
    refused(load_sweep, s, match="not UTF-8")


def test_config_paths_that_are_not_regular_files_are_refused_without_reading(tmp_path):
    refused(ExperimentConfig.load, tmp_path, match="is a folder")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    refused(ExperimentConfig.load, fifo, match="not a regular file")
    assert time.perf_counter() - t0 < 2
    big = tmp_path / "big.yaml"
    big.write_text("model: x\n" * 10)
    refused(_input.read_text, big, max_bytes=20, match="more than llem reads")


@pytest.mark.parametrize("name, match", [
    ("a" * 5000, "5,000 characters"),
    ("x" * 300, "cannot be a local path"),
    ("gp\x00t2", "control character"),
    ("owner/na\x1bme", "control character"),
    ("tiny-random-llama\rx", "control character"),
])
def test_model_names_no_loader_could_use_are_model_errors(name, match):
    msg = refused(resolve_model, name, match=match, error=ModelNotFoundError)
    assert len(msg) < 600


def test_adapter_names_get_the_same_checks():
    refused(resolve_adapter, "lora\x00x", match="control character", error=ModelNotFoundError)
    refused(resolve_adapter, "z" * 5000, match="characters long", error=ModelNotFoundError)


def _result_dict() -> dict:
    from llem.energy.measurement import Measurement, Sample

    meas = Measurement(duration_s=1.0, energy_j=2.0, energy_j_by_device={"cpu": 2.0}, devices=(),
                       method="estimated", source="test", timeline=(Sample(0.5, "cpu", 3.0, 1.0),))
    run = RunMeasurement(
        index=0, duration_s=1.0, prefill_s=0.1, decode_s=0.9, num_requests=1, input_tokens=4,
        output_tokens=4, padding_tokens=0, decode_waste_tokens=0, num_batches=1,
        tokens_per_s=4.0, requests_per_s=1.0, energy_j=2.0, dynamic_energy_j=None,
        prefill_energy_j=None, decode_energy_j=None, energy_per_token_j=0.5,
        dynamic_energy_per_token_j=None, energy_per_request_j=2.0,
        dynamic_energy_per_request_j=None, peak_memory_mib=None, memory_source="",
        flops_estimate=None, measurement=meas)
    return Result(model="m", backend="pytorch", runs=(run,)).to_dict()


@pytest.mark.parametrize("change, field", [
    (lambda d: d["runs"][0].update(energy_j="abc"), "runs[0].energy_j"),
    (lambda d: d["runs"][0].update(input_tokens=[1]), "runs[0].input_tokens"),
    (lambda d: d.update(runs="abc"), "runs"),
    (lambda d: d.update(runs=[7]), "runs"),
    (lambda d: d.update(model=5), "model"),
    (lambda d: d.update(notes="one note"), "notes"),
    (lambda d: d.update(config=[1, 2]), "config"),
    (lambda d: d["runs"][0]["measurement"].update(duration_s="1 s"), "runs[0].measurement.duration_s"),
    (lambda d: d["runs"][0]["measurement"]["timeline"][0].__setitem__(0, "zz"),
     "runs[0].measurement.timeline[0].t_s"),
    (lambda d: d["runs"][0].pop("duration_s"), "runs[0].duration_s"),
])
def test_a_result_file_with_a_wrong_type_names_the_file_and_the_field(tmp_path, change, field):
    d = _result_dict()
    assert parse_result(json.dumps(d)) == Result.from_dict(d)  # the undamaged dict loads
    change(d)
    p = tmp_path / "damaged.json"
    p.write_text(json.dumps(d))
    msg = refused(load_result, p, match=f"the field {field} ", error=ResultFileError)
    assert str(p) in msg


def test_a_deeply_nested_result_file_is_named_and_skipped_by_load_results(tmp_path):
    good = Result.from_dict(_result_dict())
    good.save(tmp_path)
    (tmp_path / "deep.json").write_text('{"runs": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (tmp_path / "string.json").write_text(json.dumps({**_result_dict(), "load_s": "fast"}))
    with pytest.warns(UserWarning):
        loaded = load_results(tmp_path)
    assert len(loaded) == 1
    errors = {Path(k).name: v for k, v in loaded.errors.items()}
    assert "nested more than" in errors["deep.json"]
    assert "the field load_s holds the str 'fast'" in errors["string.json"]


def test_a_real_result_round_trips_through_the_checks(tmp_path):
    r = llem.run(ExperimentConfig(model="tiny-random-llama", repeats=1, meter="estimate",
                                  decoder={"max_new_tokens": 3}), prompts=["a", "b"])
    assert load_result(r.save(tmp_path)) == r


# ---- property: any YAML a person could write gives a config or llem's ConfigError ------------
_keys = st.sampled_from([*spec.all_paths(), *spec.aliases(), "model", "pytorch", "decoder",
                         "passthrough", "notes", "nosuch", "sweep"]) | st.text(max_size=6)
_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
            | st.sampled_from(["float16", "sdpa", "vllm", "tiny-random-llama", "9" * 200]))
_docs = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_keys, inner, max_size=4), max_leaves=12)


def _as_yaml(data) -> str:
    return yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_docs, st.text(max_size=60), st.builds(lambda n: "[" * n + "]" * n,
                                                        st.integers(0, 3000))))
def test_from_yaml_on_random_yaml_returns_a_config_or_a_config_error(data):
    text = _as_yaml(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cfg = ExperimentConfig.from_yaml(text)
        except ConfigError:
            return
    assert isinstance(cfg, ExperimentConfig)
    cfg.config_hash()  # what `llem run` does first: it must finish


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_in_a_config_file_give_a_config_or_a_config_error(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("bytes") / "c.yaml"
    p.write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ExperimentConfig.load(p)
        except ConfigError:
            pass


# ============================================================ class 4: silent ambiguity
@pytest.mark.parametrize("data, first, second", [
    ({"pytorch.batch_size": 2, "pytorch": {"batch_size": 4}}, "pytorch.batch_size", "pytorch: {batch_size}"),
    ({"model": "a", "experiment.model": "b"}, "model", "experiment.model"),
    ({"tensorrt.max_output_len": 8, "tensorrt.max_seq_len": 9, "backend": "tensorrt"},
     "tensorrt.max_output_len", "tensorrt.max_seq_len"),
    ({"dataset.n_prompts": 2, "num_prompts": 3}, "dataset.n_prompts", "num_prompts"),
    ({"tensorrt": {"max_output_len": 8, "max_seq_len": 9}, "backend": "tensorrt"},
     "tensorrt: {max_output_len}", "tensorrt: {max_seq_len}"),
])
def test_the_same_field_given_twice_is_refused_naming_both_spellings(data, first, second):
    msg = refused(ExperimentConfig.from_dict, data, match="given twice")
    assert repr(first) in msg and repr(second) in msg
    refused(spec.flatten, data, match="given twice")


def test_update_refuses_a_field_given_twice_too():
    cfg = ExperimentConfig()
    refused(cfg.update, {"pytorch.batch_size": 2, "pytorch": {"batch_size": 4}}, match="given twice")
    assert cfg.pytorch.batch_size == 1


@pytest.mark.parametrize("text", [
    "model: a\nrepeats: 2\nmodel: b\n",
    "pytorch:\n  batch_size: 2\n  batch_size: 4\n",
    "passthrough:\n  load: {x: 1, x: 2}\n",
])
def test_a_duplicate_yaml_key_is_refused_with_both_lines(text):
    msg = refused(ExperimentConfig.from_yaml, text, match="given twice")
    assert "lines " in msg


def test_a_duplicate_json_key_is_refused():
    refused(ExperimentConfig.from_json, '{"model": "a", "model": "b"}', match="'model' is given twice")


def test_yaml_merge_keys_still_override_as_yaml_says():
    data = _input.load_yaml("base: &b {batch_size: 2, dtype: float16}\npytorch: {<<: *b, batch_size: 4}\n")
    assert data["pytorch"] == {"batch_size": 4, "dtype": "float16"}


@pytest.mark.parametrize("notes, match", [
    ("hello", "not the str 'hello'"),
    (["ok", 3], "a list holding the int 3"),
    ({"a": 1}, "not the dict"),
])
def test_notes_must_be_a_list_of_strings(notes, match):
    msg = refused(ExperimentConfig.from_dict, {"notes": notes}, match=match)
    assert "notes: [" in msg
    assert ExperimentConfig.from_dict({"notes": ["kept"]}).notes == ["kept"]


def test_a_grid_or_variant_giving_a_field_twice_is_refused():
    msg = refused(flatten_grid, {"pytorch.batch_size": [1], "pytorch": {"batch_size": [2]}},
                  match="sweep grid: pytorch.batch_size is given twice")
    assert "'pytorch: {batch_size}'" in msg
    refused(grid_mod.combinations, None, [{"decoder.seed": 1, "decoder": {"seed": 2}}],
            match="sweep variant #1: decoder.seed is given twice")


# ================================================================== class 6: the network
@pytest.fixture
def online(monkeypatch):
    """No offline variable set; the connection check is replaced by ``probe`` (records calls)."""
    for var in models.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    calls = []

    def use(answer):
        def probe(timeout_s=models.HUB_TIMEOUT_S):
            calls.append(timeout_s)
            return answer
        monkeypatch.setattr(models, "probe_hub", probe)
        return calls

    return use


@pytest.mark.parametrize("var", models.OFFLINE_VARS)
def test_an_offline_variable_fails_a_hub_id_at_once_without_a_connection(monkeypatch, online, var):
    calls = online("must not be asked")
    monkeypatch.setenv(var, "1")
    t0 = time.perf_counter()
    msg = refused(check_hub_access, "owner/name", match="'owner/name'", error=ModelNotFoundError)
    assert time.perf_counter() - t0 < 1 and calls == []
    assert f"{var}=1 forbids downloading it" in msg and "tiny-random-llama" in msg


def test_no_network_fails_a_hub_id_in_seconds_with_one_message(online):
    calls = online("the-hub:443: Network is unreachable")
    for name in ("gpt2", "owner/name"):
        msg = refused(check_hub_access, name, match=f"{name!r}", error=ModelNotFoundError)
        assert "no network" in msg and "Network is unreachable" in msg
        assert "local folder" in msg and "smollm2-135m" in msg and "HF_HUB_OFFLINE=1" in msg
    msg = refused(check_hub_access, "tiny-random-llama", "owner/adapter", match="LoRA adapter",
                  error=ModelNotFoundError)
    assert "tiny-random-llama-lora" in msg
    assert len(calls) == 3


def test_with_a_network_nothing_changes(online):
    calls = online(None)
    check_hub_access("owner/name", "owner/adapter")
    assert calls == [models.HUB_TIMEOUT_S]


def test_local_builtin_and_cached_models_need_no_connection(online, monkeypatch, tmp_path):
    calls = online("unreachable")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    check_hub_access("tiny-random-llama", "tiny-random-llama-lora")
    check_hub_access(str(tmp_path / "m"))
    monkeypatch.setattr(models, "is_cached", lambda repo, filename="config.json": True)
    check_hub_access("owner/cached")
    assert calls == []


def test_the_connection_check_is_bounded_even_when_the_lookup_hangs(monkeypatch):
    release = threading.Event()

    def hang(address, timeout=None):
        release.wait(10)
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hang)
    t0 = time.perf_counter()
    try:
        why = models.probe_hub(timeout_s=0.2)
    finally:
        release.set()
    assert time.perf_counter() - t0 < 2
    assert why is not None and "no answer within 0.2 s" in why


def test_the_connection_check_asks_the_hubs_own_address_or_the_proxy(monkeypatch):
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    seen = []

    class Conn:
        def close(self):
            pass

    def connect(address, timeout=None):
        seen.append(address)
        return Conn()

    monkeypatch.setattr(socket, "create_connection", connect)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert models.probe_hub(0.5) is None
    assert seen[-1][0] == urlsplit(constants.ENDPOINT).hostname
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert models.probe_hub(0.5) is None
    assert seen[-1] == ("127.0.0.1", 3128)


def test_a_run_of_a_hub_id_fails_before_the_backend_loads(monkeypatch):
    from llem.backends import pytorch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(pytorch.PyTorchBackend, "load",
                        lambda self, cfg: (_ for _ in ()).throw(AssertionError("loaded")))
    t0 = time.perf_counter()
    refused(llem.run, ExperimentConfig(model="owner/not-cached", repeats=1), match="forbids",
            error=ModelNotFoundError)
    assert time.perf_counter() - t0 < 5


# ================================================================ through the faces
@pytest.fixture
def cli_runner():
    pytest.importorskip("click")
    from click.testing import CliRunner

    return CliRunner()


def _one_error_line(res) -> str:
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.mark.parametrize("content, match", [
    ("model: tiny-random-llama\npassthrough:\n  load:\n" + bomb(indent="    "), "1,000,000"),
    (DEEP_YAML, "nested more than"),
    ("num_prompts: " + "9" * 5000 + "\n", "5000 digits"),
    (b"model: caf\xe9\n", "not UTF-8"),
    ("pytorch.batch_size: 2\npytorch:\n  batch_size: 4\n", "given twice"),
    ("model: a\nmodel: b\n", "given twice"),
    ("notes: hello\n", "list of strings"),
    ("num_prompts: 1000000000000\n", "<= 100,000"),
])
def test_the_command_line_gives_one_error_line(cli_runner, tmp_path, content, match):
    from llem.cli import cli

    p = tmp_path / "c.yaml"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    line = _one_error_line(cli_runner.invoke(cli, ["config", "validate", str(p)]))
    assert match in line


@pytest.mark.parametrize("model, match", [("a" * 5000, "characters long"),
                                          ("gp\x07t2", "control character")])
def test_the_command_line_run_refuses_bad_model_names_in_one_line(cli_runner, tmp_path, model, match):
    from llem.cli import cli

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"model": model}))
    assert match in _one_error_line(cli_runner.invoke(cli, ["run", str(p)]))


@pytest.fixture(scope="module")
def shell():
    pytest.importorskip("IPython")
    from IPython.testing import globalipapp

    ip = globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "llem")
    return ip


def _usage_error(fn, *args) -> str:
    from IPython.core.error import UsageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UsageError) as info:
            fn(*args)
    msg = str(info.value)
    assert "\n" not in msg.strip(), msg
    return msg


def test_the_magic_turns_each_into_a_one_line_usage_error(shell, tmp_path):
    cell = "model: tiny-random-llama\npassthrough:\n  load:\n" + bomb(indent="    ")
    assert "1,000,000" in _usage_error(shell.run_cell_magic, "llem", "", cell)
    assert "given twice" in _usage_error(shell.run_cell_magic, "llem", "", "model: a\nmodel: b\n")
    assert "nested more than" in _usage_error(shell.run_cell_magic, "llem", "",
                                              "passthrough: " + "[" * 500 + "]" * 500)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("model: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in _usage_error(shell.run_line_magic, "llem", f"config show --config {latin}")
    assert "control character" in _usage_error(
        shell.run_cell_magic, "llem", "-m 'gp\x07t2' -r 1 --meter none", "a prompt")


def test_prompts_that_merely_look_like_yaml_stay_prompts(shell):
    from llem.magic import parse_cell

    keys, prompts = parse_cell("what is: a duck\nwhat is: a goose\n")
    assert keys == {} and prompts == ["what is: a duck", "what is: a goose"]


def test_set_values_are_read_within_the_same_bounds():
    from llem.options import parse_value

    refused(parse_value, "{x: 1, x: 2}", "passthrough={x: 1, x: 2}", match="--set 'passthrough=")
    refused(parse_value, "[" * 500 + "]" * 500, match="nested more than")
    msg = refused(parse_value, "9" * 5000, "num_prompts=" + "9" * 5000, match="5000 digits")
    assert len(msg) < 400


def test_a_widget_text_box_reads_within_the_same_bounds():
    pytest.importorskip("ipywidgets")
    from llem.widgets.controls import parse_text

    with pytest.raises(ValueError, match="5000 digits"):
        parse_text(spec.param("experiment.num_prompts"), "9" * 5000)
    with pytest.raises(ValueError, match="given twice"):
        parse_text(spec.param("experiment.passthrough"), "{load: {x: 1}, load: {x: 2}}")
    assert parse_text(spec.param("experiment.passthrough"), "{load: {x: 1}}") == {"load": {"x": 1}}


def test_errors_are_llem_errors():
    assert issubclass(_input.InputRefused, ConfigError) and issubclass(ResultFileError, LlemError)


# ------------------------------------------------------------ pass-through arguments
def test_an_unknown_passthrough_argument_is_a_llem_error_naming_it():
    pytest.importorskip("torch")
    import llem
    from llem.config import ExperimentConfig
    from llem.errors import ConfigError

    base = {"model": "tiny-random-llama", "repeats": 1, "warmup": {"runs": 0}, "meter": "estimate",
            "num_prompts": 1, "decoder": {"max_new_tokens": 2}}
    with pytest.raises(ConfigError, match=r"passthrough\.load\.bogus_kw is not an argument") as e:
        llem.run(ExperimentConfig.from_dict({**base, "passthrough": {"load": {"bogus_kw": 1}}}))
    assert "Fix: remove it from experiment.passthrough.load" in str(e.value)
    with pytest.raises(ConfigError, match="bogus_kw"):
        llem.run(ExperimentConfig.from_dict({**base, "passthrough": {"generate": {"bogus_kw": 1}}}))


def test_an_unused_generate_argument_is_refused_before_any_weight_is_loaded(monkeypatch):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import llem
    from llem.config import ExperimentConfig
    from llem.errors import ConfigError

    def no_load(*a, **k):
        raise AssertionError("the weights were loaded before the pass-through was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    cfg = ExperimentConfig.from_dict({"model": "tiny-random-llama", "repeats": 1, "meter": "estimate",
                                      "passthrough": {"generate": {"bogus_kw": 1}}})
    with pytest.raises(ConfigError, match=r"passthrough\.generate: .*bogus_kw.*Fix: remove"):
        llem.run(cfg)
    # generation settings and generate()'s own arguments pass the check (and then load)
    ok = ExperimentConfig.from_dict({"model": "tiny-random-llama", "repeats": 1, "meter": "estimate",
                                     "passthrough": {"generate": {"renormalize_logits": True}}})
    with pytest.raises(AssertionError, match="weights were loaded"):
        llem.run(ok)
