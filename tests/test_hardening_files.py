"""Issue 14, the file side: no result lost once measured, loading never hangs, no
injection in reports, one sweep per folder, files that respect the umask.

Signals are sent for real, to subprocesses running the `llem` command on the tiny model.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("click")
from click.testing import CliRunner  # noqa: E402

import llem  # noqa: E402
import llem._files as files  # noqa: E402
import llem.study as sw  # noqa: E402
from llem.backends.pytorch import PyTorchBackend  # noqa: E402
from llem.cli import StopSignals, cli  # noqa: E402
from llem.errors import ConfigError, RunInterrupted  # noqa: E402
from llem.report import export  # noqa: E402
from llem.report.exporters import csv_cell  # noqa: E402
from llem.results import load_result, load_results  # noqa: E402
from llem.results import store as rstore  # noqa: E402
from llem.study import store as sstore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

FAST = {"model": "tiny-random-llama", "repeats": 1, "meter": "estimate", "sampling_interval_s": 0.02,
        "num_prompts": 2, "decoder": {"max_new_tokens": 3}, "warmup": {"runs": 0}}

SWEEP = {**FAST, "prompts": ["Hello there", "Energy is"], "profile": "quick",
         "study": {"cycles": 1, "order": "sequential"}}
SWEEP.pop("num_prompts")


@pytest.fixture(scope="module")
def result():
    return llem.run(dict(FAST))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Fallback saves go under the test's folder, never the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _cli_script(tmp_path: Path, patch: str, args: list[str]) -> Path:
    """A script that patches the pytorch backend (``patch``) then runs ``llem ARGS``."""
    script = tmp_path / "drive.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, time
        from pathlib import Path
        from llem.backends.pytorch import PyTorchBackend
        from llem.cli import main
        """) + textwrap.dedent(patch) + f"\nmain({args!r})\n")
    return script


def _one_result(folder: Path):
    found = sorted(folder.glob("*.json"))
    assert len(found) == 1, found
    return load_result(found[0])


# ===================================================== class 1: no result lost after the work
def test_an_interrupt_after_the_last_run_keeps_the_complete_result():
    def hook(stage, done, total):
        if stage == "done":
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted, match="complete") as info:
        llem.run({**FAST, "repeats": 2}, progress=hook)
    kept = info.value.partial
    assert kept.complete and len(kept.runs) == 2 and all(r.complete for r in kept.runs)
    assert any("after the last measured run" in n for n in kept.notes)


def test_an_interrupt_while_the_model_is_released_keeps_the_complete_result(monkeypatch):
    orig = PyTorchBackend.release

    def interrupted(self):
        orig(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(PyTorchBackend, "release", interrupted)
    with pytest.raises(RunInterrupted) as info:
        llem.run(dict(FAST))
    kept = info.value.partial
    assert kept.complete and len(kept.runs) == 1
    assert any("while the model was released" in n for n in kept.notes)
    assert any("release of the model" in n for n in kept.notes)


def test_an_interrupt_in_the_release_of_an_interrupted_run_keeps_the_partial(monkeypatch):
    monkeypatch.setattr(PyTorchBackend, "release", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))

    def hook(stage, done, total):
        if stage.startswith("run 2"):
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        llem.run({**FAST, "repeats": 3}, progress=hook)
    partial = info.value.partial
    assert not partial.complete and partial.runs[0].complete and not partial.runs[-1].complete
    assert any("while the model was released" in n for n in partial.notes)


def test_ctrl_c_during_the_release_saves_the_result_and_exits_130(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(FAST))
    out = tmp_path / "out"
    # the real signal, sent while the model is being released after the last run
    script = _cli_script(tmp_path, """
        orig = PyTorchBackend.release
        def release(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
            orig(self)
        PyTorchBackend.release = release
        """, ["run", str(cfg), "-q", "-o", str(out)])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "Aborted" not in proc.stderr and "complete" in proc.stderr and str(out) in proc.stderr
    kept = _one_result(out)
    assert kept.complete and len(kept.runs) == 1


def test_sigterm_mid_run_saves_the_partial_and_exits_143(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**FAST, "repeats": 50, "num_prompts": 1}))
    out = tmp_path / "out"
    marker = tmp_path / "first-run-done"
    # each generate call marks its count; after two runs the marker tells the test to stop it
    script = _cli_script(tmp_path, f"""
        orig = PyTorchBackend.generate
        calls = [0]
        def generate(self, prompts, on_phase=None, **kw):
            calls[0] += 1
            if calls[0] == 3:
                Path({str(marker)!r}).write_text("x")
            time.sleep(0.05)
            return orig(self, prompts, on_phase, **kw)
        PyTorchBackend.generate = generate
        """, ["run", str(cfg), "-q", "-o", str(out)])
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached its third batch"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # what a job scheduler or `docker stop` sends
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "partial result (marked incomplete) is saved" in err
    partial = _one_result(out)
    assert not partial.complete and 2 <= len(partial.runs) < 50
    assert any("Interrupted" in n for n in partial.notes)


