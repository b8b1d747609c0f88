"""Concept assignment (docs/algorithm.md §3): upsample NCut segments to any resolution.

e_k = mean of the unit-normalized features over segment k; each output pixel takes
argmax_k <f_up(p), e_k> with f_up the bilinear (half-pixel) upsampling of the unit-normalized map.

Bilinear upsampling is linear, so <f_up(p), e_k> equals the upsampled low-resolution score map
<f(q), e_k>: we score at feature resolution (h*w x C x K) and upsample K channels instead of C.
K is static: the smallest label bucket that holds the batch's largest segment count, chosen at
run time (one branch per batch).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from diffcut_jax.batching import merge_vmap
from diffcut_jax.buckets import smallest_bucket
from diffcut_jax.image_ops import bilinear_matrix
from diffcut_jax.ncut import normalize_features


def _assign(features, labels, size, num_labels):
    h, w, c = features.shape
    out_h, out_w = size
    f = normalize_features(features.astype(jnp.float32)).reshape(h * w, c)
    lab = labels.reshape(h * w)
    valid = lab < num_labels
    onehot = jax.nn.one_hot(jnp.where(valid, lab, num_labels), num_labels, dtype=jnp.float32)
    counts = jnp.sum(onehot, axis=0)
    # MaskPooling of the original: sum / (count + 1e-8).
    emb = jnp.matmul(onehot.T, f, precision=jax.lax.Precision.HIGHEST) / (counts[:, None] + 1e-8)
    scores = jnp.matmul(f, emb.T, precision=jax.lax.Precision.HIGHEST).reshape(h, w, num_labels)
    ry = jnp.asarray(bilinear_matrix(h, out_h))
    rx = jnp.asarray(bilinear_matrix(w, out_w))
    up = jnp.einsum("oh,hwk->owk", ry, scores, precision=jax.lax.Precision.HIGHEST)
    up = jnp.einsum("pw,owk->opk", rx, up, precision=jax.lax.Precision.HIGHEST)
    up = jnp.where(counts > 0, up, -jnp.inf)
    return jnp.argmax(up, axis=-1).astype(jnp.int32)


def _label_buckets(n: int) -> tuple[int, ...]:
    caps = [8]
    while caps[-1] < n:
        caps.append(min(caps[-1] * 4, n))
    return tuple(caps)


def _assign_batch(features, labels, *, size, caps):
    """(B, h, w, C), (B, h, w) -> (B, *size): one label bucket for the whole batch (its largest
    segment count), so the batch runs together through one branch."""
    branches = [jax.vmap(functools.partial(_assign, size=size, num_labels=c)) for c in caps]
    return smallest_bucket(jnp.max(labels) + 1, caps, branches, features, labels)


@functools.partial(jax.jit, static_argnames=("size", "caps"))
def _assign_jit(features, labels, *, size, caps):
    return merge_vmap(functools.partial(_assign_batch, size=size, caps=caps))(features, labels)


def assign_concepts(
    features: jnp.ndarray,
    labels: jnp.ndarray,
    size: Sequence[int] = (128, 128),
    *,
    label_buckets: Sequence[int] | None = None,
) -> jnp.ndarray:
    """Labels (h, w) at feature resolution -> int32 labels of shape `size`.

    Args:
      features: (h, w, C) or (B, h, w, C) features (the ones the labels were computed from).
      labels: (h, w) or (B, h, w) int labels, consecutive from 0 (as `recursive_ncut` returns).
      size: output (height, width), static.
      label_buckets: static segment-count buckets (ascending, the last >= h*w); the smallest that
        holds max(labels) + 1 over the batch is used (one branch per batch, not per image).
        Default: 8, 32, 128, ... up to h*w.

    Jitted once per shape, size and label buckets; under `jax.vmap` the mapped axis joins the batch.

    Returns:
      int32 (size) labels, values among the input labels (a segment can vanish if no pixel
      prefers it, exactly as in the original).
    """
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"assign_concepts: size must be (height, width) >= 1, got {size}")
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
    n = features.shape[-3] * features.shape[-2]
    caps = tuple(int(c) for c in label_buckets) if label_buckets is not None else _label_buckets(n)
    if caps[-1] < n:
        raise ValueError(f"assign_concepts: the largest label bucket must be >= h*w={n}, got {caps}")
    labels = jnp.asarray(labels).astype(jnp.int32)
    if batched:
        return _assign_jit(features, labels, size=size, caps=caps)
    return _assign_jit(features[None], labels[None], size=size, caps=caps)[0]
