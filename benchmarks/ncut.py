"""Speed of recursive NCut + concept assignment (128 x 128) on the 16 fixture cases. Prints JSON.

    python benchmarks/ncut.py [--repeats 5] [--shared ../shared]

Reports seconds per image at batch 1 (each case alone, median over repeats, then the median and
mean over cases) and at batch 16 (whole batch / 16), the compile times, a same-run baseline that
forces the dense `eigh` path (the subspace solver off), the share of time per stage, how many
fixture partitions were reproduced, and the original's own timings from the fixture metadata.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffcut_jax as dc  # noqa: E402
from diffcut_jax import ncut as ncut_lib  # noqa: E402


def _same_partition(a, b) -> bool:
    pairs = set(zip(np.ravel(a).tolist(), np.ravel(b).tolist()))
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def _timed(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--shared", default=str(Path(__file__).resolve().parents[2] / "shared"),
        help="path of the shared/ folder holding fixtures/ncut_reference.npz",
    )
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be >= 3 (medians of fewer runs are not reported)")
    path = Path(args.shared) / "fixtures" / "ncut_reference.npz"
    if not path.exists():
        parser.error(f"fixture file not found: {path}")
    z = np.load(path)
    cases = [f"case{i:02d}" for i in range(16)]
    feats = [jnp.asarray(z[f"{c}_features"]) for c in cases]
    metas = [json.loads(str(z[f"{c}_meta"])) for c in cases]

    def pipeline(**kw):
        def run(f, tau, alpha):
            labels = dc.recursive_ncut(f, tau, alpha, **kw)
            return labels, dc.assign_concepts(f, labels, (128, 128))
        return jax.jit(run)

    results = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "jax": jax.__version__}
    variants = {"subspace": pipeline(), "dense_eigh_baseline": pipeline(max_iter=0)}
    for name, fn in variants.items():
        _, compile_s = _timed(fn, feats[0], metas[0]["tau"], metas[0]["alpha"])
        per_case, matched = [], 0
        for f, m, c in zip(feats, metas, cases):
            times = []
            for _ in range(args.repeats):
                (labels, masks), t = _timed(fn, f, m["tau"], m["alpha"])
                times.append(t)
            per_case.append(statistics.median(times))
            matched += _same_partition(labels, z[f"{c}_labels32"]) and _same_partition(
                masks, z[f"{c}_labels128"]
            )
        results[name] = {
            "compile_plus_first_run_s": round(compile_s, 3),
            "batch1_s_per_image_median": round(statistics.median(per_case), 4),
            "batch1_s_per_image_mean": round(statistics.mean(per_case), 4),
            "batch1_per_case_s": [round(t, 4) for t in per_case],
            "fixtures_matched": f"{matched}/16",
        }

    # Batch 16 (default tau/alpha for all, the paper's setting).
    fn16 = pipeline()
    batch = jnp.stack(feats)
    _, compile16 = _timed(fn16, batch, 0.5, 10.0)
    times16 = [_timed(fn16, batch, 0.5, 10.0)[1] for _ in range(args.repeats)]
    results["subspace"]["batch16_compile_plus_first_run_s"] = round(compile16, 3)
    results["subspace"]["batch16_s_per_image_median"] = round(statistics.median(times16) / 16, 4)

    # Where the time goes (batch 1, medians over cases of the per-stage medians).
    aff = jax.jit(lambda f, a: ncut_lib.affinity(f.reshape(-1, f.shape[-1]), a).weights)
    ncut_only = jax.jit(lambda f, t, a: dc.recursive_ncut(f, t, a, return_info=True))
    assign = jax.jit(lambda f, l: dc.assign_concepts(f, l, (128, 128)))
    stage = {"affinity": [], "ncut_total": [], "assign": []}
    visited, splits = [], []
    for f, m in zip(feats, metas):
        aff(f, m["alpha"]).block_until_ready()
        (labels, info) = ncut_only(f, m["tau"], m["alpha"])
        assign(f, labels).block_until_ready()
        stage["affinity"].append(statistics.median(_timed(aff, f, m["alpha"])[1] for _ in range(args.repeats)))
        stage["ncut_total"].append(statistics.median(_timed(ncut_only, f, m["tau"], m["alpha"])[1] for _ in range(args.repeats)))
        stage["assign"].append(statistics.median(_timed(assign, f, labels)[1] for _ in range(args.repeats)))
        visited.append(int(info.regions_visited))
        splits.append(int(info.num_splits))
    results["stages_median_s"] = {k: round(statistics.median(v), 4) for k, v in stage.items()}
    results["regions_visited_mean"] = statistics.mean(visited)
    results["splits_mean"] = statistics.mean(splits)

    ref = [m["ref_seconds"] for m in metas]
    results["original_ref_seconds_median"] = statistics.median(ref)
    results["speedup_vs_original_batch1"] = round(
        statistics.median(ref) / results["subspace"]["batch1_s_per_image_median"], 2
    )
    results["speedup_vs_dense_eigh_batch1"] = round(
        results["dense_eigh_baseline"]["batch1_s_per_image_median"]
        / results["subspace"]["batch1_s_per_image_median"], 2
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