def test_sigterm_stops_a_sweep_keeping_what_it_saved_and_exits_143(tmp_path):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(yaml.safe_dump({**SWEEP, "sweep": {"grid": {"decoder.max_new_tokens": [2, 3, 4]}}}))
    folder = tmp_path / "sw"
    # each trial makes 2 generate calls (2 prompts, batch 1): the third is the second trial's first
    script = _cli_script(tmp_path, """
        orig = PyTorchBackend.generate
        calls = [0]
        def generate(self, prompts, on_phase=None, **kw):
            calls[0] += 1
            if calls[0] == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return orig(self, prompts, on_phase, **kw)
        PyTorchBackend.generate = generate
        """, ["sweep", str(sweep_file), "-o", str(folder)])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert "resume" in proc.stderr
    assert len(list(folder.glob("*.json"))) == 1  # the first trial's result stays saved
    assert not (folder / "_sweep" / "lock.json").exists()  # released on the way out


def test_stop_signals_are_installed_for_the_run_only_and_only_from_the_main_thread():
    before_term, before_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert stop.received == signal.SIGTERM and stop.exit_code == 143
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGINT)  # recorded, the save goes on
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGTERM) == before_term and signal.getsignal(signal.SIGINT) == before_int

    seen = {}

    def elsewhere():
        with StopSignals():
            seen["term"] = signal.getsignal(signal.SIGTERM)

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert seen["term"] == before_term  # a thread never touches the process's handlers
    # an ignored signal stays ignored
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)


