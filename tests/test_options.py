"""The option table and the --set parser that the command line and the magic share."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from llem import spec
from llem.config import choices
from llem.errors import ConfigError, UnknownNameError
from llem.options import (
    OPTIONS,
    check_config,
    config_updates,
    flatten_keys,
    matrix_backends,
    parse_sets,
    parse_value,
)

click = pytest.importorskip("click")
pytest.importorskip("IPython")
from click.testing import CliRunner  # noqa: E402
from IPython.core.error import UsageError  # noqa: E402
from IPython.testing import globalipapp  # noqa: E402
from traitlets import TraitError  # noqa: E402

from llem import cli  # noqa: E402
from llem.config import ExperimentConfig  # noqa: E402
from llem.magic import _cell_parser, _line_parser, magic_help, option_updates  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: What each face declares itself (options that are not one field).
MAGIC_OWN = {"-c", "--config", "-s", "--set", "-o", "--out", "-q", "--quiet", "--no-live", "--fresh"}
MAGIC_CONFIG_OWN = {"-c", "--config", "-s", "--set"}
CLI_OWN = {
    "run": {"config", "sets", "output_dir", "report_path", "quiet"},
    "validate": {"file", "sets"},
    "show": {"file", "sets", "fmt", "only_set"},
}


def table_flags() -> set[str]:
    return {f for o in OPTIONS for f in o.flags}


def squeeze(text: str) -> str:
    """Text without whitespace: help wrapped by a formatter compares equal to the row's."""
    return "".join(text.split())


@pytest.fixture(scope="module")
def ip():
    shell = globalipapp.get_ipython()  # read at call time: after the first start, the shell's own
    shell.run_line_magic("load_ext", "llem")
    return shell


# ------------------------------------------------------------------------- the table
@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.name)
def test_every_option_path_resolves_in_the_table(opt):
    rows = opt.rows()
    assert rows, f"{opt.path} names no row"
    for row in rows:
        assert spec.resolve_path(row.path) == (row.path, None)
        assert row.type == opt.row.type, f"{row.path} is a {row.type}, {opt.row.path} a {opt.row.type}"
    if opt.per_backend:
        assert {r.section for r in rows} <= set(spec.BACKENDS)
        assert opt.row.section == spec.param("experiment.backend").default
    else:
        assert opt.row is spec.param(opt.path)


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.name)
def test_help_type_and_choices_come_from_the_row(opt):
    row = opt.row
    text = opt.help()
    assert text.startswith(row.help.rstrip("."))
    if row.unit:
        assert f"({row.unit})" in text
    assert opt.type is {"int": int, "float": float}.get(row.type, str)
    expected = [c for r in opt.rows() for c in choices(r)]
    assert opt.choices() == tuple(dict.fromkeys(expected))
    if row.registry:  # experiment.backend, experiment.meter: the registered names
        assert "Registered now: " + ", ".join(choices(row)) + "." in text
    for r in opt.rows():
        for choice in r.choices or ():
            assert str(choice) in text
    if opt.per_backend:
        for r in opt.rows():
            assert r.path in text


def test_the_table_has_the_options_both_faces_documented():
    assert [o.flags for o in OPTIONS] == [
        ("-m", "--model"),
        ("-b", "--backend"),
        ("-n", "--max-new-tokens"),
        ("--batch-size",),
        ("-r", "--repeats"),
        ("--dtype",),
        ("--meter",),
        ("--preset",),
        ("--profile",),
        ("--prompts",),
        ("--num-prompts",),
        ("--chat-template",),
        ("--target",),
    ]
    assert len(table_flags()) == sum(len(o.flags) for o in OPTIONS)  # no flag twice
    assert not table_flags() & (MAGIC_OWN | {"-f", "--format", "--only-set", "--report", "--output-dir"})


def fake_names(kind: str, *, reserved: bool = True) -> list[str]:
    """``llem.plugins.names`` with a plugin backend and a plugin meter registered."""
    return {
        "backend": ["aaa-plugin", "pytorch", "tensorrt", "vllm"],
        "meter": ["auto", "estimate", "none", "zz-meter"],
    }[kind]


