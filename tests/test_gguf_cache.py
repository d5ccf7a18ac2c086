"""The cache of GGUF conversions: hit, miss, the content key, the opt-out, broken entries."""

from __future__ import annotations

import json
import os
import shutil
import time
from types import SimpleNamespace

import pytest
from tiny_gguf import write_tiny_gguf

import llem
from llem.backends.pytorch import gguf_cache
from llem.backends.pytorch.backend import PyTorchBackend
from llem.config import ExperimentConfig

pytest.importorskip("gguf")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def warm(gguf_file, tmp_path_factory):
    """A cache root holding the tiny GGUF's entry, built by one real load (the miss)."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(gguf_cache.ENV_DIR, str(root))
        mp.delenv(gguf_cache.ENV_SWITCH, raising=False)
        backend = PyTorchBackend()
        info = backend.load(config(gguf_file))
        texts = generate(backend)
        backend.release()
    return SimpleNamespace(root=root, info=info, texts=texts)


def config(model, **fields):
    return ExperimentConfig.from_dict({"model": str(model), "decoder.max_new_tokens": 6,
                                       "decoder.do_sample": False, **fields})


def generate(backend):
    return [r.text for r in backend.generate(["The quick brown fox", "Energy per token"]).requests]


def entries(root):
    return sorted(p.name for p in (root / "gguf").iterdir() if p.name.endswith(f"-f{gguf_cache.FORMAT}"))


def test_a_miss_converts_once_and_writes_a_complete_entry(warm, gguf_file):
    (name,) = entries(warm.root)
    folder = warm.root / "gguf" / name
    manifest = gguf_cache.read_manifest(folder)
    assert manifest is not None and manifest["gguf_sha256"] == gguf_cache.gguf_sha256(gguf_file, warm.root / "gguf")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(manifest["files"])
    assert gguf_cache.intact(folder)
    note = next(n for n in warm.info.notes if "GGUF" in n)
    assert "converted" in note and str(folder) in note and "MiB" in note and "LLEM_GGUF_CACHE=off" in note
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


def test_a_hit_loads_from_the_entry_without_converting(warm, gguf_file, monkeypatch):
    monkeypatch.setenv(gguf_cache.ENV_DIR, str(warm.root))

    def no_build(*args, **kwargs):
        raise AssertionError("the GGUF file was converted again")

    monkeypatch.setattr(gguf_cache, "write_entry", no_build)
    backend = PyTorchBackend()
    info = backend.load(config(gguf_file))
    assert any("loaded from llem's cache" in n for n in info.notes)
    assert generate(backend) == warm.texts
    assert backend.chat.applied  # the GGUF's chat template survived the cache
    backend.release()


def test_the_opt_out_loads_from_the_file_writes_nothing_and_gives_the_same_text(warm, gguf_file, monkeypatch,
                                                                                 tmp_path):
    monkeypatch.setenv(gguf_cache.ENV_DIR, str(tmp_path / "unused"))
    monkeypatch.setenv(gguf_cache.ENV_SWITCH, "off")
    assert not gguf_cache.enabled()
    backend = PyTorchBackend()
    info = backend.load(config(gguf_file))
    assert any("dequantized on load" in n for n in info.notes)
    assert not any("cache" in n for n in info.notes if "GGUF" in n)
    assert generate(backend) == warm.texts  # the cached conversion is the same model
    backend.release()
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("value", ["off", "0", "no", "FALSE"])
def test_the_switch_values(monkeypatch, value):
    monkeypatch.setenv(gguf_cache.ENV_SWITCH, value)
    assert not gguf_cache.enabled()
    monkeypatch.setenv(gguf_cache.ENV_SWITCH, "on")
    assert gguf_cache.enabled()


def test_the_key_follows_the_bytes_not_the_name(gguf_file, tmp_path):
    root = tmp_path / "cache"
    same = shutil.copy(gguf_file, tmp_path / "renamed.gguf")
    other = write_tiny_gguf(tmp_path / "other.gguf", scale=0.5)
    assert os.path.getsize(other) == os.path.getsize(gguf_file)  # same size, other weights
    a = gguf_cache.gguf_sha256(gguf_file, root)
    assert gguf_cache.gguf_sha256(same, root) == a
    assert gguf_cache.gguf_sha256(other, root) != a
    assert gguf_cache.entry_key(a, "5.0") != gguf_cache.entry_key(gguf_cache.gguf_sha256(other, root), "5.0")
    assert gguf_cache.entry_key(a, "5.0") != gguf_cache.entry_key(a, "5.1")


def test_a_file_changed_in_place_is_hashed_again(gguf_file, tmp_path):
    root = tmp_path / "cache"
    path = shutil.copy(gguf_file, tmp_path / "m.gguf")
    first = gguf_cache.gguf_sha256(path, root)
    assert gguf_cache.gguf_sha256(path, root) == first  # remembered
    shutil.copy(write_tiny_gguf(tmp_path / "x.gguf", scale=2.0), path)
    assert gguf_cache.gguf_sha256(path, root) == gguf_cache._file_digest(path) != first


def _truncate(data: bytes) -> bytes:
    return data[:1000]  # a partial copy: the manifest's size no longer matches


def _garble(data: bytes) -> bytes:
    out = bytearray(data)
    out[8:40] = b"{" * 32  # same size, but the safetensors header no longer parses
    return bytes(out)


@pytest.mark.parametrize(("damage", "looks_complete", "said"), [(_truncate, False, "incomplete"),
                                                               (_garble, True, "corrupt")])
def test_a_broken_entry_is_rebuilt(warm, gguf_file, monkeypatch, tmp_path, damage, looks_complete, said):
    root = tmp_path / "cache"
    shutil.copytree(warm.root / "gguf", root / "gguf")
    (name,) = entries(root)
    weights = root / "gguf" / name / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    assert (gguf_cache.read_manifest(root / "gguf" / name) is not None) is looks_complete
    monkeypatch.setenv(gguf_cache.ENV_DIR, str(root))
    backend = PyTorchBackend()
    info = backend.load(config(gguf_file))
    assert any(said in n and "rebuilt" in n for n in info.notes)
    assert gguf_cache.intact(root / "gguf" / name)
    assert generate(backend) == warm.texts
    backend.release()


def test_an_intact_entry_that_fails_to_load_raises_the_loads_own_error(warm, gguf_file, monkeypatch):
    monkeypatch.setenv(gguf_cache.ENV_DIR, str(warm.root))
    rebuilt = []
    monkeypatch.setattr(gguf_cache, "write_entry", lambda *a, **k: rebuilt.append(a))

    class Refusing:
        @staticmethod
        def from_pretrained(path, **kwargs):
            raise ValueError("the load's own refusal")

    from transformers import AutoTokenizer

    spec = llem.models.resolve_model(str(gguf_file))
    with pytest.raises(ValueError, match="own refusal"):
        gguf_cache.load(spec, {"gguf_file": spec.gguf_file}, {"gguf_file": spec.gguf_file},
                        AutoTokenizer, Refusing, None, __import__("transformers").__version__)
    assert rebuilt == []


def test_a_finished_entry_of_another_process_is_kept(tmp_path):
    root = tmp_path / "gguf"

    def save(into):
        (into / "a.bin").write_bytes(b"x" * 10)

    first = gguf_cache.write_entry(root, "k", save, {})
    before = (first / gguf_cache.MANIFEST).read_text()
    again = gguf_cache.write_entry(root, "k", save, {})  # the rename finds it there
    assert again == first and (first / gguf_cache.MANIFEST).read_text() == before
    assert [p.name for p in root.iterdir()] == ["k"]  # no build folder left


def test_a_failed_build_leaves_nothing(tmp_path):
    root = tmp_path / "gguf"

    def save(into):
        (into / "a.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gguf_cache.write_entry(root, "k", save, {})
    assert list(root.iterdir()) == []


def test_stale_build_folders_are_removed_and_fresh_ones_kept(tmp_path):
    old = tmp_path / ".building-k-1-aaaa"
    new = tmp_path / ".building-k-2-bbbb"
    for folder in (old, new):
        folder.mkdir()
        (folder / "f").write_text("x")
    past = time.time() - gguf_cache.STALE_BUILD_S - 10
    for p in (old / "f", old):
        os.utime(p, (past, past))
    assert gguf_cache.clean_stale_builds(tmp_path) == [old]
    assert new.exists() and not old.exists()


def test_where_the_cache_is(monkeypatch, tmp_path):
    monkeypatch.setenv(gguf_cache.ENV_DIR, str(tmp_path / "mine"))
    assert gguf_cache.cache_root() == tmp_path / "mine" / "gguf"
    monkeypatch.delenv(gguf_cache.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache.cache_root() == tmp_path / "xdg" / "llem" / "gguf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert gguf_cache.cache_root() == tmp_path / "home" / ".cache" / "llem" / "gguf"