def test_run_checks_its_folder_before_measuring(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(FAST))
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setattr("llem.runner.run", lambda *a, **k: pytest.fail("measured before the check"))
    res = CliRunner().invoke(cli, ["run", str(cfg), "-o", str(tmp_path / "afile" / "out")])
    assert res.exit_code == 1
    assert "Error: Results cannot be saved in" in res.output and "is a file, not a folder" in res.output
    assert "Fix:" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["run", str(cfg), "-o", str(tmp_path / "out"),
                                   "--report", str(tmp_path / "afile" / "r.html")])
    assert res.exit_code == 1 and "is a file, not a folder" in res.output
    res = CliRunner().invoke(cli, ["run", str(cfg), "--report", str(tmp_path / "r.xlsx")])
    assert res.exit_code == 1 and "report file type" in res.output


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root writes anywhere")
def test_run_refuses_a_folder_it_cannot_write(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(rstore.ResultsFolderError, match="permission denied"):
            rstore.check_writable(locked / "out")
    finally:
        locked.chmod(0o700)


def test_a_folder_without_permission_or_space_is_named_with_why(tmp_path, monkeypatch):
    for code, words in ((errno.EACCES, "permission denied"), (errno.ENOSPC, "the disk is full"),
                        (errno.EROFS, "read-only file system")):
        def refuse(*a, _code=code, **k):
            raise OSError(_code, os.strerror(_code))

        monkeypatch.setattr(rstore.tempfile, "mkstemp", refuse)
        with pytest.raises(rstore.ResultsFolderError) as info:
            rstore.check_writable(tmp_path / "out")
        assert str(tmp_path / "out") in str(info.value) and words in str(info.value)


def _fail_first_fsyncs(monkeypatch, n=1):
    """A full disk for the next ``n`` writes (their fsync raises ENOSPC)."""
    real, left = os.fsync, [n]

    def fsync(fd):
        if left[0] > 0:
            left[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)


def test_a_full_disk_leaves_no_temporary_and_names_the_folder(result, tmp_path, monkeypatch):
    _fail_first_fsyncs(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        result.save(tmp_path / "a")
    assert list((tmp_path / "a").iterdir()) == []  # the temporary file was removed
    _fail_first_fsyncs(monkeypatch)
    path, problem = rstore.save_or_keep(result, tmp_path / "b")
    assert str(tmp_path / "b") in problem and "the disk is full" in problem and str(path) in problem
    assert path.parent == tmp_path / "cache" / "llem" / "unsaved-results"
    assert load_result(path).id == result.id
    _fail_first_fsyncs(monkeypatch, 3)
    with pytest.raises(rstore.ResultsFolderError) as info:
        rstore.save_or_keep(result, tmp_path / "c")
    assert str(tmp_path / "c") in str(info.value) and "unsaved-results" in str(info.value)


def test_a_save_that_fails_after_the_run_keeps_the_result_and_says_where(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(FAST))
    real_check = rstore.check_writable

    def check_then_fill_the_disk(folder):
        out = real_check(folder)
        _fail_first_fsyncs(monkeypatch)  # the disk fills up while the run measures
        return out

    monkeypatch.setattr(rstore, "check_writable", check_then_fill_the_disk)
    res = CliRunner().invoke(cli, ["run", str(cfg), "-q", "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    warn = [ln for ln in res.output.splitlines() if ln.startswith("warning: saving in")]
    assert len(warn) == 1 and "the disk is full" in warn[0] and "unsaved-results" in warn[0]
    assert len(list((tmp_path / "cache" / "llem" / "unsaved-results").glob("*.json"))) == 1


def test_a_sweep_whose_folder_fills_up_keeps_each_result_elsewhere_and_says_so(tmp_path, monkeypatch):
    from llem.results.result import Result

    folder = tmp_path / "sw"
    real = Result.save

    def save(self, where=None):
        if where is not None and Path(where) == folder:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, where)

    monkeypatch.setattr(Result, "save", save)
    res = llem.sweep(SWEEP, {"decoder.max_new_tokens": [2, 3]}, results_dir=folder, progress=False)
    assert res.complete and len(res.results) == 2
    kept = [n for n in res.notes if "the disk is full" in n and "unsaved-results" in n]
    assert len(kept) == 2 and kept[0].startswith("max_new_tokens=2 (cycle 1): saving in")
    assert len(list((tmp_path / "cache" / "llem" / "unsaved-results").glob("*.json"))) == 2


def test_an_interrupt_during_a_sweeps_save_keeps_that_result_and_stops(tmp_path, monkeypatch):
    from llem.results.result import Result
    from llem.study import SweepInterrupted

    folder = tmp_path / "sw"
    real = Result.save
    calls = []

    def save(self, where=None):
        calls.append(where)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the first result is written
        return real(self, where)

    monkeypatch.setattr(Result, "save", save)
    with pytest.raises(SweepInterrupted) as e:
        llem.sweep(SWEEP, {"decoder.max_new_tokens": [2, 3]}, results_dir=folder, progress=False)
    saved = [p for p in folder.glob("*.json")]
    assert len(saved) == 1  # saved again, and the sweep stopped before the second trial
    partial = e.value.partial
    assert len(partial.results) == 1
    assert any("saved again before stopping" in n for n in partial.notes)


def test_stale_temporaries_are_cleaned_when_a_folder_is_loaded_or_saved_into(result, tmp_path):
    folder = tmp_path / "res"
    result.save(folder)
    old = time.time() - 3600
    stale = [folder / ".tmp-abcd_123.json", folder / ".tmp-zz99zz99"]
    fresh = folder / ".tmp-fresh123.json"
    theirs = [folder / ".tmp-my-notes.txt", folder / "x.tmp-abcd1234.json"]
    for p in [*stale, fresh, *theirs]:
        p.write_text("{")
        os.utime(p, (old, old))
    os.utime(fresh)  # a write in progress
    with pytest.warns(UserWarning, match="x.tmp-abcd1234.json"):
        found = load_results(folder)
    assert len(found) == 1 and list(found.errors) == [str(theirs[1])]  # a user's file is not ours
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in theirs)
    later = folder / ".tmp-later123.json"
    later.write_text("{")
    os.utime(later, (old, old))
    dataclasses.replace(result, name="again").save(folder)
    assert not later.exists() and fresh.exists()


# ============================================= class 2: loading a folder never hangs
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_load_results_skips_fifos_devices_and_links_to_them_by_name(result, tmp_path):
    folder = tmp_path / "res"
    good = result.save(folder)
    os.mkfifo(folder / "pipe.json")
    (folder / "zero.json").symlink_to("/dev/zero")
    (folder / "dir.json").mkdir()
    (folder / "link-to-good.json").symlink_to(good)
    with pytest.warns(UserWarning, match="not a regular file"):
        found = load_results(folder)
    assert [r.id for r in found] == [result.id, result.id]  # the link to a regular file is read
    errors = {Path(k).name: v for k, v in found.errors.items()}
    assert set(errors) == {"pipe.json", "zero.json", "dir.json"}
    assert "FIFO" in errors["pipe.json"] and "not a regular file" in errors["pipe.json"]
    assert "a device (through a symbolic link)" in errors["zero.json"]
    assert "a folder" in errors["dir.json"]


def test_a_result_file_over_the_cap_is_named_and_skipped(result, tmp_path, monkeypatch):
    folder = tmp_path / "res"
    path = result.save(folder)
    big = folder / "big.json"
    big.write_text(" " * 4096 + "{}")
    monkeypatch.setattr(rstore, "MAX_RESULT_BYTES", 4000)
    with pytest.warns(UserWarning, match="MAX_RESULT_BYTES"):
        found = load_results(folder)
    why = found.errors[str(big)]
    assert "4098 bytes, over the 4000 bytes" in why and "MAX_RESULT_BYTES" in why and "max_bytes" in why
    assert rstore._size(256 * 2**20) == "256 MiB"
    assert load_result(path, max_bytes=10**9).id == result.id


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_llem_report_on_a_folder_with_a_fifo_and_dev_zero_finishes(result, tmp_path):
    folder = tmp_path / "res"
    result.save(folder)
    os.mkfifo(folder / "pipe.json")
    (folder / "zero.json").symlink_to("/dev/zero")
    out = tmp_path / "r.csv"
    proc = subprocess.run([sys.executable, "-m", "llem.cli", "report", str(folder), "-o", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "skipped" in proc.stderr and "pipe.json" in proc.stderr and "zero.json" in proc.stderr
    assert "Wrote" in proc.stdout and "(1 result)" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "llem.cli", "report", str(folder / "pipe.json"), "-o",
                           str(out)], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 1 and "FIFO" in proc.stderr


# ========================================================== class 5: no injection in reports
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised():
    for bad in ("=1+1", "+SUM(A1)", "-2+3", "@cmd", "\t=x", "\r=x", "=HYPERLINK(\"http://x\")"):
        assert csv_cell(bad) == "'" + bad
    for ok in ("model", "a=b", "-1.5", "+2", "-3e-4", "", "tiny-random-llama"):
        assert csv_cell(ok) == ok
    for num in (-1.5, -3, 0, 2.5e9, True):
        assert csv_cell(num) is num
    assert csv_cell(None) == ""


def test_the_csv_report_writes_no_formula(result, tmp_path):
    evil = dataclasses.replace(result, name="=cmd|'/c calc'!A1", model="@SUM(1+1)",
                               config={**result.config, "output_dir": "-2+3"})
    out = export([evil], tmp_path / "r.csv")
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows[0]["result_name"] == "'=cmd|'/c calc'!A1" and rows[0]["model"] == "'@SUM(1+1)"
    assert rows[0]["config.experiment.output_dir"] == "'-2+3"
    assert all(not v.startswith(("=", "+", "-", "@")) or csv_cell(v) == v for row in rows for v in row.values())
    assert float(rows[0]["tokens_per_s"]) > 0  # numbers stay numbers


def test_the_markdown_report_escapes_its_title_and_result_names(result, tmp_path):
    title = "# Owned\n\n<script>alert(1)</script> [click](http://x) *bold*"
    other = dataclasses.replace(result, name="x\n\n## Injected\n<img src=x>")
    out = export([result, other], tmp_path / "r.md", title=title, charts=False)
    text = out.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first == r"# \# Owned \<script\>alert(1)\</script\> \[click\](http://x) \*bold\*"
    assert [ln for ln in text.splitlines() if ln.startswith("# ")] == [first]
    assert "<script>" not in text and "<img src=x>" not in text
    assert not any(ln.startswith("## Injected") for ln in text.splitlines())


# =================================================== class 7: one sweep per results folder
HOLDER = """
import sys, time
from pathlib import Path
from llem.study.store import Store
with Store(Path(sys.argv[1])).lock("holder"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder: Path, age_s: float = 0.0, **owner):
    path = folder / sstore.META_DIR / sstore.LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": 1, "host": socket.gethostname(), "started_at": "2026-01-01T00:00:00+00:00",
              "token": "theirs", **owner}
    path.write_text(json.dumps(record))
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_a_second_sweep_on_a_held_folder_is_refused_and_a_dead_owner_is_taken_over(tmp_path):
    folder = tmp_path / "sw"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE,
                              text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError) as info:
            llem.sweep(SWEEP, {"decoder.max_new_tokens": [2, 3]}, results_dir=folder, progress=False)
        msg = str(info.value)
        assert isinstance(info.value, sstore.FolderInUseError)
        assert f"pid {holder.pid}" in msg and socket.gethostname() in msg and "started 20" in msg
        assert "lock.json" in msg and "Fix:" in msg and "results folder" in msg
        assert list(folder.glob("*.json")) == []  # nothing ran
        # the command line says it in one line and exits 2
        sweep_file = tmp_path / "s.yaml"
        sweep_file.write_text(yaml.safe_dump({**SWEEP, "sweep": {"grid": {"decoder.max_new_tokens": [2]}}}))
        proc = subprocess.run([sys.executable, "-m", "llem.cli", "sweep", str(sweep_file), "-o", str(folder)],
                              capture_output=True, text=True, env=_env(), timeout=300)
        assert proc.returncode == 2 and f"pid {holder.pid}" in proc.stderr
    finally:
        holder.kill()  # kill -9: the lock stays behind
        holder.wait()
    assert (folder / "_sweep" / "lock.json").exists()
    res = llem.sweep(SWEEP, {"decoder.max_new_tokens": [2, 3]}, results_dir=folder, progress=False)
    assert res.complete and len(res.results) == 2
    note = [n for n in res.notes if "stale lock" in n]
    assert len(note) == 1 and f"pid {holder.pid}" in note[0] and "is gone" in note[0]
    assert not (folder / "_sweep" / "lock.json").exists()  # released at the end


def test_stale_and_live_lock_files(tmp_path):
    folder = tmp_path / "sw"
    grid = {"decoder.max_new_tokens": [2]}
    # another host, heartbeat fresh: it may be running
    _write_lock(folder, host="elsewhere", pid=4242)
    with pytest.raises(sstore.FolderInUseError, match="elsewhere"):
        llem.sweep(SWEEP, grid, results_dir=folder, progress=False)
    # another host, no heartbeat for longer than the bound: stale
    _write_lock(folder, age_s=sstore.STALE_LOCK_S + 60, host="elsewhere", pid=4242)
    res = llem.sweep(SWEEP, grid, results_dir=folder, progress=False)
    assert any("stale lock" in n and "heartbeat stopped" in n for n in res.notes)
    # this host, its process gone
    _write_lock(folder, pid=_dead_pid())
    res = llem.sweep(SWEEP, grid, results_dir=folder, progress=False)
    assert any("stale lock" in n and "is gone" in n for n in res.notes)
    # this host, its process alive (this one: a sweep already running here)
    _write_lock(folder, pid=os.getpid())
    with pytest.raises(sstore.FolderInUseError):
        llem.sweep(SWEEP, grid, results_dir=folder, progress=False)
    # a lock file left half written long ago
    path = _write_lock(folder)
    path.write_text("{")
    os.utime(path, (time.time() - 3600,) * 2)
    res = llem.sweep(SWEEP, grid, results_dir=folder, progress=False)
    assert any("unreadable" in n for n in res.notes)


def test_the_lock_is_released_on_an_interrupt_and_renewed_while_held(tmp_path, monkeypatch):
    folder = tmp_path / "sw"

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(sw.SweepInterrupted):
        llem.sweep(SWEEP, {"decoder.max_new_tokens": [2, 3]}, results_dir=folder, progress=False,
                   on_result=stop)
    assert not (folder / "_sweep" / "lock.json").exists()
    monkeypatch.setattr(sstore, "HEARTBEAT_S", 0.05)
    lock = sstore.Store(folder).lock("x").acquire()
    try:
        path = lock.path
        old = time.time() - 100
        os.utime(path, (old, old))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 50
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["started_at"]
    finally:
        lock.release()
    assert not path.exists()
    assert not [t for t in threading.enumerate() if t.name == "llem-sweep-lock"]


def test_a_lock_taken_over_by_another_is_not_removed_by_the_first_owner(tmp_path):
    folder = tmp_path / "sw"
    lock = sstore.Store(folder).lock("x").acquire()
    try:
        _write_lock(folder, pid=os.getpid(), token="someone-else")
    finally:
        lock.release()
    assert (folder / "_sweep" / "lock.json").exists()


# ===================================================================== class 8: file modes
@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_results_and_reports_respect_the_umask(result, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert files.current_umask() == umask
        saved = result.save(tmp_path / "res")
        report = export(result, tmp_path / "r.csv")
        plain = files.write_atomic(tmp_path / "x.txt", "x")
    finally:
        os.umask(old)
    for p in (saved, report, plain):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_rewriting_a_file_keeps_its_mode(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("old")
    p.chmod(0o640)
    files.write_atomic(p, "new")
    assert p.read_text() == "new" and stat.S_IMODE(p.stat().st_mode) == 0o640
