"""The K-way NCut (`cut/kway.py`): scores, monotone objective, polishing the recursive partition
on the 16 shared fixtures, batch invariance, degenerate inputs, compile once."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffcut_jax as dc
from diffcut_jax.cut.graph import affinity, batched_affinity
from diffcut_jax.cut.kway import association, scores
from diffcut_jax.testing import region_features
from tests.helpers import load_fixture, meta

Z = load_fixture("ncut_reference.npz")
CASES = [f"case{i:02d}" for i in range(16)]


def _graph(features, alpha):
    w = affinity(jnp.asarray(features).reshape(-1, features.shape[-1]), alpha).weights[None]
    return w, jnp.sum(w, axis=-1)


def _f(w, d, labels):
    labels = jnp.asarray(labels).reshape(1, -1)
    return float(association(w, d, labels, int(labels.max()) + 1)[3][0])


def test_scores_are_the_gradient_of_the_objective():
    """mu_ik = df/dX_ik on a soft X, against central differences in float64 NumPy."""
    feats, _ = region_features(3, 6, 6, 16, noise=0.8, seed=1)
    w, d = _graph(feats, 10.0)
    wn, dn = np.asarray(w[0], np.float64), np.asarray(d[0], np.float64)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, (36, 4))

    def f(x):
        return sum((x[:, k] @ wn @ x[:, k]) / (dn @ x[:, k]) for k in range(x.shape[1]))

    wx = wn @ x
    q, v = np.einsum("nk,nk->k", x, wx), dn @ x
    mu = np.asarray(scores(jnp.asarray(wx[None], jnp.float32), d, jnp.asarray(q[None], jnp.float32),
                           jnp.asarray(v[None], jnp.float32))[0])
    h, fd = 1e-6, np.zeros_like(x)
    for i in range(36):
        for k in range(4):
            e = np.zeros_like(x)
            e[i, k] = h
            fd[i, k] = (f(x + e) - f(x - e)) / (2 * h)
    np.testing.assert_allclose(mu, fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("start", ["spectral", "labels"])
def test_objective_never_decreases_and_rows_are_one_hot(start):
    feats, truth = region_features(6, 16, 16, 64, noise=1.0, seed=3)
    noisy = np.random.default_rng(0).integers(0, 6, truth.shape).astype(np.int32)
    init = np.where(np.random.default_rng(1).random(truth.shape) < 0.3, noisy, truth)
    labels, info = dc.kway_ncut(feats, 10.0, init=init if start == "labels" else None,
                                return_info=True)
    hist = np.asarray(info.history)
    hist = hist[~np.isnan(hist)]
    assert hist.size == int(info.iterations) >= 1
    assert np.all(np.diff(hist) >= 0), hist
    w, d = _graph(feats, 10.0)
    if start == "labels":
        assert hist[-1] > _f(w, d, init)  # the noisy labels were improved
    labels = np.asarray(labels)
    k = int(info.num_segments)
    # One label per node, consecutive from 0 (an assignment, not a soft X).
    assert labels.dtype == np.int32 and labels.shape == (16, 16)
    np.testing.assert_array_equal(np.unique(labels), np.arange(k))
    np.testing.assert_allclose(_f(w, d, labels), float(info.objective), rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_polishing_never_raises_the_kway_ncut_on_the_fixtures(case):
    m = meta(Z, f"{case}_meta")
    feats = Z[f"{case}_features"]
    rec = dc.recursive_ncut(jnp.asarray(feats), m["tau"], m["alpha"])
    polished, info = dc.kway_ncut(feats, m["alpha"], init=rec, return_info=True)
    w, d = _graph(feats, m["alpha"])
    k_rec, k_pol = int(rec.max()) + 1, int(info.num_segments)
    assert bool(info.polished) and k_pol <= k_rec
    # K-way NCut = K - f; K can only shrink and f can only grow.
    assert k_pol - _f(w, d, polished) <= k_rec - _f(w, d, rec) + 1e-6


def test_batched_graph_equals_the_per_image_graph():
    """The batch's graph (normalized in a flat view, for XLA:CPU's fusion) is `affinity`'s, bit
    for bit: weights, exact-zero rows and validity, on the fixtures, a constant and a NaN map."""
    feats = [Z[f"{c}_features"].reshape(-1, Z[f"{c}_features"].shape[-1]) for c in CASES]
    feats += [np.ones_like(feats[0]), np.where(np.arange(feats[0].size).reshape(feats[0].shape)
                                               == 7, np.nan, feats[0])]
    alphas = jnp.asarray([meta(Z, f"{c}_meta")["alpha"] for c in CASES] + [10.0, 10.0], jnp.float32)
    x = jnp.asarray(np.stack(feats))
    batched = jax.jit(batched_affinity)(x, alphas)
    for i in range(len(feats)):
        one = jax.jit(affinity)(x[i], alphas[i])
        for name, a, b in zip(one._fields, one, batched):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b[i]), err_msg=f"{name} {i}")


def test_batch_of_eight_equals_one_at_a_time():
    feats = np.stack([region_features(k, 16, 16, 64, noise=0.9, seed=k)[0]
                      for k in (2, 3, 4, 5, 6, 8, 10, 12)])
    for init in (None, np.stack([region_features(k, 16, 16, 64, seed=k)[1]
                                 for k in (2, 3, 4, 5, 6, 8, 10, 12)])):
        batched = np.asarray(dc.kway_ncut(feats, 10.0, init=init))
        for i in range(8):
            single = dc.kway_ncut(feats[i], 10.0, init=None if init is None else init[i])
            np.testing.assert_array_equal(batched[i], np.asarray(single))


def test_degenerate_inputs_give_defined_labels():
    np.testing.assert_array_equal(np.asarray(dc.kway_ncut(jnp.ones((6, 6, 8)))), 0)
    nan = np.asarray(region_features(3, 6, 6, 8)[0])
    nan[2, 3, 1] = np.nan
    np.testing.assert_array_equal(np.asarray(dc.kway_ncut(nan)), 0)
    np.testing.assert_array_equal(np.asarray(dc.kway_ncut(jnp.ones((1, 1, 8)))), 0)
    np.testing.assert_array_equal(np.asarray(dc.kway_ncut(jnp.ones((1, 1, 8)),
                                                          init=jnp.zeros((1, 1), jnp.int32))), 0)
    # K above the node count: at most one segment per node.
    tiny = region_features(4, 2, 2, 8, seed=2)[0]
    lab = np.asarray(dc.kway_ncut(tiny, min_segments=16, max_segments=16))
    assert lab.shape == (2, 2) and set(np.unique(lab)) <= set(range(4))
    np.testing.assert_array_equal(np.unique(lab), np.arange(lab.max() + 1))
    # A partition with more segments than max_segments is kept as it is, not polished.
    feats = region_features(4, 8, 8, 8, seed=2)[0]
    many = np.arange(64, dtype=np.int32).reshape(8, 8)
    lab, info = dc.kway_ncut(feats, init=many, max_segments=8, return_info=True)
    assert not bool(info.polished)
    np.testing.assert_array_equal(np.asarray(lab), many)


def test_bad_arguments_are_named():
    feats = jnp.ones((4, 4, 8))
    with pytest.raises(ValueError, match="features must be"):
        dc.kway_ncut(jnp.ones((4, 8)))
    with pytest.raises(ValueError, match="init must have"):
        dc.kway_ncut(feats, init=jnp.zeros((3, 4), jnp.int32))
    with pytest.raises(ValueError, match="init labels must lie in"):
        dc.kway_ncut(feats, init=jnp.full((4, 4), 16, jnp.int32))
    with pytest.raises(ValueError, match="integer labels"):
        dc.kway_ncut(feats, init=jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="min_segments"):
        dc.kway_ncut(feats, min_segments=5, max_segments=4)
    with pytest.raises(ValueError, match="subspace_iters must be >= 1"):
        dc.kway_ncut(feats, subspace_iters=0)


def test_subspace_steps_stop_once_the_counted_pairs_converge():
    """Fixtures (a clear gap) stop after the first chunk of 4 steps: their eigenpairs are those of
    4 steps, bit for bit, within a batch where another image (no clear gap) goes on to 8."""
    from diffcut_jax.cut.kway import leading_eigenpairs

    hard = region_features(8, 32, 32, 256, noise=1.0, seed=8)[0]
    feats = np.stack([Z["case00_features"], Z["case01_features"], hard]).reshape(3, 1024, -1)
    w = jax.vmap(affinity)(jnp.asarray(feats), jnp.full((3,), 10.0)).weights
    d = jnp.sum(w, axis=-1)
    thr = jnp.full((3,), 0.9)
    pairs = {it: leading_eigenpairs(w, d, 36, it, threshold=thr, min_segments=2, max_segments=32)
             for it in (4, 8)}
    np.testing.assert_array_equal(pairs[8][0][:2], pairs[4][0][:2])
    np.testing.assert_array_equal(pairs[8][1][:2], pairs[4][1][:2])
    assert not np.array_equal(pairs[8][0][2], pairs[4][0][2])


def test_spectral_start_separates_a_spectrum_without_a_clear_gap():
    """Planted regions at noise 1.0: eigenvalues 1.0 for the 8 regions over a bulk at 0.88-0.89.
    The default subspace steps resolve them (4 steps gave K = 2 and an ARI of 0.1)."""
    from diffcut_jax.cut.labels import adjusted_rand_index

    feats, truth = region_features(8, 32, 32, 1280, noise=1.0, seed=8)
    labels = np.asarray(dc.kway_ncut(feats, 10.0))
    assert labels.max() + 1 >= 6
    assert adjusted_rand_index(labels, truth) > 0.8


def test_alpha_and_threshold_do_not_recompile(compile_counter):
    feats = region_features(5, 12, 12, 32, noise=0.7, seed=4)[0]
    jax.block_until_ready(dc.kway_ncut(feats, 10.0, threshold=0.9))
    warm = compile_counter.count
    for alpha, threshold in ((5.0, 0.9), (15.0, 0.8), (10.0, 0.5)):
        jax.block_until_ready(dc.kway_ncut(feats * 1.01, alpha, threshold=threshold))
    assert compile_counter.count == warm
    # A lower threshold counts more eigenvalues: more segments (the threshold is live, traced).
    few = np.asarray(dc.kway_ncut(feats, 10.0, threshold=0.999)).max()
    more = np.asarray(dc.kway_ncut(feats, 10.0, threshold=0.01)).max()
    assert more > few
    assert compile_counter.count == warm


def test_segmenter_option_reaches_the_kway_cut():
    """`SegmenterOptions.method="kway"` validates its options; the static ones are declared once."""
    from diffcut_jax.segmentation import SegmenterOptions

    assert SegmenterOptions(method="kway").static.kway_threshold == 0.9
    with pytest.raises(ValueError, match="kway_start"):
        SegmenterOptions(method="kway", kway_start="nope")
    with pytest.raises(ValueError, match="kway_min_segments"):
        SegmenterOptions(method="kway", kway_min_segments=0)
    with pytest.raises(ValueError, match="kway_subspace_iters"):
        SegmenterOptions(method="kway", kway_subspace_iters=0)
