"""Where do the exact-zero nodes land? Ours vs the original's rules in PyTorch, on generated maps.

    python benchmarks/zero_rows_study.py [--maps 13] [--out zero_rows.json]

Each map is 32 x 32 x 1280 (SSD-1B's shape): 3-7 smooth Voronoi regions with random centres plus
Gaussian noise of random strength, alpha drawn from (5, 10, 15), tau 0.5. For each map: splits of
both, the nodes whose partition differs, how many of those hold an exact zero in their affinity
row, and the root's smallest eigenvalues (float64), which tell whether the root is degenerate.
docs/differences.md has the findings.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffcut_jax as dc  # noqa: E402
from diffcut_jax.cut import graph  # noqa: E402
from diffcut_jax.cut.labels import partition_mismatch  # noqa: E402


def generate(seed: int, channels: int = 1280, side: int = 32):
    rng = np.random.default_rng(seed)
    k = rng.integers(3, 8)
    centres = rng.normal(size=(k, channels))
    yy, xx = np.mgrid[:side, :side]
    pts = rng.integers(0, side, (k, 2))
    region = ((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2).argmin(-1)
    noise = rng.uniform(0.3, 1.5)
    feats = centres[region] + noise * rng.normal(size=(side, side, channels))
    return feats.astype(np.float32), float(rng.choice([5.0, 10.0, 15.0]))


def root_eigenvalues(feats, alpha, k=4):
    f = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    w = f @ f.T
    a = ((w - w.min()) / (w.max() - w.min())) ** alpha
    dm = 1 / np.sqrt(a.sum(1))
    return np.linalg.eigvalsh(np.eye(len(dm)) - dm[:, None] * a * dm[None])[:k].tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=13)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch
    from original_torch import original_ncut

    torch.set_num_threads(2)
    rows = []
    for seed in range(args.maps):
        feats, alpha = generate(seed)
        flat = feats.reshape(-1, feats.shape[-1])
        theirs, their_splits = original_ncut(torch.as_tensor(flat), 0.5, alpha)
        ours, info = dc.recursive_ncut(jnp.asarray(feats), 0.5, alpha, return_info=True)
        ours = np.asarray(ours).reshape(-1)
        zero = np.asarray(graph.affinity(jnp.asarray(flat), alpha).zero_rows)
        bad = partition_mismatch(ours, theirs)
        rows.append({"seed": seed, "alpha": alpha, "splits_original": their_splits,
                     "splits_ours": int(info.num_splits), "nodes_differing": int(bad.sum()),
                     "zero_row_nodes_differing": int((bad & zero).sum()),
                     "zero_row_nodes": int(zero.sum()),
                     "root_eigenvalues": root_eigenvalues(feats, alpha)})
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
