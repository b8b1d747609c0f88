"""PAMR refinement (docs/algorithm.md §4) and the evaluation's refinement (PAMR + argmax + median).

PAMR (Araslanov & Roth, 2020) propagates the one-hot masks over a local, colour-driven affinity:
for each dilation d, the 8 neighbours at d * (dy, dx) (replicate padding).

Each label channel propagates on its own over the same affinity, so `refine` propagates a block
of channels at a time and keeps a running argmax (`label_blocks.blockwise_argmax`), looping over
the batch's actual label count: memory is one block of channels plus the affinity, never
(labels x neighbours x pixels), and time follows the segments.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diffcut_jax.cut.batching import merge_vmap
from diffcut_jax.io.image_ops import resize_bilinear
from diffcut_jax.masks.label_blocks import blockwise_argmax, labels_per_block

_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _neighbours(x: jnp.ndarray, dilations: Sequence[int]) -> list[jnp.ndarray]:
    """x(p + d * (dy, dx)) for x (..., H, W), replicate padding: the P = 8 * len(dilations)
    neighbours, dilation-major. One edge padding by the largest dilation, then static slices of
    it: XLA fuses the slices into the consumer, so the callers sum the list term by term and only
    the padded copy is materialised (a stack, or one pad or gather per neighbour, would hold
    P copies)."""
    h, w = x.shape[-2:]
    r = max(dilations)
    padded = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)], mode="edge")
    return [padded[..., r + d * dy: r + d * dy + h, r + d * dx: r + d * dx + w]
            for d in dilations for dy, dx in _OFFSETS]


def pamr_affinity(image: jnp.ndarray, dilations: Sequence[int]) -> jnp.ndarray:
    """(H, W, 3) image -> (P, H, W) softmax affinities over the P neighbours."""
    x = jnp.moveaxis(image.astype(jnp.float32), -1, 0)  # (3, H, W)
    neigh = _neighbours(x, dilations)
    # Unbiased std over the 9 * len(dilations) values: the 8 neighbours plus the centre once
    # per dilation.
    n = len(neigh) + len(dilations)
    mean = (sum(neigh) + len(dilations) * x) / n
    var = (sum(jnp.square(v - mean) for v in neigh) + len(dilations) * jnp.square(x - mean)) / (n - 1)
    scale = 1e-8 + 0.1 * jnp.sqrt(var)
    logits = jnp.stack([jnp.mean(-jnp.abs(v - x) / scale, axis=0) for v in neigh])
    return jax.nn.softmax(logits, axis=0)


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


def _propagate(masks, aff, num_iter: int, dilations):
    """`num_iter` PAMR steps of soft masks (..., K, H, W) over the affinity (..., P, H, W)."""
    def step(_, m):
        terms = zip(_neighbours(m, dilations), jnp.unstack(aff, axis=-3))
        return sum(v * a[..., None, :, :] for v, a in terms)

    return jax.lax.fori_loop(0, num_iter, step, masks)


def _prepare(image, masks, dilations, num_labels):
    """One image: the affinity at the masks' size and the masks' dense ranks."""
    h, w = masks.shape
    if image.shape[:2] != (h, w):
        image = resize_bilinear(image.astype(jnp.float32), (h, w))
    return pamr_affinity(image, dilations), dense_ranks(masks.astype(jnp.int32), num_labels)


def _pamr_single(image, masks, num_iter, dilations, num_labels):
    aff, ranks = _prepare(image, masks, dilations, num_labels)
    soft = jnp.moveaxis(jax.nn.one_hot(ranks, num_labels, dtype=jnp.float32), -1, 0)
    return _propagate(soft, aff, num_iter, dilations)


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
    block: int | None = None,
) -> jnp.ndarray:
    """The evaluation's refinement: PAMR, argmax, then a 3 x 3 median filter.

    `num_labels` bounds the number of distinct labels (static; as for `pamr`). The channels are
    propagated `block` at a time (static; default `label_blocks.labels_per_block` of the batch's
    pixels) with a running argmax, for ceil(distinct labels / block) blocks: memory and time
    follow the labels present, not `num_labels`, and the result does not depend on `block`
    (except where channels tie exactly and round-off decides).

    Returns int32 labels of the masks' shape; values are indices into the sorted distinct input
    labels (so consecutive input labels from 0 keep their values).
    """
    dilations = tuple(int(d) for d in dilations)
    if masks.ndim not in (2, 3) or image.ndim != masks.ndim + 1 or image.shape[-1] != 3:
        raise ValueError(f"refine: image (H, W, 3) and masks (h, w), or batches of both, got "
                         f"{image.shape} and {masks.shape}")
    if block is not None and int(block) < 1:
        raise ValueError(f"refine: block must be >= 1, got {block}")
    k = _static_num_labels(masks, num_labels, "refine")
    block = None if block is None else int(block)
    fn = functools.partial(_refine_jit, num_iter=int(num_iter), dilations=dilations,
                           num_labels=k, block=block)
    return fn(image, masks) if masks.ndim == 3 else fn(image[None], masks[None])[0]


def _refine_batch(images, masks, *, num_iter, dilations, num_labels, block):
    """(B, H, W, 3), (B, h, w) -> (B, h, w): PAMR on blocks of label channels for the whole batch,
    running argmax, 3 x 3 median."""
    b, h, w = masks.shape
    # The affinity one image at a time (its logits and softmax would otherwise both be live for
    # the whole batch: 4 GiB at batch 16, 1024 x 1024, 4 dilations); propagation runs batched.
    aff, ranks = jax.lax.map(
        lambda xs: _prepare(*xs, dilations=dilations, num_labels=num_labels), (images, masks))
    if block is None:
        block = labels_per_block(b * h * w, num_labels)

    def scores(k0):  # (B, block, h, w): the propagated one-hot channels k0 .. k0 + block - 1
        onehot = (ranks[:, None] == (k0 + jnp.arange(block))[:, None, None]).astype(jnp.float32)
        return _propagate(onehot, aff, num_iter, dilations)

    labels = blockwise_argmax(scores, jnp.max(ranks) + 1, block, (b, h, w), axis=1)
    return jax.vmap(median3x3)(labels)


@functools.partial(jax.jit, static_argnames=("num_iter", "dilations", "num_labels", "block"))
def _refine_jit(images, masks, *, num_iter, dilations, num_labels, block):
    return merge_vmap(functools.partial(_refine_batch, num_iter=num_iter, dilations=dilations,
                                        num_labels=num_labels, block=block))(images, masks)
