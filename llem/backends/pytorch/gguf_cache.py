"""A cache of GGUF files converted for transformers: the tokenizer and the dequantized weights.

transformers reads a GGUF file by converting its tokenizer (seconds, whatever the file's
size) and dequantizing every tensor, on every load: SmolLM2-135M's 98 MB file took 7-14 s
for the tokenizer and 20-28 s for the weights on a 2-core machine. The conversion depends
only on the file's bytes and on the transformers version, so llem does it once per GGUF
file and keeps the result as a plain transformers folder (``config.json``,
``model.safetensors``, the tokenizer files), which loads in about a second.

Where and how much
    ``$LLEM_CACHE_DIR/gguf/`` when ``LLEM_CACHE_DIR`` is set, else
    ``$XDG_CACHE_HOME/llem/gguf/``, else ``~/.cache/llem/gguf/``. An entry holds the
    weights in float32 (what the dequantization gives): about 4 bytes per parameter,
    517 MiB for smollm2-135m (5.5 times its 98 MB Q4_1 file). Each run that uses an entry says
    where it is and its size in a note. Delete the folder to reclaim the space; entries of
    an older transformers are not used again and can go.
Opting out
    ``LLEM_GGUF_CACHE=off`` (or ``0``, ``no``, ``false``) loads from the GGUF file every
    time, as transformers does, and writes nothing.
The key
    The SHA-256 of the whole GGUF file, the transformers version and this cache's format
    number (:data:`FORMAT`): a changed file gets a new entry, and the same bytes under
    another name share one. Hashing
    98 MB takes ~0.3-0.6 s, so the digest is remembered beside the cache under the file's
    path, size, inode, mtime and ctime (``sums/``), and computed again when any of them
    changes.
Safety
    An entry is built in a private folder and renamed into place only once complete, with
    its manifest (``llem-gguf-cache.json``: the key, every file's size and SHA-256) written
    last through :func:`llem._files.write_atomic`. An entry whose manifest is missing or
    unreadable, or whose files differ in size from it, is removed and built again. If a
    well-formed entry fails to load, its files are checked against the manifest's digests:
    a corrupt entry is rebuilt (and the run says so); an intact one means the error is the
    load's own, and it is raised. Two processes building the same entry at once both
    succeed: the first rename wins and the other's copy is removed. Build folders a killed
    process left are removed after :data:`STALE_BUILD_S`.

Only the PyTorch backend uses it (vLLM and TensorRT-LLM read GGUF files themselves).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llem._files import write_atomic

#: The cache's layout and conversion; bumping it makes every old entry unused.
FORMAT = 1
#: Environment variable that turns the cache off (``off``, ``0``, ``no``, ``false``).
ENV_SWITCH = "LLEM_GGUF_CACHE"
#: Environment variable naming llem's cache folder (the GGUF cache is its ``gguf/``).
ENV_DIR = "LLEM_CACHE_DIR"
#: The manifest of an entry, written last.
MANIFEST = "llem-gguf-cache.json"
#: A build folder untouched this long (seconds) belongs to a dead process.
STALE_BUILD_S = 3600.0
_BUILD_PREFIX = ".building-"
_OFF = ("off", "0", "no", "false")


def enabled() -> bool:
    """Whether GGUF conversions are cached (``LLEM_GGUF_CACHE`` is not ``off``)."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() not in _OFF


