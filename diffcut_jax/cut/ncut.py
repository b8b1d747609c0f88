"""Recursive normalized cut (docs/algorithm.md §2), as one pure, jittable function.

Two formulations compute the same partition:

  * "stack" (depth-first, the default on CPU): a `lax.while_loop` over a work stack of region
    ids, one region per step. Each region is compacted into the smallest of a few fixed block
    sizes before its eigenproblem, so the work shrinks with the regions. Fastest where a loop
    step and a branch are cheap.
  * "level" (level-synchronous, the default on GPU/TPU, `ncut_level.py`): every step takes the
    pending regions of every image of the batch at once with masked fixed-size operations, so
    the batch runs in parallel and the loop count follows the recursion depth.

Stack formulation: every node always belongs to exactly one region (open or finished), so the
state is one `(N,)` region-id vector plus a stack of at most N ids. The stack never overflows (its
entries are disjoint non-empty regions) and the loop runs exactly 2 * splits + 1 times, at most
2N - 1. The 100 cut values of a split come from one (101 x 101) aggregation of the affinities by
threshold bin, with no sort and no cancellation: NCut(S) = cut(S) * (1/vol(S) + 1/vol(rest)).

Quirks of the original that are kept (the fixtures depend on them):
  * below depth 0, nodes whose affinity row holds an exact zero are dropped from the active set
    (they stay in the region and follow the "rest" side of every later split);
  * 100 thresholds `linspace(0.99 min y, 0.99 max y)`, first argmin, strict `y > th`;
  * if min(y) > 0 the lowest threshold keeps every node, its NCut is NaN and the region is a leaf.
Fixed: labels are grouped exactly (the original's float codes collide after ~24 splits).
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from diffcut_jax.cut.batching import merge_vmap, sequential_vmap
from diffcut_jax.cut.buckets import smallest_bucket
from diffcut_jax.cut.graph import (  # noqa: F401  (re-exported: the NCut's graph)
    HIGHEST,
    NUM_THRESHOLDS,
    Affinity,
    affinity,
    canonical_labels,
    min_max_similarity,
    normalize_features,
    thresholds,
)
from diffcut_jax.cut.ncut_level import SMALL, recursive_ncut_level
from diffcut_jax.cut.spectral import dense_fiedler_vector, fiedler_vector

FORMULATIONS = ("auto", "stack", "level")


def default_block_sizes(n: int) -> tuple[int, ...]:
    """Compaction buckets: n, then halving down to 16 (each is one compiled branch).

    Finer steps (x0.6, x0.7) waste less padding but measured no faster on the fixtures and cost
    more compile time (one eigensolver per branch).
    """
    sizes = [n]
    while sizes[-1] > 16:
        sizes.append(max(16, -(-sizes[-1] // 2)))
    return tuple(sizes)


class Split(NamedTuple):
    inside: jnp.ndarray  # (N,) bool: S, the nodes above the chosen threshold
    value: jnp.ndarray  # the NCut value of the best threshold (NaN for the original's NaN stop)
    accepted_shape: jnp.ndarray  # bool: a proper bipartition was found (eigen ok, not NaN stop)
    used_dense: jnp.ndarray  # bool: the eigensolver fell back to a dense eigh


def _cut_values(a, d, y, valid):
    """NCut of the 100 threshold bipartitions of y; also the thresholds and each node's bin."""
    big = jnp.finfo(y.dtype).max
    ymin = jnp.min(jnp.where(valid, y, big))
    ymax = jnp.max(jnp.where(valid, y, -big))
    # bin_i = number of thresholds strictly below y_i; node i is in S_t iff bin_i > t.
    bins = jnp.searchsorted(thresholds(ymin, ymax), y, side="left")
    onehot = jax.nn.one_hot(bins, NUM_THRESHOLDS + 1, dtype=a.dtype) * valid[:, None]
    grouped = jnp.matmul(onehot.T, jnp.matmul(a, onehot, precision=HIGHEST), precision=HIGHEST)
    vol_bin = jnp.matmul(onehot.T, d, precision=HIGHEST)  # (101,)
    # vol(S_t) = sum over bins > t; cut_t = sum_{a > t, b <= t} grouped[a, b].
    vol_in = jnp.cumsum(vol_bin[::-1])[::-1][1:]  # t = 0..99 -> bins t+1..100
    vol_all = jnp.sum(vol_bin)
    vol_out = vol_all - vol_in
    suffix_rows = jnp.cumsum(grouped[::-1], axis=0)[::-1]  # [a, b] = sum_{a' >= a} grouped[a', b]
    prefix = jnp.cumsum(suffix_rows, axis=1)  # [a, b] = sum_{a' >= a, b' <= b}
    t = jnp.arange(NUM_THRESHOLDS)
    cut = prefix[t + 1, t]
    # As the original: k = vol(S)/vol(V), b = k/(1-k); vol(rest) = 0 gives NaN (the "NaN stop").
    ncut = jnp.where(vol_out > 0, cut * (1.0 / vol_in + 1.0 / vol_out), jnp.nan)
    ncut = jnp.where(vol_in > 0, ncut, jnp.nan)
    return ncut, bins, ymin


