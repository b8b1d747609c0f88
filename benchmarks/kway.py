"""The K-way NCut (`kway_ncut`) against the recursive NCut on the same graphs. Writes JSON.

    python benchmarks/kway.py [--repeats 5] [--noise 0.5,0.75,1.0] [--regions 4,8,12]
                              [--timing_max_noise 0.75] [--subspace_baseline 4]
                              [--out kway.json] [--shared ../shared]

Inputs: the 16 shared NCut fixtures (their tau and alpha) and planted partitions
(`testing.region_features`, 32 x 32 x 1280, several noise levels, alpha 10, tau 0.5). For each
input: the K-way objective f = sum_k q_k / v_k (higher is better; the K-way NCut is K - f) of the
recursive partition, of its polish (`init=`) and of the standalone spectral cut forced to the same
K (`min_segments = max_segments = K`) and free; on planted inputs the recovery of the regions
(Hungarian-matched mIoU and ARI) of the recursive cut and both K-way modes. Then seconds per
image at batch 1 and 16 (medians of `--repeats`, the ways taking turns in every repeat) of
`recursive_ncut`, the polish (recursive cut included), the standalone cut and, to show where
the time goes, the graph alone (`graph`: W and its degrees, batched as the K-way cut builds it),
on the same inputs, in the same run. `kway_baseline` is the
standalone cut at `--subspace_baseline` subspace steps, in every section: what the default's
steps buy and cost. The JSON is rewritten after every section. Runs on CPU, GPU or TPU.
"""
from __future__ import annotations

import argparse
import functools
import json
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffcut_jax as dc  # noqa: E402
from diffcut_jax.cut.kway import SUBSPACE_ITERS, association  # noqa: E402
from diffcut_jax.cut.graph import affinity, batched_affinity, canonical_labels  # noqa: E402
from diffcut_jax.cut.labels import adjusted_rand_index, matched_miou  # noqa: E402
from diffcut_jax.testing import region_features  # noqa: E402
from ncut import machine  # noqa: E402


def objective(features, labels, alpha) -> float:
    """f(X) of a partition on the features' graph (float32, as the solver computes it)."""
    f = jnp.asarray(features).reshape(-1, features.shape[-1])
    w = affinity(f, alpha).weights[None]
    lab = canonical_labels(jnp.asarray(labels).reshape(1, -1))
    return float(association(w, jnp.sum(w, -1), lab, int(lab.max()) + 1)[3][0])


def cuts(features, tau, alpha, baseline_iters: int):
    rec = np.asarray(dc.recursive_ncut(jnp.asarray(features), tau, alpha))
    k = int(rec.max()) + 1
    polished = np.asarray(dc.kway_ncut(features, alpha, init=rec))
    equal_k = np.asarray(dc.kway_ncut(features, alpha, min_segments=min(k, 32),
                                      max_segments=min(k, 32)))
    free = np.asarray(dc.kway_ncut(features, alpha))
    out = {"recursive": rec, "polished": polished, "kway_equal_k": equal_k, "kway": free}
    if baseline_iters:
        out["kway_baseline"] = np.asarray(dc.kway_ncut(features, alpha,
                                                       subspace_iters=baseline_iters))
    return out


def quality(inputs, baseline_iters: int, truth=None) -> list[dict]:
    rows = []
    for name, feats, tau, alpha in inputs:
        row = {"input": name}
        for method, lab in cuts(feats, tau, alpha, baseline_iters).items():
            row[method] = {"segments": int(lab.max()) + 1, "f": objective(feats, lab, alpha)}
            if truth is not None:
                row[method]["miou"] = matched_miou(lab, truth[name])
                row[method]["ari"] = adjusted_rand_index(lab, truth[name])
        rows.append(row)
    return rows


def _seconds(fn, x) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn(x))
    return time.perf_counter() - t


@jax.jit
def _graph_batch(x, alpha):
    w = batched_affinity(x.reshape(x.shape[0], -1, x.shape[-1]), alpha).weights
    return w, jnp.sum(w, axis=-1)


def _graph(x, t, a):
    """The graph both cuts build (the K-way cut's batched one) and its degrees, alone."""
    del t
    x = x if x.ndim == 4 else x[None]
    return _graph_batch(x, jnp.broadcast_to(jnp.asarray(a, jnp.float32), (x.shape[0],)))


