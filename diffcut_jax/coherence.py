"""Semantic coherence (docs/algorithm.md §6): how similar one patch's feature is to every patch."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcut_jax.ncut import normalize_features


def coherence_map(features: jnp.ndarray, patch: tuple[int, int], other: jnp.ndarray | None = None) -> jnp.ndarray:
    """Cosine similarity of `features[patch]` to every patch of `other` (default: the same map).

    features, other: (h, w, C). patch: (row, col) in feature coordinates. Returns (h', w') in [-1, 1].
    """
    if features.ndim != 3 or (other is not None and (other.ndim != 3 or other.shape[-1] != features.shape[-1])):
        raise ValueError(
            f"coherence_map: features and other must be (h, w, C) with the same C, got "
            f"{features.shape} and {None if other is None else other.shape}")
    h, w, _ = features.shape
    y, x = (int(v) for v in patch)
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"patch {patch} is outside the {h} x {w} feature map")
    # The patch is traced: another patch reuses the compiled program.
    return _coherence_jit(features, jnp.asarray([y, x], jnp.int32), features if other is None else other)


@jax.jit
def _coherence_jit(features, patch, other):
    f = normalize_features(features.astype(jnp.float32))
    g = normalize_features(other.astype(jnp.float32))
    return jnp.einsum("hwc,c->hw", g, f[patch[0], patch[1]], precision=jax.lax.Precision.HIGHEST)
