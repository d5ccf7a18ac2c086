"""`llem sweep FILE --ray ADDRESS` hands the file and the address to the sweep runner."""

from click.testing import CliRunner

from llem import cli


def test_sweep_command_passes_ray_address(monkeypatch, tmp_path):
    seen = {}

    def fake(path, ray_address=None, **kw):
        seen.update(path=path, ray_address=ray_address, **kw)
        return 0

    import importlib

    monkeypatch.setattr(importlib.import_module("llem.study"), "sweep_command", fake)
    f = tmp_path / "s.yaml"
    f.write_text("model: tiny-random-llama\nsweep:\n  grid:\n    pytorch.batch_size: [1, 2]\n")
    for flag in ("--ray", "--ray-address"):
        res = CliRunner().invoke(cli.cli, ["sweep", str(f), flag, "auto", "--no-resume"])
        assert res.exit_code == 0, res.output
        assert seen["path"] == str(f) and seen["ray_address"] == "auto" and seen["resume"] is False
