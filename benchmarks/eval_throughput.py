"""Throughput of the whole evaluation loop (tf.data input, device step, host matching). Prints JSON.

    python benchmarks/eval_throughput.py                       # fake VOC-20, tiny random checkpoint
    python benchmarks/eval_throughput.py --model segmind/SSD-1B --image_size 1024 --images 64

Builds a fake VOC-20 download (real layout) and its TFDS dataset in a temporary folder, then
times `Evaluator.evaluate` over the tf.data pipeline: images/s and the share of the loop spent
waiting for input, and the input pipeline's own rate (iterated alone). Baseline, same run: the same loop run step after step (`overlap=False`: no
transfer ahead, host matching not overlapped with the device). Median of --repeats runs after a
warm-up run (compilation).

Checkpoint overhead (preemptible eval, evaluation/resume.py): the pipelined loop again with a
progress checkpoint every --checkpoint_every batches (default 1, the worst case), written by the
same `CheckpointPolicy` and `ProgressStore` as `diffcut-jax eval`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from diffcut_jax.data import benchmarks, builders, fake_downloads, pipeline  # noqa: E402
from diffcut_jax.evaluation import resume  # noqa: E402
from diffcut_jax.evaluation.evaluator import Evaluator, batches_from_tf  # noqa: E402
from diffcut_jax import load_extractor  # noqa: E402
from diffcut_jax.segmentation import SegmenterOptions  # noqa: E402
from diffcut_jax.testing import tiny_spec, write_random_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="hub id or local dir (default: a tiny random checkpoint)")
    ap.add_argument("--image_size", type=int, default=128)
    ap.add_argument("--mask_size", type=int, default=32)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--per_device_batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--refinement", action="store_true")
    ap.add_argument("--benchmark", default="voc20", choices=("voc20", "cityscapes"),
                    help="voc20 has a background class: with --refinement each batch takes a "
                         "second device step after the host's background merge; cityscapes has "
                         "none (one step)")
    ap.add_argument("--checkpoint_every", type=int, default=1)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="eval-throughput-"))
    model = args.model
    if model is None:
        write_random_checkpoint(tmp / "ckpt", tiny_spec("sdxl"), seed=3)
        model = str(tmp / "ckpt")
    if args.benchmark == "cityscapes":  # three cities, the same number of images each
        per_city = -(-args.images // 3)
        args.images = 3 * per_city
        fake_downloads.write_cityscapes(tmp / "raw", per_city=per_city)
    else:
        fake_downloads.write_voc2012(tmp / "raw", num_images=args.images)
    builder = builders.builder(args.benchmark, tmp / "tfds")
    builders.prepare(builder, tmp / "raw")

    extractor = load_extractor(model, image_size=args.image_size)
    options = SegmenterOptions(image_size=args.image_size, square=True, refinement=args.refinement)
    evaluator = Evaluator(extractor, benchmarks.get(args.benchmark), options, mask_size=args.mask_size)
    batch = args.per_device_batch * jax.local_device_count()

    checkpoint_seconds = []

    def run(overlap: bool, checkpoints: bool = False):
        ds, _ = pipeline.eval_batches(builder, batch_size=batch, image_size=args.image_size,
                                      mask_size=args.mask_size)
        policy = None
        if checkpoints:
            store = resume.ProgressStore(Path(tempfile.mkdtemp(dir=tmp)), {"benchmark": args.benchmark})
            policy = resume.CheckpointPolicy(store, evaluator, args.checkpoint_every)
        t = time.perf_counter()
        result = evaluator.evaluate(batches_from_tf(ds), overlap=overlap, after_batch=policy)
        elapsed = time.perf_counter() - t
        assert result.accumulator.images == args.images
        if policy is not None:
            checkpoint_seconds.append((policy.seconds, policy.seconds / elapsed))
        return args.images / elapsed, result.input_wait_seconds / elapsed

    def input_only():
        ds, _ = pipeline.eval_batches(builder, batch_size=batch, image_size=args.image_size,
                                      mask_size=args.mask_size)
        t = time.perf_counter()
        for _ in batches_from_tf(ds):
            pass
        return args.images / (time.perf_counter() - t)

    t = time.perf_counter()
    run(True)  # warm-up: compilation
    first = time.perf_counter() - t
    runs = {"pipelined": [], "sequential": [], "checkpointed": []}
    inputs = []
    for _ in range(args.repeats):  # interleaved, so drift hits all alike
        runs["pipelined"].append(run(True))
        runs["sequential"].append(run(False))
        runs["checkpointed"].append(run(True, checkpoints=True))
        inputs.append(input_only())

    def summary(rs):
        return {"images_per_second": statistics.median(r[0] for r in rs),
                "input_wait_share": statistics.median(r[1] for r in rs),
                "runs_images_per_second": [round(r[0], 4) for r in rs]}

    out = {
        "benchmark": "eval_throughput", "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(), "model": args.model or "tiny random (testing.tiny_spec('sdxl'))",
        "dataset": args.benchmark, "image_size": args.image_size, "mask_size": args.mask_size,
        "images": args.images,
        "batch": batch, "refinement": args.refinement, "repeats": args.repeats,
        "first_run_seconds_incl_compile": first,
        "pipelined": summary(runs["pipelined"]), "sequential_baseline": summary(runs["sequential"]),
        "pipelined_with_checkpoints": {
            **summary(runs["checkpointed"]), "checkpoint_every_batches": args.checkpoint_every,
            "checkpoints_per_run": -(-args.images // batch) // max(args.checkpoint_every, 1),
            # Measured directly: on a shared CPU the img/s medians can be noisier than this.
            "seconds_in_checkpoints_per_run": statistics.median(c[0] for c in checkpoint_seconds),
            "share_of_run_time_in_checkpoints": statistics.median(c[1] for c in checkpoint_seconds)},
    }
    # The tf.data pipeline alone (decode, crop, resize, batch, to NumPy): its headroom over the loop.
    out["input_pipeline_only_images_per_second"] = statistics.median(inputs)
    out["speedup_vs_sequential"] = out["pipelined"]["images_per_second"] / out["sequential_baseline"]["images_per_second"]
    out["checkpoint_overhead"] = 1 - (out["pipelined_with_checkpoints"]["images_per_second"]
                                      / out["pipelined"]["images_per_second"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
