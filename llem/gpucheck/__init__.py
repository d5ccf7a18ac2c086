"""The GPU check kit: ``python -m llem.gpucheck --out DIR``.

For a machine with an NVIDIA GPU where torch and transformers are installed and nothing
can be downloaded. It runs a registry of checks (:data:`CHECKS`), each with a time limit,
in under 8 minutes on one GPU, and writes ``DIR/gpucheck.json``
(``{"machine": {...}, "checks": [{"name", "status", "detail", "numbers", ...}]}``, the
machine from :func:`llem.machine.get_machine`) and ``DIR/gpucheck.md`` (a table to read).
Each check answers ``pass``, ``fail`` or ``skip`` with the reason; one failing check never
stops the others, and a check a machine cannot run (no CUDA, no Zeus, a feature this llem
lacks) is a ``skip`` with its reason, never a crash.

``--simulate`` runs the same checks against llem's fake NVML devices, with the PyTorch runs
on the CPU (see :mod:`llem.gpucheck.context`), so CI tests the kit. Its figures are not
measurements and the Markdown says so.

How to carry llem to an offline GPU machine and read the output: docs/gpu-check.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llem._version import __version__
from llem.gpucheck import (  # noqa: F401 - they register the checks
    feature_checks,
    issue15_checks,
    nvml_checks,
    torch_checks,
)
from llem.gpucheck.context import Context, environment_versions
from llem.gpucheck.kit import (
    CHECKS,
    DEFAULT_BUDGET_S,
    SCHEMA,
    STATUSES,
    CheckSpec,
    Skip,
    check,
    markdown,
    outcome,
    run_checks,
    write_outputs,
)
from llem.machine import get_machine
from llem.results import now_iso

#: The kit runs the NVML readings first, then the model runs, issue 15's other items, then the
#: newer features.
_MODULE_ORDER = (nvml_checks.__name__, torch_checks.__name__, issue15_checks.__name__,
                 feature_checks.__name__)
CHECKS.sort(key=lambda c: _MODULE_ORDER.index(c.fn.__module__) if c.fn.__module__ in _MODULE_ORDER
            else len(_MODULE_ORDER))


def select(names: Iterable[str] | None = None) -> list[CheckSpec]:
    """The registered checks named in ``names`` (all when None), in registry order.

    Raises
    ------
    ValueError
        For a name no check has, listing the names.
    """
    if names is None:
        return list(CHECKS)
    wanted = [n.strip() for n in names if n.strip()]
    known = {c.name for c in CHECKS}
    bad = [n for n in wanted if n not in known]
    if bad:
        raise ValueError(f"No gpucheck check is called {bad[0]!r}; the checks are: "
                         f"{', '.join(sorted(known))}.")
    return [c for c in CHECKS if c.name in wanted]


def run_kit(out: str | os.PathLike[str], *, simulate: bool = False, budget_s: float = DEFAULT_BUDGET_S,
            only: Iterable[str] | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the checks and write ``gpucheck.json`` and ``gpucheck.md`` into ``out``.

    Parameters
    ----------
    out : path
        Folder for the two files (made if needed).
    simulate : bool
        Fake NVML devices and the CPU instead of the GPU.
    budget_s : float
        The whole kit's time; checks that would start after it are skipped.
    only : iterable of str, optional
        Run only these checks.
    progress : callable, optional
        Receives one line per check as it starts and ends.

    Returns
    -------
    dict
        What ``gpucheck.json`` holds.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded here
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    specs = select(only)
    t0 = time.perf_counter()
    started = now_iso()
    with Context(simulate=simulate) as ctx:
        checks = run_checks(ctx, specs, budget_s, progress)
        machine = get_machine().to_dict()
        machine.update(source=get_machine().source, gpu_note=get_machine().gpu_note,
                       nvml_index_used=ctx.nvml_index)
        report = {
            "schema": SCHEMA, "llem": __version__, "mode": "simulate" if simulate else "gpu",
            "started_at": started, "seconds": round(time.perf_counter() - t0, 1), "device": ctx.device,
            "versions": environment_versions(ctx.torch), "machine": machine, "checks": checks,
        }
    write_outputs(Path(out), report)
    return report


__all__ = ["CHECKS", "DEFAULT_BUDGET_S", "SCHEMA", "STATUSES", "CheckSpec", "Context", "Skip", "check",
           "markdown", "outcome", "run_kit", "select"]