def _split_block(weights, active, size, *, subspace, max_iter, tol):
    """Best threshold bipartition of the active nodes, computed in a (size x size) block."""
    n_total = weights.shape[0]
    count = jnp.sum(active)
    idx = jnp.nonzero(active, size=size, fill_value=0)[0]
    valid = jnp.arange(size) < count
    a = weights[idx[:, None], idx[None, :]]
    a = jnp.where(valid[:, None] & valid[None, :], a, 0.0)
    d = jnp.sum(a, axis=1)
    if size <= SMALL:  # as the level formulation: small blocks go straight to `eigh`
        fied = dense_fiedler_vector(a, valid)._replace(used_dense=jnp.asarray(False))
    else:
        fied = fiedler_vector(a, valid, subspace=subspace, max_iter=max_iter, tol=tol)
    y = fied.vector
    # Deterministic sign: the entry of largest magnitude is positive (first one on ties).
    y = y * jnp.where(y[jnp.argmax(jnp.abs(y))] < 0, -1.0, 1.0)
    ncut, bins, ymin = _cut_values(a, d, y, valid)
    best = jnp.argmin(jnp.where(jnp.isnan(ncut), jnp.inf, ncut))
    nan_stop = jnp.isnan(ncut[0]) | (ymin > 0)
    proper = fied.ok & ~nan_stop & jnp.isfinite(ncut[best])
    value = jnp.where(nan_stop, jnp.nan, ncut[best])
    inside_block = valid & (bins > best)
    inside = jnp.zeros((n_total,), bool).at[idx].max(inside_block)
    return Split(inside, value, proper, fied.used_dense)


class NCutResult(NamedTuple):
    labels: jnp.ndarray  # (N,) int32, consecutive from 0
    num_segments: jnp.ndarray  # int32
    num_splits: jnp.ndarray  # int32
    regions_visited: jnp.ndarray  # int32: regions whose bipartition was evaluated
    dense_fallbacks: jnp.ndarray  # int32: eigenproblems the subspace iteration left to `eigh`


