"""Level-synchronous recursive NCut: the formulation for accelerators (docs/algorithm.md §2.3).

The depth-first formulation (`ncut.py`) visits one region per loop step, and each step of a
`while_loop` or branch of a `lax.switch` costs a device -> host round trip on GPUs. Here every loop
step takes up to `slots` pending regions of every image of the batch at once:

  * the regions of a step are disjoint, so one block-diagonal (B, N, N) affinity (zero between
    regions) carries all of them; per-region quantities are one-hot (B, N, R) contractions;
  * regions of more than `SMALL` active nodes get their Fiedler vector by block subspace
    iteration, all together (`spectral.region_fiedler_vectors`, one convergence test per
    `check_every` iterations for the whole batch); smaller ones are gathered into
    (SMALL x SMALL) blocks and solved by a batched dense `eigh`;
  * regions not converged after `max_iter` iterations, or not on course to (`spectral.stalls`),
    are all solved densely in the same step, each compacted into a block of the smallest size
    bucket that holds it (`dense_buckets`; one condition per bucket present);
  * the 100 cut values of every region come from one (B, N, N) x (N, 101) product.

A region's decision depends only on its own nodes, so the order of visits does not change the
partition: the result equals the depth-first one (up to round-off in the eigensolver and the cut
sums). The loop runs about once per recursion level, not once per region.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffcut_jax.cut import spectral
from diffcut_jax.cut.graph import HIGHEST, NUM_THRESHOLDS, batched_affinity, thresholds
from diffcut_jax.cut.spectral import per_node, segment_sum

SMALL = 32  # regions up to this many active nodes are solved densely


class LevelState(NamedTuple):
    region: jnp.ndarray  # (B, N) int32 region id of every node
    pending: jnp.ndarray  # (B, N) bool over region ids: still to be visited
    num_regions: jnp.ndarray  # (B,) int32
    num_splits: jnp.ndarray  # (B,) int32
    visited: jnp.ndarray  # (B,) int32
    dense: jnp.ndarray  # (B,) int32 dense fallbacks of the subspace iteration
    step: jnp.ndarray  # int32


def _blocked_fiedler(weights, part, flagged, num_slots, size, most):
    """Dense Fiedler vectors of the regions flagged (B, R), the first `most` of each image
    gathered into (size, size) blocks (each must hold at most `size` active nodes): the vector
    on their nodes (zero elsewhere), and per slot whether it is finite (True where not flagged)."""
    n = weights.shape[-1]
    size = min(size, n)

    def one_image(w, part_i, flagged_i):
        slots = jnp.nonzero(flagged_i, size=most, fill_value=num_slots)[0]

        def one_block(s):
            sel = (part_i == s) & (s < num_slots)
            idx = jnp.nonzero(sel, size=size, fill_value=0)[0]
            valid = jnp.arange(size) < jnp.sum(sel)
            blk = jnp.where(valid[:, None] & valid[None, :], w[idx[:, None], idx[None, :]], 0.0)
            res = spectral.dense_fiedler_vector(blk, valid)
            return idx, jnp.where(valid, res.vector, 0.0), res.ok

        idx, y, ok = jax.vmap(one_block)(slots)
        # Each node is in at most one block; padding adds exact zeros.
        y = jnp.zeros((n,), w.dtype).at[idx.reshape(-1)].add(y.reshape(-1))
        ok_slot = jnp.ones((num_slots + 1,), bool).at[slots].set(ok)[:num_slots]
        return y, ok_slot | ~flagged_i

    return jax.vmap(one_image)(weights, part, flagged)


def dense_buckets(n: int, slots: int) -> tuple[tuple[int, int, int], ...]:
    """(lower, size, count): regions of more than `lower` and at most `size` active nodes go to
    (size x size) blocks, at most `count` of them per image: the most that fit in n nodes, and in
    the step's slots. Sizes double from 2 SMALL up to n."""
    out, lower = [], SMALL
    while lower < n:
        size = min(2 * lower, n)
        out.append((lower, size, min(slots, n // (lower + 1))))
        lower = size
    return tuple(out)


def _dense_fallback(weights, part, unconverged, count, num_slots):
    """Every unconverged region of the step, solved densely at once: compacted into blocks of
    the smallest bucket that holds it. One condition per bucket (and one for all), so a step
    without failures pays nothing and one with failures pays for the sizes it has."""
    bsz, n = part.shape
    zeros = (jnp.zeros((bsz, n), weights.dtype), jnp.ones((bsz, num_slots), bool))

    def all_buckets(_):
        y, ok = zeros
        for lower, size, most in dense_buckets(n, num_slots):
            here = unconverged & (count > lower) & (count <= size)
            y_b, ok_b = jax.lax.cond(
                jnp.any(here),
                lambda h, s=size, m=most: _blocked_fiedler(weights, part, h, num_slots, s, m),
                lambda h: zeros, here)
            y, ok = y + y_b, ok & ok_b
        return y, ok

    return jax.lax.cond(jnp.any(unconverged), all_buckets, lambda _: zeros, None)


def _cut_values(a, y, part, onehot, num_slots):
    """Per region: NCut of its 100 threshold bipartitions, each node's bin, and min(y)."""
    member = part < num_slots
    big = jnp.finfo(y.dtype).max
    ymin = jax.vmap(lambda v, p: jnp.full((num_slots + 1,), big).at[p].min(v))(
        jnp.where(member, y, big), part)[:, :num_slots]
    ymax = jax.vmap(lambda v, p: jnp.full((num_slots + 1,), -big).at[p].max(v))(
        jnp.where(member, y, -big), part)[:, :num_slots]
    th = thresholds(ymin, ymax)  # (B, R, 100)
    # bin_i = number of thresholds strictly below y_i; node i is in S_t iff bin_i > t.
    bins = jnp.sum(per_node(th, part) < y[..., None], axis=-1)
    d = jnp.sum(a, axis=-1)
    onehot_bins = jax.nn.one_hot(bins, NUM_THRESHOLDS + 1, dtype=a.dtype) * member[..., None]
    # below[i, t] = sum of a[i, j] over the j with bin_j <= t (j in i's region: a is block-diagonal).
    below = jnp.cumsum(jnp.matmul(a, onehot_bins, precision=HIGHEST), axis=-1)[..., :NUM_THRESHOLDS]
    inside = (bins[..., None] > jnp.arange(NUM_THRESHOLDS)) & member[..., None]
    cut = segment_sum(onehot, jnp.where(inside, below, 0.0))  # (B, R, 100)
    vol_in = segment_sum(onehot, jnp.where(inside, d[..., None], 0.0))
    vol_out = segment_sum(onehot, d)[..., None] - vol_in
    ncut = jnp.where((vol_out > 0) & (vol_in > 0), cut * (1.0 / vol_in + 1.0 / vol_out), jnp.nan)
    return ncut, bins, ymin


def _step(state: LevelState, weights, zero_rows, finite, tau, *, slots, subspace, max_iter, tol,
          check_every) -> LevelState:
    bsz, n = state.region.shape
    r = slots
    # Up to `slots` pending regions per image, lowest ids first.
    rank = jnp.cumsum(state.pending, axis=1) - 1
    selected = state.pending & (rank < r)
    slot_of_region = jnp.where(selected, rank, r)
    region_of_slot = jax.vmap(lambda s: jnp.nonzero(s, size=r, fill_value=n)[0])(selected)
    node_slot = jnp.take_along_axis(slot_of_region, state.region, axis=1)
    # The root (visited first, alone) keeps every node; deeper regions drop the exact-zero rows.
    active = (node_slot < r) & ((state.step == 0) | ~zero_rows)
    count = jax.vmap(lambda a, s: jnp.zeros((r + 1,), jnp.int32).at[s].add(a))(
        active.astype(jnp.int32), node_slot)[:, :r]
    can_split = (count > 1) & finite[:, None]
    part = jnp.where(active & per_node(can_split, node_slot), node_slot, r)
    onehot = jax.nn.one_hot(part, r, dtype=weights.dtype)
    same = (part[:, :, None] == part[:, None, :]) & (part < r)[:, :, None]
    a = jnp.where(same, weights, 0.0)

    small = can_split & (count <= SMALL)
    large = can_split & ~small
    y_small, ok_small = _blocked_fiedler(weights, part, small, r, SMALL, r)
    in_large = per_node(large, part)
    big = spectral.region_fiedler_vectors(
        jnp.where(in_large[..., None], a, 0.0), jnp.where(in_large, part, r), r,
        subspace=subspace, max_iter=max_iter, tol=tol, check_every=check_every)
    # Regions whose subspace iteration did not converge (or gave up early): all solved densely
    # in this step, together, in blocks of their size.
    unconverged = large & ~big.converged
    y_dense, ok_dense = _dense_fallback(weights, part, unconverged, count, r)
    ok = jnp.where(small, ok_small, True) & ok_dense
    y = y_small + big.vector + y_dense

    # Deterministic sign per region: its entry of largest magnitude is positive (first on ties).
    member = part < r
    absy = jnp.where(member, jnp.abs(y), -1.0)
    top = jax.vmap(lambda v, p: jnp.full((r + 1,), -1.0).at[p].max(v))(absy, part)[:, :r]
    at_top = member & (absy == per_node(top, part))
    first_top = jax.vmap(lambda m, p: jnp.full((r + 1,), n).at[p].min(jnp.where(m, jnp.arange(n), n)))(
        at_top, part)[:, :r]
    y_top = jnp.take_along_axis(y, jnp.minimum(first_top, n - 1), axis=1)
    y = y * per_node(jnp.where(y_top < 0, -1.0, 1.0), part)
    ncut, bins, ymin = _cut_values(a, y, part, onehot, r)
    best = jnp.argmin(jnp.where(jnp.isnan(ncut), jnp.inf, ncut), axis=-1)  # (B, R)
    best_value = jnp.take_along_axis(ncut, best[..., None], axis=-1)[..., 0]
    nan_stop = jnp.isnan(ncut[..., 0]) | (ymin > 0)
    proper = ok & ~nan_stop & jnp.isfinite(best_value)
    accept = can_split & proper & (best_value < tau[:, None])

    new_id = state.num_regions[:, None] + jnp.cumsum(accept, axis=1) - 1  # (B, R)
    inside = (part < r) & (bins > per_node(best, part))
    move = (node_slot < r) & per_node(accept, node_slot) & ~inside
    region = jnp.where(move, per_node(new_id, node_slot), state.region)

    visited_slots = selected  # over region ids
    pending = state.pending & ~visited_slots
    reopen = jnp.where(accept, region_of_slot, n)
    pending = jax.vmap(lambda p, i, j: p.at[i].set(True, mode="drop").at[j].set(True, mode="drop"))(
        pending, reopen, jnp.where(accept, new_id, n))
    n_accept = jnp.sum(accept, axis=1).astype(jnp.int32)
    return LevelState(
        region=region,
        pending=pending,
        num_regions=state.num_regions + n_accept,
        num_splits=state.num_splits + n_accept,
        visited=state.visited + jnp.sum(visited_slots, axis=1).astype(jnp.int32),
        dense=state.dense + jnp.sum(unconverged, axis=1).astype(jnp.int32),
        step=state.step + 1,
    )


def recursive_ncut_level(features, tau, alpha, *, slots: int = 16, subspace: int = 16,
                         max_iter: int = 300, tol: float = 1e-5, check_every: int = 4):
    """(B, N, C) features, (B,) tau and alpha -> region ids (B, N) and the counters.

    Returns (region, num_regions, num_splits, visited, dense_fallbacks); region ids are in
    [0, num_regions) but not in a canonical order (see `ncut.canonical_labels`).
    """
    bsz, n, _ = features.shape
    aff = batched_affinity(features, alpha)
    init = LevelState(
        region=jnp.zeros((bsz, n), jnp.int32),
        pending=jnp.zeros((bsz, n), bool).at[:, 0].set(True),
        num_regions=jnp.ones((bsz,), jnp.int32),
        num_splits=jnp.zeros((bsz,), jnp.int32),
        visited=jnp.zeros((bsz,), jnp.int32),
        dense=jnp.zeros((bsz,), jnp.int32),
        step=jnp.int32(0),
    )
    step = functools.partial(_step, weights=aff.weights, zero_rows=aff.zero_rows,
                             finite=aff.finite, tau=tau, slots=slots, subspace=subspace,
                             max_iter=max_iter, tol=tol, check_every=check_every)
    out = jax.lax.while_loop(lambda s: jnp.any(s.pending), step, init)
    return out.region, out.num_regions, out.num_splits, out.visited, out.dense
