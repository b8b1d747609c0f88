"""The user's cache: one root for what is worth keeping between runs, and checked entries in it.

    root = cache_root()                        # $DIFFCUT_JAX_CACHE, else $XDG_CACHE_HOME/diffcut_jax
    entry = CacheEntry(root / "text_classifiers", key_fields)   # or ~/.cache/diffcut_jax
    arrays = entry.read()                      # None when absent, damaged or another key's
    entry.write({"embeddings": emb})           # atomic: a reader never sees half a file

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

from diffcut_jax.io.imageio import atomic_write

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
