"""The VAE in bfloat16 vs float32: latent and feature error, and NCut partition agreement.

    python benchmarks/vae_dtype.py [--checkpoint DIR] [--size 1024] [--images 3] [--out vae.json]

Without `--checkpoint`, writes a random full-size SSD-1B checkpoint (fp16, real layout) first.
For each of the first `--images` shared photos (`../shared/images`): the latent and the features
with `vae_dtype=float32` and `bfloat16` (UNet float32 in both), their relative L2 error, and the
NCut labels of both (the fraction of nodes off a one-to-one label matching, 0 = same partition).
Random weights give features with little structure (their cosine spread is reported), so the
partition agreement here is a lower bound on what real weights would show.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import diffcut_jax as dc  # noqa: E402
from diffcut_jax.cut.graph import normalize_features  # noqa: E402
from diffcut_jax.cut.labels import partition_mismatch  # noqa: E402
from diffcut_jax.io.image_ops import resize_bilinear  # noqa: E402
from diffcut_jax.io.imageio import read_rgb  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    root = Path(args.checkpoint) if args.checkpoint else Path(tempfile.mkdtemp()) / "ssd1b"
    if not args.checkpoint:
        from diffcut_jax.testing import write_random_checkpoint

        write_random_checkpoint(root, "ssd-1b", dtype="float16", variant="fp16")
    photos = sorted((Path(args.shared) / "images").glob("*"))[: args.images]
    rows = []
    extractors = {name: dc.load_extractor(root, dtype=jnp.float32, vae_dtype=vd, image_size=args.size)
                  for name, vd in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16))}
    for photo in photos:
        image = jnp.asarray(read_rgb(photo))[None]  # float32 in [0, 1]
        out = {}
        for name, ex in extractors.items():
            t = time.perf_counter()
            latent = np.asarray(ex.encode_latent(resize_bilinear(image[0], (args.size,) * 2)[None]), np.float32)
            feats = ex(image)
            labels = np.asarray(dc.recursive_ncut(feats[0]))
            out[name] = (latent, np.asarray(feats[0]), labels, time.perf_counter() - t)
        (l32, f32, lab32, t32), (l16, f16, lab16, t16) = out["float32"], out["bfloat16"]
        fn = np.asarray(normalize_features(jnp.asarray(f32.reshape(-1, f32.shape[-1]))))
        rows.append({
            "image": photo.name,
            "latent_rel_error": float(np.linalg.norm(l16 - l32) / np.linalg.norm(l32)),
            "feature_rel_error": float(np.linalg.norm(f16 - f32) / np.linalg.norm(f32)),
            "segments_float32": int(lab32.max()) + 1, "segments_bfloat16": int(lab16.max()) + 1,
            "nodes_off_partition": float(partition_mismatch(lab32, lab16).mean()),
            "feature_cosine_min": float((fn @ fn.T).min()),
            "seconds_float32": round(t32, 1), "seconds_bfloat16": round(t16, 1),
        })
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"size": args.size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
