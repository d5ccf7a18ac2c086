"""``doctor()``: which meters and devices this machine offers, and why the others are out.

The CLI's ``llem doctor`` prints the same report.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from llem.energy.base import Probe
from llem.energy.estimate import cpu_power_figure
from llem.energy.registry import SPECIAL_NAMES, auto_plan, clear_probe_cache, get_meter_class, meter_names
from llem.machine import Gpu, get_machine


@dataclass(frozen=True)
class EnergyDoctor:
    """What was found.

    Attributes
    ----------
    meters : list of Probe
        One per known meter name: available or not, and why.
    auto : list of str
        The meters ``meter="auto"`` would use here.
    gpus : list of Gpu
        The GPUs of :func:`llem.machine.get_machine` (typed records).
    cpu : dict
        CPU model and the W-per-thread figure the estimate would use, with its source.
    """

    meters: list[Probe] = field(default_factory=list)
    auto: list[str] = field(default_factory=list)
    gpus: list[Gpu] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)
    driver: str = ""

    def meter(self, name: str) -> Probe | None:
        """The probe of meter ``name``."""
        return next((p for p in self.meters if p.name == name), None)

    def text(self) -> str:
        """The report as plain text."""
        lines = ["llem energy doctor", ""]
        lines.append('meter="auto" uses: ' + (" + ".join(self.auto) or "nothing"))
        lines.append("")
        for p in self.meters:
            mark = "yes" if p.available else "no "
            method = f" [{p.method}]" if p.method else ""
            lines.append(f"  {mark} {p.name:<11}{method}")
            lines.append(f"        {p.reason}")
        lines.append("")
        if self.gpus:
            for g in self.gpus:
                lines.append(
                    f"  gpu:{g.index} {g.name}  cc {g.compute_capability:.1f}  "
                    f"{g.memory_total_mib:.0f} MiB  driver {self.driver}  "
                    f"energy counter: {'yes' if g.energy_counter else 'no'}"
                )
        else:
            lines.append("  GPUs: none found through NVML")
        if self.cpu:
            lines.append(f"  CPU: {self.cpu.get('model')} ({self.cpu.get('logical_cpus')} logical CPUs)")
            w = self.cpu.get("watts_per_thread")
            lines.append(f"       estimate figure: {w:.4g} W/thread, {self.cpu.get('source')}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        try:
            text = self.text()
        except Exception as exc:  # display never raises
            return {"text/plain": f"EnergyDoctor (report failed: {exc!r})"}
        bundle = {"text/plain": text}
        try:
            rows = "".join(
                f"<tr><td>{html.escape(p.name)}</td><td>{'yes' if p.available else 'no'}</td>"
                f"<td>{html.escape(p.method)}</td><td>{html.escape(p.reason)}</td></tr>"
                for p in self.meters
            )
            bundle["text/html"] = (
                f'<p>meter="auto" uses: <b>{html.escape(" + ".join(self.auto))}</b></p>'
                "<table><tr><th>meter</th><th>available</th><th>method</th><th>why</th></tr>"
                f"{rows}</table><pre>{html.escape(text.split(chr(10) + chr(10))[-1])}</pre>"
            )
        except Exception:
            pass
        return bundle


def doctor(refresh: bool = False) -> EnergyDoctor:
    """Probe every known meter and device; return an :class:`EnergyDoctor` report.

    Parameters
    ----------
    refresh : bool
        Forget cached probes first (after granting RAPL access, installing a driver...).
    """
    import os


    if refresh:
        clear_probe_cache()
    probes: list[Probe] = []
    for name in meter_names():
        if name in SPECIAL_NAMES:
            continue
        try:
            probes.append(get_meter_class(name)().probe())
        except Exception as exc:
            probes.append(Probe(name, False, f"could not be probed: {exc}", (), ""))
    fig = cpu_power_figure()
    machine = get_machine(refresh=refresh)
    return EnergyDoctor(
        meters=probes,
        auto=auto_plan(),
        gpus=list(machine.gpus),
        driver=machine.driver,
        cpu={
            "model": fig.cpu_model,
            "logical_cpus": os.cpu_count(),
            "watts_per_thread": fig.watts_per_thread,
            "table": fig.table,
            "source": fig.source,
        },
    )
