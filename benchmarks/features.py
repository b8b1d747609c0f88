"""Feature extraction speed and memory for the full-size SSD-1B architecture. Prints JSON.

    python benchmarks/features.py --part throughput   # CPU 512 x 512 (GPU: 1024), vs diffusers
    python benchmarks/features.py --part memory       # writes a 4.5 GB fp16 checkpoint, peak RSS

throughput: images/s of this project's extractor (VAE encode + UNet down path to the feature
layer, random weights, float32 on CPU / bfloat16 on GPU) against the original approach in the
same run: diffusers' full UNet forward plus VAE encode in PyTorch on the same input (needs the
`test` extra). Median of --repeats runs after a warm-up.

memory: writes a random SSD-1B checkpoint in the real layout (fp16 variant, every real tensor)
and, in a fresh process, measures the peak resident memory of `load_extractor` + one forward at
1024 x 1024 on CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from diffcut_jax import presets  # noqa: E402
from diffcut_jax.features.extractor import extract, noise_schedule  # noqa: E402
from diffcut_jax.models import Numerics, UNetConfig, UNetEncoder, VAEConfig, VAEEncoder  # noqa: E402

PRESET = "ssd-1b"


def _median_time(fn, repeats):
    fn()  # warm-up (compilation for JAX)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def throughput(size: int, batch: int, repeats: int) -> dict:
    on_cpu = jax.default_backend() == "cpu"
    dtype = jnp.float32 if on_cpu else jnp.bfloat16
    ucfg_raw = presets.config(PRESET, "unet")
    vcfg_raw = presets.config(PRESET, "vae")
    ucfg, vcfg = UNetConfig.from_diffusers(ucfg_raw), VAEConfig.from_diffusers(vcfg_raw)
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
    noise = rng.standard_normal((1, size // 8, size // 8, 4)).astype(np.float32)
    context = rng.standard_normal((1, 77, 2048)).astype(np.float32)
    pooled = rng.standard_normal((1, 1280)).astype(np.float32)
    time_ids = np.array([[size, size, 0, 0, size, size]], np.float32)
    out = {"device": str(jax.devices()[0]), "size": size, "batch": batch, "repeats": repeats}

    unet_graph, unet_params = nnx.split(UNetEncoder(ucfg, numerics=Numerics(dtype, dtype), rngs=nnx.Rngs(0)))
    vae_graph, vae_params = nnx.split(VAEEncoder(vcfg, rngs=nnx.Rngs(1)))
    params = {"unet": unet_params, "vae": vae_params,
              "conditioning": {"context": jnp.asarray(context), "pooled": jnp.asarray(pooled)}}
    out["jax_unet_params"] = int(sum(x.size for x in jax.tree.leaves(unet_params)))
    fn = jax.jit(lambda p, im, nz: extract(p, im, nz, unet_graph=unet_graph, vae_graph=vae_graph,
                                           size=(size, size), timestep=50,
                                           schedule=noise_schedule(None, 50)))
    im_j, nz_j = jnp.asarray(images), jnp.asarray(noise)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params, im_j, nz_j))
    out["jax_compile_plus_first_s"] = round(time.perf_counter() - t0, 2)
    med, times = _median_time(lambda: jax.block_until_ready(fn(params, im_j, nz_j)), repeats)
    out["jax_images_per_s"] = round(batch / med, 4)
    out["jax_run_s"] = [round(t, 3) for t in times]
    params = unet_params = vae_params = None  # free the JAX model before the torch baseline

    try:
        import diffusers
        import torch
    except ImportError:
        out["torch_baseline"] = "skipped: torch/diffusers not installed (pip install -e '.[test]')"
        return out
    torch.manual_seed(0)
    device = "cpu" if on_cpu or not torch.cuda.is_available() else "cuda"
    tdtype = torch.float32 if device == "cpu" else torch.float16
    t_unet = diffusers.UNet2DConditionModel(**{k: v for k, v in ucfg_raw.items() if not k.startswith("_")}).to(device, tdtype).eval()
    t_vae = diffusers.AutoencoderKL(**{k: v for k, v in vcfg_raw.items() if not k.startswith("_")}).to(device, torch.float32).eval()
    out["torch_unet_params"] = int(sum(p.numel() for p in t_unet.parameters()))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
    nz = torch.from_numpy(noise).permute(0, 3, 1, 2).to(device)
    ctx = torch.from_numpy(context).to(device, tdtype).expand(batch, -1, -1)
    cond = {"text_embeds": torch.from_numpy(pooled).to(device, tdtype).expand(batch, -1),
            "time_ids": torch.from_numpy(time_ids).to(device, tdtype).expand(batch, -1)}
    a, s = noise_schedule(None, 50)

    def original():
        with torch.no_grad():
            z = t_vae.encode(2 * x - 1).latent_dist.mean * t_vae.config.scaling_factor
            noisy = (a * z + s * nz).to(tdtype)
            t_unet(noisy, 50, encoder_hidden_states=ctx, added_cond_kwargs=cond)
        if device == "cuda":
            torch.cuda.synchronize()

    med_t, times_t = _median_time(original, repeats)
    out["torch_threads"] = torch.get_num_threads()
    out["original_images_per_s"] = round(batch / med_t, 4)
    out["original_run_s"] = [round(t, 3) for t in times_t]
    out["speedup"] = round(out["jax_images_per_s"] / out["original_images_per_s"], 2)
    return out


_MEMORY_CHILD = r"""
import json, resource, sys, time
import jax, jax.numpy as jnp
sys.path.insert(0, sys.argv[2])
import diffcut_jax as dc
t = time.perf_counter()
ex = dc.load_extractor(sys.argv[1], dtype=jnp.float32, image_size=1024)
load_s = time.perf_counter() - t
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
images = jax.random.uniform(jax.random.PRNGKey(0), (1, 1024, 1024, 3))
t = time.perf_counter()
feats = jax.block_until_ready(ex(images))
fwd_s = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"load_s": round(load_s, 1), "first_forward_s": round(fwd_s, 1),
                  "peak_rss_gb_after_load": round(after_load, 2), "peak_rss_gb": round(peak, 2),
                  "feature_shape": list(feats.shape)}))
"""


def memory(workdir: str | None) -> dict:
    from diffcut_jax.testing import write_random_checkpoint

    root = Path(workdir or tempfile.mkdtemp(prefix="ssd1b-fp16-"))
    t = time.perf_counter()
    if not (root / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists():
        write_random_checkpoint(root, PRESET, dtype="float16", variant="fp16")
    write_s = time.perf_counter() - t
    size_gb = sum(f.stat().st_size for f in root.rglob("*.safetensors")) / 1e9
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(root), str(Path(__file__).resolve().parents[1])],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(checkpoint=str(root), checkpoint_gb=round(size_gb, 2), write_s=round(write_s, 1),
                  limit_gb=8.0, within_limit=result["peak_rss_gb"] < 8.0)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["throughput", "memory", "all"], default="all")
    parser.add_argument("--size", type=int, default=None, help="default 512 on CPU, 1024 on GPU")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where to write (or reuse) the fp16 checkpoint")
    args = parser.parse_args()
    size = args.size or (512 if jax.default_backend() == "cpu" else 1024)
    results = {}
    if args.part in ("throughput", "all"):
        results["throughput"] = throughput(size, args.batch, args.repeats)
    if args.part in ("memory", "all"):
        results["memory"] = memory(args.workdir)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
