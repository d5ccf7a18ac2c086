"""Shared test settings: never reach a model hub, keep threads and caches local."""

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _restore_library_progress_bars():
    """The CLI silences transformers' progress bars for its whole process; a test runs the CLI
    in-process, so put that global state back after every test."""
    env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    logging = sys.modules.get("transformers.utils.logging")
    enabled = logging.is_progress_bar_enabled() if logging is not None else True
    yield
    if env is None:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    else:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = env
    logging = sys.modules.get("transformers.utils.logging")
    if logging is not None:
        (logging.enable_progress_bar if enabled else logging.disable_progress_bar)()
