"""The ``codecarbon`` meter: runs codecarbon's ``OfflineEmissionsTracker`` in the window.

For users who want codecarbon's carbon figures beside llem's. Its energy numbers keep
codecarbon's own provenance: codecarbon's label for how it tracked each part (its CPU
mode, e.g. ``cpu_load``, ``constant`` or ``intel_rapl``) is recorded in the reading's
``model_inputs["codecarbon_mode"]`` and mapped to llem's vocabulary: RAPL/powermetrics
modes are ``measured``, NVML GPU energy is ``measured``, everything else (TDP x load,
constant, the RAM model) is ``estimated``.

codecarbon updates its totals every ``measure_power_secs`` and computes the rest when it
stops, so this meter adds no live timeline points; the window draws each device's
total as a straight line over the window, at its mean power.
"""

from __future__ import annotations

import logging
from typing import Any

from llem.energy.base import Meter, MeterUnavailableError, Probe, RawSample, package_version
from llem.energy.measurement import DeviceReading
from llem.errors import missing_dependency

_J_PER_KWH = 3.6e6

#: codecarbon CPU modes that read a hardware counter.
MEASURED_CPU_MODES = frozenset({"intel_rapl", "intel_power_gadget", "apple_powermetrics", "powermetrics"})


def _version() -> str | None:
    return package_version("codecarbon")


def _no_output_kwargs() -> dict[str, Any]:
    """Tell codecarbon to write nothing (``output_methods=[]`` in 3.x, ``save_to_file`` before)."""
    import inspect

    from codecarbon.emissions_tracker import BaseEmissionsTracker

    try:
        names = set(inspect.signature(BaseEmissionsTracker.__init__).parameters)
    except (TypeError, ValueError):
        names = set()
    return {"output_methods": []} if "output_methods" in names else {"save_to_file": False}


class CodeCarbonMeter(Meter):
    """codecarbon's tracker around the window (energy as codecarbon labels it, plus carbon).

    Parameters
    ----------
    devices : ignored
        codecarbon chooses its own devices.
    country_iso_code : str, optional
        3-letter country code for codecarbon's grid intensity (codecarbon's own
        configuration decides when unset).
    measure_power_secs : float
        codecarbon's internal interval.
    tracker_kwargs : dict, optional
        More keyword arguments for ``OfflineEmissionsTracker``.
    """

    name = "codecarbon"

    def __init__(
        self,
        devices: Any = None,
        *,
        country_iso_code: str | None = None,
        measure_power_secs: float = 1.0,
        tracker_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.country_iso_code = country_iso_code
        self.measure_power_secs = measure_power_secs
        self.tracker_kwargs = dict(tracker_kwargs or {})
        self._tracker: Any = None
        self._carbon: tuple[float, float, str] | None = None

    @property
    def cache_key(self) -> str:
        """Country and interval."""
        return f"codecarbon/{self.country_iso_code}"

    def probe(self) -> Probe:
        """Installed or not (the tracker itself is not started)."""
        v = _version()
        if v is None:
            return Probe(
                "codecarbon", False, "codecarbon is not installed: pip install 'llem[carbon]'", (), ""
            )
        return Probe(
            "codecarbon",
            True,
            f"codecarbon {v} installed; its OfflineEmissionsTracker runs in the window "
            "(labels: its own CPU mode; RAM is modelled)",
            ("cpu", "ram", "gpu"),
            "",
        )

    def describe(self) -> str:
        """Provenance line."""
        return f"codecarbon {_version() or '?'} OfflineEmissionsTracker"

    def versions(self) -> dict[str, str]:
        """Codecarbon's version."""
        v = _version()
        return {"codecarbon": v} if v else {}

    def start(self) -> None:
        """Create and start the tracker."""
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError:
            raise missing_dependency("codecarbon", "carbon", "the codecarbon meter") from None
        kw: dict[str, Any] = {
            "log_level": "error",
            "measure_power_secs": self.measure_power_secs,
            "allow_multiple_runs": True,
        }
        kw.update(_no_output_kwargs())
        if self.country_iso_code:
            kw["country_iso_code"] = self.country_iso_code
        kw.update(self.tracker_kwargs)
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self._tracker = OfflineEmissionsTracker(**kw)
        self._tracker.start()
        self._carbon = None

    def sample(self) -> list[RawSample]:
        """No live readings (codecarbon reports when it stops)."""
        return []

    def stop(self) -> tuple[DeviceReading, ...]:
        """Stop the tracker and turn its final data into readings."""
        tr, self._tracker = self._tracker, None
        if tr is None:
            return ()
        emissions_kg = tr.stop()
        data = getattr(tr, "final_emissions_data", None)
        if data is None:
            raise MeterUnavailableError("codecarbon's tracker stopped without data (see its log).")
        v = _version() or "?"
        cpu_mode = "unknown"
        for hw in getattr(tr, "_hardware", []) or []:
            if type(hw).__name__ == "CPU":
                cpu_mode = str(getattr(hw, "_mode", "unknown"))
        common = {
            "codecarbon_version": v,
            "country_iso_code": getattr(data, "country_iso_code", None),
            "tracking_mode": getattr(data, "tracking_mode", None),
        }
        out = [
            DeviceReading(
                "cpu",
                "cpu",
                float(data.cpu_energy) * _J_PER_KWH,
                "measured" if cpu_mode in MEASURED_CPU_MODES else "estimated",
                f"codecarbon {v}: CPU mode {cpu_mode} ({data.cpu_model}, {data.cpu_power:g} W)",
                {
                    **common,
                    "codecarbon_mode": cpu_mode,
                    "cpu_power_w": data.cpu_power,
                    "cpu_model": data.cpu_model,
                },
            ),
            DeviceReading(
                "ram",
                "ram",
                float(data.ram_energy) * _J_PER_KWH,
                "estimated",
                f"codecarbon {v}: RAM model ({data.ram_power:g} W)",
                {
                    **common,
                    "codecarbon_mode": "ram_model",
                    "ram_power_w": data.ram_power,
                    "ram_total_size_gb": getattr(data, "ram_total_size", None),
                },
            ),
        ]
        if getattr(data, "gpu_count", 0):
            out.append(
                DeviceReading(
                    "gpu",
                    "gpu",
                    float(data.gpu_energy) * _J_PER_KWH,
                    "measured",
                    f"codecarbon {v}: NVML, all GPUs summed ({data.gpu_model})",
                    {**common, "codecarbon_mode": "nvml", "gpu_count": data.gpu_count},
                )
            )
        kwh = float(data.energy_consumed)
        if emissions_kg is not None and kwh > 0:
            self._carbon = (
                float(emissions_kg) * 1000.0,
                float(emissions_kg) * 1000.0 / kwh,
                f"codecarbon {v} grid intensity for {data.country_name or data.country_iso_code}",
            )
        return tuple(out)

    def carbon(self) -> tuple[float, float, str] | None:
        """``(carbon_g, intensity_g_per_kwh, source)`` from the last stop, if any."""
        return self._carbon