def _recursive_ncut_flat(
    features: jnp.ndarray,
    tau,
    alpha,
    *,
    block_sizes: Sequence[int],
    subspace: int,
    max_iter: int,
    tol: float,
) -> NCutResult:
    n = features.shape[0]
    aff = affinity(features, alpha)
    ascending = tuple(reversed(block_sizes))
    branches = [
        functools.partial(_split_block, size=s, subspace=subspace, max_iter=max_iter, tol=tol)
        for s in ascending
    ]

    def split(active):
        # The smallest block that holds the region.
        return smallest_bucket(jnp.sum(active), ascending, branches, aff.weights, active)

    def no_split(active):
        del active
        return Split(jnp.zeros((n,), bool), jnp.asarray(jnp.nan, jnp.float32), jnp.asarray(False),
                     jnp.asarray(False))

    def cond(state):
        return state[2] > 0

    def body(state):
        region, stack, top, n_regions, n_splits, visited, dense = state
        top = top - 1
        r = stack[top]
        in_region = region == r
        # The root (the only region visited first) keeps every node active; deeper regions
        # drop the rows with exact zeros, as the original does.
        active = jnp.where(visited == 0, in_region, in_region & ~aff.zero_rows)
        can_split = (jnp.sum(active) > 1) & aff.finite
        result = jax.lax.cond(can_split, split, no_split, active)
        accept = result.accepted_shape & (result.value < tau)
        new_id = n_regions
        rest = in_region & ~result.inside
        region = jnp.where(accept & rest, new_id, region)
        # Depth-first like the original: S (which keeps id r) is processed before the rest.
        stack = jnp.where(accept, stack.at[top].set(new_id).at[top + 1].set(r), stack)
        top = jnp.where(accept, top + 2, top)
        return (
            region,
            stack,
            top,
            n_regions + accept.astype(jnp.int32),
            n_splits + accept.astype(jnp.int32),
            visited + 1,
            dense + result.used_dense.astype(jnp.int32),
        )

    init = (
        jnp.zeros((n,), jnp.int32),
        jnp.zeros((n + 1,), jnp.int32),
        jnp.int32(1),
        jnp.int32(1),
        jnp.int32(0),
        jnp.int32(0),
        jnp.int32(0),
    )
    region, _, _, n_regions, n_splits, visited, dense = jax.lax.while_loop(cond, body, init)
    return NCutResult(canonical_labels(region), n_regions, n_splits, visited, dense)


def _level_batched(features, tau, alpha, *, slots, subspace, max_iter, tol, check_every):
    region, n_regions, n_splits, visited, dense = recursive_ncut_level(
        features, tau, alpha, slots=slots, subspace=subspace, max_iter=max_iter, tol=tol,
        check_every=check_every)
    return NCutResult(canonical_labels(region), n_regions, n_splits, visited, dense)


def resolve_formulation(formulation: str) -> str:
    """"auto" -> "stack" on CPU, "level" on accelerators (GPU, TPU)."""
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    if formulation == "auto":
        return "stack" if jax.default_backend() == "cpu" else "level"
    if formulation == "level" and jax.default_backend() == "cpu":
        _warn_cpu_scheduler()
    return formulation


@functools.lru_cache(maxsize=None)
def _warn_cpu_scheduler():
    flag = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        warnings.warn(
            "recursive_ncut(formulation='level') on CPU: XLA:CPU's concurrency-optimized scheduler "
            f"can deadlock its nested loops (seen with jax 0.10 on 2 cores). Set XLA_FLAGS={flag} "
            "before importing jax, or use formulation='stack' (the CPU default).", stacklevel=3)


def _ncut_batch(features, tau, alpha, *, formulation, block_sizes, subspace, max_iter, tol, slots,
                check_every) -> NCutResult:
    """(B, N, C) features, (B,) tau and alpha -> batched NCutResult."""
    if formulation == "stack":
        flat = sequential_vmap(functools.partial(
            _recursive_ncut_flat, block_sizes=block_sizes, subspace=subspace, max_iter=max_iter, tol=tol))
        return jax.vmap(flat)(features, tau, alpha)
    # Under an outer jax.vmap the extra batch axis joins the batch: still one batched loop.
    return merge_vmap(functools.partial(
        _level_batched, slots=slots, subspace=subspace, max_iter=max_iter, tol=tol,
        check_every=check_every))(features, tau, alpha)


