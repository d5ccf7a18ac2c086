"""The energy layer imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "matplotlib", "altair", "IPython", "codecarbon", "pynvml")


def test_energy_modules_import_nothing_heavy():
    code = (
        "import sys\n"
        "import llem.energy.window, llem.energy.doctor, llem.energy.estimate, llem.energy.rapl\n"
        "import llem.energy.nvml, llem.energy.codecarbon, llem.energy.registry, llem.testing\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
