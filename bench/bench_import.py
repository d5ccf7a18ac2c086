"""How long `import llem` takes in a fresh interpreter, side by side with a bare interpreter.

Each measurement is a fresh process; the runs alternate so both see the same machine state.
Target (issue 2): well under 0.5 s; the ratio to that target is printed.
"""

import statistics
import subprocess
import sys
import time

RUNS = 7
TARGET_S = 0.5
CASES = {
    "bare python": "pass",
    "import llem": "import llem",
    "import llem + build a config": (
        "import llem; llem.ExperimentConfig(model='tiny-random-llama').validate()"
    ),
}


def once(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main() -> None:
    times = {name: [] for name in CASES}
    for _ in range(RUNS):
        for name, code in CASES.items():
            times[name].append(once(code))
    base = statistics.median(times["bare python"])
    print(f"{'case':32s} {'median s':>9s} {'minus bare s':>13s} {'vs 0.5 s target':>16s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        extra = med - base
        print(f"{name:32s} {med:9.3f} {extra:13.3f} {extra / TARGET_S:16.2f}")


if __name__ == "__main__":
    main()
