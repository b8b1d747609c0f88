"""PAMR and the evaluation's refinement against the original (pamr_reference.npz)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

import diffcut_jax as dc
from diffcut_jax.masks.pamr import median3x3
from tests.helpers import load_fixture, meta

Z = load_fixture("pamr_reference.npz")


def _case(i):
    key = f"case{i:02d}"
    m = meta(Z, f"{key}_meta")
    return Z[f"{key}_image128"], Z[f"{key}_labels_in"], Z[f"{key}_soft"], Z[f"{key}_labels_out"], m


@pytest.mark.parametrize("case", range(5))
def test_pamr_soft_masks(case):
    image, labels, soft, _, m = _case(case)
    out = dc.pamr(jnp.asarray(image), jnp.asarray(labels), m["num_iter"], tuple(m["dilations"]))
    chex.assert_shape(out, soft.shape)
    assert np.max(np.abs(np.asarray(out) - soft)) < 1e-4


@pytest.mark.parametrize("case", range(5))
def test_refine_labels_exact(case):
    image, labels, _, labels_out, m = _case(case)
    out = dc.refine(jnp.asarray(image), jnp.asarray(labels), m["num_iter"], tuple(m["dilations"]))
    np.testing.assert_array_equal(np.asarray(out), labels_out)


def test_refine_under_jit_and_vmap():
    cases = [_case(i) for i in range(5)]
    images = jnp.asarray(np.stack([c[0] for c in cases]))
    labels = jnp.asarray(np.stack([c[1] for c in cases]))
    k = max(int(c[4]["k"]) for c in cases)
    fn = jax.jit(jax.vmap(lambda im, lab: dc.refine(im, lab, num_labels=k)))
    out = np.asarray(fn(images, labels))
    for i, c in enumerate(cases):
        np.testing.assert_array_equal(out[i], c[3])
    # Extra zero channels (capacity above the label count) change nothing.
    soft = dc.pamr(images[0], labels[0], num_labels=k + 3)
    np.testing.assert_allclose(np.asarray(soft[: cases[0][2].shape[0]]), cases[0][2], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(soft[cases[0][2].shape[0]:]), 0.0)


def test_non_consecutive_labels_map_to_sorted_ranks():
    image, labels, soft, labels_out, _ = _case(2)
    shifted = np.where(labels == 0, 7, labels * 3 + 10)  # 0, 1, 2 -> 7, 13, 16: same order
    out = np.asarray(dc.refine(jnp.asarray(image), jnp.asarray(shifted)))
    np.testing.assert_array_equal(out, labels_out)


def test_image_is_resized_to_the_mask_size():
    image, labels, _, _, _ = _case(1)
    big = np.asarray(jax.image.resize(jnp.asarray(image), (256, 192, 3), "nearest"))
    out = dc.pamr(jnp.asarray(big), jnp.asarray(labels))
    chex.assert_shape(out, (4, 128, 128))


def test_median3x3_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(17, 23)).astype(np.int32)
    expected = scipy.ndimage.median_filter(x[None], size=3)[0]
    np.testing.assert_array_equal(np.asarray(median3x3(jnp.asarray(x))), expected)


def test_pamr_needs_static_label_count_under_jit():
    image, labels, _, _, _ = _case(0)
    with pytest.raises(ValueError, match="num_labels"):
        jax.jit(dc.pamr)(jnp.asarray(image), jnp.asarray(labels))
    with pytest.raises(ValueError, match="3 channels"):
        dc.pamr(jnp.ones((8, 8, 4)), jnp.zeros((8, 8), jnp.int32))
