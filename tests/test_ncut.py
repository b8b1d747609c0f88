"""Recursive NCut against the original's outputs (../shared/fixtures/ncut_reference.npz)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffcut_jax as dc
from diffcut_jax.cut import ncut as ncut_lib
from diffcut_jax.cut import spectral
from tests import reference_numpy as ref
from tests.helpers import load_fixture, meta, partition_mismatch, same_partition

Z = load_fixture("ncut_reference.npz")
CASES = list(range(16))
# In these two cases the root's Fiedler eigenvalue is degenerate to float32 precision
# (lambda_2 = 3.9e-7 and 4.3e-9, the next ones within ~1e-6), so the original's output depends on
# its float32 round-off: rerunning the original code with torch 2.13.0 on this machine kind gives
# the fixture at 2 threads, but case 4 splits into 7 segments at 1 thread and case 6 gives one
# segment at 1 thread and a different partition at 4. See docs/differences.md.
ROUNDOFF_CASES = (4, 6)

FORMULATIONS = ("stack", "level")


def _ncut(x, tau, alpha, formulation="stack"):
    return dc.recursive_ncut(x, tau, alpha, formulation=formulation, return_info=True)


def _case(i):
    key = f"case{i:02d}"
    return Z[f"{key}_features"], meta(Z, f"{key}_meta"), Z[f"{key}_labels32"], Z[f"{key}_labels128"]


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("case", [c for c in CASES if c not in ROUNDOFF_CASES])
def test_fixture_partition_and_split_count(case, formulation):
    feats, m, labels32, _ = _case(case)
    labels, info = _ncut(jnp.asarray(feats), m["tau"], m["alpha"], formulation)
    chex.assert_shape(labels, (32, 32))
    chex.assert_type(labels, jnp.int32)
    assert same_partition(np.asarray(labels), labels32)
    assert int(info.num_splits) == m["n_splits"]
    # Consecutive labels from 0.
    np.testing.assert_array_equal(np.unique(np.asarray(labels)), np.arange(m["n_segments32"]))


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("case", ROUNDOFF_CASES)
def test_roundoff_cases_match_exact_arithmetic(case, formulation):
    """Where the original's answer is float32 noise, we give the exact-arithmetic answer."""
    feats, m, labels32, _ = _case(case)
    eig = ref.root_eigenvalues64(feats, m["alpha"])
    assert eig[1] < 1e-6 and eig[2] - eig[1] < 2e-6, "premise: the root is numerically degenerate"
    labels = np.asarray(_ncut(jnp.asarray(feats), m["tau"], m["alpha"], formulation)[0])
    exact = ref.recursive_ncut64(feats, m["tau"], m["alpha"])
    # Rows with an exact zero leave the active set below the root; where they end depends on the
    # orientation of the degenerate root eigenvector, so they are the only nodes allowed to differ.
    _, w = ref.affinity64(feats, m["alpha"])
    zero_rows = (w == 0).any(axis=1)
    assert not (partition_mismatch(labels, exact) & ~zero_rows).any()
    if m["n_splits"] > 0:
        assert not (partition_mismatch(labels, labels32) & ~zero_rows).any()


@pytest.mark.slow
@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_fixture_batch_of_all_16(formulation):
    feats = jnp.asarray(np.stack([_case(i)[0] for i in CASES]))
    taus = jnp.asarray([_case(i)[1]["tau"] for i in CASES])
    alphas = jnp.asarray([_case(i)[1]["alpha"] for i in CASES])
    # The native batched path, per-image tau/alpha ...
    labels, info = dc.recursive_ncut(feats, taus, alphas, formulation=formulation, return_info=True)
    chex.assert_shape(labels, (16, 32, 32))
    # ... and jax.vmap of the single-image function inside a jit.
    vmapped = jax.jit(jax.vmap(lambda f, t, a: dc.recursive_ncut(f, t, a, formulation=formulation)))(
        feats, taus, alphas)
    np.testing.assert_array_equal(np.asarray(vmapped), np.asarray(labels))
    for i in CASES:
        single, single_info = _ncut(feats[i], taus[i], alphas[i], formulation)
        # Batching never changes an image's result.
        np.testing.assert_array_equal(np.asarray(labels[i]), np.asarray(single), err_msg=str(i))
        assert int(info.num_splits[i]) == int(single_info.num_splits)
        if i not in ROUNDOFF_CASES:
            assert same_partition(np.asarray(labels[i]), _case(i)[2]), i
    # At 128 x 128 (after concept assignment) 15 of the 16 cases match the original.
    masks = dc.assign_concepts(feats, labels, (128, 128))
    assert sum(same_partition(np.asarray(masks[i]), _case(i)[3]) for i in CASES) >= 15


