"""Resizing with PyTorch's conventions, so results match the original bit for bit where it matters.

`F.interpolate(mode="bilinear", align_corners=False)` without antialiasing samples the source at
`(i + 0.5) * in / out - 0.5`, clamped at 0, and mixes the two neighbours. Written as two small
interpolation matrices (one per axis), which also makes it cheap to apply to many channels.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float32 matrix of torch's half-pixel bilinear weights (no antialias)."""
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.maximum(src, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m.astype(np.float32)


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Resize (H, W, C) to (size[0], size[1], C), torch `bilinear`, `align_corners=False`."""
    h, w = x.shape[0], x.shape[1]
    out_h, out_w = size
    if (h, w) == (out_h, out_w):
        return x
    ry = jnp.asarray(bilinear_matrix(h, out_h))
    rx = jnp.asarray(bilinear_matrix(w, out_w))
    x = jnp.einsum("oh,hwc->owc", ry, x, precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum("pw,owc->opc", rx, x, precision=jax.lax.Precision.HIGHEST)


@jax.jit
def _resize_with(images, ry, rx):
    x = jnp.einsum("oh,bhwc->bowc", ry, images.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum("pw,bowc->bopc", rx, x, precision=jax.lax.Precision.HIGHEST)


def resize_images(images, size: tuple[int, int]) -> jnp.ndarray:
    """(B, H, W, C) -> (B, *size, C) float32, as `resize_bilinear` per image, in a small program
    of its own: the interpolation matrices are arguments, not constants, so a 3000 x 4000 photo
    adds no 25 MB to any program, and the heavy programs after it are keyed by the working size
    alone, not by every input size."""
    images = jnp.asarray(images)
    h, w = images.shape[1:3]
    if (h, w) == tuple(size):
        return images.astype(jnp.float32)
    return _resize_with(images, bilinear_matrix(h, size[0]), bilinear_matrix(w, size[1]))


@jax.jit
def _gather_with(labels, rows, cols):
    return labels[:, rows][:, :, cols]


def resize_labels_nearest(labels, size: tuple[int, int]) -> jnp.ndarray:
    """(B, h, w) labels -> (B, *size), torch's `nearest-exact`, in a small program of its own
    (the indices are arguments)."""
    labels = jnp.asarray(labels)
    if labels.shape[1:3] == tuple(size):
        return labels
    return _gather_with(labels, nearest_exact_indices(labels.shape[1], size[0]).astype(np.int32),
                        nearest_exact_indices(labels.shape[2], size[1]).astype(np.int32))


def nearest_exact_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices of torch's `nearest-exact`: floor((i + 0.5) * in / out)."""
    idx = np.floor((np.arange(out_size) + 0.5) * (in_size / out_size)).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def working_size(height: int, width: int, image_size: int, square: bool) -> tuple[int, int]:
    """Long side -> image_size, aspect kept, both sides rounded to multiples of 32 (at least 32)."""
    if square:
        return image_size, image_size
    scale = image_size / max(height, width)

    def r(x):
        return max(32, int(round(x * scale / 32)) * 32)

    return (image_size, r(width)) if height >= width else (r(height), image_size)
