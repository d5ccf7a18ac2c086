"""The ``rapl`` meter: CPU package and DRAM energy from Linux powercap (RAPL).

Linux exposes Intel's (and, through the same ``intel-rapl`` driver, AMD's) Running
Average Power Limit counters under ``/sys/class/powercap``: one zone per package
(``intel-rapl:0``, ``name`` = ``package-0``) with sub-zones (``intel-rapl:0:0`` =
``core``, ``intel-rapl:0:1`` = ``uncore``, ``intel-rapl:0:2`` = ``dram``). Each zone has
``energy_uj`` (a cumulative counter in µJ) and ``max_energy_range_uj`` (where it wraps to 0).

llem reads the package zones (device ``cpu:N``, kind ``cpu``) and the DRAM sub-zones
(``ram:N``, kind ``ram``); ``core`` and ``uncore`` are parts of the package and ``psys``
overlaps everything, so they are skipped (and said so). ``intel-rapl-mmio`` zones
duplicate the MSR ones and are skipped too. The figures are ``measured``.

Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694, "Platypus");
:data:`GRANT_ACCESS_HELP` says how to let a user read it.

Every path goes through a ``root`` parameter, so the tests run this module on fake
trees of real files.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llem.energy.base import Meter, MeterPermissionError, MeterUnavailableError, Probe, RawSample
from llem.energy.measurement import DeviceReading

#: Where Linux mounts powercap.
DEFAULT_ROOT = "/sys/class/powercap"

#: How to let a non-root user read the counters (placed in permission errors).
GRANT_ACCESS_HELP = (
    "Since Linux 5.10 the RAPL energy counters are readable by root only (CVE-2020-8694). "
    "To let your user read them until the next reboot: "
    "sudo chmod a+r {root}/intel-rapl:*/energy_uj {root}/intel-rapl:*:*/energy_uj . "
    "To make it permanent, add a udev rule, e.g. /etc/udev/rules.d/99-llem-rapl.rules "
    "containing the line: "
    'SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod a+r /sys%p/energy_uj" '
    "then run: sudo udevadm control --reload && sudo udevadm trigger --action=add "
    "--subsystem-match=powercap . (To limit access to a group instead of everyone, use "
    "chgrp <group> and chmod g+r in the same places.) Without access, use meter='estimate'."
)

_ZONE_RE = re.compile(r"^(?P<ctl>[a-z-]*rapl[a-z-]*):(?P<pkg>\d+)(?::(?P<sub>\d+))?$")


@dataclass(frozen=True)
class RaplDomain:
    """One readable RAPL zone."""

    zone: str
    name: str
    device: str
    kind: str
    energy_path: Path
    max_energy_range_uj: int | None


@dataclass
class RaplScan:
    """What a scan of a powercap tree found: domains to read, and notes on the rest."""

    root: Path
    domains: list[RaplDomain] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_text(path: Path) -> str:
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read().strip()


def permission_message(path: Path | str, root: Path | str = DEFAULT_ROOT) -> str:
    """The message for an unreadable counter: what failed and how to grant access."""
    return f"Cannot read {path}: permission denied. " + GRANT_ACCESS_HELP.format(root=root)


def scan_powercap(root: Path | str = DEFAULT_ROOT) -> RaplScan:
    """Find the package and DRAM domains under ``root``.

    Raises
    ------
    MeterUnavailableError
        No powercap tree, or no RAPL package domain in it.
    MeterPermissionError
        A package counter exists but cannot be read.
    """
    root = Path(root)
    scan = RaplScan(root)
    if not root.is_dir():
        raise MeterUnavailableError(
            f"No powercap tree at {root}: RAPL needs Linux with the intel_rapl powercap driver "
            "(modprobe intel_rapl_msr; also serves AMD Zen CPUs on Linux 5.8+). Virtual machines "
            "usually expose none. Use meter='estimate' here."
        )
    zones = []
    for entry in sorted(os.listdir(root)):
        m = _ZONE_RE.match(entry)
        if not m:
            continue
        if m.group("ctl") != "intel-rapl" and m.group("ctl") != "amd-rapl":
            scan.notes.append(f"{entry}: skipped ({m.group('ctl')} duplicates the MSR zones)")
            continue
        zones.append((entry, m))
    for entry, m in zones:
        zdir = root / entry
        try:
            name = _read_text(zdir / "name")
        except OSError:
            name = "?"
        pkg = int(m.group("pkg"))
        if m.group("sub") is None and name.startswith("package"):
            device, kind = f"cpu:{pkg}", "cpu"
        elif m.group("sub") is not None and name == "dram":
            device, kind = f"ram:{pkg}", "ram"
        elif name == "dram":  # some servers expose DRAM as a top-level zone
            device, kind = f"ram:{pkg}", "ram"
        else:
            why = {
                "core": "part of its package",
                "uncore": "part of its package",
                "psys": "platform total, overlaps package and DRAM",
            }.get(name, "not a package or DRAM domain")
            scan.notes.append(f"{entry} ({name}): skipped, {why}")
            continue
        epath = zdir / "energy_uj"
        if not epath.exists():
            scan.notes.append(f"{entry} ({name}): skipped, no energy_uj file")
            continue
        try:
            _read_text(epath)
        except PermissionError:
            raise MeterPermissionError(permission_message(epath, root)) from None
        except OSError as exc:
            scan.notes.append(f"{entry} ({name}): skipped, energy_uj unreadable ({exc.strerror or exc})")
            continue
        try:
            max_range: int | None = int(_read_text(zdir / "max_energy_range_uj"))
        except (OSError, ValueError):
            max_range = None
            scan.notes.append(
                f"{entry} ({name}): no max_energy_range_uj, counter wrap-around cannot be corrected"
            )
        scan.domains.append(RaplDomain(entry, name, device, kind, epath, max_range))
    if not any(d.kind == "cpu" for d in scan.domains):
        found = ", ".join(z for z, _ in zones) or "none"
        raise MeterUnavailableError(
            f"No readable RAPL package domain under {root} (RAPL zones found: {found}). "
            + (" ".join(scan.notes) + " " if scan.notes else "")
            + "Use meter='estimate' here."
        )
    return scan


def counter_delta_uj(prev_uj: int, cur_uj: int, max_energy_range_uj: int | None) -> int:
    """Energy between two counter readings, µJ, correcting one wrap-around.

    The counter counts up to ``max_energy_range_uj`` and restarts from 0; a reading lower
    than the previous one means it wrapped once (sampling every 100 ms is far faster
    than any wrap, which takes minutes even at hundreds of W). With no known range a
    decrease is reported as 0.
    """
    if cur_uj >= prev_uj:
        return cur_uj - prev_uj
    if max_energy_range_uj is None:
        return 0
    return cur_uj + (max_energy_range_uj - prev_uj)


class RaplMeter(Meter):
    """CPU package and DRAM energy from RAPL counters (``measured``).

    Parameters
    ----------
    devices : ignored
        Accepted for a uniform meter signature.
    root : path
        The powercap root (``/sys/class/powercap``); tests pass a fake tree.
    include_dram : bool
        Read DRAM domains where present.
    clock : callable
        Time source.
    """

    name = "rapl"

    def __init__(
        self,
        devices: Any = None,
        *,
        root: Path | str = DEFAULT_ROOT,
        include_dram: bool = True,
        clock: Any = time.perf_counter,
    ) -> None:
        self.root = Path(root)
        self.include_dram = include_dram
        self._clock = clock
        self._scan: RaplScan | None = None
        self._fds: list[int] = []

    @property
    def cache_key(self) -> str:
        """Root and DRAM choice."""
        return f"rapl/{self.root}/dram={self.include_dram}"

    def _domains(self) -> list[RaplDomain]:
        if self._scan is None:
            self._scan = scan_powercap(self.root)
        return [d for d in self._scan.domains if self.include_dram or d.kind == "cpu"]

    @property
    def notes(self) -> tuple[str, ...]:
        """Zones skipped by the scan, and why."""
        return tuple(f"rapl: {n}" for n in self._scan.notes) if self._scan else ()

    @property
    def has_dram(self) -> bool:
        """True when a DRAM domain will be read."""
        try:
            return any(d.kind == "ram" for d in self._domains())
        except MeterUnavailableError:
            return False

    def probe(self) -> Probe:
        """Scan the tree; report domains, or why none can be read."""
        try:
            doms = self._domains()
        except MeterUnavailableError as exc:
            return Probe("rapl", False, str(exc), (), "measured")
        notes = f" ({'; '.join(self._scan.notes)})" if self._scan and self._scan.notes else ""
        names = ", ".join(f"{d.zone}={d.name}" for d in doms)
        return Probe(
            "rapl",
            True,
            f"RAPL counters at {self.root}: {names}{notes}",
            tuple(d.device for d in doms),
            "measured",
        )

    def describe(self) -> str:
        """Provenance line."""
        return f"rapl: powercap energy_uj counters under {self.root}"

    def versions(self) -> dict[str, str]:
        """Kernel release (the powercap driver's version)."""
        try:
            return {"linux": os.uname().release}
        except Exception:
            return {}

    def _read(self, i: int) -> int:
        try:
            raw = os.pread(self._fds[i], 32, 0)
        except PermissionError:
            raise MeterPermissionError(permission_message(self._doms[i].energy_path, self.root)) from None
        return int(raw.strip() or b"0")

    def start(self) -> None:
        """Open the counters and take their starting values."""
        self._close()
        self._doms = self._domains()
        for d in self._doms:
            try:
                self._fds.append(os.open(d.energy_path, os.O_RDONLY))
            except PermissionError:
                self._close()
                raise MeterPermissionError(permission_message(d.energy_path, self.root)) from None
        self._t0 = self._t_prev = self._clock()
        self._start_uj = [self._read(i) for i in range(len(self._doms))]
        self._prev_uj = list(self._start_uj)
        self._acc_uj = [0] * len(self._doms)
        self._wraps = [0] * len(self._doms)

    def sample(self) -> list[RawSample]:
        """Counters since start (µJ -> J), power from the change since the last sample."""
        now = self._clock()
        dt = now - self._t_prev
        out: list[RawSample] = []
        for i, d in enumerate(self._doms):
            cur = self._read(i)
            if cur < self._prev_uj[i]:
                self._wraps[i] += 1
            delta = counter_delta_uj(self._prev_uj[i], cur, d.max_energy_range_uj)
            self._acc_uj[i] += delta
            self._prev_uj[i] = cur
            out.append((d.device, (delta / 1e6) / dt if dt > 0 else None, self._acc_uj[i] / 1e6, None))
        self._t_prev = now
        return out

    def stop(self) -> tuple[DeviceReading, ...]:
        """Close the counters; totals up to the last sample."""
        self._close()
        out = []
        for i, d in enumerate(self._doms):
            out.append(
                DeviceReading(
                    d.device,
                    d.kind,
                    self._acc_uj[i] / 1e6,
                    "measured",
                    f"rapl: {d.zone} ({d.name}) energy_uj counter",
                    {
                        "zone": d.zone,
                        "domain": d.name,
                        "start_uj": self._start_uj[i],
                        "end_uj": self._prev_uj[i],
                        "max_energy_range_uj": d.max_energy_range_uj,
                        "wraps": self._wraps[i],
                    },
                )
            )
        return tuple(out)

    def _close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self._close()
