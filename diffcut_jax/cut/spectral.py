"""The Fiedler vector of a (padded) affinity block: the one eigenvector each NCut split needs.

We want u, the eigenvector of the second-smallest eigenvalue of the normalized Laplacian
`I - M`, with `M = D^-1/2 A D^-1/2`, i.e. the eigenvector of the second-largest eigenvalue of M.
The largest is known in closed form (eigenvalue 1, vector sqrt(d)), so we deflate it exactly.

With alpha = 10 the top of M's spectrum is a tight cluster (one eigenvalue near 1 per
near-component, gaps ~1e-5), well separated from a bulk below ~0.5. A single-vector iterative
solver converges to the wrong member of that cluster, but a block subspace iteration converges
to the whole cluster's invariant subspace at the rate of the bulk (fast), and Rayleigh-Ritz inside
that subspace then separates the cluster members as accurately as a dense solver in the same
precision. If the block is too small for the cluster (many near-components), the residual stays
large and we fall back to a dense `eigh`.

Padding: the block has a fixed size; rows/columns of padding are zero in `A` and excluded through
`valid`. Everything here is shape-static and jit/vmap safe.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffcut_jax.cut.graph import HIGHEST

_PAD_EIGENVALUE = 4.0  # above the normalized Laplacian's spectrum [0, 2]: padding sorts last.
_TINY = 1e-30


# A region whose residual will not reach `tol` within `max_iter` iterations at the rate of its
# last STALL_WINDOW iterations goes to the dense solver at once (after at least STALL_MIN
# iterations), instead of iterating to the cap first: nearly uniform features (random weights)
# give such regions by the hundred.
STALL_WINDOW = 8
STALL_MIN = 24


def stalls(it, res, res_before, max_iter, tol):
    """Whether a residual `res` at iteration `it`, `res_before` STALL_WINDOW iterations earlier,
    is not on course to reach `tol` by `max_iter` (geometric extrapolation of the window)."""
    rate = res / jnp.maximum(res_before, _TINY)
    needed = STALL_WINDOW * jnp.log(tol / jnp.maximum(res, _TINY)) / jnp.log(jnp.minimum(rate, 1.0 - 1e-6))
    return (it >= STALL_MIN) & (res > tol) & ((rate >= 1.0) | (it + needed > max_iter))


class FiedlerResult(NamedTuple):
    vector: jnp.ndarray  # (n,) y = D^-1/2 u, zero on padding
    iterations: jnp.ndarray  # subspace iterations run (int32)
    used_dense: jnp.ndarray  # bool: the dense fallback was needed
    ok: jnp.ndarray  # bool: finite result


# HIGHEST: TF32/bf16 passes (the GPU/TPU defaults) stall the iteration.


def _mm(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    return jnp.matmul(a, b, precision=HIGHEST)


def _matvec(a: jnp.ndarray, dm: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    return dm[:, None] * _mm(a, dm[:, None] * v)


def _orthonormalize(v: jnp.ndarray) -> jnp.ndarray:
    q, _ = jnp.linalg.qr(v)
    return q


def _degree_terms(a: jnp.ndarray, valid: jnp.ndarray):
    """D^-1/2 on the valid nodes (0 elsewhere) and the unit trivial eigenvector sqrt(d)."""
    d = jnp.sum(a, axis=-1)
    d_safe = jnp.where(valid & (d > 0), d, 1.0)
    dm = jnp.where(valid, jax.lax.rsqrt(d_safe), 0.0)
    q = jnp.where(valid, jnp.sqrt(d_safe), 0.0)
    return dm, q / jnp.linalg.norm(q, axis=-1, keepdims=True)


def _dense_fiedler(a: jnp.ndarray, valid: jnp.ndarray, dm: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
    m = dm[:, None] * a * dm[None, :]
    n = a.shape[0]
    lap = jnp.eye(n, dtype=a.dtype) - m
    lap = jnp.where(valid[:, None] & valid[None, :], lap, 0.0)
    lap = lap + jnp.diag(jnp.where(valid, 0.0, _PAD_EIGENVALUE))
    _, vecs = jnp.linalg.eigh(lap)
    u = vecs[:, 1]
    # The trivial eigenvector is known exactly: project it out of the float noise.
    u = u - q * _mm(q, u)
    return u / jnp.maximum(jnp.linalg.norm(u), 1e-30)


def dense_fiedler_vector(a: jnp.ndarray, valid: jnp.ndarray) -> FiedlerResult:
    """`fiedler_vector` by a dense `eigh` only (small blocks, and the fallback)."""
    dm, q = _degree_terms(a, valid)
    y = dm * _dense_fiedler(a, valid, dm, q)
    ok = jnp.all(jnp.isfinite(y))
    return FiedlerResult(jnp.where(ok, y, 0.0), jnp.int32(0), jnp.asarray(True), ok)


def fiedler_vector(
    a: jnp.ndarray,
    valid: jnp.ndarray,
    *,
    subspace: int = 16,
    max_iter: int = 300,
    tol: float = 1e-5,
) -> FiedlerResult:
    """Second eigenvector of the normalized Laplacian of affinity `a` (n, n), mapped by D^-1/2.

    Args:
      a: symmetric non-negative affinities; padding rows/columns must be zero.
      valid: (n,) bool, the real nodes (at least two).
      subspace: subspace size (columns); should exceed the number of near-components expected.
      max_iter: subspace iterations before falling back to a dense solve (sooner when the
        residual's rate shows it will not reach `tol` in time, see `stalls`).
      tol: residual ||M u - theta u|| accepted for the Ritz vector (unit u).

    Returns:
      FiedlerResult; `vector` is not sign-normalized.
    """
    n = a.shape[0]
    b = min(subspace, n)
    dtype = a.dtype
    dm, q = _degree_terms(a, valid)

    def deflate(v):
        return (v - q[:, None] * _mm(q, v)[None, :]) * valid[:, None]

    # Deterministic start: a fixed pseudo-random block (any fixed choice works; this avoids
    # a start orthogonal to the wanted vector).
    v0 = jax.random.normal(jax.random.PRNGKey(0), (n, b), dtype)
    v0 = _orthonormalize(deflate(v0))

    def ritz(v):
        z = deflate(_matvec(a, dm, v))
        t = _mm(v.T, z)
        t = 0.5 * (t + t.T)
        theta, s = jnp.linalg.eigh(t)
        u = _mm(v, s[:, -1])
        res = jnp.linalg.norm(_mm(z, s[:, -1]) - theta[-1] * u)
        return z, s, u, res

    def cond(state):
        it, _, _, res, _, stalled = state
        return (it < max_iter) & ~(res <= tol) & ~stalled

    def body(state):
        it, v, _, _, res_window, stalled = state
        z, s, u, res = ritz(v)
        # Next basis: the rotated image M V (one matvec per iteration); keeps the Ritz order.
        v_next = _orthonormalize(deflate(_mm(z, s)))
        it = it + 1
        at_window = it % STALL_WINDOW == 0
        stalled = stalled | (at_window & stalls(it, res, res_window, max_iter, tol))
        return it, v_next, u, res, jnp.where(at_window, res, res_window), stalled

    inf = jnp.asarray(jnp.inf, dtype)
    init = (jnp.int32(0), v0, jnp.zeros((n,), dtype), inf, inf, jnp.asarray(False))
    iters, _, u_iter, res, _, _ = jax.lax.while_loop(cond, body, init)
    converged = res <= tol

    u = jax.lax.cond(
        converged,
        lambda: u_iter,
        lambda: _dense_fiedler(a, valid, dm, q),
    )
    y = dm * u
    ok = jnp.all(jnp.isfinite(y))
    return FiedlerResult(vector=jnp.where(ok, y, 0.0), iterations=iters, used_dense=~converged, ok=ok)


# ---------------------------------------------------------------------------------------------
# Many regions at once (the level-synchronous NCut): one Fiedler vector per region of a batch.
#
# The regions of one image are disjoint node sets, so a block-diagonal affinity (zero between
# regions) applies every region's operator in one dense (B, N, N) matmul. Each node keeps its row
# of its own region's subspace basis; the per-region small matrices (Gram, Rayleigh quotient,
# b x b) are sums over the region's nodes, taken with a one-hot (B, N, R) contraction, which is
# deterministic (a scatter-add on GPUs is not).


class RegionFiedlerResult(NamedTuple):
    vector: jnp.ndarray  # (B, N) y = D^-1/2 u of each node's region, zero off the regions
    converged: jnp.ndarray  # (B, R) bool
    iterations: jnp.ndarray  # (B, R) int32 iterations until convergence (or the cap)


def segment_sum(onehot: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """(B, N, R) one-hot, (B, N, ...) -> (B, R, ...) per-region sums."""
    return jnp.einsum("bnr,bn...->br...", onehot, x, precision=HIGHEST)


def per_node(y: jnp.ndarray, slot: jnp.ndarray) -> jnp.ndarray:
    """(B, R, ...) per-region values -> (B, N, ...) at each node's region; slot R gives zeros."""
    pad = jnp.zeros(y.shape[:1] + (1,) + y.shape[2:], y.dtype)
    return jax.vmap(lambda v, s: v[s])(jnp.concatenate([y, pad], axis=1), slot)


def region_fiedler_vectors(
    a: jnp.ndarray,
    slot: jnp.ndarray,
    num_slots: int,
    *,
    subspace: int = 16,
    max_iter: int = 300,
    tol: float = 1e-5,
    check_every: int = 4,
) -> RegionFiedlerResult:
    """`fiedler_vector` of every region of a batch, by block subspace iteration per region.

    Args:
      a: (B, N, N) block-diagonal affinities: a[b, i, j] = 0 unless i and j are in one region.
      slot: (B, N) int32, each node's region in [0, num_slots); num_slots = not in any region.
        Every region should hold more than `subspace` nodes (smaller ones: `dense_fiedler_vector`).
      subspace, max_iter, tol: as `fiedler_vector`; a region that has not converged after
        `max_iter` iterations, or is not on course to (`stalls`), is reported in `converged`
        (the caller falls back to a dense solve).
      check_every: iterations between convergence tests of the whole batch. Each test is one
        device -> host round trip on GPUs; a region's result is frozen at the iteration where it
        converged, so the value does not change the results.
    """
    bsz, n, _ = a.shape
    r = num_slots
    dtype = a.dtype
    member = slot < r
    onehot = jax.nn.one_hot(slot, r, dtype=dtype)  # slot == r: a zero row
    seg = functools.partial(segment_sum, onehot)
    at = functools.partial(per_node, slot=slot)

    d = jnp.sum(a, axis=-1)
    d_safe = jnp.where(member & (d > 0), d, 1.0)
    dm = jnp.where(member, jax.lax.rsqrt(d_safe), 0.0)
    q = jnp.where(member, jnp.sqrt(d_safe), 0.0)
    q = q * at(jax.lax.rsqrt(jnp.maximum(seg(q * q), _TINY)))

    def deflate(v):
        return (v - q[..., None] * at(seg(q[..., None] * v))) * member[..., None]

    def orthonormalize(y):
        # Unit columns, then twice y <- y G^-1/2 with G the region's Gram matrix: the first pass
        # leaves O(eps / lambda_min) errors, the second removes them. Exactly-zero columns (an
        # exhausted region) stay zero and are flagged by the caller.
        y = y * at(jax.lax.rsqrt(jnp.maximum(seg(y * y), _TINY)))
        for _ in range(2):
            g = jnp.einsum("bnr,bni,bnj->brij", onehot, y, y, precision=HIGHEST)
            lam, u = jnp.linalg.eigh(g)
            f = jax.lax.rsqrt(jnp.maximum(lam, 1e-7 * jnp.maximum(lam[..., -1:], _TINY)))
            f = jnp.where(lam > 0, f, 0.0)
            t = jnp.einsum("brik,brk,brjk->brij", u, f, u, precision=HIGHEST)
            y = jnp.einsum("bni,bnij->bnj", y, at(t), precision=HIGHEST)
        return y

    b = min(subspace, n)
    v0 = jax.random.normal(jax.random.PRNGKey(0), (n, b), dtype)
    v = orthonormalize(deflate(jnp.broadcast_to(v0, (bsz, n, b)) * member[..., None]))
    present = seg(member.astype(dtype)) > 0  # (B, R)
    eye = jnp.eye(b, dtype=dtype)

    def iteration(_, carry):
        v, u_out, done, iters, _, res_window, gave_up = carry
        z = deflate(dm[..., None] * jnp.matmul(a, dm[..., None] * v, precision=HIGHEST))
        t = jnp.einsum("bnr,bni,bnj->brij", onehot, v, z, precision=HIGHEST)
        t = 0.5 * (t + jnp.swapaxes(t, -1, -2))
        # Null columns (a region with fewer independent directions than the block) sort last.
        null = seg(v * v) < 0.5
        t = t - _PAD_EIGENVALUE * null[..., None, :] * eye
        theta, s = jnp.linalg.eigh(t)
        s_node = at(s)  # (B, N, b, b)
        u = jnp.einsum("bni,bni->bn", v, s_node[..., -1], precision=HIGHEST)
        res_vec = jnp.einsum("bni,bni->bn", z, s_node[..., -1], precision=HIGHEST)
        res_vec = res_vec - at(theta[..., -1]) * u
        res = jnp.sqrt(seg(res_vec * res_vec))
        newly = ~done & (res <= tol)
        u_out = jnp.where(at(newly), u, u_out)
        iters = iters + (~done).astype(jnp.int32)
        done = done | newly
        v = orthonormalize(deflate(jnp.einsum("bni,bnij->bnj", z, s_node, precision=HIGHEST)))
        return v, u_out, done, iters, res, res_window, gave_up

    def cond(carry):
        done, iters = carry[2], carry[3]
        return jnp.any(~done) & (jnp.max(iters) < max_iter)

    def chunk(carry):
        carry = jax.lax.fori_loop(0, check_every, iteration, carry, unroll=True)
        v, u_out, done, iters, res, res_window, gave_up = carry
        # A region whose residual is not on course for `tol` by `max_iter` gives up now and goes
        # to the dense solver (reported as not converged), rather than iterating to the cap.
        it = jnp.max(iters)
        at_window = it % STALL_WINDOW < check_every
        stalled = at_window & ~done & stalls(it, res, res_window, max_iter, tol)
        res_window = jnp.where(at_window, res, res_window)
        return v, u_out, done | stalled, iters, res, res_window, gave_up | stalled

    inf = jnp.full((bsz, r), jnp.inf, dtype)
    init = (v, jnp.zeros((bsz, n), dtype), ~present, jnp.zeros((bsz, r), jnp.int32), inf, inf,
            jnp.zeros((bsz, r), bool))
    _, u, done, iters, _, _, gave_up = jax.lax.while_loop(cond, chunk, init)
    done = done & present & ~gave_up
    y = jnp.where(at(done), dm * u, 0.0)
    return RegionFiedlerResult(y, done, iters)
