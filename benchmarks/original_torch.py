"""The original approach's NCut in PyTorch, written from docs/algorithm.md §2 (a benchmark baseline).

It computes what the original computes, the way it computes it: recursion in Python, a dense
float32 `eigh` of the normalized Laplacian per region, the 100 cut values one threshold at a
time as `z^T L z / z^T D z`, the original's NaN stop, the exact-zero rows dropped below the
root. Labels are grouped exactly (the original's float-code bug is not reproduced; it changes no
timing). Used by `benchmarks/ncut.py` (same-run baseline) and `benchmarks/gpu_end_to_end.py`.
"""
from __future__ import annotations

import numpy as np


def original_ncut(features, tau: float = 0.5, alpha: float = 10.0):
    """(N, C) torch tensor (any device) -> (N,) int64 NumPy labels and the number of splits."""
    import torch

    f = torch.nn.functional.normalize(features.float(), dim=1)
    w = f @ f.T
    w = (w - w.min()) / (w.max() - w.min())
    w = w ** alpha
    zero_rows = (w == 0).any(dim=1)
    n = w.shape[0]
    leaves: list[torch.Tensor] = []
    splits = 0

    def recurse(region: torch.Tensor, depth: int):
        nonlocal splits
        active = region if depth == 0 else region & ~zero_rows
        idx = torch.nonzero(active).flatten()
        if idx.numel() <= 1:
            leaves.append(region)
            return
        a = w[idx][:, idx]
        d = a.sum(dim=1)
        dis = torch.diag(d ** -0.5)
        lap = torch.diag(d) - a
        try:
            _, vecs = torch.linalg.eigh(dis @ lap @ dis)
        except RuntimeError:  # torch._C._LinAlgError: the original gives up on the region
            leaves.append(region)
            return
        y = dis @ vecs[:, 1]
        y = y * torch.sign(y[torch.argmax(torch.abs(y))])
        values, parts = [], []
        vol = d.sum()
        for th in torch.linspace(0.99 * y.min(), 0.99 * y.max(), 100, device=y.device):
            x = (y > th).float()
            k = (d * x).sum() / vol
            b = k / (1 - k)
            x2 = 2 * x - 1
            z = (1 + x2) - b * (1 - x2)
            values.append(float((z @ lap @ z) / (z @ (d * z))))
            parts.append(x > 0)
        # Python's min keeps a leading NaN (the original's "NaN stop"), np.argmin returns it.
        value = min(values)
        best = parts[int(np.argmin(values))]
        if not value < tau:
            leaves.append(region)
            return
        splits += 1
        inside = torch.zeros(n, dtype=torch.bool, device=w.device)
        inside[idx[best]] = True
        recurse(inside, depth + 1)
        recurse(region & ~inside, depth + 1)

    recurse(torch.ones(n, dtype=torch.bool, device=w.device), 0)
    labels = np.zeros(n, np.int64)
    for k, leaf in enumerate(leaves):
        labels[leaf.cpu().numpy()] = k
    return labels, splits


def original_assign(features, labels: np.ndarray, size=(128, 128)):
    """The original's concept assignment (docs/algorithm.md §3) in torch: (h, w, C) -> (size)."""
    import torch

    h, w, c = features.shape
    f = torch.nn.functional.normalize(features.float().reshape(h * w, c), dim=1)
    lab = torch.as_tensor(labels.reshape(-1), device=f.device)
    ids = torch.unique(lab)
    emb = torch.stack([f[lab == k].sum(0) / ((lab == k).sum() + 1e-8) for k in ids])
    up = torch.nn.functional.interpolate(
        f.T.reshape(1, c, h, w), size=size, mode="bilinear", align_corners=False)
    scores = up.reshape(c, -1).T @ emb.T
    return ids[scores.argmax(1)].reshape(size).cpu().numpy()
