"""NCut's worst case: nearly uniform features (`testing.uniform_features`, as random weights give),
batch 4 x 32 x 32 x 1280, tau 0.5, alpha 10, both formulations, each with a wall-clock guard.

    python benchmarks/ncut_worst_case.py [--batch 4] [--size 32] [--timeout 300]
        [--formulations stack,level] [--out ncut_worst_case.json]

Such maps split into hundreds of segments, and many regions' subspace iterations converge slowly
or never: this measures that every such region reaches the dense solver early and that a level
step solves all of them together. Each formulation runs in a child process (compile and first
run, and with `--runs 2` a second run) killed at `--timeout` seconds, which is then reported as "not finished in
N s". Per formulation: seconds, segments per image, dense fallbacks per image. Also with
`--features regions` (16 regions with structure) as the ordinary case. JSON after every row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import jax, numpy as np
import diffcut_jax as dc
formulation, path, runs = sys.argv[2], sys.argv[3], int(sys.argv[4])
feats = np.load(path)
row = {}
for run in ("first_s", "second_s")[:runs]:
    t = time.perf_counter()
    labels, info = dc.recursive_ncut(feats, 0.5, 10.0, formulation=formulation, return_info=True)
    jax.block_until_ready(labels)
    row[run] = round(time.perf_counter() - t, 2)
    row["segments_per_image"] = [int(np.asarray(l).max()) + 1 for l in labels]
    row["dense_fallbacks_per_image"] = [int(d) for d in np.asarray(info.dense_fallbacks)]
    print(json.dumps(row), flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=32, help="feature map side (32: 1024 nodes)")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--formulations", default="stack,level")
    ap.add_argument("--features", default="uniform", choices=("uniform", "regions"))
    ap.add_argument("--runs", type=int, default=1, choices=(1, 2),
                    help="1: compile and run; 2: then a second, compiled run")
    ap.add_argument("--tree", default=str(ROOT),
                    help="the checkout whose diffcut_jax the children run (time another version "
                         "in the same run, on the same features)")
    ap.add_argument("--out", default="ncut_worst_case.json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import tempfile

    import numpy as np

    from diffcut_jax import testing

    if args.features == "uniform":
        feats = testing.uniform_features(args.batch, args.size, args.size, 1280, seed=0)
    else:
        feats = np.stack([testing.region_features(16, args.size, args.size, 1280, seed=i)[0]
                          for i in range(args.batch)])
    path = Path(tempfile.mkdtemp()) / "features.npy"
    np.save(path, feats)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "tree": args.tree,
              "batch": args.batch,
              "nodes": args.size ** 2, "features": args.features, "tau": 0.5, "alpha": 10.0,
              "timeout_s": args.timeout, "rows": []}
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
               " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip())
    for formulation in args.formulations.split(","):
        row = {"formulation": formulation}
        t = time.perf_counter()
        try:
            res = subprocess.run(
                [sys.executable, "-c", CHILD, args.tree, formulation, str(path), str(args.runs)],
                env=env, capture_output=True, text=True,
                timeout=args.timeout)
            lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
            if res.returncode or not lines:
                row["error"] = res.stderr[-2000:]
            else:
                row.update(json.loads(lines[-1]))
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            if lines:
                row.update(json.loads(lines[-1]))
            row["skipped"] = f"not finished in {args.timeout:.0f} s"
        row["wall_s"] = round(time.perf_counter() - t, 1)
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
