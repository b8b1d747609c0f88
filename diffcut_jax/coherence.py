"""Semantic coherence (docs/algorithm.md §6): how similar one patch's feature is to every patch."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcut_jax.cut.ncut import normalize_features


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


def coherence_overlay(image, similarity, patch: tuple[int, int] | None, opacity: float = 0.6):
    """uint8 RGB: the (h, w) similarity map upsampled over the photo (H, W, 3) in [0, 1], as a
    blue-to-red heat map (-1 to 1), with the chosen patch outlined in white (None: no outline,
    for a patch of another image)."""
    import numpy as np

    from diffcut_jax.io import imageio
    from diffcut_jax.io.image_ops import resize_bilinear

    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    fh, fw = similarity.shape
    heat = np.asarray(resize_bilinear(jnp.asarray(similarity)[..., None], (h, w)))[..., 0]
    out = (1 - opacity) * image + opacity * imageio.heat_colours((heat + 1) / 2)
    if patch is None:
        return (255 * np.clip(out, 0, 1) + 0.5).astype(np.uint8)
    y0, y1 = int(patch[0] * h / fh), int((patch[0] + 1) * h / fh)
    x0, x1 = int(patch[1] * w / fw), int((patch[1] + 1) * w / fw)
    out[y0:y1, [x0, max(x0, x1 - 1)]] = 1.0
    out[[y0, max(y0, y1 - 1)], x0:x1] = 1.0
    return (255 * np.clip(out, 0, 1) + 0.5).astype(np.uint8)
