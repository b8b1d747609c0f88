"""The previous release's dense formulations (scores for every label at once), kept as the oracle
that the blockwise ones (`label_blocks`) must equal, and as the benchmark baseline
(benchmarks/label_blocks.py). Memory here is (pixels x labels): small sizes only."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from diffcut_jax.cut.ncut import normalize_features
from diffcut_jax.io.image_ops import bilinear_matrix, resize_bilinear
from diffcut_jax.masks.pamr import dense_ranks, median3x3

_HIGHEST = jax.lax.Precision.HIGHEST
_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def _assign(features, labels, size, num_labels):
    h, w, c = features.shape
    f = normalize_features(features.astype(jnp.float32)).reshape(h * w, c)
    lab = labels.reshape(h * w)
    valid = lab < num_labels
    onehot = jax.nn.one_hot(jnp.where(valid, lab, num_labels), num_labels, dtype=jnp.float32)
    counts = jnp.sum(onehot, axis=0)
    emb = jnp.matmul(onehot.T, f, precision=_HIGHEST) / (counts[:, None] + 1e-8)
    scores = jnp.matmul(f, emb.T, precision=_HIGHEST).reshape(h, w, num_labels)
    ry = jnp.asarray(bilinear_matrix(h, size[0]))
    rx = jnp.asarray(bilinear_matrix(w, size[1]))
    up = jnp.einsum("oh,hwk->owk", ry, scores, precision=_HIGHEST)
    up = jnp.einsum("pw,owk->opk", rx, up, precision=_HIGHEST)
    up = jnp.where(counts > 0, up, -jnp.inf)
    return jnp.argmax(up, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("size", "num_labels"))
def assign_dense(features, labels, *, size, num_labels):
    """(B, h, w, C), (B, h, w) -> (B, *size): every label scored at once."""
    return jax.vmap(functools.partial(_assign, size=size, num_labels=num_labels))(features, labels)


def _shift(x, dy, dx):
    h, w = x.shape[-2:]
    rows = jnp.clip(jnp.arange(h) + dy, 0, h - 1)
    cols = jnp.clip(jnp.arange(w) + dx, 0, w - 1)
    return x[..., rows, :][..., :, cols]


def _neighbours(x, dilations):
    return jnp.stack([_shift(x, d * dy, d * dx) for d in dilations for dy, dx in _OFFSETS], axis=-3)


def _affinity(image, dilations):
    x = jnp.moveaxis(image.astype(jnp.float32), -1, 0)
    neigh = _neighbours(x, dilations)
    centre = jnp.broadcast_to(x[:, None], (x.shape[0], len(dilations)) + x.shape[1:])
    std = jnp.std(jnp.concatenate([neigh, centre], axis=1), axis=1, ddof=1, keepdims=True)
    aff = jnp.mean(-jnp.abs(neigh - x[:, None]) / (1e-8 + 0.1 * std), axis=0)
    return jax.nn.softmax(aff, axis=0)


def _refine(image, masks, num_iter, dilations, num_labels):
    h, w = masks.shape
    if image.shape[:2] != (h, w):
        image = resize_bilinear(image.astype(jnp.float32), (h, w))
    ranks = dense_ranks(masks.astype(jnp.int32), num_labels)
    soft = jnp.moveaxis(jax.nn.one_hot(ranks, num_labels, dtype=jnp.float32), -1, 0)
    aff = _affinity(image, dilations)
    soft = jax.lax.fori_loop(
        0, num_iter, lambda _, m: jnp.sum(_neighbours(m, dilations) * aff[None], axis=1), soft)
    return median3x3(jnp.argmax(soft, axis=0).astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("num_iter", "dilations", "num_labels"))
def refine_dense(images, masks, *, num_iter, dilations, num_labels):
    """(B, H, W, 3), (B, h, w) -> (B, h, w): PAMR on every label channel at once."""
    return jax.vmap(functools.partial(_refine, num_iter=num_iter, dilations=dilations,
                                      num_labels=num_labels))(images, masks)
