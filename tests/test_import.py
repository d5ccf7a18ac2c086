"""`import llem` stays cheap: no torch, transformers, altair, matplotlib or IPython."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "altair", "matplotlib", "IPython", "pandas", "codecarbon")


def test_import_llem_pulls_nothing_heavy():
    code = (
        "import sys, llem, llem.spec, llem.config\n"
        "llem.ExperimentConfig(model='tiny-random-llama').validate()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_issue_one_liner_prints_false():
    out = subprocess.run(
        [sys.executable, "-c", "import llem, sys; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "False"


def test_public_names_resolve_lazily():
    import llem

    assert llem.ExperimentConfig.__name__ == "ExperimentConfig"
    assert llem.spec.PARAMS
    assert "run" in dir(llem)
