"""Semantic coherence (ALGORITHM.md section 6): how similar one patch's feature is to every patch."""
from __future__ import annotations

import jax.numpy as jnp

from diffcut_jax.ncut import normalize_features


def coherence_map(features: jnp.ndarray, patch: tuple[int, int], other: jnp.ndarray | None = None) -> jnp.ndarray:
    """Cosine similarity of `features[patch]` to every patch of `other` (default: the same map).

    features, other: (h, w, C). patch: (row, col) in feature coordinates. Returns (h', w') in [-1, 1].
    """
    h, w, _ = features.shape
    y, x = patch
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"patch {patch} is outside the {h} x {w} feature map")
    f = normalize_features(features.astype(jnp.float32))
    g = f if other is None else normalize_features(other.astype(jnp.float32))
    return jnp.einsum("hwc,c->hw", g, f[y, x], precision="highest")
