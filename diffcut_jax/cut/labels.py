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


def _contingency(a, b) -> np.ndarray:
    _, ai = np.unique(np.asarray(a).ravel(), return_inverse=True)
    _, bi = np.unique(np.asarray(b).ravel(), return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), np.int64)
    np.add.at(table, (ai, bi), 1)
    return table


def adjusted_rand_index(a, b) -> float:
    """Hubert and Arabie's adjusted Rand index of two labelings (NumPy, host side): 1 for the same
    partition, about 0 for independent ones."""
    table = _contingency(a, b)
    comb = lambda x: (x * (x - 1) / 2.0).sum()  # noqa: E731
    n = table.sum()
    pairs, rows, cols = comb(table), comb(table.sum(1)), comb(table.sum(0))
    expected = rows * cols / max(n * (n - 1) / 2.0, 1.0)
    top = 0.5 * (rows + cols) - expected
    return 1.0 if top == 0 else float((pairs - expected) / top)


def matched_miou(pred, truth) -> float:
    """Mean IoU over the true segments after a one-to-one Hungarian matching of predicted segments
    to true ones (unmatched true segments score 0)."""
    from scipy.optimize import linear_sum_assignment

    table = _contingency(truth, pred).astype(np.float64)
    union = table.sum(1)[:, None] + table.sum(0)[None, :] - table
    iou = table / np.maximum(union, 1.0)
    r, c = linear_sum_assignment(-iou)
    return float(iou[r, c].sum() / table.shape[0])
