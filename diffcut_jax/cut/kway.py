"""Discrete K-way normalized cut by proximal linearization (Falcon, ICLR 2026; docs/algorithm.md §8).

The graph is the recursive NCut's (`graph.affinity`, built for the batch by
`graph.batched_affinity`: min-max cosine similarities to the power alpha), so the two cuts differ
only in how they partition it. With a one-hot assignment X (N x K),
degrees d = W 1, q_k = x_k^T W x_k and v_k = d^T x_k, the solver maximises the normalised
association f(X) = sum_k q_k / v_k (the K-way NCut is K - f):

  * scores mu_ik = 2 (W X)_ik / v_k - d_i q_k / v_k^2 (the gradient of f, volume taken as linear);
  * step: every row takes argmax_k (mu_ik + t X_ik), i.e. moves iff its gain over its own label
    exceeds the inertia t;
  * monotone backtracking: the step is kept iff f(X+) >= f(X) + delta t/2 ||X+ - X||^2, else t
    grows by `growth`. t is `rho` times the largest gain of the image (so it follows the scores'
    scale); `rho` shrinks after a kept step and grows after a refused one, one trial per loop
    iteration, so backtracking needs no nested loop. f never decreases.
  * empty clusters drop out (v_k = 0: no row may join them), so K only shrinks. An image stops
    when no row has a positive gain, or when even the best single moves are refused.

Two starts: a given partition (`init`, polished: never worse in f), or a spectral one: K is the
number of eigenvalues of D^-1/2 W D^-1/2 above `threshold` (clamped to [min_segments,
max_segments]), found with a block subspace iteration on the leading vectors (no full `eigh`;
chunks of steps until the counted pairs converge, at most `subspace_iters`), and the start is
k-means++ (fixed key) with Lloyd steps on their row-normalised rows.

One `while_loop` per batch: every image and every row updates together, converged images stop
changing. The working width is the smallest bucket of (8, 16, 32, ...) that holds the batch's
largest K (one `lax.switch` per call), so the (N, N) x (N, K) products follow the real segment
count. Every product is at HIGHEST precision (TF32 changes partitions).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffcut_jax.cut.batching import merge_vmap
from diffcut_jax.cut.buckets import smallest_bucket
from diffcut_jax.cut.graph import HIGHEST, batched_affinity, canonical_labels

STARTS = ("spectral", "labels")
# Our constants where the paper gives none (chosen on the fixtures and planted partitions,
# benchmarks/kway.py; docs/differences.md).
DEFAULT_THRESHOLD = 0.9
DELTA = 0.5  # sufficient increase: half the inertia-weighted squared step
GROWTH = 2.0  # t grows by this after a refused step, shrinks by it after a kept one
RHO_START = 0.25  # first inertia, as a fraction of the image's largest gain
RHO_MIN = 1.0 / 64.0
RHO_MAX = 0.999  # at this inertia only the best rows move: refused there means converged
OVERSAMPLE = 4  # extra columns of the subspace iteration beyond max_segments
SUBSPACE_ITERS = 8  # at most: 4 find K on the fixtures; near-uniform graphs need more
SUBSPACE_CHUNK = 4  # steps between convergence tests of the spectral start
RESIDUAL_TOL = 0.02  # ||A x - theta x|| of every counted pair (the fixtures': <= 0.01 at 4 steps)
LLOYD_ITERS = 10


class KWayResult(NamedTuple):
    labels: jnp.ndarray  # (B, N) int32, consecutive from 0
    num_segments: jnp.ndarray  # (B,) int32
    iterations: jnp.ndarray  # (B,) int32 loop iterations the image took part in
    objective: jnp.ndarray  # (B,) final f(X)
    history: jnp.ndarray  # (B, max_iter) f after every iteration (NaN once stopped)
    polished: jnp.ndarray  # (B,) bool: the solver ran (False: degenerate, or too many segments)


def _mm(a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


def association(w, d, labels, k: int):
    """(B, N, N) weights, (B, N) degrees, (B, N) labels in [0, k) -> W X, q, v, f."""
    x = jax.nn.one_hot(labels, k, dtype=w.dtype)
    wx = _mm(w, x)
    q = jnp.sum(x * wx, axis=1)
    v = jnp.einsum("bn,bnk->bk", d, x, precision=HIGHEST)
    f = jnp.sum(jnp.where(v > 0, q / jnp.where(v > 0, v, 1.0), 0.0), axis=-1)
    return wx, q, v, f


def scores(wx, d, q, v):
    """mu_ik = 2 (W X)_ik / v_k - d_i q_k / v_k^2; -inf for empty clusters (they stay empty)."""
    vs = jnp.where(v > 0, v, 1.0)[:, None, :]
    mu = 2.0 * wx / vs - d[..., None] * q[:, None, :] / (vs * vs)
    return jnp.where(v[:, None, :] > 0, mu, -jnp.inf)


class _State(NamedTuple):
    labels: jnp.ndarray
    wx: jnp.ndarray
    q: jnp.ndarray
    v: jnp.ndarray
    f: jnp.ndarray
    rho: jnp.ndarray
    done: jnp.ndarray
    iters: jnp.ndarray
    history: jnp.ndarray
    it: jnp.ndarray


class Ascent(NamedTuple):
    labels: jnp.ndarray
    f: jnp.ndarray
    iters: jnp.ndarray
    history: jnp.ndarray


def proximal_ascent(w, d, labels, active, *, k: int, max_iter: int) -> Ascent:
    """The proximal iterations from `labels` (B, N) in [0, k); `active` (B,) images to solve."""
    bsz, n = labels.shape
    wx, q, v, f = association(w, d, labels, k)
    init = _State(labels, wx, q, v, f, jnp.full((bsz,), RHO_START, w.dtype), ~active,
                  jnp.zeros((bsz,), jnp.int32), jnp.full((bsz, max_iter), jnp.nan, w.dtype),
                  jnp.int32(0))

    def cond(s):
        return jnp.any(~s.done) & (s.it < max_iter)

    def body(s):
        mu = scores(s.wx, d, s.q, s.v)
        own = jnp.take_along_axis(mu, s.labels[..., None], axis=-1)[..., 0]
        best = jnp.argmax(mu, axis=-1).astype(jnp.int32)
        gain = jnp.max(mu, axis=-1) - own
        g = jnp.max(gain, axis=-1)
        stationary = ~(g > 0)
        t = s.rho * g
        move = (gain > t[:, None]) & ~s.done[:, None]
        cand = jnp.where(move, best, s.labels)
        wx_c, q_c, v_c, f_c = association(w, d, cand, k)
        changed = jnp.sum(move, axis=-1).astype(w.dtype)
        # ||X+ - X||_F^2 = 2 * changed rows.
        accept = ~s.done & ~stationary & (f_c >= s.f + DELTA * t * changed)
        refused = ~s.done & ~stationary & ~accept
        give_up = refused & (s.rho >= RHO_MAX)
        sel = lambda a, b: jnp.where(accept.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
        rho = jnp.where(accept, jnp.maximum(s.rho / GROWTH, RHO_MIN),
                        jnp.where(refused, jnp.minimum(s.rho * GROWTH, RHO_MAX), s.rho))
        f = sel(f_c, s.f)
        running = ~s.done
        done = s.done | stationary | give_up
        history = s.history.at[:, s.it].set(jnp.where(running, f, jnp.nan))
        return _State(sel(cand, s.labels), sel(wx_c, s.wx), sel(q_c, s.q), sel(v_c, s.v), f, rho,
                      done, s.iters + running.astype(jnp.int32), history, s.it + 1)

    s = jax.lax.while_loop(cond, body, init)
    return Ascent(s.labels, s.f, s.iters, s.history)


def _orthonormalize(v, passes: int = 2):
    """Orthonormal columns spanning v's (B, N, m), by two passes of v <- v G^-1/2 with G the
    (m, m) Gram matrix: a few small products instead of a Householder QR of the tall block
    (which costs three times the matvec on CPU)."""
    for _ in range(passes):
        g = jnp.einsum("bni,bnj->bij", v, v, precision=HIGHEST)
        lam, u = jnp.linalg.eigh(g)
        f = jax.lax.rsqrt(jnp.maximum(lam, 1e-7 * jnp.maximum(lam[..., -1:], 1e-30)))
        v = _mm(v, jnp.einsum("bik,bk,bjk->bij", u, f, u, precision=HIGHEST))
    return v


def spectral_count(theta, threshold, *, min_segments: int, max_segments: int):
    """K per image: eigenvalues (B, columns), descending, above `threshold` (B,), clamped."""
    count = jnp.sum(theta[:, :max_segments] > threshold[:, None], axis=-1)
    return jnp.clip(count, min_segments, max_segments).astype(jnp.int32)


def leading_eigenpairs(w, d, columns: int, iters: int, *, threshold, min_segments: int,
                       max_segments: int, tol: float = RESIDUAL_TOL):
    """The `columns` leading eigenpairs of D^-1/2 W D^-1/2 per image, by block subspace iteration
    and Rayleigh-Ritz: (B, columns) eigenvalues descending, (B, N, columns) vectors.

    The spectrum of these graphs is a cluster near 1 (one eigenvalue per near-component) over a
    bulk below it: a few steps separate the two where the bulk is far (the fixtures: 4), more
    where it comes close (nearly uniform features). So the steps run in chunks of
    `SUBSPACE_CHUNK`, at most `iters` in all. An image stops after a chunk once the K pairs it
    counts (`spectral_count`: eigenvalues above `threshold` (B,), K in [min_segments,
    max_segments]) have residuals ||A x - theta x|| below `tol`, and keeps those pairs; the batch
    stops when every image has (one `while_loop`; an image's result does not depend on its
    batch). No (N, N) decomposition."""
    bsz, n, _ = w.shape
    dm = jax.lax.rsqrt(jnp.where(d > 0, d, 1.0))

    def apply(v):
        return dm[..., None] * _mm(w, dm[..., None] * v)

    def steps(v, count):
        # One pass per step keeps the block well conditioned; Ritz orthonormalises fully.
        return jax.lax.fori_loop(0, count, lambda _, v: _orthonormalize(apply(v), passes=1), v)

    def ritz(v):
        q = _orthonormalize(v)
        aq = apply(q)
        t = jnp.einsum("bni,bnj->bij", q, aq, precision=HIGHEST)
        theta, s = jnp.linalg.eigh(0.5 * (t + jnp.swapaxes(t, -1, -2)))
        theta, s = theta[:, ::-1], s[..., ::-1]
        x, ax = _mm(q, s), _mm(aq, s)
        k = spectral_count(theta, threshold, min_segments=min_segments,
                           max_segments=min(max_segments, columns))
        residual = jnp.linalg.norm(ax - x * theta[:, None, :], axis=1)  # (B, columns)
        counted = jnp.arange(columns)[None, :] < k[:, None]
        return theta, x, jnp.all(jnp.where(counted, residual < tol, True), axis=-1)

    chunk = min(SUBSPACE_CHUNK, iters)
    chunks = -(-iters // chunk)
    v0 = jax.random.normal(jax.random.PRNGKey(0), (n, columns), w.dtype)
    v = steps(_orthonormalize(jnp.broadcast_to(v0, (bsz, n, columns))),
              iters - (chunks - 1) * chunk)
    theta, x, done = ritz(v)

    def more(state):
        # A converged image keeps its pairs; its block may go on (it no longer counts).
        c, v, theta, x, done = state
        v = steps(v, chunk)
        theta_new, x_new, converged = ritz(v)
        return (c + 1, v, jnp.where(done[:, None], theta, theta_new),
                jnp.where(done[:, None, None], x, x_new), done | converged)

    state = (jnp.int32(1), v, theta, x, done)
    state = jax.lax.while_loop(lambda s: (s[0] < chunks) & ~jnp.all(s[4]), more, state)
    return state[2], state[3]


def _kmeans_pp(x, k, key, kmax: int, seeds):
    """k-means++ seeds then Lloyd steps on rows of x (N, kmax) (columns >= k zero); k traced.
    `seeds` (traced, >= k): the batch's largest K. Seeding stops there, not at kmax; seeds j < k
    depend only on those before them, so an image's start does not depend on its batch."""
    n = x.shape[0]
    cols = jnp.arange(kmax) < k
    keys = jax.random.split(key, kmax)

    def seed(j, state):
        centres, dist = state
        logits = jnp.log(jnp.maximum(dist, 0.0))
        i = jax.random.categorical(keys[j], jnp.where(jnp.any(dist > 0), logits, 0.0))
        c = x[i]
        centres = jnp.where(j < k, centres.at[j].set(c), centres)
        dist = jnp.minimum(dist, jnp.sum((x - c) ** 2, axis=-1))
        return centres, dist

    first = x[jax.random.randint(keys[0], (), 0, n)]
    centres = jnp.zeros((kmax, kmax), x.dtype).at[0].set(first)
    dist = jnp.sum((x - first) ** 2, axis=-1)
    centres, _ = jax.lax.fori_loop(1, seeds, seed, (centres, dist))

    def assign(centres):
        d2 = (jnp.sum(x * x, -1)[:, None] - 2 * _mm(x, centres.T)
              + jnp.sum(centres * centres, -1)[None, :])
        return jnp.argmin(jnp.where(cols[None, :], d2, jnp.inf), axis=-1).astype(jnp.int32)

    def lloyd(_, centres):
        onehot = jax.nn.one_hot(assign(centres), kmax, dtype=x.dtype)
        count = jnp.sum(onehot, axis=0)
        mean = _mm(onehot.T, x) / jnp.maximum(count, 1.0)[:, None]
        return jnp.where((count > 0)[:, None], mean, centres)

    return assign(jax.lax.fori_loop(0, LLOYD_ITERS, lloyd, centres))


