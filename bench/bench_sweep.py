"""A sweep that reuses the loaded model against independent runs that each load it.

For a grid of 12 decode-time variants on ``tiny-random-llama`` (``decoder.max_new_tokens``
in 2, 4, 8 x ``pytorch.batch_size`` in 1, 2, 4, 8; 4 prompts of ``qa-short``, 1 measured
run and 1 warmup pass each, ``quick`` profile), measures in one process:

- ``independent``: 12 ``llem.run`` calls, each making its backend, loading the model
  and releasing it;
- ``sweep``: one ``llem.sweep`` over the same grid (results saved to a temporary folder),
  which loads the model once and applies each variant's settings to it.

A first run (not timed) imports torch and transformers and warms the file cache, so
neither side pays for that. The two sides alternate for ``--rounds`` rounds; medians and
minima are compared (on a shared machine the minimum is the steadier figure), and the
time spent inside the backend's ``load`` and ``release`` is added up for each side: that
is the part a sweep saves. The CPU time of this process (all its threads) is printed
too: other work on a shared machine stretches wall time far more than CPU time. Run:
``python bench/bench_sweep.py`` (1-4 minutes on 2 cores).

Recorded on the development machine (2 cores shared with other work; no GPU; torch 2.13
CPU, transformers 5.24), ``--rounds 5``, the sweep before and after it became the
``llem/study/`` package (reuse through ``PyTorchBackend.reconfigure`` instead of the
backend's private ``_generation_config``), run alternately, load average 2-3::

    before (llem/sweep.py), load average 2.8:
    independent 12 runs: median   1.84 s, min   1.69 s (load + release 1.54 s, 12 loads)
    sweep of 12 runs:    median   0.45 s, min   0.43 s (load + release 0.14 s, 1 load)
    ratio independent/sweep: 4.08x (medians), 3.90x (minima); 5 rounds
    CPU time (this process, all threads): independent median 2.04 s, sweep median 0.65 s, ratio 3.13x

    after (llem/study/), load average 2.5:
    independent 12 runs: median   1.97 s, min   1.82 s (load + release 1.68 s, 12 loads)
    sweep of 12 runs:    median   0.46 s, min   0.45 s (load + release 0.16 s, 1 load)
    ratio independent/sweep: 4.27x (medians), 4.08x (minima); 5 rounds
    CPU time (this process, all threads): independent median 2.18 s, sweep median 0.66 s, ratio 3.30x

The next pair (load average 2.1 and 1.9) gave 4.60x / 4.39x before and 4.63x / 4.22x
after; with load average 5-7 the ratios swing from 1.4x to 8x on either side, so compare
only runs made back to back on a quiet machine. The saving is about 0.12 s a run (load +
release, mostly the garbage collection that releasing a model triggers; the tiny model
itself loads in about 0.03 s; applying a run's settings to the loaded model takes about
0.1 ms). It grows with the model: SmolLM2-135M or a 7B model takes seconds to minutes to
load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BASE = {
    "model": "tiny-random-llama",
    "prompts": "qa-short",
    "num_prompts": 4,
    "repeats": 1,
    "meter": "estimate",
    "profile": "quick",
    "decoder": {"do_sample": False},
    "study": {"cycles": 1, "order": "sequential"},
}
GRID = {"decoder.max_new_tokens": [2, 4, 8], "pytorch.batch_size": [1, 2, 4, 8]}

#: seconds spent in the backend's load and release, per side (filled by ``_timed``)
SPENT: dict[str, float] = {}


def _timed() -> None:
    """Add up the time PyTorchBackend spends loading and releasing models."""
    from llem.backends.pytorch import PyTorchBackend

    for name in ("load", "release"):
        orig = getattr(PyTorchBackend, name)

        def timed(self, *a, _orig=orig, **kw):
            t = time.perf_counter()
            try:
                return _orig(self, *a, **kw)
            finally:
                SPENT["load+release"] = SPENT.get("load+release", 0.0) + time.perf_counter() - t

        setattr(PyTorchBackend, name, timed)


def independent() -> tuple[float, float, float]:
    """Wall and CPU time of 12 independent runs, and their time in load + release."""
    from llem.config import ExperimentConfig
    from llem.runner import run
    from llem.study import combinations

    configs = []
    for point in combinations(GRID):
        cfg = ExperimentConfig.from_dict(BASE)
        cfg.update(point)
        configs.append(cfg)
    SPENT.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    for cfg in configs:
        run(cfg)
    return time.perf_counter() - t0, time.process_time() - c0, SPENT.get("load+release", 0.0)


def swept() -> tuple[float, float, float, int]:
    """Wall and CPU time of the same 12 runs as one sweep, its load + release time, its loads."""
    from llem.study import sweep

    with tempfile.TemporaryDirectory() as tmp:
        SPENT.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        res = sweep(BASE, GRID, results_dir=tmp, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(res.results) == 12 and not res.failures, res
    return wall, cpu, SPENT.get("load+release", 0.0), res.loads or 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from llem.runner import run

    _timed()
    run({**BASE, "num_prompts": 1})  # imports and file cache, not timed
    ind, sw, ind_cpu, sw_cpu, ind_lr, sw_lr, loads = [], [], [], [], [], [], 0
    for _ in range(args.rounds):  # the two sides alternate, so slow spells hit both
        t, c, lr = independent()
        ind.append(t)
        ind_cpu.append(c)
        ind_lr.append(lr)
        t, c, lr, loads = swept()
        sw.append(t)
        sw_cpu.append(c)
        sw_lr.append(lr)
    a, b = statistics.median(ind), statistics.median(sw)
    print(f"independent 12 runs: median {a:6.2f} s, min {min(ind):6.2f} s "
          f"(load + release {statistics.median(ind_lr):.2f} s, 12 loads)")
    print(f"sweep of 12 runs:    median {b:6.2f} s, min {min(sw):6.2f} s "
          f"(load + release {statistics.median(sw_lr):.2f} s, {loads} load)")
    print(f"ratio independent/sweep: {a / b:.2f}x (medians), {min(ind) / min(sw):.2f}x (minima); "
          f"{args.rounds} rounds")
    ca, cb = statistics.median(ind_cpu), statistics.median(sw_cpu)
    print(f"CPU time (this process, all threads): independent median {ca:.2f} s, sweep median "
          f"{cb:.2f} s, ratio {ca / cb:.2f}x")


if __name__ == "__main__":
    main()
