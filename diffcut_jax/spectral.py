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

from typing import NamedTuple

import jax
import jax.numpy as jnp

_PAD_EIGENVALUE = 4.0  # above the normalized Laplacian's spectrum [0, 2]: padding sorts last.


class FiedlerResult(NamedTuple):
    vector: jnp.ndarray  # (n,) y = D^-1/2 u, zero on padding
    iterations: jnp.ndarray  # subspace iterations run (int32)
    used_dense: jnp.ndarray  # bool: the dense fallback was needed
    ok: jnp.ndarray  # bool: finite result


def _matvec(a: jnp.ndarray, dm: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    return dm[:, None] * (a @ (dm[:, None] * v))


def _orthonormalize(v: jnp.ndarray) -> jnp.ndarray:
    q, _ = jnp.linalg.qr(v)
    return q


def _dense_fiedler(a: jnp.ndarray, valid: jnp.ndarray, dm: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
    m = dm[:, None] * a * dm[None, :]
    n = a.shape[0]
    lap = jnp.eye(n, dtype=a.dtype) - m
    lap = jnp.where(valid[:, None] & valid[None, :], lap, 0.0)
    lap = lap + jnp.diag(jnp.where(valid, 0.0, _PAD_EIGENVALUE))
    _, vecs = jnp.linalg.eigh(lap)
    u = vecs[:, 1]
    # The trivial eigenvector is known exactly: project it out of the float noise.
    u = u - q * (q @ u)
    return u / jnp.maximum(jnp.linalg.norm(u), 1e-30)


def fiedler_vector(
    a: jnp.ndarray,
    valid: jnp.ndarray,
    *,
    block: int = 16,
    max_iter: int = 300,
    tol: float = 1e-5,
) -> FiedlerResult:
    """Second eigenvector of the normalized Laplacian of affinity `a` (n, n), mapped by D^-1/2.

    Args:
      a: symmetric non-negative affinities; padding rows/columns must be zero.
      valid: (n,) bool, the real nodes (at least two).
      block: subspace size; should exceed the number of near-components expected.
      max_iter: subspace iterations before falling back to a dense solve.
      tol: residual ||M u - theta u|| accepted for the Ritz vector (unit u).

    Returns:
      FiedlerResult; `vector` is not sign-normalized.
    """
    n = a.shape[0]
    b = min(block, n)
    dtype = a.dtype
    d = jnp.sum(a, axis=1)
    d_safe = jnp.where(valid & (d > 0), d, 1.0)
    dm = jnp.where(valid, jax.lax.rsqrt(d_safe), 0.0)
    q = jnp.where(valid, jnp.sqrt(d_safe), 0.0)
    q = q / jnp.linalg.norm(q)

    def deflate(v):
        return (v - q[:, None] * (q @ v)[None, :]) * valid[:, None]

    # Deterministic start: a fixed pseudo-random block (any fixed choice works; this avoids
    # a start orthogonal to the wanted vector).
    v0 = jax.random.normal(jax.random.PRNGKey(0), (n, b), dtype)
    v0 = _orthonormalize(deflate(v0))

    def ritz(v):
        z = deflate(_matvec(a, dm, v))
        t = v.T @ z
        t = 0.5 * (t + t.T)
        theta, s = jnp.linalg.eigh(t)
        u = v @ s[:, -1]
        res = jnp.linalg.norm(z @ s[:, -1] - theta[-1] * u)
        return z, s, u, res

    def cond(state):
        it, _, _, res = state
        return (it < max_iter) & ~(res <= tol)

    def body(state):
        it, v, _, _ = state
        z, s, u, res = ritz(v)
        # Next basis: the rotated image M V (one matvec per iteration); keeps the Ritz order.
        v_next = _orthonormalize(deflate(z @ s))
        return it + 1, v_next, u, res

    init = (jnp.int32(0), v0, jnp.zeros((n,), dtype), jnp.asarray(jnp.inf, dtype))
    iters, _, u_iter, res = jax.lax.while_loop(cond, body, init)
    converged = res <= tol

    u = jax.lax.cond(
        converged,
        lambda: u_iter,
        lambda: _dense_fiedler(a, valid, dm, q),
    )
    y = dm * u
    ok = jnp.all(jnp.isfinite(y))
    return FiedlerResult(vector=jnp.where(ok, y, 0.0), iterations=iters, used_dense=~converged, ok=ok)
