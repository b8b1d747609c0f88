"""Shared test helpers: where ../shared is, fixture loading, partition comparison."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIFFCUT_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


def load_fixture(name: str):
    path = FIXTURES / name
    if not path.exists():
        raise FileNotFoundError(
            f"fixture {path} not found: the tests expect ../shared beside the checkout "
            "(or DIFFCUT_SHARED pointing at it)"
        )
    return np.load(path)


def meta(z, key: str) -> dict:
    return json.loads(str(z[key]))


def partition_mismatch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels that break a one-to-one correspondence between labelings a and b.

    Empty iff a and b are the same partition. Each label of `a` is matched to its most frequent
    label of `b` (and vice versa); pixels off that matching are reported.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    bad = np.zeros(a.shape, bool)
    for x, y in ((a, b), (b, a)):
        for lab in np.unique(x):
            sel = x == lab
            vals, counts = np.unique(y[sel], return_counts=True)
            bad |= sel & (y != vals[np.argmax(counts)])
    return bad


def same_partition(a, b) -> bool:
    return not partition_mismatch(a, b).any()


class CompileCounter:
    """Counts XLA backend compilations through `jax.monitoring`, with no private state."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def _listener(self, event, duration, **kwargs):
        del duration, kwargs
        if event == self.EVENT:
            self.count += 1

    def __enter__(self):
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        import jax.monitoring

        jax.monitoring.unregister_event_duration_listener(self._listener)
        return False
