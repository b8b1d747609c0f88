"""Speed of recursive NCut + concept assignment (128 x 128) on the 16 fixture cases. Writes JSON.

    python benchmarks/ncut.py [--repeats 5] [--batches 1,16,64] [--formulations stack,level]
                              [--original] [--out ncut.json] [--shared ../shared]

For each formulation: batch 1 (each case alone, median over repeats, then the median over cases),
batch 16 and 64 (the 16 cases tiled; whole batch / B), the compile time of each program, the
dense-fallback count, and how many fixture partitions were reproduced, singly and batched. With
`--original` (needs torch), the original approach's NCut + assignment in PyTorch
(`original_torch.py`) is timed in the same run on the same device. The JSON is rewritten after
every section, so an interrupted run keeps what it measured. Runs on CPU, GPU or TPU.
"""
from __future__ import annotations

import argparse
import json
import os

# XLA:CPU (jax 0.10) can deadlock the level formulation under its concurrency-optimized
# scheduler (docs/differences.md, "Known issues"); the option is ignored by other backends.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffcut_jax as dc  # noqa: E402


def _same_partition(a, b) -> bool:
    pairs = set(zip(np.ravel(a).tolist(), np.ravel(b).tolist()))
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def _timed(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def machine() -> dict:
    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": getattr(dev, "device_kind", str(dev)),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--formulations", default="stack,level")
    parser.add_argument("--original", action="store_true", help="also time the PyTorch original")
    parser.add_argument("--out", default=None, help="JSON output path (also printed)")
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
    batches = [int(b) for b in args.batches.split(",")]
    formulations = args.formulations.split(",")
    z = np.load(path)
    cases = [f"case{i:02d}" for i in range(16)]
    feats = np.stack([z[f"{c}_features"] for c in cases])
    metas = [json.loads(str(z[f"{c}_meta"])) for c in cases]
    taus = np.asarray([m["tau"] for m in metas], np.float32)
    alphas = np.asarray([m["alpha"] for m in metas], np.float32)
    results = {"machine": machine(), "repeats": args.repeats}

    def save():
        text = json.dumps(results, indent=2)
        if args.out:
            Path(args.out).write_text(text)
        return text

    def pipeline(formulation):
        def run(f, tau, alpha):
            labels, info = dc.recursive_ncut(f, tau, alpha, formulation=formulation,
                                             return_info=True)
            return labels, dc.assign_concepts(f, labels, (128, 128)), info
        return jax.jit(run)

    for form in formulations:
        fn = pipeline(form)
        res = results[form] = {}
        f1, t1, a1 = jnp.asarray(feats[:1]), jnp.asarray(taus[:1]), jnp.asarray(alphas[:1])
        res["batch1_compile_plus_first_run_s"] = round(_timed(fn, f1, t1, a1)[1], 3)
        per_case, matched, dense = [], 0, 0
        for i, c in enumerate(cases):
            args_i = (jnp.asarray(feats[i:i + 1]), jnp.asarray(taus[i:i + 1]),
                      jnp.asarray(alphas[i:i + 1]))
            times = []
            for _ in range(args.repeats):
                (labels, masks, info), t = _timed(fn, *args_i)
                times.append(t)
            per_case.append(statistics.median(times))
            matched += _same_partition(labels[0], z[f"{c}_labels32"]) and _same_partition(
                masks[0], z[f"{c}_labels128"])
            dense += int(info.dense_fallbacks[0])
        res["batch1_s_per_image_median"] = round(statistics.median(per_case), 5)
        res["batch1_per_case_s"] = [round(t, 5) for t in per_case]
        res["fixtures_matched_single"] = f"{matched}/16"
        res["dense_fallbacks_16_cases"] = dense
        save()
        for b in batches:
            if b == 1:
                continue
            reps = -(-b // 16)
            fb = jnp.asarray(np.tile(feats, (reps, 1, 1, 1))[:b])
            tb = jnp.asarray(np.tile(taus, reps)[:b])
            ab = jnp.asarray(np.tile(alphas, reps)[:b])
            (labels, masks, info), compile_s = _timed(fn, fb, tb, ab)
            times = [_timed(fn, fb, tb, ab)[1] for _ in range(args.repeats)]
            matched = sum(
                _same_partition(labels[i], z[f"{cases[i % 16]}_labels32"])
                and _same_partition(masks[i], z[f"{cases[i % 16]}_labels128"]) for i in range(min(b, 16)))
            res[f"batch{b}"] = {
                "compile_plus_first_run_s": round(compile_s, 3),
                "s_per_image_median": round(statistics.median(times) / b, 5),
                "fixtures_matched": f"{matched}/{min(b, 16)}",
                "dense_fallbacks": int(np.sum(info.dense_fallbacks)),
            }
            save()

    if args.original:
        try:
            import torch
            from original_torch import original_assign, original_ncut
        except ImportError as e:  # torch is a test/benchmark oracle only
            results["original"] = {"skipped": f"torch not importable: {e}"}
        else:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            per_case, matched = [], 0
            for i, c in enumerate(cases):
                ft = torch.as_tensor(feats[i], device=device)
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    labels, _ = original_ncut(ft.reshape(1024, -1), float(taus[i]), float(alphas[i]))
                    masks = original_assign(ft, labels.reshape(32, 32))
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t)
                per_case.append(statistics.median(times))
                matched += _same_partition(labels, z[f"{c}_labels32"])
            results["original"] = {
                "device": device, "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "batch1_s_per_image_median": round(statistics.median(per_case), 5),
                "fixtures_matched_32": f"{matched}/16",
            }
            for form in formulations:
                results[f"speedup_{form}_batch1_vs_original"] = round(
                    results["original"]["batch1_s_per_image_median"]
                    / results[form]["batch1_s_per_image_median"], 2)
    results["original_fixture_metadata_seconds_median"] = statistics.median(
        m["ref_seconds"] for m in metas)
    print(save())


if __name__ == "__main__":
    main()
