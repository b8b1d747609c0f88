"""Concept assignment against the original (ncut_reference.npz `_labels128`)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffcut_jax as dc
from diffcut_jax.io.image_ops import bilinear_matrix
from tests.helpers import load_fixture, same_partition

Z = load_fixture("ncut_reference.npz")
_assign = jax.jit(lambda f, l: dc.assign_concepts(f, l, (128, 128)))


@pytest.mark.parametrize("case", range(16))
def test_fixture_assignment(case):
    key = f"case{case:02d}"
    out = _assign(jnp.asarray(Z[f"{key}_features"]), jnp.asarray(Z[f"{key}_labels32"]))
    chex.assert_shape(out, (128, 128))
    chex.assert_type(out, jnp.int32)
    assert same_partition(np.asarray(out), Z[f"{key}_labels128"])


def test_fixture_assignment_batched():
    feats = jnp.asarray(np.stack([Z[f"case{c:02d}_features"] for c in range(16)]))
    labels = jnp.asarray(np.stack([Z[f"case{c:02d}_labels32"] for c in range(16)]))
    out = _assign(feats, labels)
    chex.assert_shape(out, (16, 128, 128))
    for c in range(16):
        assert same_partition(np.asarray(out[c]), Z[f"case{c:02d}_labels128"]), c


def _assign_numpy(features, labels, size):
    """Direct transcription: upsample C feature channels, then score every pixel."""
    f = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
    ks = np.unique(labels)
    emb = np.stack([f[labels == k].mean(axis=0) for k in ks])
    ry = bilinear_matrix(f.shape[0], size[0]).astype(np.float64)
    rx = bilinear_matrix(f.shape[1], size[1]).astype(np.float64)
    up = np.einsum("oh,pw,hwc->opc", ry, rx, f)
    return ks[np.argmax(up @ emb.T, axis=-1)]


def test_non_square_input_and_output():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, 10, 16)).astype(np.float32)
    labels = (np.arange(60).reshape(6, 10) % 7 // 3).astype(np.int32)
    out = np.asarray(dc.assign_concepts(jnp.asarray(feats), jnp.asarray(labels), (23, 41)))
    chex.assert_shape(out, (23, 41))
    np.testing.assert_array_equal(out, _assign_numpy(feats.astype(np.float64), labels, (23, 41)))


def test_many_segments_use_a_larger_label_bucket():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(8, 8, 32)).astype(np.float32)
    labels = np.arange(64).reshape(8, 8).astype(np.int32)  # 64 segments > the first bucket (8)
    out = np.asarray(jax.jit(lambda f, l: dc.assign_concepts(f, l, (16, 16)))(feats, labels))
    np.testing.assert_array_equal(out, _assign_numpy(feats.astype(np.float64), labels, (16, 16)))


def test_bilinear_matrix_matches_torch_formula():
    # Upsampling 2 -> 4 with half-pixel centres: sources -0.25 (clamped), 0.25, 0.75, 1.25.
    np.testing.assert_allclose(
        bilinear_matrix(2, 4), [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], atol=1e-7
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="must agree"):
        dc.assign_concepts(jnp.ones((4, 4, 3)), jnp.zeros((4, 5), jnp.int32))
    with pytest.raises(ValueError, match="size"):
        dc.assign_concepts(jnp.ones((4, 4, 3)), jnp.zeros((4, 4), jnp.int32), (0, 4))
