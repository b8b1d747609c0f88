"""XLA's memory analysis of the compiled feature extractor, with abstract weights (nothing allocated).

    python benchmarks/memory_analysis.py [--model ssd-1b] [--size 1024] [--batches 1,16]
        [--attention auto] [--dtype float32] [--out memory.json]

Builds the real model's UNet down path and VAE encoder from the preset configs with
`nnx.eval_shape`, lowers the jitted `extract` for each batch with `jax.ShapeDtypeStruct` inputs and
prints `compiled.memory_analysis()` (temporaries, arguments, outputs) as JSON. Runs on CPU; the
target is <= 8 GB of temporaries at batch 16, 1024 x 1024.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from diffcut_jax import presets  # noqa: E402
from diffcut_jax.extractor import extract  # noqa: E402
from diffcut_jax.models import unet, vae  # noqa: E402
from diffcut_jax.models.layers import Numerics  # noqa: E402


def abstract_extractor(model: str, dtype, attention: str):
    p = presets.load(model)
    ucfg = unet.UNetConfig.from_diffusers(p["unet"])
    vcfg = vae.VAEConfig.from_diffusers(p["vae"])
    ugraph, uparams = nnx.split(nnx.eval_shape(lambda: unet.UNetEncoder(
        ucfg, numerics=Numerics(dtype, dtype, attention=attention), rngs=nnx.Rngs(0))))
    vgraph, vparams = nnx.split(nnx.eval_shape(lambda: vae.VAEEncoder(
        vcfg, numerics=Numerics(jnp.float32, jnp.float32, attention=attention), rngs=nnx.Rngs(0))))
    sdxl = ucfg.addition_embed_type == "text_time"
    context_dim = ucfg.cross_attention_dim[-1]
    cond = {"context": jax.ShapeDtypeStruct((1, 77, context_dim), jnp.float32),
            "pooled": jax.ShapeDtypeStruct((1, 1280), jnp.float32) if sdxl else None}
    params = {"unet": uparams, "vae": vparams, "conditioning": cond}
    return ugraph, vgraph, params, vcfg.latent_channels


def temp_memory(model="ssd-1b", size=1024, batch=1, dtype=jnp.float32, attention="auto") -> dict:
    ugraph, vgraph, params, latent_c = abstract_extractor(model, dtype, attention)
    fn = jax.jit(lambda p, im, nz: extract(p, im, nz, unet_graph=ugraph, vae_graph=vgraph,
                                           size=(size, size), timestep=50, schedule=(0.9, 0.4)))
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    noise = jax.ShapeDtypeStruct((1, size // 8, size // 8, latent_c), jnp.float32)
    t = time.perf_counter()
    compiled = fn.lower(params, images, noise).compile()
    m = compiled.memory_analysis()
    return {"batch": batch, "size": size, "attention": attention, "dtype": jnp.dtype(dtype).name,
            "temp_gib": round(m.temp_size_in_bytes / 2**30, 3),
            "argument_gib": round(m.argument_size_in_bytes / 2**30, 3),
            "output_gib": round(m.output_size_in_bytes / 2**30, 3),
            "compile_s": round(time.perf_counter() - t, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ssd-1b", choices=presets.NAMES)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        rows.append(temp_memory(args.model, args.size, b, jnp.dtype(args.dtype), args.attention))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"device": str(jax.devices()[0]), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
