"""The RAPL reader on fake powercap trees made of real files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from llem.energy.base import MeterPermissionError, MeterUnavailableError
from llem.energy.rapl import RaplMeter, counter_delta_uj, permission_message, scan_powercap


def test_scan_finds_packages_and_dram_and_skips_parts(powercap):
    powercap.standard(packages=2, psys=True)
    scan = scan_powercap(powercap.root)
    assert [(d.zone, d.device, d.kind) for d in scan.domains] == [
        ("intel-rapl:0", "cpu:0", "cpu"),
        ("intel-rapl:0:1", "ram:0", "ram"),
        ("intel-rapl:1", "cpu:1", "cpu"),
        ("intel-rapl:1:1", "ram:1", "ram"),
    ]
    notes = " ".join(scan.notes)
    assert "core" in notes and "part of its package" in notes
    assert "psys" in notes


def test_mmio_zones_are_skipped(powercap):
    powercap.standard()
    powercap.zone("intel-rapl-mmio:0", "package-0", energy_uj=5)
    scan = scan_powercap(powercap.root)
    assert [d.zone for d in scan.domains] == ["intel-rapl:0", "intel-rapl:0:1"]
    assert any("mmio" in n for n in scan.notes)


def test_normal_reading(powercap, clock):
    powercap.standard()
    m = RaplMeter(root=powercap.root, clock=clock)
    assert m.probe().available and m.probe().devices == ("cpu:0", "ram:0")
    m.start()
    clock.advance(0.5)
    powercap.set("intel-rapl:0", 1_000_000 + 25_000_000)  # +25 J
    powercap.set("intel-rapl:0:1", 200_000 + 2_000_000)  # +2 J
    rows = {d: (p, e) for d, p, e, _ in m.sample()}
    assert rows["cpu:0"] == pytest.approx((50.0, 25.0))
    assert rows["ram:0"] == pytest.approx((4.0, 2.0))
    clock.advance(0.5)
    powercap.set("intel-rapl:0", 1_000_000 + 35_000_000)
    m.sample()
    readings = {r.device: r for r in m.stop()}
    assert readings["cpu:0"].energy_j == pytest.approx(35.0)
    assert readings["cpu:0"].method == "measured"
    assert readings["cpu:0"].kind == "cpu" and readings["ram:0"].kind == "ram"
    assert readings["cpu:0"].model_inputs["wraps"] == 0
    assert "intel-rapl:0" in readings["cpu:0"].source


def test_wrap_around_uses_max_energy_range(powercap, clock):
    max_range = 262_143_328_850
    powercap.zone("intel-rapl:0", "package-0", energy_uj=max_range - 1_000_000, max_energy_range_uj=max_range)
    m = RaplMeter(root=powercap.root, clock=clock)
    m.start()
    clock.advance(1.0)
    powercap.set("intel-rapl:0", 4_000_000)  # wrapped: 1 J before the top, 4 J after
    ((_, p, e, _),) = m.sample()
    assert e == pytest.approx(5.0) and p == pytest.approx(5.0)
    (r,) = m.stop()
    assert r.model_inputs["wraps"] == 1 and r.energy_j == pytest.approx(5.0)


def test_counter_delta_pure_function():
    assert counter_delta_uj(10, 25, 100) == 15
    assert counter_delta_uj(90, 5, 100) == 15
    assert counter_delta_uj(90, 5, None) == 0


def test_missing_tree_says_what_to_do(tmp_path):
    with pytest.raises(MeterUnavailableError, match="No powercap tree") as e:
        scan_powercap(tmp_path / "nope")
    assert "estimate" in str(e.value)
    p = RaplMeter(root=tmp_path / "nope").probe()
    assert not p.available and "No powercap tree" in p.reason


def test_tree_without_rapl_zones(powercap):
    (powercap.root / "dtpm").mkdir()
    with pytest.raises(MeterUnavailableError, match="No readable RAPL package domain"):
        scan_powercap(powercap.root)


def test_zone_without_energy_file_is_skipped_and_said(powercap):
    powercap.standard()
    powercap.zone("intel-rapl:1", "package-1", energy_uj=None)
    scan = scan_powercap(powercap.root)
    assert "cpu:1" not in [d.device for d in scan.domains]
    assert any("intel-rapl:1" in n and "no energy_uj" in n for n in scan.notes)


def test_package_without_dram(powercap, clock):
    powercap.standard(dram=False)
    m = RaplMeter(root=powercap.root, clock=clock)
    assert m.has_dram is False
    m.start()
    clock.advance(1)
    assert [r[0] for r in m.sample()] == ["cpu:0"]
    m.stop()


def test_missing_max_range_is_noted_and_decrease_counts_zero(powercap, clock):
    powercap.zone("intel-rapl:0", "package-0", energy_uj=100, max_energy_range_uj=None)
    scan = scan_powercap(powercap.root)
    assert any("wrap-around cannot be corrected" in n for n in scan.notes)
    m = RaplMeter(root=powercap.root, clock=clock)
    m.start()
    clock.advance(1)
    powercap.set("intel-rapl:0", 50)
    assert m.sample()[0][2] == 0.0
    m.stop()


def test_permission_message_says_how_to_grant_access():
    msg = permission_message("/sys/class/powercap/intel-rapl:0/energy_uj")
    assert "permission denied" in msg
    assert "chmod a+r" in msg and "udev" in msg and 'SUBSYSTEM=="powercap"' in msg
    assert "CVE-2020-8694" in msg and "meter='estimate'" in msg


def _scan_as_nobody(root: Path) -> tuple[str, str]:
    """Run scan_powercap in a forked child that dropped root, like a normal user."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                scan_powercap(root)
                out = "ok|"
            except MeterPermissionError as exc:
                out = f"perm|{exc}"
            except BaseException as exc:
                out = f"other|{exc!r}"
        except BaseException as exc:
            out = f"nosetuid|{exc!r}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    kind, _, msg = data.decode().partition("|")
    return kind, msg


def test_permission_denied_on_a_root_only_counter():
    """energy_uj mode 0400 owned by root, as on Linux >= 5.10, read by an unprivileged user."""
    base = Path(tempfile.mkdtemp(prefix="llem-rapl-"))
    try:
        os.chmod(base, 0o755)
        root = base / "powercap"
        zone = root / "intel-rapl:0"
        zone.mkdir(parents=True)
        os.chmod(root, 0o755)
        os.chmod(zone, 0o755)
        for name, text in (("name", "package-0"), ("energy_uj", "123"), ("max_energy_range_uj", "1000")):
            (zone / name).write_text(text)
            os.chmod(zone / name, 0o444)
        os.chmod(zone / "energy_uj", 0o400)
        if os.geteuid() == 0:
            kind, msg = _scan_as_nobody(root)
            if kind == "nosetuid":
                pytest.skip(f"cannot drop privileges here: {msg}")
        else:
            try:
                scan_powercap(root)
                kind, msg = "ok", ""
            except MeterPermissionError as exc:
                kind, msg = "perm", str(exc)
        assert kind == "perm", msg
        assert "energy_uj: permission denied" in msg and "chmod a+r" in msg and "udev" in msg
    finally:
        for dirpath, _dirs, files in os.walk(base, topdown=False):
            for f in files:
                os.unlink(os.path.join(dirpath, f))
            os.rmdir(dirpath)