def test_backend_and_meter_choices_are_the_registered_names(monkeypatch):
    import llem.plugins

    monkeypatch.setattr(llem.plugins, "names", fake_names)
    by_name = {o.name: o for o in OPTIONS}
    assert by_name["backend"].choices() == ("pytorch", "vllm", "tensorrt", "aaa-plugin")  # the row's first
    assert by_name["meter"].choices()[-1] == "zz-meter"
    assert "aaa-plugin" in by_name["backend"].help() and "zz-meter" in by_name["meter"].help()
    # the faces read the help when it is shown, so they show a plugin registered after import
    res = CliRunner().invoke(cli.cli, ["run", "--help"])
    assert "aaa-plugin" in res.stdout and "zz-meter" in res.stdout
    assert "aaa-plugin" in squeeze(magic_help())


def test_magic_defaults_take_registered_names(ip, monkeypatch):
    import llem.plugins
    from llem.magic import LlemMagics

    monkeypatch.setattr(llem.plugins, "names", fake_names)
    m = LlemMagics(shell=None)  # not the shell's: %config would keep the value for later tests
    m.default_meter = "zz-meter"
    m.default_backend = "aaa-plugin"
    assert (m.default_meter, m.default_backend) == ("zz-meter", "aaa-plugin")
    with pytest.raises(
        TraitError, match="LlemMagics.default_meter: Unknown meter 'zz-metr'. Did you mean 'zz-meter'"
    ):
        m.default_meter = "zz-metr"
    assert m.default_meter == "zz-meter"


# ------------------------------------------------------------------- the two faces
@pytest.mark.parametrize(
    ("parser", "own"),
    [(_cell_parser(), MAGIC_OWN), (_line_parser("config"), MAGIC_CONFIG_OWN)],
    ids=["cell", "config"],
)
def test_the_magic_parsers_expose_exactly_the_table(parser, own):
    flags = {f for a in parser._actions for f in a.option_strings}
    assert flags == table_flags() | own
    by_dest = {a.dest: a for a in parser._actions}
    for opt in OPTIONS:
        action = by_dest[opt.dest]
        assert tuple(action.option_strings) == opt.flags
        assert action.type is opt.type and action.default is None
        assert action.help == opt.help().replace("%", "%%")  # argparse formats help with %


@pytest.mark.parametrize("command", ["run", "validate", "show"])
def test_the_click_commands_expose_exactly_the_table(command):
    cmd = cli.cli.commands["run"] if command == "run" else cli.cli.commands["config"].commands[command]
    names = {p.name for p in cmd.params}
    assert names == {o.dest for o in OPTIONS} | CLI_OWN[command]
    by_name = {p.name: p for p in cmd.params}
    types = {int: click.INT, float: click.FLOAT, str: click.STRING}
    for opt in OPTIONS:
        param = by_name[opt.dest]
        assert tuple(param.opts) == opt.flags and param.default is None
        assert param.type is types[opt.type]
        assert param.help == opt.help()


def test_the_help_screens_show_the_rows_help(ip):
    cli_help = squeeze(CliRunner().invoke(cli.cli, ["run", "--help"]).stdout)
    magic_text = squeeze(ip.object_inspect_text("%%llem"))
    assert "%%llem[-mMODEL]" in magic_text and "%llemmatrix" in magic_text
    for opt in OPTIONS:
        assert squeeze(opt.help()) in cli_help, opt.name
        assert squeeze(opt.help()) in magic_text, opt.name  # what %%llem? shows


def test_docs_list_every_option():
    jupyter = (ROOT / "docs" / "jupyter.md").read_text()
    reports = (ROOT / "docs" / "reports.md").read_text()
    for opt in OPTIONS:
        for flag in opt.flags:
            assert f"`{flag}`" in jupyter, flag
            assert f"`{flag}`" in reports, flag


# ---------------------------------------------------------------------------- --set
def test_parse_value():
    assert parse_value("4") == 4 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[a, b]") == ["a", "b"] and parse_value("{x: {y: 1}}") == {"x": {"y": 1}}
    for unset in ("unset", "UNSET", " unset ", "", "  ", "null", "~"):
        assert parse_value(unset) is None, unset
    assert parse_value("none") == "none"  # a meter's name, not "unset"
    assert parse_value("a: b: c") == "a: b: c"  # not YAML: the text as given
    with pytest.raises(ConfigError) as info:
        parse_value("{x: 1", "a.b={x: 1")
    assert "'a.b={x: 1'" in str(info.value) and "Fix:" in str(info.value)


