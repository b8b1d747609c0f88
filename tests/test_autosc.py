"""AutoSC against an independent NumPy/SciPy transcription of docs/algorithm.md §5."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffcut_jax as dc
from tests import reference_numpy as ref
from tests.helpers import same_partition


def _blocky_features(seed, h, w, k, c=32, noise=0.3):
    """k regions (vertical/horizontal stripes mixed), each a direction plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    region = ((yy * 2 // h) * 7 + (xx * k // w) * 3) % k
    dirs = rng.normal(size=(k, c))
    feats = dirs[region] + noise * rng.normal(size=(h, w, c))
    return feats.astype(np.float32)


MAPS = [
    _blocky_features(0, 12, 12, 3),
    _blocky_features(1, 10, 14, 4),
    _blocky_features(2, 16, 16, 5, noise=0.5),
    _blocky_features(3, 8, 20, 2, noise=0.8),
]


@pytest.mark.parametrize("index", range(len(MAPS)))
@pytest.mark.parametrize("use_chosen_alpha", [False, True])
def test_matches_numpy_transcription(index, use_chosen_alpha):
    feats = MAPS[index]
    labels, info = jax.jit(
        lambda f: dc.autosc(f, use_chosen_alpha=use_chosen_alpha, return_info=True)
    )(jnp.asarray(feats))
    expected, k, alpha = ref.autosc64(feats, use_chosen_alpha=use_chosen_alpha)
    chex.assert_shape(labels, feats.shape[:2])
    assert int(info["k"]) == k
    assert float(info["alpha"]) == alpha
    assert same_partition(np.asarray(labels), expected)
    np.testing.assert_array_equal(np.unique(np.asarray(labels)), np.arange(len(np.unique(expected))))


def test_batched_and_upsampled():
    feats = jnp.asarray(np.stack([MAPS[0], _blocky_features(9, 12, 12, 3)]))
    labels = dc.autosc(feats)
    chex.assert_shape(labels, (2, 12, 12))
    masks = dc.assign_concepts(feats, labels, (48, 48))
    chex.assert_shape(masks, (2, 48, 48))


def test_constant_features_give_one_segment():
    np.testing.assert_array_equal(np.asarray(dc.autosc(jnp.ones((5, 5, 4)))), 0)


def test_pivots_are_lapack_geqp3_s():
    """The pivots chosen in plain jnp are LAPACK's column-pivoted QR's (scipy), first k of them,
    with columns beyond k zero as AutoSC passes them."""
    import scipy.linalg

    from diffcut_jax.cut.autosc import qr_pivots

    rng = np.random.default_rng(0)
    for n, k, kmax in ((50, 3, 8), (200, 10, 16), (1024, 30, 128)):
        v = rng.normal(size=(n, k))
        _, _, piv = scipy.linalg.qr(v.T, pivoting=True)
        padded = np.zeros((n, kmax), np.float32)
        padded[:, :k] = v
        np.testing.assert_array_equal(np.asarray(qr_pivots(jnp.asarray(padded), k))[:k], piv[:k])


def test_at_most_max_clusters():
    """k is clamped to the static bound: every array is (N, K) or (K, K), K = MAX_CLUSTERS."""
    from diffcut_jax.cut.autosc import cluster_qr

    rng = np.random.default_rng(1)
    vectors = jnp.asarray(rng.normal(size=(64, 64)), jnp.float32)
    labels = np.asarray(cluster_qr(vectors, 40, max_clusters=8))
    assert labels.max() < 8 and len(np.unique(labels)) > 1
