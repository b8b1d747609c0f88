"""PAMR refinement (docs/algorithm.md §4) and the evaluation's refinement (PAMR + argmax + median).

PAMR (Araslanov & Roth, 2020) propagates the one-hot masks over a local, colour-driven affinity:
for each dilation d, the 8 neighbours at d * (dy, dx) (replicate padding).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diffcut_jax.image_ops import resize_bilinear

_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _shift(x: jnp.ndarray, dy: int, dx: int) -> jnp.ndarray:
    """x(p + (dy, dx)) for x (..., H, W), replicate padding."""
    h, w = x.shape[-2:]
    rows = jnp.clip(jnp.arange(h) + dy, 0, h - 1)
    cols = jnp.clip(jnp.arange(w) + dx, 0, w - 1)
    return x[..., rows, :][..., :, cols]


def _neighbours(x: jnp.ndarray, dilations: Sequence[int]) -> jnp.ndarray:
    """(..., H, W) -> (..., P, H, W), P = 8 * len(dilations)."""
    return jnp.stack(
        [_shift(x, d * dy, d * dx) for d in dilations for dy, dx in _OFFSETS], axis=-3
    )


def pamr_affinity(image: jnp.ndarray, dilations: Sequence[int]) -> jnp.ndarray:
    """(H, W, 3) image -> (P, H, W) softmax affinities over the P neighbours."""
    x = jnp.moveaxis(image.astype(jnp.float32), -1, 0)  # (3, H, W)
    neigh = _neighbours(x, dilations)  # (3, P, H, W)
    # Unbiased std over the 9 * len(dilations) values: the 8 neighbours plus the centre once
    # per dilation.
    centre = jnp.broadcast_to(x[:, None], (x.shape[0], len(dilations)) + x.shape[1:])
    samples = jnp.concatenate([neigh, centre], axis=1)
    std = jnp.std(samples, axis=1, ddof=1, keepdims=True)
    aff = -jnp.abs(neigh - x[:, None]) / (1e-8 + 0.1 * std)
    aff = jnp.mean(aff, axis=0)
    return jax.nn.softmax(aff, axis=0)


def dense_ranks(masks: jnp.ndarray, num_labels: int) -> jnp.ndarray:
    """Index of each value among the sorted distinct values (at most `num_labels` of them)."""
    flat = masks.reshape(-1)
    big = jnp.iinfo(jnp.int32).max
    uniq = jnp.unique(flat, size=num_labels, fill_value=big)
    return jnp.searchsorted(uniq, masks).astype(jnp.int32)


def _static_num_labels(masks, num_labels, caller: str) -> int:
    if num_labels is not None:
        return int(num_labels)
    try:
        return int(np.unique(np.asarray(masks)).size)
    except jax.errors.TracerArrayConversionError:
        raise ValueError(
            f"{caller}: under jit/vmap pass num_labels (a static upper bound on the number of "
            "distinct labels)"
        ) from None


def _pamr_single(image, masks, num_iter, dilations, num_labels):
    h, w = masks.shape
    if image.shape[:2] != (h, w):
        image = resize_bilinear(image.astype(jnp.float32), (h, w))
    ranks = dense_ranks(masks.astype(jnp.int32), num_labels)
    soft = jnp.moveaxis(jax.nn.one_hot(ranks, num_labels, dtype=jnp.float32), -1, 0)
    aff = pamr_affinity(image, dilations)

    def step(_, m):
        return jnp.sum(_neighbours(m, dilations) * aff[None], axis=1)

    return jax.lax.fori_loop(0, num_iter, step, soft)


def pamr(
    image: jnp.ndarray,
    masks: jnp.ndarray,
    num_iter: int = 10,
    dilations: Sequence[int] = (1, 2, 4, 8),
    *,
    num_labels: int | None = None,
) -> jnp.ndarray:
    """Pixel-adaptive mask refinement.

    Args:
      image: (H, W, 3) in [0, 1] (or (B, H, W, 3)); resized bilinearly to the masks' size if needed.
      masks: (h, w) integer labels (or (B, h, w)).
      num_iter, dilations: PAMR parameters (evaluation: 10, (1, 2, 4, 8)).
      num_labels: static number of channels K. Channel k is the k-th smallest distinct label;
        channels beyond the number of distinct labels stay zero. Default (outside jit only):
        the number of distinct labels.

    Returns:
      float32 (K, h, w) (or (B, K, h, w)) soft masks.
    """
    dilations = tuple(int(d) for d in dilations)
    if not dilations or min(dilations) < 1:
        raise ValueError(f"pamr: dilations must be positive integers, got {dilations}")
    if image.shape[-1] != 3:
        raise ValueError(f"pamr: image must have 3 channels (..., H, W, 3), got {image.shape}")
    if masks.ndim not in (2, 3):
        raise ValueError(f"pamr: masks must be (h, w) or (B, h, w), got {masks.shape}")
    k = _static_num_labels(masks, num_labels, "pamr")
    return _pamr_jit(image, masks, num_iter=int(num_iter), dilations=dilations, num_labels=k)


@functools.partial(jax.jit, static_argnames=("num_iter", "dilations", "num_labels"))
def _pamr_jit(image, masks, *, num_iter, dilations, num_labels):
    fn = functools.partial(_pamr_single, num_iter=num_iter, dilations=dilations,
                           num_labels=num_labels)
    return jax.vmap(fn)(image, masks) if masks.ndim == 3 else fn(image, masks)


def median3x3(labels: jnp.ndarray) -> jnp.ndarray:
    """3 x 3 median with reflect (edge-duplicating) padding, as scipy's `median_filter(size=3)`."""
    padded = jnp.pad(labels, ((1, 1), (1, 1)), mode="symmetric")
    h, w = labels.shape
    windows = jnp.stack(
        [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0
    )
    return jnp.sort(windows, axis=0)[4]


def refine(
    image: jnp.ndarray,
    masks: jnp.ndarray,
    num_iter: int = 10,
    dilations: Sequence[int] = (1, 2, 4, 8),
    *,
    num_labels: int | None = None,
) -> jnp.ndarray:
    """The evaluation's refinement: PAMR, argmax, then a 3 x 3 median filter.

    Returns int32 labels of the masks' shape; values are indices into the sorted distinct input
    labels (so consecutive input labels from 0 keep their values).
    """
    dilations = tuple(int(d) for d in dilations)
    k = _static_num_labels(masks, num_labels, "refine")
    return _refine_jit(image, masks, num_iter=int(num_iter), dilations=dilations, num_labels=k)


@functools.partial(jax.jit, static_argnames=("num_iter", "dilations", "num_labels"))
def _refine_jit(image, masks, *, num_iter, dilations, num_labels):
    soft = pamr(image, masks, num_iter, dilations, num_labels=num_labels)
    labels = jnp.argmax(soft, axis=-3).astype(jnp.int32)
    if labels.ndim == 3:
        return jax.vmap(median3x3)(labels)
    return median3x3(labels)
