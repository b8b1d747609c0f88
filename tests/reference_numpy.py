"""Independent NumPy/SciPy transcriptions of docs/algorithm.md, used as test oracles (float64, dense).

Written straight from the text, with none of the library's tricks (no compaction, no subspace
iteration, no binned cut values), so agreement is evidence, not tautology.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg


def affinity64(features: np.ndarray, alpha: float):
    x = features.reshape(-1, features.shape[-1]).astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    w = x @ x.T
    w = (w - w.min()) / (w.max() - w.min())
    return w, w**alpha


def recursive_ncut64(features: np.ndarray, tau: float, alpha: float) -> np.ndarray:
    h, w_, _ = features.shape
    n = h * w_
    _, w = affinity64(features, alpha)
    zero_rows = (w == 0).any(axis=1)
    labels = np.zeros(n, np.int64)
    next_label = 1
    stack = [(np.ones(n, bool), 0)]
    while stack:
        region, depth = stack.pop()
        active = region.copy() if depth == 0 else region & ~zero_rows
        idx = np.flatnonzero(active)
        if idx.size <= 1:
            continue
        a = w[np.ix_(idx, idx)]
        d = a.sum(axis=1)
        lap = np.diag(d) - a
        dm = 1.0 / np.sqrt(d)
        _, vecs = np.linalg.eigh(dm[:, None] * lap * dm[None, :])
        y = dm * vecs[:, 1]
        y = y * np.sign(y[np.argmax(np.abs(y))])
        thresholds = np.linspace(0.99 * y.min(), 0.99 * y.max(), 100)
        values = []
        for th in thresholds:
            x = np.where(y > th, 1.0, -1.0)
            k = d[x > 0].sum() / d.sum()
            b = k / (1 - k)
            zz = (1 + x) - b * (1 - x)
            values.append(zz @ lap @ zz / (zz @ (d * zz)))
        values = np.asarray(values)
        if np.isnan(values[0]):
            continue
        best = int(np.argmin(values))
        if values[best] < tau:
            inside = np.zeros(n, bool)
            inside[idx[y > thresholds[best]]] = True
            rest = region & ~inside
            labels[rest] = next_label
            next_label += 1
            stack.append((rest, depth + 1))
            stack.append((inside, depth + 1))
    return labels.reshape(h, w_)


def root_eigenvalues64(features: np.ndarray, alpha: float, count: int = 4) -> np.ndarray:
    _, w = affinity64(features, alpha)
    d = w.sum(axis=1)
    dm = 1.0 / np.sqrt(d)
    return np.linalg.eigvalsh(np.eye(len(d)) - dm[:, None] * w * dm[None, :])[:count]


def autosc64(features: np.ndarray, alphas=(1, 5, 10, 15), use_chosen_alpha=False):
    """AutoSC per docs/algorithm.md §5, with scipy's pivoted QR and SVD."""
    w0, _ = affinity64(features, 1.0)
    best_score, best_k, best_i, per_alpha = -np.inf, None, None, []
    for i, alpha in enumerate(alphas):
        a = w0**alpha
        d = a.sum(axis=1)
        dm = 1.0 / np.sqrt(d)
        vals, vecs = np.linalg.eigh(np.eye(len(d)) - dm[:, None] * a * dm[None, :])
        vecs = dm[:, None] * vecs
        per_alpha.append(vecs)
        cummean = np.cumsum(vals) / np.arange(1, len(vals) + 1)
        score = (vals - cummean) / (cummean + 1e-6)
        if score.max() > best_score:
            best_score, best_k, best_i = score.max(), int(np.argmax(score)), i
    vectors = per_alpha[best_i] if use_chosen_alpha else per_alpha[-1]
    v = vectors[:, :best_k]
    _, _, piv = scipy.linalg.qr(v.T, pivoting=True)
    ut, _, vt = np.linalg.svd(v[piv[:best_k]].T)
    labels = np.argmax(np.abs(v @ (ut @ vt)), axis=1)
    return labels.reshape(features.shape[:2]), best_k, alphas[best_i]
