"""Argmax over many labels without a (pixels x labels) tensor: labels in blocks, a running max.

Concept assignment and PAMR both end in a per-pixel argmax over the segments. At the paper's
sizes the label capacity is the node count (1024) while an image has 3-50 segments, so scoring
every pixel against every possible label (4 GiB per image for assignment, 128 GiB for PAMR) would
size memory and time by the capacity. Instead the labels are scored `block` at a time and a
running (value, index) pair is kept per pixel. The loop runs `ceil(num_labels / block)` times,
with `num_labels` the batch's actual count (a traced value): memory is one block, time follows
the segments, and no compiled branch is sized for the worst case.

The result equals `jnp.argmax` over all labels: the first maximum wins (a later block replaces the
running index only when strictly greater), and NaN counts as the maximum, as in `jnp.argmax`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# Scores of one block, summed over the batch, stay within this many float32 elements (256 MiB).
BLOCK_ELEMENTS = 1 << 26
# More labels per block than this only adds work when images have few segments (3-50 is usual);
# 8 is also the previous release's smallest label bucket.
MAX_BLOCK = 8


def labels_per_block(pixels: int, capacity: int, max_block: int = MAX_BLOCK) -> int:
    """Static block size for `pixels` scored positions (the whole batch): a power of two, at most
    `max_block` and `capacity`, and small enough that a block holds <= BLOCK_ELEMENTS scores."""
    block = 1
    while block * 2 <= min(max_block, capacity) and block * 2 * pixels <= BLOCK_ELEMENTS:
        block *= 2
    return block


def blockwise_argmax(block_scores: Callable, num_labels, block: int, shape, axis: int = -1):
    """argmax over labels [0, num_labels) of the scores that `block_scores(k0)` returns for labels
    k0 .. k0 + block - 1 along `axis`. Entries of labels >= num_labels (the last block's padding)
    must never beat a real label: -inf for the assignment; zero for PAMR, whose real channels are
    positive (one-hot masks propagated by softmax weights sum to 1 at every pixel).

    `num_labels` may be traced: the loop then runs `ceil(num_labels / block)` times. `shape` is
    the shape of the result (the scores without `axis`). Returns int32 label indices.
    """

    def body(i, carry):
        best, arg = carry
        k0 = i * block
        s = block_scores(k0)
        j = jnp.argmax(s, axis=axis)
        v = jnp.squeeze(jnp.take_along_axis(s, jnp.expand_dims(j, axis), axis=axis), axis)
        better = (v > best) | (jnp.isnan(v) & ~jnp.isnan(best))
        return jnp.where(better, v, best), jnp.where(better, k0 + j.astype(jnp.int32), arg)

    init = (jnp.full(shape, -jnp.inf, jnp.float32), jnp.zeros(shape, jnp.int32))
    num_blocks = (jnp.asarray(num_labels, jnp.int32) + block - 1) // block
    return jax.lax.fori_loop(0, num_blocks, body, init)[1]