def test_formulations_give_identical_labels():
    """Same partition and the same numbering (first occurrence) from both formulations."""
    for i in (0, 1, 9):
        feats, m, _, _ = _case(i)
        a = _ncut(jnp.asarray(feats), m["tau"], m["alpha"], "stack")
        b = _ncut(jnp.asarray(feats), m["tau"], m["alpha"], "level")
        np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
        assert int(a[1].regions_visited) == int(b[1].regions_visited)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_eager_calls_compile_once(formulation, compile_counter):
    """Eager calls on new data of a seen shape reuse one program; tau/alpha are traced."""
    feats = [jnp.asarray(_case(i)[0]) for i in (0, 3, 5)]
    dc.recursive_ncut(feats[0], 0.5, 10.0, formulation=formulation).block_until_ready()
    warm = compile_counter.count
    for f, tau, alpha in zip(feats, (0.5, 0.3, 0.45), (10.0, 8.0, 12.0)):
        dc.recursive_ncut(f, tau, alpha, formulation=formulation).block_until_ready()
    assert compile_counter.count == warm


@pytest.mark.slow
@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_non_square_map_matches_oracle(formulation):
    feats, _, _, _ = _case(1)
    sub = feats[:12, :20]
    labels = np.asarray(dc.recursive_ncut(jnp.asarray(sub), 0.5, 10.0, formulation=formulation))
    chex.assert_shape(labels, (12, 20))
    assert same_partition(labels, ref.recursive_ncut64(sub, 0.5, 10.0))


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_constant_features_give_one_segment(formulation):
    labels, info = dc.recursive_ncut(jnp.ones((6, 5, 8)), formulation=formulation, return_info=True)
    np.testing.assert_array_equal(np.asarray(labels), 0)
    assert int(info.num_splits) == 0


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_give_one_segment(bad, formulation):
    feats = np.array(_case(0)[0][:8, :8])
    feats[3, 4, 7] = bad
    labels = np.asarray(dc.recursive_ncut(jnp.asarray(feats), formulation=formulation))
    np.testing.assert_array_equal(labels, 0)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_one_by_one_map(formulation):
    labels = dc.recursive_ncut(jnp.ones((1, 1, 4)), formulation=formulation)
    chex.assert_shape(labels, (1, 1))
    assert int(labels[0, 0]) == 0


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_worst_case_splits_terminate_without_truncation(formulation):
    """tau = inf accepts every proper split: the recursion must peel down to tiny leaves."""
    feats = jax.random.normal(jax.random.PRNGKey(3), (6, 6, 16))
    labels, info = jax.jit(
        lambda f: dc.recursive_ncut(f, jnp.inf, 1.0, formulation=formulation, return_info=True)
    )(feats)
    n = 36
    labels = np.asarray(labels)
    segments = np.unique(labels)
    np.testing.assert_array_equal(segments, np.arange(segments.size))
    assert int(info.num_segments) == segments.size == int(info.num_splits) + 1
    assert int(info.num_splits) <= n - 1
    assert int(info.regions_visited) == 2 * int(info.num_splits) + 1
    # Every leaf holds at most one active node (zero-row nodes may ride along).
    zero_rows = np.asarray(ncut_lib.affinity(feats.reshape(n, 16), 1.0).zero_rows)
    for s in segments:
        assert np.sum((labels.ravel() == s) & ~zero_rows) <= 1


def test_eigensolver_failure_is_a_leaf():
    a = jnp.full((8, 8), jnp.nan)
    res = spectral.fiedler_vector(a, jnp.ones((8,), bool))
    assert not bool(res.ok)
    np.testing.assert_array_equal(np.asarray(res.vector), 0.0)
    split = ncut_lib._split_block(
        a, jnp.ones((8,), bool), 8, subspace=4, max_iter=10, tol=1e-5
    )
    assert not bool(split.accepted_shape)
    assert not bool(jnp.any(split.inside))


@pytest.mark.slow
@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_dense_fallback_agrees_with_subspace_iteration(formulation):
    feats, m, labels32, _ = _case(1)
    forced, info = dc.recursive_ncut(jnp.asarray(feats), m["tau"], m["alpha"], max_iter=0,
                                     formulation=formulation, return_info=True)
    assert same_partition(np.asarray(forced), labels32)
    assert int(info.dense_fallbacks) > 0


def test_zero_rows_follow_float32_underflow():
    """Entries the original's float32 pow underflows to exactly 0 count as zeros (XLA flushes
    subnormals, torch keeps them, so the set is predicted, not read off W)."""
    f = np.zeros((3, 2), np.float32)
    f[0] = [1, 0]
    f[1] = [-1, 0]  # the minimum pair (0, 1): exactly 0 after min-max
    theta = np.arccos(-(1 - 2e-4))
    f[2] = [np.cos(theta), np.sin(theta)]  # (2, 0) normalizes to ~1e-4: 1e-40 after ** 10
    aff = ncut_lib.affinity(jnp.asarray(f), 10.0)
    # 1e-40 is a float32 subnormal: not zero for the original, although XLA flushes it.
    np.testing.assert_array_equal(np.asarray(aff.zero_rows), [True, True, False])
    w, _ = ref.affinity64(f, 1.0)
    expected = (np.float32(w) ** np.float32(10.0) == 0).any(axis=1)  # NumPy keeps subnormals
    np.testing.assert_array_equal(np.asarray(aff.zero_rows), expected)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="features must be"):
        dc.recursive_ncut(jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="block_sizes"):
        dc.recursive_ncut(jnp.ones((4, 4, 3)), block_sizes=(8, 4))
    with pytest.raises(ValueError, match="formulation"):
        dc.recursive_ncut(jnp.ones((4, 4, 3)), formulation="bfs")
