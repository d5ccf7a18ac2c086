"""One run in its own process, for a cold-start sweep.

``python -m llem.study --one CONFIG.json --out RESULT.json [--prompts PROMPTS.json]``
runs the config with :func:`llem.run` and writes the Result as JSON to ``RESULT.json``;
if the run raises, its error and traceback go to ``RESULT.error.json`` instead and the
exit status is 1 (see :func:`llem.study.executors.cold_run`, the parent side).
"""

from __future__ import annotations

import argparse
import json
import traceback
from collections.abc import Sequence
from pathlib import Path

from llem._files import write_atomic
from llem.config import ExperimentConfig
from llem.runner import run
from llem.study.outcome import error_text


def main(argv: Sequence[str] | None = None) -> int:
    """Run one experiment from the command line; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m llem.study",
                                 description="Run one experiment (a cold-start sweep run).")
    ap.add_argument("--one", required=True, help="config file (JSON or YAML)")
    ap.add_argument("--out", required=True, help="where to write the result JSON")
    ap.add_argument("--prompts", help="JSON file with the prompts argument of llem.run")
    args = ap.parse_args(argv)
    out = Path(args.out)
    try:
        cfg = ExperimentConfig.load(args.one)
        prompts = (json.loads(Path(args.prompts).read_text(encoding="utf-8"))
                   if args.prompts else None)
        result = run(cfg, prompts)
        write_atomic(out, result.to_json())
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the parent through a file
        write_atomic(out.with_suffix(".error.json"), json.dumps(
            {"error": error_text(exc), "traceback": traceback.format_exc()}))
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
