"""Feature error of each dtype/precision choice against float32 HIGHEST, on the shared photos,
with the full-size SSD-1B architecture and random weights.

    python benchmarks/precision.py [--size 512] [--images 2] [--out precision.json]

Choices (docs/performance.md, "Precision"):
- VAE, float32 with TF32 convolutions ("torch" policy on NVIDIA GPUs). A CPU computes float32
  exactly whatever the precision setting, so TF32 is emulated: both operands of every VAE
  convolution are rounded to TF32's 10-bit mantissa (round to nearest even), then multiplied
  exactly, as a tensor core does (float32 accumulation). Matmuls stay float32, as in PyTorch.
- VAE, bfloat16 (`vae_dtype=bfloat16`).
- UNet in bfloat16 (this project's accelerator default) and in float16 (the original's).
Each row: the latent's and the features' relative L2 error against float32 HIGHEST everywhere,
and the worst node's cosine to its reference feature. The UNet rows take the float32 latent, so
they measure the UNet alone; the VAE rows run the float32 UNet on their latent. JSON is rewritten
after every row. Random weights make the features nearly uniform, so how partitions move needs
real weights; the errors here bound what reaches the NCut.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from diffcut_jax import presets  # noqa: E402
from diffcut_jax.io import imageio  # noqa: E402
from diffcut_jax.io.image_ops import resize_bilinear  # noqa: E402
from diffcut_jax.models import unet, vae  # noqa: E402
from diffcut_jax.models.layers import Numerics  # noqa: E402

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"


def round_tf32(x):
    """float32 -> the nearest TF32 value (10 mantissa bits), kept in float32."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    bits = (bits + jnp.uint32(0x0FFF) + ((bits >> 13) & 1)) & jnp.uint32(0xFFFFE000)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def tf32_conv(lhs, rhs, *args, precision=None, **kwargs):
    return jax.lax.conv_general_dilated(round_tf32(lhs), round_tf32(rhs), *args,
                                        precision=jax.lax.Precision.HIGHEST, **kwargs)


def emulate_tf32_convs(module):
    for _, m in nnx.iter_modules(module):
        if isinstance(m, nnx.Conv):
            m.conv_general_dilated = tf32_conv
    return module


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def worst_cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cos.min())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ssd-1b", choices=presets.NAMES)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--out", default="precision.json")
    args = ap.parse_args()
    p = presets.load(args.model)
    ucfg = unet.UNetConfig.from_diffusers(p["unet"])
    vcfg = vae.VAEConfig.from_diffusers(p["vae"])
    s = args.size
    photos = sorted(IMAGES.glob("*"))[: args.images]
    images = jnp.stack([resize_bilinear(jnp.asarray(imageio.read_rgb(f)), (s, s)) for f in photos])
    report = {"machine": f"{platform.machine()}, {jax.devices()[0].device_kind}",
              "jax": jax.__version__, "model": args.model, "size": s,
              "photos": [f.name for f in photos], "rows": []}

    def save(row):
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1))

    _, vstate = nnx.split(vae.VAEEncoder(vcfg, numerics=Numerics(backend="cpu"), rngs=nnx.Rngs(0)))

    def encode(dtype, tf32=False):
        """The same random VAE weights, cast to `dtype`."""
        model = nnx.eval_shape(lambda: vae.VAEEncoder(
            vcfg, numerics=Numerics(dtype, dtype, backend="cpu"), rngs=nnx.Rngs(0)))
        g = nnx.split(emulate_tf32_convs(model) if tf32 else model)[0]
        st = jax.tree.map(lambda x: x.astype(dtype), vstate)
        fn = jax.jit(lambda st, x: jax.lax.map(
            lambda im: nnx.merge(g, st)(im[None].astype(jnp.float32))[0], x).astype(jnp.float32))
        return fn(st, images)

    rng = np.random.default_rng(0)
    noise = jnp.asarray(rng.normal(size=(1, s // 8, s // 8, vcfg.latent_channels)), jnp.float32)
    ctx = jnp.asarray(0.1 * rng.normal(size=(1, 77, ucfg.cross_attention_dim[-1])), jnp.float32)
    pooled = jnp.asarray(0.1 * rng.normal(size=(1, 1280)), jnp.float32)

    unet32 = unet.UNetEncoder(ucfg, numerics=Numerics(backend="cpu"), rngs=nnx.Rngs(1))
    ug, ustate = nnx.split(unet32)

    def features(latent, dtype):
        numerics = Numerics(dtype, dtype, backend="cpu")
        graph = nnx.split(nnx.eval_shape(lambda: unet.UNetEncoder(ucfg, numerics=numerics,
                                                                 rngs=nnx.Rngs(1))))[0]
        state = jax.tree.map(lambda x: x.astype(dtype), ustate)
        b = latent.shape[0]
        kw = {}
        if ucfg.addition_embed_type == "text_time":
            kw = dict(text_embeds=jnp.broadcast_to(pooled, (b, 1280)),
                      time_ids=jnp.broadcast_to(jnp.asarray([s, s, 0, 0, s, s], jnp.float32), (b, 6)))
        fn = jax.jit(lambda st, z: nnx.merge(graph, st)(
            0.9 * z + 0.4 * noise, 50, jnp.broadcast_to(ctx, (b,) + ctx.shape[1:]), **kw
        ).astype(jnp.float32))
        return fn(state, latent)

    t = time.perf_counter()
    latent_ref = encode(jnp.float32)
    feats_ref = features(latent_ref, jnp.float32)
    save({"choice": "reference: float32 HIGHEST everywhere", "seconds": round(time.perf_counter() - t, 1)})
    for name, dtype, tf32 in (("VAE float32, TF32 convolutions (emulated)", jnp.float32, True),
                              ("VAE bfloat16", jnp.bfloat16, False)):
        t = time.perf_counter()
        latent = encode(dtype, tf32)
        feats = features(latent, jnp.float32)
        save({"choice": name, "latent_rel_l2": rel(latent, latent_ref),
              "features_rel_l2": rel(feats, feats_ref), "worst_node_cos": worst_cos(feats, feats_ref),
              "seconds": round(time.perf_counter() - t, 1)})
    for name, dtype in (("UNet bfloat16 (the TPU default)", jnp.bfloat16),
                        ("UNet float16 (the original's; the GPU default)", jnp.float16)):
        t = time.perf_counter()
        feats = features(latent_ref, dtype)
        save({"choice": name, "features_rel_l2": rel(feats, feats_ref),
              "worst_node_cos": worst_cos(feats, feats_ref), "finite": bool(np.isfinite(np.asarray(feats)).all()),
              "seconds": round(time.perf_counter() - t, 1)})


if __name__ == "__main__":
    main()