def cache_root() -> Path:
    """The GGUF cache folder: ``$LLEM_CACHE_DIR/gguf``, ``$XDG_CACHE_HOME/llem/gguf`` or ``~/.cache/...``.

    The first whose variable is set (the last is ``~/.cache/llem/gguf``). Read on every
    call, so a changed environment variable takes effect at the next load.
    """
    base = os.environ.get(ENV_DIR, "").strip()
    if base:
        return Path(base).expanduser() / "gguf"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "llem" / "gguf"


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def gguf_sha256(path: str | os.PathLike[str], root: Path | None = None) -> str:
    """SHA-256 of the GGUF file, remembered under its path, size, inode, mtime and ctime."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = {"path": str(path), "size": st.st_size, "inode": st.st_ino,
             "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    memo = (root or cache_root()) / "sums" / (hashlib.sha256(str(path).encode()).hexdigest()[:24] + ".json")
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
        if {k: known.get(k) for k in stamp} == stamp and isinstance(known.get("sha256"), str):
            return str(known["sha256"])
    except (OSError, ValueError):
        pass
    digest = _file_digest(path)
    try:
        write_atomic(memo, json.dumps({**stamp, "sha256": digest}, indent=1))
    except OSError:  # a read-only cache: the digest is still right, only not remembered
        pass
    return digest


def entry_key(sha256: str, transformers_version: str) -> str:
    """The entry's folder name: the file's digest, the transformers version, the format."""
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in transformers_version)
    return f"{sha256[:32]}-transformers{safe}-f{FORMAT}"


@dataclass(frozen=True)
class Entry:
    """One cached conversion.

    Attributes
    ----------
    folder : Path
        A transformers folder (config, weights, tokenizer) plus the manifest.
    key : str
        Its name (:func:`entry_key`).
    size_bytes : int
        What its files take.
    hit : bool
        True when it was there before this load; False when this load built it.
    rebuilt : str
        Why an existing entry was built again (empty when it was not).
    """

    folder: Path
    key: str
    size_bytes: int
    hit: bool
    rebuilt: str = ""
    not_cached: str = ""

    @property
    def note(self) -> str:
        """A sentence for the run's notes: where the entry is and what it takes."""
        if self.not_cached:
            return (f"Model weights come from a GGUF file, loaded from the file (not cached: "
                    f"{self.not_cached}).")
        mib = self.size_bytes / 2**20
        size = f"{mib:,.1f} MiB" if mib < 10 else f"{mib:,.0f} MiB"
        what = ("Tokenizer and weights loaded from llem's cache of this GGUF file's conversion"
                if self.hit else "The GGUF file was converted (tokenizer, dequantized weights) and "
                "cached for the next loads")
        again = f" (the old entry was {self.rebuilt}, so it was rebuilt)" if self.rebuilt else ""
        return (f"{what}{again}: {self.folder} ({size}). {ENV_SWITCH}=off loads from the GGUF "
                "file every time; delete the folder to reclaim the space.")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The entry's manifest when the entry looks complete (every file of the size it lists), else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict) or not files:
            return None
        for name, meta in files.items():
            if (folder / name).stat().st_size != int(meta["size"]):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(manifest)


