"""``python -m llem.gpucheck --out DIR [--simulate] [--only a,b] [--budget S] [--list]``.

Exit status: 0 when no check failed, 1 when one did, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys

from llem.gpucheck import CHECKS, DEFAULT_BUDGET_S, run_kit


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the kit, print where the files went."""
    p = argparse.ArgumentParser(prog="python -m llem.gpucheck",
                                description="Check llem's GPU paths on this machine (docs/gpu-check.md).")
    p.add_argument("--out", help="folder for gpucheck.json and gpucheck.md")
    p.add_argument("--simulate", action="store_true",
                   help="run against llem's fake NVML devices, PyTorch on the CPU (for CI)")
    p.add_argument("--only", default=None, help="comma-separated check names (see --list)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole kit")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    args = p.parse_args(argv)
    if args.list:
        for c in CHECKS:
            print(f"{c.name:28s} {c.issue:12s} {c.title}")
        return 0
    if not args.out:
        p.error("--out DIR is required (the folder for gpucheck.json and gpucheck.md)")
    only = args.only.split(",") if args.only else None
    try:
        report = run_kit(args.out, simulate=args.simulate, budget_s=args.budget, only=only,
                         progress=None if args.quiet else (lambda line: print(line, flush=True)))
    except ValueError as exc:
        p.error(str(exc))
    counts = {s: sum(1 for c in report["checks"] if c["status"] == s) for s in ("pass", "fail", "skip")}
    print(f"{counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip in "
          f"{report['seconds']:.0f} s; wrote {args.out}/gpucheck.json and {args.out}/gpucheck.md")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
