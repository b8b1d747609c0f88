"""The NCut graph (docs/algorithm.md §2.1): affinities, the original's exact-zero rows, thresholds.

Shared by both NCut formulations (`ncut.py`, `ncut_level.py`) and AutoSC.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

NUM_THRESHOLDS = 100
# float32 pow rounds results below 2**-150 to zero; torch keeps subnormals above that while XLA
# flushes them, so "exactly zero in the original" is tested in the log domain.
_FLOAT32_ZERO_LOG2 = -150.0
# Every product here decides partitions: never TF32 / bf16 passes (the default on GPUs / TPUs).
HIGHEST = jax.lax.Precision.HIGHEST


class Affinity(NamedTuple):
    weights: jnp.ndarray  # (N, N) W ** alpha
    zero_rows: jnp.ndarray  # (N,) bool: the row holds an exact zero (in the original's float32)
    finite: jnp.ndarray  # bool: features were finite and not constant


def normalize_features(x: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
    """Unit L2 norm along `axis`, torch `F.normalize` semantics (eps 1e-12)."""
    norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
    return x / jnp.maximum(norm, 1e-12)


def _min_max(w: jnp.ndarray, features: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Cosine similarities (N, N) of `features` -> min-max normalized, and the validity flag."""
    lo, hi = jnp.min(w), jnp.max(w)
    span = hi - lo
    ok = jnp.isfinite(span) & (span > 0) & jnp.all(jnp.isfinite(features))
    w = jnp.where(ok, (w - lo) / jnp.where(ok, span, 1.0), 1.0)
    return w, ok


def min_max_similarity(features: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(N, C) features -> min-max normalized cosine similarities (N, N) and a validity flag.

    Constant (or non-finite) features make max == min; the flag is then False and the
    similarity matrix is all ones instead of 0/0.
    """
    f = normalize_features(features.astype(jnp.float32))
    return _min_max(jnp.matmul(f, f.T, precision=HIGHEST), features)


def _power(w: jnp.ndarray, ok: jnp.ndarray, alpha) -> Affinity:
    alpha = jnp.asarray(alpha, jnp.float32)
    weights = jnp.power(w, alpha)
    # Predict the original's underflow to exact 0.0: w ** alpha <= 2**-150 <=> w <= 2**(-150/alpha).
    zero = w <= jnp.exp2(_FLOAT32_ZERO_LOG2 / alpha)
    return Affinity(weights, jnp.any(zero, axis=1) & ok, ok)


def affinity(features: jnp.ndarray, alpha) -> Affinity:
    """W = minmax(F F^T) ** alpha, plus the rows the original treats as holding an exact zero."""
    return _power(*min_max_similarity(features), alpha)


def batched_min_max_similarity(features: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(B, N, C) features -> `min_max_similarity` per image, bit for bit: (B, N, N) and (B,).

    For batches, instead of `vmap(min_max_similarity)`: XLA:CPU fuses the normalization into the
    Gram product's YNNPACK fusion either way, and the vmapped (B, N, C) form of that fusion ran
    2.5x slower per image at batch 16 than at batch 1. The same arithmetic in a flat (B * N, C)
    view does not slow down (docs/performance.md, the K-way section)."""
    bsz, n, c = features.shape
    f = normalize_features(features.reshape(bsz * n, c).astype(jnp.float32)).reshape(bsz, n, c)
    gram = jnp.einsum("bnc,bmc->bnm", f, f, precision=HIGHEST)
    return jax.vmap(_min_max)(gram, features)


def batched_affinity(features: jnp.ndarray, alpha: jnp.ndarray) -> Affinity:
    """(B, N, C) features, (B,) alpha -> the batch's `Affinity`, bit for bit `vmap(affinity)`
    (built on `batched_min_max_similarity`)."""
    return jax.vmap(_power)(*batched_min_max_similarity(features), alpha)


def thresholds(ymin: jnp.ndarray, ymax: jnp.ndarray) -> jnp.ndarray:
    """The original's 100 cut thresholds `linspace(0.99 min y, 0.99 max y)`, along a new last axis."""
    return jnp.linspace(0.99 * ymin, 0.99 * ymax, NUM_THRESHOLDS, axis=-1, dtype=jnp.float32)


def canonical_labels(region: jnp.ndarray) -> jnp.ndarray:
    """(..., N) region ids in [0, N) -> consecutive labels numbered by first occurrence.

    Both NCut formulations number their regions differently; this makes labels identical.
    """
    n = region.shape[-1]

    def one(r):
        first = jnp.full((n,), n, jnp.int32).at[r].min(jnp.arange(n, dtype=jnp.int32))
        present = first < n
        order = jnp.cumsum(present[jnp.argsort(first)]) - 1  # rank among present ids
        rank = jnp.zeros((n,), jnp.int32).at[jnp.argsort(first)].set(order.astype(jnp.int32))
        return rank[r]

    flat = region.reshape(-1, n)
    return jax.vmap(one)(flat).reshape(region.shape)
