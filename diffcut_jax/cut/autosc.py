"""AutoSC, the paper's automated spectral clustering variant (docs/algorithm.md §5).

For alpha in (1, 5, 10, 15): eigen-decompose the normalized Laplacian of W ** alpha and score the
eigengaps `(lambda_i - cummean_i) / (cummean_i + 1e-6)`; keep the alpha with the largest maximum
score and k = the index of that maximum. Then k-way clustering of the D^-1/2-mapped eigenvectors
by Damle et al.'s column-pivoted QR method.

Original bug, reproduced by default (the published numbers came from it): the clustering uses the
eigenvectors of the last alpha tried, not of the chosen one. `use_chosen_alpha=True` fixes it.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from diffcut_jax.cut.graph import HIGHEST, batched_min_max_similarity
from diffcut_jax.cut.labels import consecutive

DEFAULT_ALPHAS = (1.0, 5.0, 10.0, 15.0)
# At most this many clusters: the clustering's arrays are (N, K) and (K, K), not (N, N). The
# eigengap's argmax lies far below it except on degenerate maps (docs/differences.md).
MAX_CLUSTERS = 128


class Spectrum(NamedTuple):
    eigenvalues: jnp.ndarray  # (N,) ascending
    vectors: jnp.ndarray  # (N, N) D^-1/2-mapped eigenvectors (columns)


def normalized_spectrum(a: jnp.ndarray) -> Spectrum:
    d = jnp.sum(a, axis=1)
    dm = jax.lax.rsqrt(d)
    lap = jnp.eye(a.shape[0], dtype=a.dtype) - dm[:, None] * a * dm[None, :]
    vals, vecs = jnp.linalg.eigh(lap)
    return Spectrum(vals, dm[:, None] * vecs)


def eigengap_scores(eigenvalues: jnp.ndarray) -> jnp.ndarray:
    cummean = jnp.cumsum(eigenvalues) / jnp.arange(1, eigenvalues.shape[0] + 1)
    return (eigenvalues - cummean) / (cummean + 1e-6)


def qr_pivots(v: jnp.ndarray, k) -> jnp.ndarray:
    """The first k pivots of the column-pivoted QR of v^T, v (N, K) with columns >= k zero:
    (K,) int32 row indices of v, the first k valid; k may be traced.

    Greedy Gram-Schmidt with column pivoting: take the row of v with the largest remaining norm
    (the first on ties), remove its direction from every row, k times. This is the pivot order of
    LAPACK's geqp3 in exact arithmetic, in plain jnp: it lowers everywhere (geqp3 has no TPU
    lowering and runs on the host on CUDA) and loops k times, not N.
    """
    n, kmax = v.shape

    def step(j, state):
        r, piv, taken = state
        norms = jnp.where(taken, -1.0, jnp.sum(r * r, axis=1))
        p = jnp.argmax(norms)
        q = r[p] / jnp.maximum(jnp.linalg.norm(r[p]), 1e-30)
        r = r - jnp.outer(jnp.matmul(r, q, precision=HIGHEST), q)
        return r, piv.at[j].set(p.astype(jnp.int32)), taken.at[p].set(True)

    state = (v, jnp.zeros((kmax,), jnp.int32), jnp.zeros((n,), bool))
    return jax.lax.fori_loop(0, k, step, state)[1]


def cluster_qr(vectors: jnp.ndarray, k, max_clusters: int = MAX_CLUSTERS) -> jnp.ndarray:
    """Damle et al.'s CPQR clustering of the first k columns of `vectors` (N, M); k may be traced
    (at most `max_clusters`, a static bound that keeps every array k-sized, not N-sized).

    The pivots' k x k block B = V[piv[:k], :k]: U, _, Vt = svd(B^T), labels = argmax_j |V U Vt|.
    B^T is embedded in a (K, K) matrix with the identity on the padding, whose polar factor is
    that of B^T with the identity beside it, so the padding changes nothing.
    """
    n, m = vectors.shape
    kmax = min(max_clusters, m)
    k = jnp.minimum(k, kmax)
    cols = jnp.arange(kmax) < k
    v = jnp.where(cols[None, :], vectors[:, :kmax], 0.0)
    piv = qr_pivots(v, k)
    block = jnp.where(cols[:, None], v[piv], 0.0).T + jnp.diag((~cols).astype(v.dtype))
    u, _, vt = jnp.linalg.svd(block)
    scores = jnp.abs(jnp.matmul(v, jnp.matmul(u, vt, precision=HIGHEST), precision=HIGHEST))
    scores = jnp.where(cols[None, :], scores, -1.0)
    return jnp.argmax(scores, axis=1).astype(jnp.int32)


def _autosc_single(w_sim, ok, alphas, use_chosen_alpha, return_info, *, shape):
    """One image's min-max similarities (N, N) and validity -> labels of `shape` (h, w)."""
    n = w_sim.shape[0]
    spectra = [normalized_spectrum(jnp.power(w_sim, a)) for a in alphas]
    best = jnp.stack([jnp.max(eigengap_scores(s.eigenvalues)) for s in spectra])
    which = jnp.argmax(best)
    k_all = jnp.stack([jnp.argmax(eigengap_scores(s.eigenvalues)) for s in spectra])
    k = jnp.minimum(jnp.maximum(k_all[which], 1), MAX_CLUSTERS)
    if use_chosen_alpha:
        vectors = jnp.stack([s.vectors for s in spectra])[which]
    else:
        vectors = spectra[-1].vectors
    labels = consecutive(cluster_qr(vectors, k), n)
    labels = jnp.where(ok & jnp.all(jnp.isfinite(vectors)), labels, 0).reshape(shape)
    if return_info:
        return labels, {"alpha": jnp.asarray(alphas)[which], "k": k}
    return labels


def autosc(
    features: jnp.ndarray,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    use_chosen_alpha: bool = False,
    return_info: bool = False,
):
    """AutoSC labels at feature resolution: (h, w, C) -> int32 (h, w), consecutive from 0.

    Batched (B, h, w, C) -> (B, h, w). Upsample with `assign_concepts` as for NCut.
    `use_chosen_alpha=False` reproduces the original (eigenvectors of the last alpha).
    Constant or non-finite features give one segment.
    """
    alphas = tuple(float(a) for a in alphas)
    if not alphas:
        raise ValueError("autosc: alphas must not be empty")
    if features.ndim not in (3, 4):
        raise ValueError(f"autosc: features must be (h, w, C) or (B, h, w, C), got {features.shape}")
    return _autosc_jit(features, alphas=alphas, use_chosen_alpha=bool(use_chosen_alpha),
                       return_info=bool(return_info))


@functools.partial(jax.jit, static_argnames=("alphas", "use_chosen_alpha", "return_info"))
def _autosc_jit(features, *, alphas, use_chosen_alpha, return_info):
    batched = features.ndim == 4
    feats = features if batched else features[None]
    bsz, h, w, c = feats.shape
    # The graph for the whole batch (see `batched_min_max_similarity`); then, dense eigh per
    # image with no data-dependent branches, the batch is vmapped.
    w_sim, ok = batched_min_max_similarity(feats.reshape(bsz, h * w, c))
    fn = functools.partial(_autosc_single, alphas=alphas, use_chosen_alpha=use_chosen_alpha,
                           return_info=return_info, shape=(h, w))
    out = jax.vmap(fn)(w_sim, ok)
    return out if batched else jax.tree.map(lambda x: x[0], out)