def intact(folder: Path) -> bool:
    """Whether every file of the entry has the SHA-256 its manifest lists (reads them all)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    try:
        return all(_file_digest(folder / name) == meta["sha256"] for name, meta in manifest["files"].items())
    except (OSError, KeyError, TypeError):
        return False


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def clean_stale_builds(root: Path, older_than_s: float = STALE_BUILD_S) -> list[Path]:
    """Remove build folders a killed process left in ``root`` (untouched for ``older_than_s``)."""
    removed: list[Path] = []
    now = time.time()
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(_BUILD_PREFIX) and p.is_dir()]
    except OSError:
        return removed
    for folder in candidates:
        try:
            newest = max([folder.stat().st_mtime] + [f.stat().st_mtime for f in folder.iterdir()])
        except OSError:
            continue
        if now - newest >= older_than_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def write_entry(root: Path, key: str, save: Callable[[Path], None], source: dict[str, Any]) -> Path:
    """Build the entry ``key`` with ``save(folder)`` in a private folder, then rename it into place.

    The manifest (``source`` plus every file's size and SHA-256) is written last, with
    :func:`llem._files.write_atomic`. When another process put a complete entry there
    first, that one is kept. Returns the entry's folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_builds(root)
    final = root / key
    build = root / f"{_BUILD_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    build.mkdir()
    try:
        save(build)
        files = {f.name: {"size": f.stat().st_size, "sha256": _file_digest(f)}
                 for f in sorted(build.iterdir()) if f.is_file()}
        manifest = {"format": FORMAT, "key": key, **source, "files": files,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_atomic(build / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        if final.exists() and read_manifest(final) is None:
            shutil.rmtree(final, ignore_errors=True)  # a broken entry: replaced by this one
        try:
            os.rename(build, final)
        except OSError:
            if read_manifest(final) is None:
                raise
            shutil.rmtree(build, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return final


class NotCacheable(Exception):
    """Raised when a GGUF file's conversion is not a plain dense model (the message says why)."""


#: Entry keys of GGUF files whose weights transformers keeps packed (found in this process).
_PACKED: set[str] = set()


def packed(model: Any) -> bool:
    """Whether transformers kept ``model``'s GGUF weights as quantized blocks (not dequantized)."""
    quantizer = getattr(model, "hf_quantizer", None)
    config = getattr(quantizer, "quantization_config", None)
    return bool(getattr(quantizer, "supported", False)) and not getattr(config, "dequantize", False)


def dense_model(model: Any) -> Any:
    """``model``, dequantized from a GGUF file, as a plain model ``save_pretrained`` writes.

    transformers marks a model loaded from GGUF with its GGUF quantizer and a
    ``quantization_config``, and refuses to save it; once dequantized its weights are
    ordinary tensors, so both marks are dropped.
    """
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _without_gguf(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k != "gguf_file"}


def load(spec: Any, load_kw: dict[str, Any], tok_kw: dict[str, Any], auto_tokenizer: Any,
         auto_model: Any, torch: Any, transformers_version: str) -> tuple[Any, Any, Entry]:
    """The tokenizer and model of the GGUF model ``spec``, through the cache.

    Parameters
    ----------
    spec : ModelSpec
        With ``gguf_file`` set.
    load_kw, tok_kw : dict
        The run's ``from_pretrained`` arguments of the model and of the tokenizer; they
        apply to the entry as they would to the GGUF file (dtype, placement, quantization).
    auto_tokenizer, auto_model
        transformers' ``AutoTokenizer`` and ``AutoModelForCausalLM``.
    torch : module
    transformers_version : str
        Part of the key.

    Returns
    -------
    tokenizer, model, Entry
    """
    gguf_path = Path(spec.id_or_path) / spec.gguf_file
    root = cache_root()
    sha = gguf_sha256(gguf_path, root)
    key = entry_key(sha, transformers_version)
    folder = root / key
    if key in _PACKED:  # found out earlier in this process: load from the file
        tokenizer = auto_tokenizer.from_pretrained(spec.tokenizer or spec.id_or_path, **tok_kw)
        model = auto_model.from_pretrained(spec.id_or_path, **load_kw)
        return tokenizer, model, Entry(folder, key, 0, hit=False, not_cached="its weights stay packed")
    rebuilt = ""
    manifest = read_manifest(folder)
    if manifest is not None:
        try:
            tokenizer = auto_tokenizer.from_pretrained(str(folder), **_without_gguf(tok_kw))
            model = auto_model.from_pretrained(str(folder), **_without_gguf(load_kw))
            return tokenizer, model, Entry(folder, key, _size(folder), hit=True)
        except Exception:
            if intact(folder):
                raise  # the entry is as written: the error is the load's own
            rebuilt = "corrupt (a file differs from its manifest)"
    elif folder.exists():
        rebuilt = "incomplete (no readable manifest, or a file of the wrong size)"
    if rebuilt:
        shutil.rmtree(folder, ignore_errors=True)

    def save(into: Path) -> None:
        tok = auto_tokenizer.from_pretrained(spec.tokenizer or spec.id_or_path, gguf_file=spec.gguf_file)
        converted = auto_model.from_pretrained(spec.id_or_path, gguf_file=spec.gguf_file,
                                               dtype=torch.float32)
        if packed(converted):
            raise NotCacheable("transformers keeps this architecture's GGUF weights packed "
                               "(quantized blocks with their own kernels), so there is no "
                               "dequantized model to keep")
        dense_model(converted).save_pretrained(str(into))
        tok.save_pretrained(str(into))
        del converted
        gc.collect()

    source = {"gguf_file": str(gguf_path), "gguf_sha256": sha, "gguf_size": gguf_path.stat().st_size,
              "transformers": transformers_version}
    try:
        folder = write_entry(root, key, save, source)
    except NotCacheable as why:
        _PACKED.add(key)
        tokenizer = auto_tokenizer.from_pretrained(spec.tokenizer or spec.id_or_path, **tok_kw)
        model = auto_model.from_pretrained(spec.id_or_path, **load_kw)
        return tokenizer, model, Entry(folder, key, 0, hit=False, not_cached=str(why))
    tokenizer = auto_tokenizer.from_pretrained(str(folder), **_without_gguf(tok_kw))
    model = auto_model.from_pretrained(str(folder), **_without_gguf(load_kw))
    return tokenizer, model, Entry(folder, key, _size(folder), hit=False, rebuilt=rebuilt)


__all__ = ["ENV_DIR", "ENV_SWITCH", "FORMAT", "MANIFEST", "Entry", "cache_root", "clean_stale_builds",
           "enabled", "entry_key", "gguf_sha256", "intact", "load", "read_manifest", "write_entry"]
