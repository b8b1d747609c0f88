"""The open-vocabulary text classifier: full context (before) against length buckets (after), cold
and served by the cache, on the full-size ConvNeXt-L CLIP with random weights.

    python benchmarks/text_classifier.py [--vocabulary voc20] [--repeats 3] [--before_repeats 1]
        [--out text_classifier.json]

The model is open_clip's convnext_large_d_320 (text tower: 16 layers, width 768, context 77) built
from the shipped preset with random weights in memory; the weights' identity for the cache key is
a fixed name. Every prompt (each synonym in each of the 14 ViLD templates) runs through the text
tower:
- before: every prompt over the whole 77-token context, in padded batches of 128 (the classifier's
  encoding until length buckets);
- after, cold: `ClipModel.text_classifier` with an empty cache folder (buckets, then written);
- after, cached: the same call again (read back from disk, the text tower does not run).
Each is timed `--repeats` times (the first run includes compilation, reported apart) and the
median reported; JSON is written after every section.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from diffcut_jax import presets  # noqa: E402
from diffcut_jax.models.layers import Numerics  # noqa: E402
from diffcut_jax.models.open_clip import OpenCLIP, OpenCLIPConfig  # noqa: E402
from diffcut_jax.naming.clip_model import _TEXT_BATCH, VILD_TEMPLATES, ClipModel  # noqa: E402
from diffcut_jax.naming.vocabulary import parse_vocabulary  # noqa: E402


def full_context(clip: ClipModel, texts) -> np.ndarray:
    """Before length buckets: every prompt over the whole context."""
    ids = clip.tokenize(texts)
    out = []
    for start in range(0, len(ids), _TEXT_BATCH):
        chunk = ids[start:start + _TEXT_BATCH]
        padded = np.zeros((_TEXT_BATCH, ids.shape[1]), np.int32)
        padded[: len(chunk)] = chunk
        out.append(np.asarray(clip.encode_text(padded))[: len(chunk)])
    return np.concatenate(out)


def timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"first_s": round(times[0], 3), "median_s": round(statistics.median(times), 3),
            "runs_s": [round(x, 3) for x in times]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocabulary", default="voc20")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before_repeats", type=int, default=1, help="0: skip the full-context run")
    ap.add_argument("--out", default="text_classifier.json")
    args = ap.parse_args()

    cfg = OpenCLIPConfig.from_open_clip(presets.load("clip-convnext-large-d-320"))
    graph, params = nnx.split(OpenCLIP(cfg, numerics=Numerics(), rngs=nnx.Rngs(0)))
    clip = ClipModel(graph, params, cfg, weights_identity="benchmark: random convnext_large_d_320, seed 0")
    vocab = parse_vocabulary(args.vocabulary)
    flat = [s for syn in vocab.classes for s in syn]
    texts = [t.format(s) for s in flat for t in VILD_TEMPLATES]
    lengths = np.argmax(clip.tokenize(texts), axis=1) + 1
    report = {"machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} "
                         f"{jax.devices()[0].device_kind} device(s)", "jax": jax.__version__,
              "model": "convnext_large_d_320 (random weights)", "vocabulary": args.vocabulary,
              "classes": len(vocab), "prompts": len(texts),
              "tokens": {"max": int(lengths.max()), "mean": round(float(lengths.mean()), 2)},
              "buckets": list(clip.text_buckets())}

    def save(section, row):
        report[section] = row
        print(section, json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1))

    if args.before_repeats:
        save("before_full_context", timed(lambda: full_context(clip, texts), args.before_repeats))
    with tempfile.TemporaryDirectory() as cache:
        def cold():
            for p in Path(cache).glob("*"):
                p.unlink()
            clip.text_classifier(vocab.entries, cache_dir=cache)

        save("after_cold", timed(cold, args.repeats))
        save("after_cached", timed(lambda: clip.text_classifier(vocab.entries, cache_dir=cache),
                                   args.repeats))
    if "before_full_context" in report:
        before = report["before_full_context"]["median_s"]
        report["speedup_cold"] = round(before / report["after_cold"]["median_s"], 2)
        report["speedup_cold_first_runs"] = round(report["before_full_context"]["first_s"]
                                                  / report["after_cold"]["first_s"], 2)
        save("speedup", {"cold": report["speedup_cold"], "first_runs": report["speedup_cold_first_runs"]})


if __name__ == "__main__":
    main()