def timing(feats: np.ndarray, taus, alphas, repeats: int, baseline_iters: int) -> dict:
    """Seconds per image, batch 1 (median over the inputs) and 16 (the inputs tiled). The ways
    take turns within every repeat, so that the machine's drift (2 shared cores) falls on all of
    them alike; each figure is the median of its repeats."""
    recursive = lambda x, t, a: dc.recursive_ncut(x, t, a)  # noqa: E731
    polish = lambda x, t, a: dc.kway_ncut(x, a, init=dc.recursive_ncut(x, t, a))  # noqa: E731
    kway = lambda x, t, a: dc.kway_ncut(x, a)  # noqa: E731
    ways = [("recursive", recursive), ("polished", polish), ("kway", kway), ("graph", _graph)]
    if baseline_iters:
        ways.append(("kway_baseline",
                     lambda x, t, a: dc.kway_ncut(x, a, subspace_iters=baseline_iters)))
    reps = -(-16 // len(feats))
    batch = jnp.asarray(np.concatenate([feats] * reps)[:16])
    t16 = jnp.asarray(np.concatenate([taus] * reps)[:16], jnp.float32)
    a16 = jnp.asarray(np.concatenate([alphas] * reps)[:16], jnp.float32)
    # (way, case): the call; case i < len(feats) is input i alone, case -1 the batch of 16.
    calls = {}
    for name, fn in ways:
        for i in range(len(feats)):
            calls[name, i] = (functools.partial(fn, t=taus[i], a=alphas[i]), jnp.asarray(feats[i]))
        calls[name, -1] = (functools.partial(fn, t=t16, a=a16), batch)
    for f, x in calls.values():  # compile
        jax.block_until_ready(f(x))
    times = {key: [] for key in calls}
    for _ in range(repeats):
        for key, (f, x) in calls.items():
            times[key].append(_seconds(f, x))
    return {name: {"batch1_s_per_image": statistics.median(
                       [statistics.median(times[name, i]) for i in range(len(feats))]),
                   "batch16_s_per_image": statistics.median(times[name, -1]) / 16}
            for name, _ in ways}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--noise", default="0.5,0.75,1.0")
    parser.add_argument("--regions", default="4,8,12")
    parser.add_argument("--timing_max_noise", type=float, default=0.75,
                        help="time only planted maps up to this noise: at 1.0 the recursive cut "
                             "shatters a map into ~1000 segments, its worst case (ncut_worst_case.py)")
    parser.add_argument("--subspace_baseline", type=int, default=4,
                        help="also run the spectral start at this many subspace steps "
                             "(kway_baseline; 0: off), to weigh the default's against it")
    parser.add_argument("--out", default="kway.json")
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = parser.parse_args()
    report = {"machine": machine(), "repeats": args.repeats,
              "subspace_iters": {"kway": SUBSPACE_ITERS, "kway_baseline": args.subspace_baseline}}

    def dump():
        Path(args.out).write_text(json.dumps(report, indent=1))

    z = np.load(Path(args.shared) / "fixtures" / "ncut_reference.npz")
    fixtures = []
    for i in range(16):
        meta = json.loads(str(z[f"case{i:02d}_meta"]))
        fixtures.append((f"case{i:02d}", z[f"case{i:02d}_features"], meta["tau"], meta["alpha"]))
    report["fixtures"] = quality(fixtures, args.subspace_baseline)
    dump()
    planted, truth = [], {}
    for noise in (float(x) for x in args.noise.split(",")):
        for k in (int(x) for x in args.regions.split(",")):
            feats, labels = region_features(k, 32, 32, 1280, noise=noise, seed=k)
            name = f"planted k={k} noise={noise}"
            planted.append((name, feats, 0.5, 10.0))
            truth[name] = labels
    report["planted"] = quality(planted, args.subspace_baseline, truth)
    dump()
    timed = [x for x in planted if float(x[0].split("noise=")[1]) <= args.timing_max_noise]
    for label, inputs in (("fixtures", fixtures), ("planted", timed)):
        if not inputs:  # every planted map is noisier than --timing_max_noise
            report[f"timing_{label}"] = None
            continue
        feats = np.stack([x[1] for x in inputs])
        taus = np.array([x[2] for x in inputs], np.float32)
        alphas = np.array([x[3] for x in inputs], np.float32)
        report[f"timing_{label}"] = timing(feats, taus, alphas, args.repeats,
                                           args.subspace_baseline)
        dump()
    summary = {}
    for label in ("fixtures", "planted"):
        rows = report[label]
        for method in ("recursive", "polished", "kway_equal_k", "kway", "kway_baseline"):
            for key in ("f", "miou", "ari"):
                if method in rows[0] and key in rows[0][method]:
                    summary[f"{label} {method} mean {key}"] = round(
                        float(np.mean([r[method][key] for r in rows])), 4)
        summary[f"{label} polish never lowers f"] = all(
            r["polished"]["f"] >= r["recursive"]["f"] - 1e-6 for r in rows)
    report["summary"] = summary
    dump()
    print(json.dumps({"summary": summary, "timing_fixtures": report["timing_fixtures"],
                      "timing_planted": report["timing_planted"]}, indent=1))


if __name__ == "__main__":
    main()
