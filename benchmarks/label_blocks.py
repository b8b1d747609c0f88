"""Concept assignment + PAMR refinement at 1024 x 1024: time against the number of segments,
blockwise (this release) and dense (the previous release), in the same run.

    python benchmarks/label_blocks.py [--size 1024] [--segments 6,1024] [--repeats 3]
        [--dense_max_gib 8] [--out label_blocks.json]

Inputs are generated: a 32 x 32 x 1280 feature map whose nodes fall into `k` regions (centres
plus noise) with the region labels, and a smooth synthetic photo. Each row times
`assign_concepts` to the full size and `refine` (PAMR, 10 iterations, dilations 1, 2, 4, 8, the
segmenter's capacity of 1024 labels), median of `--repeats` after a compile run (the 1024-segment
rows run once: minutes on a CPU). The dense baseline is the previous release's formulation with
the label bucket it would have picked (8, 32, 128, 512, 1024), from tests/reference_dense.py; a
dense program whose compiled temporaries exceed `--dense_max_gib` is not run, and its memory
analysis is reported instead. JSON is rewritten after every row.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import diffcut_jax as dc  # noqa: E402
from diffcut_jax.testing import region_features  # noqa: E402
from tests.reference_dense import assign_dense, refine_dense  # noqa: E402

DILATIONS = (1, 2, 4, 8)
NUM_ITER = 10


def inputs(k: int, size: int, seed: int = 0):
    feats, labels = region_features(k, seed=seed)
    y, x = np.mgrid[:size, :size] / size
    image = np.stack([0.5 + 0.4 * np.sin(6 * x + 3 * y), 0.5 + 0.4 * np.cos(5 * y),
                      (x + y) / 2], axis=-1).astype(np.float32)
    return jnp.asarray(feats)[None], jnp.asarray(labels)[None], jnp.asarray(image)[None]


def bucket(k: int) -> int:
    return next(c for c in (8, 32, 128, 512, 1024) if c >= k)


def timed(fn, repeats: int):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs) if runs else first


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--segments", default="6,1024")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense_max_gib", type=float, default=8.0)
    ap.add_argument("--out", default="label_blocks.json")
    args = ap.parse_args()
    size = (args.size, args.size)
    report = {"machine": f"{platform.machine()}, {jax.device_count()} x {jax.devices()[0].device_kind}",
              "backend": jax.default_backend(), "jax": jax.__version__, "size": args.size,
              "pamr": {"num_iter": NUM_ITER, "dilations": DILATIONS}, "rows": []}
    for k in (int(s) for s in args.segments.split(",")):
        feats, labels, image = inputs(k, args.size)
        repeats = args.repeats if k < 512 else 0
        masks = dc.assign_concepts(feats, labels, size)
        row = {"segments": int(labels.max()) + 1, "segments_after_assignment":
               int(np.unique(np.asarray(masks)).size), "repeats": max(repeats, 1)}
        blockwise = {
            "assignment": lambda: dc.assign_concepts(feats, labels, size),
            "refinement": lambda: dc.refine(image, masks, NUM_ITER, DILATIONS, num_labels=1024),
        }
        cap = bucket(k)
        dense = {
            "assignment": jax.jit(lambda f, l: assign_dense(f, l, size=size, num_labels=cap)),
            "refinement": jax.jit(lambda im, m: refine_dense(im, m, num_iter=NUM_ITER,
                                                             dilations=DILATIONS, num_labels=cap)),
        }
        dense_args = {"assignment": (feats, labels), "refinement": (image, masks)}
        for part in ("assignment", "refinement"):
            first, med = timed(blockwise[part], repeats)
            row[f"{part}_s"], row[f"{part}_first_s"] = round(med, 3), round(first, 2)
            compiled = dense[part].lower(*dense_args[part]).compile()
            temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
            row[f"dense_{part}_temp_gib"] = round(temp, 3)
            if temp <= args.dense_max_gib:
                _, dmed = timed(lambda: compiled(*dense_args[part]), repeats)
                row[f"dense_{part}_s"] = round(dmed, 3)
            else:
                row[f"dense_{part}_s"] = None  # not runnable here: see its temporaries
            print(json.dumps(row), flush=True)
        if row["dense_refinement_s"] is not None and row["dense_assignment_s"] is not None:
            row["speedup_vs_dense"] = round((row["dense_assignment_s"] + row["dense_refinement_s"])
                                            / (row["assignment_s"] + row["refinement_s"]), 2)
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
