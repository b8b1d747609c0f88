"""The user's cache: one root for what is worth keeping between runs, and checked entries in it.

    root = cache_root()                        # $DIFFCUT_JAX_CACHE, else $XDG_CACHE_HOME/diffcut_jax
    entry = CacheEntry(root / "text_classifiers", key_fields)   # or ~/.cache/diffcut_jax
    arrays = entry.read()                      # None when absent, damaged or another key's
    entry.write({"embeddings": emb})           # atomic: a reader never sees half a file

Objects on a bucket that a reader needs as local files (memory-mapped safetensors, a diffusers
folder, the demo's samples) are copied under `remote/` (`local_copy`, `local_folder`), keyed by
the URL and the object's version.

The commands' compilation cache lives under the same root (`jax_compilation_cache`). An entry is
named by the SHA-256 of its key fields (JSON), and stores the key again: a file that does not
parse, lacks an array or carries another key is ignored (and rewritten by the caller), never
trusted.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from diffcut_jax.io.paths import as_path, atomic_write, is_url, redact

ENV = "DIFFCUT_JAX_CACHE"


def cache_root() -> Path:
    """$DIFFCUT_JAX_CACHE, else $XDG_CACHE_HOME/diffcut_jax, else ~/.cache/diffcut_jax."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "diffcut_jax"


class CacheEntry:
    """One entry of a cache folder, keyed by a JSON-serialisable dict."""

    def __init__(self, folder: str | Path, key: dict):
        self.key_json = json.dumps(key, sort_keys=True, default=str)
        digest = hashlib.sha256(self.key_json.encode()).hexdigest()
        self.path = Path(folder) / f"{digest}.npz"

    def read(self) -> dict[str, np.ndarray] | None:
        """The stored arrays, or None if there is no sound entry for this key."""
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if str(z["__key__"]) != self.key_json:
                    return None
                return {k: z[k] for k in z.files if k != "__key__"}
        except Exception:  # noqa: BLE001 - missing, truncated, not a zip, another layout: a miss
            return None

    def write(self, arrays: dict[str, np.ndarray]) -> Path:
        buf = io.BytesIO()
        np.savez(buf, __key__=np.asarray(self.key_json), **arrays)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda p: p.write_bytes(buf.getvalue()))
        return self.path


def local_copy(path, *, cache: Path | None = None) -> Path:
    """A local file with `path`'s content, for readers that need a file name (memory-mapped
    safetensors, torch pickles): `path` itself when local; for an object, a copy under the
    user's cache keyed by the URL and the object's size and version (ETag / generation), fetched
    once and reused while the object is unchanged."""
    if not is_url(path):
        return Path(path)
    import hashlib
    import json

    path = as_path(path)
    info = path.fs.info(path.path)
    version = {k: str(info.get(k)) for k in ("size", "ETag", "etag", "generation", "md5Hash")
               if info.get(k) is not None}
    key = hashlib.sha256(json.dumps([redact(path), version], sort_keys=True).encode()).hexdigest()
    if cache is None:
        cache = cache_root() / "remote"
    target = Path(cache) / key[:32] / path.name
    if target.is_file() and target.stat().st_size == int(info.get("size", -1)):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: path.fs.get_file(path.path, str(tmp)))
    return target


def local_folder(path, files, *, optional=()) -> Path:
    """A local folder holding `files` (relative names) of the folder `path`: `path` itself when
    local, else copies of those objects (`local_copy`) laid out as in the bucket. `optional`
    names are copied where they exist."""
    if not is_url(path):
        return Path(path)
    import hashlib

    path = as_path(path)
    root = cache_root() / "remote" / hashlib.sha256(redact(path).encode()).hexdigest()[:32] / path.name
    for name in list(files) + [n for n in optional if (path / n).exists()]:
        copy = local_copy(path / name)
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.stat().st_size != copy.stat().st_size:
            atomic_write(target, lambda tmp, c=copy: tmp.write_bytes(c.read_bytes()))
    return root
