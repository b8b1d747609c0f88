"""Blockwise argmax over labels (masks/label_blocks.py): the assignment and the refinement equal the
previous release's dense formulations (tests/reference_dense.py) for any block size, and the loop
runs once per block of the labels actually present."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffcut_jax as dc
from diffcut_jax.masks.label_blocks import (
    BLOCK_ELEMENTS,
    MAX_BLOCK,
    blockwise_argmax,
    labels_per_block,
)
from tests.helpers import load_fixture, meta
from tests.reference_dense import assign_dense, refine_dense


@pytest.mark.parametrize("block", [1, 3, 8])
def test_blockwise_argmax_equals_argmax_first_maximum_and_nan(block):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(5, 7, 20)).astype(np.float32)  # many ties
    scores[0, 0, 5] = np.nan
    scores[1, 2, :] = -np.inf
    scores[2, 3, 11:] = 9.0  # the maximum sits in a later block, tied within it
    k = scores.shape[-1]
    padded = np.concatenate([scores, np.full((5, 7, block), -np.inf, np.float32)], axis=-1)
    out = jax.jit(lambda s: blockwise_argmax(
        lambda k0: jax.lax.dynamic_slice_in_dim(s, k0, block, axis=-1), k, block, (5, 7)))(padded)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.argmax(jnp.asarray(scores), -1)))


def test_loop_runs_once_per_block_of_present_labels():
    visited = []

    def scores(k0):
        jax.debug.callback(lambda k: visited.append(int(k)), k0)
        return jnp.zeros((3, 4), jnp.float32) + k0

    run = jax.jit(lambda n: blockwise_argmax(scores, n, 4, (3,)))
    for n, blocks in ((6, [0, 4]), (1, [0]), (13, [0, 4, 8, 12])):
        visited.clear()
        jax.block_until_ready(run(n))
        assert visited == blocks, (n, visited)


def test_block_size_follows_the_pixels():
    assert labels_per_block(16 * 1024 * 1024, 1024) == 4  # 256 MiB of scores
    assert labels_per_block(1024 * 1024, 1024) == MAX_BLOCK
    assert labels_per_block(64, 5) == 4  # never above the capacity
    assert labels_per_block(BLOCK_ELEMENTS * 2, 1024) == 1
    for pixels in (1, 1000, 1 << 20, 1 << 24):
        assert labels_per_block(pixels, 1024) * pixels <= max(BLOCK_ELEMENTS, pixels)


def _structured(rng, b, h, w, c, segments):
    labels = np.stack([rng.integers(0, k, size=(h, w)) for k in segments]).astype(np.int32)
    for i, k in enumerate(segments):  # consecutive from 0, every label present
        labels[i].flat[:k] = np.arange(k)
    centres = rng.normal(size=(max(segments), c))
    feats = centres[labels] + 0.7 * rng.normal(size=(b, h, w, c))
    return feats.astype(np.float32), labels


@pytest.mark.parametrize("block", [None, 1, 3, 16])
def test_assignment_equals_dense(block):
    rng = np.random.default_rng(1)
    # Segments of several nodes: with one node each, a pixel midway between two is an exact tie
    # that round-off decides (differently for other block shapes).
    feats, labels = _structured(rng, 3, 24, 20, 24, segments=(80, 5, 1))
    out = dc.assign_concepts(jnp.asarray(feats), jnp.asarray(labels), (37, 29), block=block)
    chex.assert_shape(out, (3, 37, 29))
    expected = assign_dense(jnp.asarray(feats), jnp.asarray(labels), size=(37, 29), num_labels=80)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    assert len(np.unique(np.asarray(out[0]))) > 40  # many segments survive, across blocks


def test_assignment_fixtures_equal_dense():
    z = load_fixture("ncut_reference.npz")
    feats = jnp.asarray(np.stack([z[f"case{c:02d}_features"] for c in range(16)]))
    labels = jnp.asarray(np.stack([z[f"case{c:02d}_labels32"] for c in range(16)]))
    out = dc.assign_concepts(feats, labels, (128, 128), block=2)
    k = int(labels.max()) + 1
    np.testing.assert_array_equal(
        np.asarray(out), np.asarray(assign_dense(feats, labels, size=(128, 128), num_labels=k)))


@pytest.mark.parametrize("block", [None, 1, 2, 5])
def test_refinement_equals_dense_on_the_fixtures(block):
    z = load_fixture("pamr_reference.npz")
    for i in range(5):
        m = meta(z, f"case{i:02d}_meta")
        image, labels = z[f"case{i:02d}_image128"], z[f"case{i:02d}_labels_in"]
        dil = tuple(m["dilations"])
        out = dc.refine(jnp.asarray(image), jnp.asarray(labels), m["num_iter"], dil, block=block)
        k = len(np.unique(labels))
        expected = refine_dense(jnp.asarray(image)[None], jnp.asarray(labels)[None],
                                num_iter=m["num_iter"], dilations=dil, num_labels=k)[0]
        np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
        np.testing.assert_array_equal(np.asarray(out), z[f"case{i:02d}_labels_out"])


@pytest.mark.parametrize("block", [None, 3])
def test_refinement_equals_dense_with_many_labels_and_a_capacity(block):
    rng = np.random.default_rng(2)
    images = rng.uniform(size=(2, 40, 36, 3)).astype(np.float32)
    images[:, :20] *= 0.3  # some colour structure for the affinity
    masks = np.stack([rng.integers(0, 37, size=(40, 36)), rng.integers(0, 4, size=(40, 36))])
    masks = (masks // 1).astype(np.int32)
    out = dc.refine(jnp.asarray(images), jnp.asarray(masks), 5, (1, 2, 3), num_labels=64,
                    block=block)
    expected = refine_dense(jnp.asarray(images), jnp.asarray(masks), num_iter=5,
                            dilations=(1, 2, 3), num_labels=64)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    assert len(np.unique(np.asarray(out[0]))) > 10


def test_bad_block():
    with pytest.raises(ValueError, match="block"):
        dc.assign_concepts(jnp.ones((4, 4, 3)), jnp.zeros((4, 4), jnp.int32), block=0)
    with pytest.raises(ValueError, match="block"):
        dc.refine(jnp.ones((4, 4, 3)), jnp.zeros((4, 4), jnp.int32), block=0)
