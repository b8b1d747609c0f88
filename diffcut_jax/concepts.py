"""Concept assignment (ALGORITHM.md section 3): upsample NCut segments to any resolution.

e_k = mean of the unit-normalized features over segment k; each output pixel takes
argmax_k <f_up(p), e_k> with f_up the bilinear (half-pixel) upsampling of the unit-normalized map.

Bilinear upsampling is linear, so <f_up(p), e_k> equals the upsampled low-resolution score map
<f(q), e_k>: we score at feature resolution (h*w x C x K) and upsample K channels instead of C.
K is static: the smallest capacity bucket that holds the segment count, chosen at run time.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from diffcut_jax.batching import sequential_vmap
from diffcut_jax.image_ops import bilinear_matrix
from diffcut_jax.ncut import normalize_features


def _assign(features, labels, size, capacity):
    h, w, c = features.shape
    out_h, out_w = size
    f = normalize_features(features.astype(jnp.float32)).reshape(h * w, c)
    lab = labels.reshape(h * w)
    valid = lab < capacity
    onehot = jax.nn.one_hot(jnp.where(valid, lab, capacity), capacity, dtype=jnp.float32)
    counts = jnp.sum(onehot, axis=0)
    # MaskPooling of the original: sum / (count + 1e-8).
    emb = jnp.matmul(onehot.T, f, precision="highest") / (counts[:, None] + 1e-8)
    scores = jnp.matmul(f, emb.T, precision="highest").reshape(h, w, capacity)
    ry = jnp.asarray(bilinear_matrix(h, out_h))
    rx = jnp.asarray(bilinear_matrix(w, out_w))
    up = jnp.einsum("oh,hwk->owk", ry, scores, precision="highest")
    up = jnp.einsum("pw,owk->opk", rx, up, precision="highest")
    up = jnp.where(counts > 0, up, -jnp.inf)
    return jnp.argmax(up, axis=-1).astype(jnp.int32)


def _capacities(n: int) -> tuple[int, ...]:
    caps = [8]
    while caps[-1] < n:
        caps.append(min(caps[-1] * 4, n))
    return tuple(caps)


def assign_concepts(
    features: jnp.ndarray,
    labels: jnp.ndarray,
    size: Sequence[int] = (128, 128),
    *,
    capacities: Sequence[int] | None = None,
) -> jnp.ndarray:
    """Labels (h, w) at feature resolution -> int32 labels of shape `size`.

    Args:
      features: (h, w, C) or (B, h, w, C) features (the ones the labels were computed from).
      labels: (h, w) or (B, h, w) int labels, consecutive from 0 (as `recursive_ncut` returns).
      size: output (height, width), static.
      capacities: static segment-count buckets (ascending, the last >= h*w); the smallest that
        holds max(labels) + 1 is used. Default: 8, 32, 128, ... up to h*w.

    Returns:
      int32 (size) labels, values among the input labels (a segment can vanish if no pixel
      prefers it, exactly as in the original).
    """
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"assign_concepts: size must be (height, width) >= 1, got {size}")
    if features.ndim == 4:
        if labels.ndim != 3 or labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"assign_concepts: batched features {features.shape} need labels (B, h, w), "
                f"got {labels.shape}"
            )
        fn = functools.partial(assign_concepts, size=size, capacities=capacities)
        return jax.vmap(fn)(features, labels)
    if features.ndim != 3 or labels.shape != features.shape[:2]:
        raise ValueError(
            f"assign_concepts: features (h, w, C) and labels (h, w) must agree, got "
            f"{features.shape} and {labels.shape}"
        )
    n = features.shape[0] * features.shape[1]
    caps = tuple(int(c) for c in capacities) if capacities is not None else _capacities(n)
    if caps[-1] < n:
        raise ValueError(f"assign_concepts: the largest capacity must be >= h*w={n}, got {caps}")
    labels = labels.astype(jnp.int32)
    needed = jnp.max(labels) + 1
    which = jnp.minimum(jnp.sum(jnp.asarray(caps) < needed), len(caps) - 1)
    branches = [functools.partial(_assign, size=size, capacity=c) for c in caps]
    return sequential_vmap(lambda w, f, l: jax.lax.switch(w, branches, f, l))(which, features, labels)
