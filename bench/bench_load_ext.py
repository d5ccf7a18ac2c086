"""Time ``%load_ext llem`` in a fresh Jupyter kernel and a fresh process (target: under 0.3 s).

Kernel trials start a new ipykernel through jupyter_client and time ``%load_ext llem`` as
the kernel's first command. Process trials start a new Python process and build an IPython
shell (not timed: a kernel has one already) before timing the same call. Both check that
no heavy module (torch, transformers, altair, matplotlib, ipywidgets, pandas) came with it.
Run: ``python bench/bench_load_ext.py [trials]``.

Recorded on a development machine (2 vCPUs, other jobs running), 2026-11: fresh process
median 40 ms (5 trials, 36-56 ms), fresh Jupyter kernel median 51 ms (2 trials, 32-70 ms):
0.13 and 0.17 of the target; no heavy module imported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

TARGET_S = 0.3
HEAVY = ("torch", "transformers", "altair", "matplotlib", "ipywidgets", "pandas")

CHILD = r"""
import json, sys, time
HEAVY = HEAVY_NAMES
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
t0 = time.perf_counter()
shell.run_line_magic("load_ext", "llem")
dt = time.perf_counter() - t0
heavy = [m for m in HEAVY if m in sys.modules]
print(json.dumps({"load_ext_s": dt, "heavy": heavy,
                  "registered": "llem" in shell.magics_manager.magics["cell"]}))
""".replace("HEAVY_NAMES", repr(HEAVY))


def trial() -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def kernel_trial() -> dict:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        code = CHILD.replace("shell = InteractiveShell.instance()", "shell = get_ipython()")
        reply = kc.execute_interactive(code, timeout=60, output_hook=_collect)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"kernel trial failed: {reply['content']}")
        return json.loads(_collected.pop().strip().splitlines()[-1])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


_collected: list[str] = []


def _collect(msg: dict) -> None:
    if msg["msg_type"] == "stream" and msg["content"].get("name") == "stdout":
        _collected.append(msg["content"]["text"])


def report(label: str, results: list[dict]) -> bool:
    times = [r["load_ext_s"] for r in results]
    median = statistics.median(times)
    heavy = sorted({m for r in results for m in r["heavy"]})
    ok = all(r["registered"] for r in results)
    print(f"%load_ext llem in a fresh {label}, {len(results)} trials: median {median * 1e3:.1f} ms, "
          f"min {min(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms")
    print(f"  target {TARGET_S * 1e3:.0f} ms; ratio to target {median / TARGET_S:.2f} "
          f"({'under' if median < TARGET_S else 'OVER'} target)")
    print(f"  heavy modules imported: {', '.join(heavy) if heavy else 'none'}; magics registered: {ok}")
    return median < TARGET_S and not heavy and ok


def main(trials: int = 5) -> int:
    good = report("process", [trial() for _ in range(trials)])
    try:
        kernels = [kernel_trial() for _ in range(max(1, trials // 2))]
    except ImportError as e:  # jupyter_client is in the jupyter extra
        print(f"kernel trials skipped: {e}")
    else:
        good = report("Jupyter kernel", kernels) and good
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