SETS = [
    ["decoder.temperature=0.7"],
    ["pytorch.use_cache=false", "decoder.top_k=5"],
    ["experiment.passthrough={generate: {foo: 1}}"],
    ["repeats=4"],
    ["decoder.seed=3", "decoder.temperature=unset"],
    ["decoder.temperature=~"],
    ["decoder={top_k: 3, top_p: 0.9}"],
    ["meter=none"],
    ["prompts=[one, two]"],
    ["decoder.top_k=5", "decoder.top_k=6"],
]

BAD_SETS = [
    (["nonsense"], "is not KEY=VALUE"),
    (["=3"], "is not KEY=VALUE"),
    (["  =3"], "is not KEY=VALUE"),
    (["decoder.stop=[a, b"], "not valid YAML"),
    (["a.b={x: 1"], "not valid YAML"),
    (["decoder.stop='open"], "not valid YAML"),
]


def test_parse_sets():
    assert parse_sets(["a.b={x: 1}", "c=x", "d=", "e=[1, 2]", "f=a=b"]) == {
        "a.b": {"x": 1},
        "c": "x",
        "d": None,
        "e": [1, 2],
        "f": "a=b",
    }
    for items, expected in BAD_SETS:
        with pytest.raises(ConfigError) as info:
            parse_sets(items)
        assert expected in str(info.value) and repr(items[0]) in str(info.value)
        assert "SECTION.FIELD=VALUE" in str(info.value) or "Fix:" in str(info.value)


def _magic_line(items: list[str]) -> str:
    return " ".join(f"--set {shlex.quote(i)}" for i in items)


def _cli_args(items: list[str]) -> list[str]:
    return [a for i in items for a in ("--set", i)]


@pytest.mark.parametrize("items", [*SETS, ["a.b={x: 1}"]], ids=str)
def test_same_set_items_give_the_same_update_in_both_faces(items):
    ctx = cli.cli.commands["config"].commands["show"].make_context("show", _cli_args(items))
    from_cli = config_updates(ctx.params, ctx.params["sets"])
    from_magic = option_updates(_cell_parser().parse_argstring(_magic_line(items)))
    assert from_cli == from_magic == flatten_keys(parse_sets(items), "--set")
    # one --set with several items, as the magic allows, is the same
    assert (
        option_updates(_cell_parser().parse_argstring("-s " + " ".join(map(shlex.quote, items))))
        == from_magic
    )


@pytest.mark.parametrize("items", SETS, ids=str)
def test_same_set_items_give_the_same_config_in_both_faces(ip, items):
    res = CliRunner().invoke(cli.cli, ["config", "show", "--only-set", "-f", "json", *_cli_args(items)])
    assert res.exit_code == 0, res.output
    cfg = ip.run_line_magic("llem", "config show " + _magic_line(items))
    assert json.loads(res.stdout) == json.loads(cfg.to_json(only_set=True))


