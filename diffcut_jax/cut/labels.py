"""Label bookkeeping shared by the clustering methods and the segmenter."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def consecutive(labels: jnp.ndarray, num_labels: int) -> jnp.ndarray:
    """Relabel to 0..k-1 in order of value (values must lie in [0, num_labels)). Jittable."""
    present = jnp.zeros((num_labels,), jnp.int32).at[labels.reshape(-1)].set(1)
    return (jnp.cumsum(present) - 1)[labels].astype(jnp.int32)


def partition_mismatch(a, b) -> np.ndarray:
    """Boolean mask of the nodes that break a one-to-one correspondence between labelings a and b
    (NumPy, host side). Empty iff a and b are the same partition: each label of `a` is matched to
    its most frequent label of `b` (and vice versa) and nodes off that matching are reported."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    bad = np.zeros(a.shape, bool)
    for x, y in ((a, b), (b, a)):
        for lab in np.unique(x):
            sel = x == lab
            vals, counts = np.unique(y[sel], return_counts=True)
            bad |= sel & (y != vals[np.argmax(counts)])
    return bad
