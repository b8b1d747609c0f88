"""Concept assignment (docs/algorithm.md §3): upsample NCut segments to any resolution.

e_k = mean of the unit-normalized features over segment k; each output pixel takes
argmax_k <f_up(p), e_k> with f_up the bilinear (half-pixel) upsampling of the unit-normalized map.

Bilinear upsampling is linear, so <f_up(p), e_k> equals the upsampled low-resolution score map
<f(q), e_k>: we score at feature resolution (h*w x C x block) and upsample `block` channels
instead of C. The segments are taken a block at a time with a running argmax
(`label_blocks.blockwise_argmax`), looping over the batch's actual segment count: no tensor is
shaped (output pixels x label capacity), and time follows the segments.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from diffcut_jax.cut.batching import merge_vmap
from diffcut_jax.cut.ncut import normalize_features
from diffcut_jax.io.image_ops import bilinear_matrix
from diffcut_jax.masks.label_blocks import blockwise_argmax, labels_per_block

_HIGHEST = jax.lax.Precision.HIGHEST


def _block_scores(f, lab, k0, *, block, hw, ry, rx):
    """Upsampled scores of segments k0 .. k0 + block - 1: (B, out_h, out_w, block), -inf for
    segments without a node. f (B, N, C) unit-normalized features, lab (B, N) labels."""
    h, w = hw
    onehot = (lab[:, :, None] == k0 + jnp.arange(block)).astype(jnp.float32)  # (B, N, block)
    counts = jnp.sum(onehot, axis=1)  # (B, block)
    # MaskPooling of the original: sum / (count + 1e-8).
    emb = jnp.einsum("bnk,bnc->bkc", onehot, f, precision=_HIGHEST) / (counts[..., None] + 1e-8)
    scores = jnp.einsum("bnc,bkc->bnk", f, emb, precision=_HIGHEST)
    scores = scores.reshape(f.shape[0], h, w, block)
    up = jnp.einsum("oh,bhwk->bowk", ry, scores, precision=_HIGHEST)
    up = jnp.einsum("pw,bowk->bopk", rx, up, precision=_HIGHEST)
    return jnp.where(counts[:, None, None, :] > 0, up, -jnp.inf)


def _assign_batch(features, labels, *, size, block):
    """(B, h, w, C), (B, h, w) -> (B, *size): the whole batch loops over its largest segment count."""
    b, h, w, c = features.shape
    if block is None:
        block = labels_per_block(b * size[0] * size[1], h * w)
    f = normalize_features(features.astype(jnp.float32)).reshape(b, h * w, c)
    lab = labels.reshape(b, h * w)
    scores = functools.partial(_block_scores, f, lab, block=block, hw=(h, w),
                               ry=jnp.asarray(bilinear_matrix(h, size[0])),
                               rx=jnp.asarray(bilinear_matrix(w, size[1])))
    return blockwise_argmax(scores, jnp.max(labels) + 1, block, (b,) + tuple(size))


@functools.partial(jax.jit, static_argnames=("size", "block"))
def _assign_jit(features, labels, *, size, block):
    return merge_vmap(functools.partial(_assign_batch, size=size, block=block))(features, labels)


def assign_concepts(
    features: jnp.ndarray,
    labels: jnp.ndarray,
    size: Sequence[int] = (128, 128),
    *,
    block: int | None = None,
) -> jnp.ndarray:
    """Labels (h, w) at feature resolution -> int32 labels of shape `size`.

    Args:
      features: (h, w, C) or (B, h, w, C) features (the ones the labels were computed from).
      labels: (h, w) or (B, h, w) int labels, consecutive from 0 (as `recursive_ncut` returns).
      size: output (height, width), static.
      block: segments scored per step (static). Default: `label_blocks.labels_per_block` of the
        batch's output pixels (at most 8; 4 at batch 16 and 1024 x 1024). The loop runs
        ceil((max(labels) + 1) / block) steps for the whole batch. The result does not depend on
        `block`, except where two segments tie exactly and round-off decides.

    Jitted once per shape, size and block; under `jax.vmap` the mapped axis joins the batch.

    Returns:
      int32 (size) labels, values among the input labels (a segment can vanish if no pixel
      prefers it, exactly as in the original).
    """
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"assign_concepts: size must be (height, width) >= 1, got {size}")
    if block is not None and int(block) < 1:
        raise ValueError(f"assign_concepts: block must be >= 1, got {block}")
    batched = features.ndim == 4
    if batched and (labels.ndim != 3 or labels.shape[0] != features.shape[0]):
        raise ValueError(
            f"assign_concepts: batched features {features.shape} need labels (B, h, w), "
            f"got {labels.shape}"
        )
    if features.ndim not in (3, 4) or labels.shape[-2:] != features.shape[-3:-1]:
        raise ValueError(
            f"assign_concepts: features (h, w, C) and labels (h, w) must agree, got "
            f"{features.shape} and {labels.shape}"
        )
    block = None if block is None else int(block)
    labels = jnp.asarray(labels).astype(jnp.int32)
    if batched:
        return _assign_jit(features, labels, size=size, block=block)
    return _assign_jit(features[None], labels[None], size=size, block=block)[0]