def spectral_start(w, d, threshold, *, min_segments: int, max_segments: int,
                   subspace_iters: int = SUBSPACE_ITERS):
    """K per image from the eigenvalues above `threshold`, and the k-means++ start (B, N)."""
    n = w.shape[1]
    columns = min(max_segments + OVERSAMPLE, n)
    kmax = min(max_segments, n)
    kmin = min(min_segments, n)
    theta, vecs = leading_eigenpairs(w, d, columns, subspace_iters, threshold=threshold,
                                     min_segments=kmin, max_segments=kmax)
    k = spectral_count(theta, threshold, min_segments=kmin, max_segments=kmax)
    emb = jnp.where(jnp.arange(kmax)[None, None, :] < k[:, None, None], vecs[..., :kmax], 0.0)
    emb = emb / jnp.maximum(jnp.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
    key = jax.random.PRNGKey(0)  # the same draw for every image: batch-invariant
    seeds = jnp.max(k)
    labels = jax.vmap(lambda e, kk: _kmeans_pp(e, kk, key, kmax, seeds))(emb, k)
    return labels, k


def _kway_batched(features, alpha, threshold, init, *, start: str, min_segments: int,
                  max_segments: int, max_iter: int, subspace_iters: int) -> KWayResult:
    """(B, N, C) features, (B,) alpha and threshold, (B, N) init (start="labels") -> KWayResult."""
    bsz, n, _ = features.shape
    aff = batched_affinity(features, alpha)
    w = aff.weights
    d = jnp.sum(w, axis=-1)
    if start == "labels":
        labels0 = canonical_labels(jnp.clip(init, 0, n - 1))
        needed = jnp.max(labels0, axis=-1) + 1
        fits = needed <= max_segments
    else:
        labels0, needed = spectral_start(w, d, threshold, min_segments=min_segments,
                                         max_segments=max_segments, subspace_iters=subspace_iters)
        fits = jnp.ones((bsz,), bool)
    ok = aff.finite & fits & (n > 1)
    buckets = tuple(sorted({min(b, max_segments) for b in _widths(max_segments)}))
    branches = [functools.partial(proximal_ascent, k=b, max_iter=max_iter) for b in buckets]
    # Images outside the solve (too many segments, degenerate) keep label 0 in the solve.
    solve_labels = jnp.where(ok[:, None], labels0, 0)
    s = smallest_bucket(jnp.max(jnp.where(ok, needed, 1)), buckets, branches, w, d, solve_labels,
                        ok)
    labels = jnp.where(ok[:, None], s.labels, jnp.where(aff.finite[:, None], labels0, 0))
    labels = canonical_labels(labels)
    return KWayResult(labels, jnp.max(labels, axis=-1) + 1, s.iters, jnp.where(ok, s.f, jnp.nan),
                      s.history, ok)


def _widths(max_segments: int) -> tuple[int, ...]:
    widths, b = [], 8
    while b < max_segments:
        widths.append(b)
        b *= 2
    return tuple(widths) + (max_segments,)


_STATIC = ("start", "min_segments", "max_segments", "max_iter", "subspace_iters")
# Under an outer vmap the extra axis joins the batch: still one loop (and one switch) per call.
_kway_jit = jax.jit(
    lambda f, a, t, i, **kw: merge_vmap(functools.partial(_kway_batched, **kw))(f, a, t, i),
    static_argnames=_STATIC)


def kway_ncut(features, alpha=10.0, *, init=None, threshold=DEFAULT_THRESHOLD,
              min_segments: int = 2, max_segments: int = 32, max_iter: int = 100,
              subspace_iters: int = SUBSPACE_ITERS,
              return_info: bool = False):
    """Segment a feature map by discrete K-way normalized cut (module docstring).

    Args:
      features: (h, w, C) or (B, h, w, C) patch features (computed in float32).
      alpha: affinity exponent, as `recursive_ncut`'s. Traced: no recompile.
      init: optional (h, w) / (B, h, w) partition to polish (e.g. `recursive_ncut`'s labels,
        values in [0, h*w)); its segment count is K. Partitions of more than `max_segments`
        segments are returned unchanged (`info.polished` False). None: the spectral start.
      threshold: spectral start: K = number of eigenvalues of D^-1/2 W D^-1/2 above it. Traced.
      min_segments, max_segments: the spectral start's range for K (and the solver's static
        width: arrays are (N, max_segments) at most, never (N, N) per segment).
      max_iter: loop iterations (each one trial step of every image).
      subspace_iters: spectral start: the most block subspace steps for the leading eigenpairs,
        in chunks of `SUBSPACE_CHUNK`; an image stops once its counted pairs have converged.
        Graphs whose bulk eigenvalues come close to 1 (nearly uniform features) need more.
      return_info: also return a `KWayResult` (objective history, iterations, ...).

    Returns int32 labels (h, w) or (B, h, w), consecutive from 0 in order of first occurrence;
    constant or non-finite features and 1 x 1 maps give one segment. Compiled once per shape and
    static arguments.
    """
    features = jnp.asarray(features)
    if features.ndim not in (3, 4):
        raise ValueError(f"kway_ncut: features must be (h, w, C) or (B, h, w, C), got shape "
                         f"{features.shape}")
    if not 1 <= min_segments <= max_segments:
        raise ValueError(f"kway_ncut: need 1 <= min_segments <= max_segments, got {min_segments}, "
                         f"{max_segments}")
    if max_iter < 1:
        raise ValueError(f"kway_ncut: max_iter must be >= 1, got {max_iter}")
    if subspace_iters < 1:
        raise ValueError(f"kway_ncut: subspace_iters must be >= 1, got {subspace_iters}")
    batched = features.ndim == 4
    feats = features if batched else features[None]
    bsz, h, w, c = feats.shape
    n = h * w
    if init is None:
        start, init_flat = "spectral", jnp.zeros((bsz, n), jnp.int32)
    else:
        init = jnp.asarray(init)
        if init.shape != feats.shape[:3] and not (not batched and init.shape == (h, w)):
            raise ValueError(f"kway_ncut: init must have the features' spatial shape "
                             f"{feats.shape[:3] if batched else (h, w)}, got {init.shape}")
        if not jnp.issubdtype(init.dtype, jnp.integer):
            raise ValueError(f"kway_ncut: init must hold integer labels, got {init.dtype}")
        if not isinstance(init, jax.core.Tracer) and (jnp.min(init) < 0 or jnp.max(init) >= n):
            raise ValueError(f"kway_ncut: init labels must lie in [0, {n}), got "
                             f"[{int(jnp.min(init))}, {int(jnp.max(init))}]")
        start, init_flat = "labels", init.reshape(bsz, n).astype(jnp.int32)
    alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), (bsz,))
    threshold = jnp.broadcast_to(jnp.asarray(threshold, jnp.float32), (bsz,))
    result = _kway_jit(feats.reshape(bsz, n, c).astype(jnp.float32), alpha, threshold, init_flat,
                       start=start, min_segments=int(min_segments),
                       max_segments=int(max_segments), max_iter=int(max_iter),
                       subspace_iters=int(subspace_iters))
    if not batched:
        result = jax.tree.map(lambda x: x[0], result)
    labels = result.labels.reshape(feats.shape[:3] if batched else (h, w))
    return (labels, result) if return_info else labels