_STATIC = ("formulation", "block_sizes", "subspace", "max_iter", "tol", "slots", "check_every")
_ncut_jit = jax.jit(_ncut_batch, static_argnames=_STATIC)


def recursive_ncut(
    features: jnp.ndarray,
    tau=0.5,
    alpha=10.0,
    *,
    formulation: str = "auto",
    block_sizes: Sequence[int] | None = None,
    subspace: int = 16,
    max_iter: int = 300,
    tol: float = 1e-5,
    slots: int = 16,
    check_every: int = 4,
    return_info: bool = False,
):
    """Segment a feature map by recursive normalized cut.

    Args:
      features: (h, w, C) or (B, h, w, C) patch features (any float dtype; computed in float32).
      tau: NCut acceptance threshold (a split is kept if its NCut < tau). Traced: changing it
        never recompiles. A scalar, or (B,) for a batch.
      alpha: affinity exponent. Traced, like tau.
      formulation: "stack" (depth-first, one region per loop step), "level" (level-synchronous,
        all pending regions of the whole batch per step) or "auto": "stack" on CPU, "level" on
        GPU/TPU. Both give the same partitions (up to round-off on numerically tied cuts).
      block_sizes: stack formulation: compaction buckets (descending, first = h * w); default:
        halving down to 16.
      subspace, max_iter, tol: the eigensolver's subspace size, iteration cap and residual tolerance
        (see `spectral.fiedler_vector`); it falls back to a dense `eigh` when not converged.
      slots: level formulation: regions per image taken in one step (more wait for the next).
      check_every: level formulation: subspace iterations between convergence tests.
      return_info: also return an `NCutResult` with split, visit and dense-fallback counts.

    The computation is jitted once per shape and static arguments: eager calls on new data of a
    seen shape reuse the compiled program. Under `jax.vmap` the stack formulation maps images one
    after another (`lax.map`), each with its own branches; the level formulation runs the batch.

    Returns:
      int32 labels (h, w) (or (B, h, w)), consecutive from 0 in order of first occurrence (row
      major). Two nodes share a label iff they end in the same leaf region.

    Degenerate input (all give a defined result, never NaN labels and never a hang):
      * constant features (max similarity == min) or any NaN/Inf feature: one segment;
      * a 1 x 1 map (or any region with fewer than two active nodes): one segment / a leaf;
      * an eigensolver failure (non-finite vector): that region becomes a leaf.
    """
    if features.ndim not in (3, 4):
        raise ValueError(
            f"recursive_ncut: features must be (h, w, C) or (B, h, w, C), got shape {features.shape}"
        )
    batched = features.ndim == 4
    feats = features if batched else features[None]
    bsz, h, w, c = feats.shape
    n = h * w
    if block_sizes is None:
        block_sizes = default_block_sizes(n)
    block_sizes = tuple(int(s) for s in block_sizes)
    if block_sizes[0] != n or any(b >= a for a, b in zip(block_sizes, block_sizes[1:])):
        raise ValueError(
            f"recursive_ncut: block_sizes must be strictly descending and start at h*w={n}, "
            f"got {block_sizes}"
        )
    if slots < 1 or check_every < 1:
        raise ValueError(f"recursive_ncut: slots and check_every must be >= 1, got {slots}, {check_every}")
    tau = jnp.broadcast_to(jnp.asarray(tau, jnp.float32), (bsz,))
    alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), (bsz,))
    formulation = resolve_formulation(formulation)
    result = _ncut_jit(
        feats.reshape(bsz, n, c), tau, alpha, formulation=formulation,
        block_sizes=block_sizes, subspace=int(subspace), max_iter=int(max_iter), tol=float(tol),
        slots=int(slots), check_every=int(check_every))
    if not batched:
        result = jax.tree.map(lambda x: x[0], result)
    labels = result.labels.reshape(feats.shape[:3] if batched else (h, w))
    if return_info:
        return labels, result
    return labels