@pytest.mark.parametrize(("items", "expected"), BAD_SETS, ids=str)
def test_bad_set_items_are_refused_alike(ip, items, expected):
    with pytest.raises(ConfigError) as info:
        parse_sets(items)
    message = str(info.value)
    res = CliRunner().invoke(cli.cli, ["config", "show", *_cli_args(items)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert squeeze(message) in squeeze(res.output) and "--set" in res.output
    with pytest.raises(UsageError) as magic_info:
        ip.run_line_magic("llem", "config show " + _magic_line(items))
    assert str(magic_info.value) == message


OPTION_LINES = [
    "-m tiny-random-llama -n 7 -r 2",
    "--backend vllm --dtype float16",
    "--dtype float16 --batch-size 4",
    "--meter estimate --preset creative --profile publication",
    "--prompts code --num-prompts 3 --target H100",
    "-b vllm --dtype bfloat16 --set experiment.backend=pytorch",  # --set's backend decides
    "--dtype float16 --set pytorch.dtype=bfloat16",  # --set wins
]


@pytest.mark.parametrize("line", OPTION_LINES)
def test_same_options_give_the_same_config_in_both_faces(ip, line):
    res = CliRunner().invoke(cli.cli, ["config", "show", "--only-set", "-f", "json", *shlex.split(line)])
    assert res.exit_code == 0, res.output
    cfg = ip.run_line_magic("llem", "config show " + line)
    assert json.loads(res.stdout) == json.loads(cfg.to_json(only_set=True))


# ----------------------------------------------------------------------- the update
def test_config_updates_resolves_the_backend_and_the_keys():
    values = {"model": "m", "dtype": "float16", "batch_size": None, "out": "ignored"}
    assert config_updates(values) == {"experiment.model": "m", "pytorch.dtype": "float16"}
    assert config_updates(values, backend="vllm")["vllm.dtype"] == "float16"  # the file's backend
    assert "tensorrt.dtype" in config_updates({**values, "backend": "tensorrt"}, backend="vllm")
    got = config_updates({**values, "backend": "tensorrt"}, {"backend": "vllm", "decoder": {"top_k": 2}})
    assert got == {
        "experiment.model": "m",
        "experiment.backend": "vllm",
        "vllm.dtype": "float16",
        "decoder.top_k": 2,
    }
    assert config_updates({}, {"repeats": 3}) == {"experiment.repeats": 3}
    with pytest.raises(ConfigError, match="keys must be strings"):
        flatten_keys({1: 2}, "the cell")
    assert flatten_keys({"sweep": {}, "notes": [], "model": "x"}, "f", skip=("sweep", "notes")) == {
        "experiment.model": "x"
    }


def test_cli_builds_the_same_config_as_the_options_on_a_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("backend: vllm\nvllm:\n  max_num_seqs: 4\n")
    res = CliRunner().invoke(
        cli.cli, ["config", "show", str(f), "--only-set", "-f", "json", "--dtype", "float16"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["vllm"] == {"max_num_seqs": 4, "dtype": "float16"}  # the file's backend


# ------------------------------------------------------------------ shared commands
def test_check_config_collects_rules_and_tier():
    from llem.machine import Machine, use_machine

    with use_machine(Machine.fake()):
        assert check_config(ExperimentConfig(model="tiny-random-llama")).ok
        cfg = ExperimentConfig.from_dict({"pytorch.attn_implementation": "flash_attention_2"})
        found = check_config(cfg)
        assert not found.ok and found.problems == () and "flash_attention_2" in found.tier_problem
        assert found.messages == [found.tier_problem]
        cfg.target_gpu = "H100"
        assert check_config(cfg).ok  # the target, not this machine
    with use_machine(Machine.fake(gpus=[("NVIDIA H100 80GB HBM3", 9.0)])):
        assert check_config(
            ExperimentConfig.from_dict({"pytorch.attn_implementation": "flash_attention_2"})
        ).ok


class _Refused:
    """A config whose rules and tier both refuse it: check_config reports both."""

    target_gpu = None

    def validate(self):
        raise ConfigError("Invalid configuration:\n- a rule")

    def check_tier(self):
        raise ConfigError("These settings cannot run on this machine")


def test_check_config_reports_rules_and_tier_together():
    found = check_config(_Refused())
    assert found.problems == ("Invalid configuration:\n- a rule",)
    assert found.tier_problem == "These settings cannot run on this machine"
    assert found.messages == [*found.problems, found.tier_problem] and not found.ok


def test_matrix_backends_is_one_check_for_both_faces(ip):
    assert matrix_backends([]) == spec.BACKENDS and matrix_backends(["vllm"]) == ("vllm",)
    with pytest.raises(UnknownNameError) as info:
        matrix_backends(["pytorch", "vlm"])
    res = CliRunner().invoke(cli.cli, ["matrix", "-b", "vlm"])
    assert res.exit_code == 1 and str(info.value) in res.output
    with pytest.raises(UsageError) as magic_info:
        ip.run_line_magic("llem", "matrix --markdown -b vlm")
    assert str(magic_info.value) == str(info.value)
