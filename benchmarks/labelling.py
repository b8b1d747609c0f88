"""Open-vocabulary labelling step: XLA memory analysis with abstract weights, and its time.

    python benchmarks/labelling.py [--sizes 1024,2048] [--batches 1,8] [--segments 1024]
        [--time_size 512] [--repeats 3] [--out labelling.json]

Builds the real CLIP (open_clip convnext_large_d_320, from its config in
../shared/reference/checkpoints/) with `nnx.eval_shape`, lowers `labelling.label_segments` (the
ConvNeXt-L trunk on the image, mask pooling of `--segments` segments, heads, classifier over the
21-class VOC vocabulary's synonyms) for each CLIP input size and batch, and prints
`memory_analysis()` as JSON (nothing allocated). Then times the step with random weights at
`--time_size` (median of `--repeats`, after one compile run). JSON is written after every section.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from diffcut_jax.models.layers import Numerics  # noqa: E402
from diffcut_jax.models.open_clip import OpenCLIP, OpenCLIPConfig  # noqa: E402
from diffcut_jax.naming.clip_model import TextClassifier  # noqa: E402
from diffcut_jax.naming.labelling import label_segments  # noqa: E402
from diffcut_jax.naming.vocabulary import parse_vocabulary  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/checkpoints/clip-convnext-large-d-320.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REFERENCE))
    ap.add_argument("--sizes", default="1024,2048")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--segments", type=int, default=1024, help="capacity (32 x 32 feature nodes)")
    ap.add_argument("--time_size", type=int, default=512, help="0: no timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="labelling.json")
    args = ap.parse_args()

    cfg = OpenCLIPConfig.from_open_clip(json.loads(Path(args.config).read_text()))
    vocab = parse_vocabulary("voc20")
    synonyms = sum(len(c) for c in vocab.classes)
    owner = np.repeat(np.arange(len(vocab)), [len(c) for c in vocab.classes]).astype(np.int32)
    classifier = TextClassifier(jnp.zeros((synonyms, cfg.embed_dim)), jnp.asarray(owner),
                                vocab.names, vocab.classes)
    report = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
              "jax": jax.__version__, "model": "convnext_large_d_320", "segments": args.segments,
              "vocabulary": f"voc20 ({len(vocab)} classes, {synonyms} synonyms)", "memory": []}

    def save():
        Path(args.out).write_text(json.dumps(report, indent=1))

    graph, abstract = nnx.split(nnx.eval_shape(lambda: OpenCLIP(cfg, numerics=Numerics(), rngs=nnx.Rngs(0))))
    for size in (int(s) for s in args.sizes.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            fn = jax.jit(lambda p, im, m, c, s, size=size: label_segments(
                p, im, m, c, s, graph=graph, num_segments=args.segments, size=(size, size)))
            images = jax.ShapeDtypeStruct((batch, 1024, 1024, 3), jnp.float32)
            masks = jax.ShapeDtypeStruct((batch, 1024, 1024), jnp.int32)
            t = time.perf_counter()
            m = fn.lower(abstract, images, masks, classifier, jax.ShapeDtypeStruct((), jnp.float32)).compile().memory_analysis()
            row = {"clip_size": size, "batch": batch,
                   "temp_gib": round(m.temp_size_in_bytes / 2**30, 3),
                   "argument_gib": round(m.argument_size_in_bytes / 2**30, 3),
                   "compile_s": round(time.perf_counter() - t, 1)}
            report["memory"].append(row)
            print(json.dumps(row), flush=True)
            save()

    if args.time_size:
        model = OpenCLIP(cfg, numerics=Numerics(), rngs=nnx.Rngs(0))
        _, params = nnx.split(model)
        s = args.time_size
        fn = jax.jit(lambda p, im, m, c, sc: label_segments(
            p, im, m, c, sc, graph=graph, num_segments=args.segments, size=(s, s)))
        rng = np.random.default_rng(0)
        images = jnp.asarray(rng.random((1, s, s, 3), dtype=np.float32))
        masks = jnp.asarray(rng.integers(0, 64, (1, s, s)), jnp.int32)
        scale = jnp.float32(np.log(100.0))
        t = time.perf_counter()
        jax.block_until_ready(fn(params, images, masks, classifier, scale))
        first = time.perf_counter() - t
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn(params, images, masks, classifier, scale))
            times.append(time.perf_counter() - t)
        report["time"] = {"clip_size": s, "batch": 1, "compile_and_first_s": round(first, 2),
                          "median_s": round(statistics.median(times), 3), "repeats": args.repeats}
        print(json.dumps(report["time"]), flush=True)
        save()


if __name__ == "__main__":
    main()
