"""End to end on one accelerator: cold start, DiffCut images/s, features, NCut, memory, PyTorch.

    python benchmarks/gpu_end_to_end.py --out $OUT/gpu.json [--batches 1,8,16] [--size 1024]
        [--workdir /tmp/ssd1b] [--repeats 3] [--skip_torch]

Sections, in order; the JSON is rewritten after each, so a run stopped by a time limit still
returns what it measured:
  1. write a random full-size SSD-1B checkpoint in the real layout (fp16), then load it with
     `DiffCut.from_pretrained` (both timed);
  2. end-to-end `DiffCut` images/s at size x size for each batch (compile + first call timed
     apart), then features only and NCut + assignment only;
  3. peak device memory;
  4. the original approach in PyTorch in the same run: diffusers' full UNet fp16 + VAE fp32 on the
     same checkpoint, then the original's NCut (`original_torch.py`), per image (skipped, with the
     reason, where torch/diffusers are missing or `--skip_torch`).
Meant for a lent GPU (`run` with a timeout well inside 8 minutes); it also runs on CPU with
`--tiny --size 64 --batches 1,2` as a smoke test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def _timed(fn, *args, **kw):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kw))
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_end_to_end.json"))
    parser.add_argument("--batches", default="1,8,16")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/diffcut_ssd1b_random")
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a tiny random checkpoint (smoke test)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    dev = jax.devices()[0]
    results: dict = {"device": getattr(dev, "device_kind", str(dev)), "backend": jax.default_backend(),
                     "jax": jax.__version__, "size": args.size, "repeats": args.repeats}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(section):
        results["last_section"] = section
        out.write_text(json.dumps(results, indent=1))
        print(f"[{section}] {json.dumps(results.get(section), default=str)}", flush=True)

    # 1. Cold start: a random full-size checkpoint in the real layout, then load it.
    from diffcut_jax.segmenter import DiffCut
    from diffcut_jax.testing import write_random_checkpoint

    root = Path(args.workdir)
    t = time.perf_counter()
    if not (root / "unet" / "config.json").exists():
        if args.tiny:
            from diffcut_jax.testing import tiny_spec

            write_random_checkpoint(root, tiny_spec("sdxl"), dtype="float16", variant="fp16")
        else:
            write_random_checkpoint(root, "ssd-1b", dtype="float16", variant="fp16")
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    seg = DiffCut.from_pretrained(root, image_size=args.size, square=True)
    load_s = time.perf_counter() - t
    results["cold_start"] = {"write_checkpoint_s": round(write_s, 2), "load_s": round(load_s, 2)}
    save("cold_start")

    # 2. Throughput.
    rng = np.random.default_rng(0)
    size = (args.size, args.size)
    noise = seg.extractor.noise_for(size)
    tau, alpha = jnp.float32(0.5), jnp.float32(10.0)
    results["end_to_end"] = {}
    for b in batches:
        images = jnp.asarray(rng.random((b, args.size, args.size, 3), np.float32))
        fn = seg.compiled(size, size)
        _, first = _timed(fn, seg.extractor.params, images, noise, tau, alpha)
        times = [_timed(fn, seg.extractor.params, images, noise, tau, alpha)[1]
                 for _ in range(args.repeats)]
        results["end_to_end"][f"batch{b}"] = {
            "compile_plus_first_call_s": round(first, 2),
            "images_per_s": round(b / statistics.median(times), 2)}
        if b == batches[0]:
            results["cold_start"]["load_plus_first_call_s"] = round(load_s + first, 2)
        save("end_to_end")

    import diffcut_jax as dc

    results["features_only"], results["ncut_only"] = {}, {}
    for b in batches:
        images = jnp.asarray(rng.random((b, args.size, args.size, 3), np.float32))
        _timed(seg.extractor, images)
        times = [_timed(seg.extractor, images)[1] for _ in range(args.repeats)]
        results["features_only"][f"batch{b}"] = {"images_per_s": round(b / statistics.median(times), 2)}
        feats = seg.extractor(images)
        cut = jax.jit(lambda f: dc.assign_concepts(f, dc.recursive_ncut(f, 0.5, 10.0), (128, 128)))
        _, first = _timed(cut, feats)
        times = [_timed(cut, feats)[1] for _ in range(args.repeats)]
        results["ncut_only"][f"batch{b}"] = {"compile_plus_first_call_s": round(first, 2),
                                             "s_per_image": round(statistics.median(times) / b, 5)}
        save("ncut_only")

    # 3. Memory.
    stats = dev.memory_stats() or {}
    results["memory"] = {"peak_bytes_in_use_gib": round(stats.get("peak_bytes_in_use", 0) / 2**30, 2),
                         "bytes_limit_gib": round(stats.get("bytes_limit", 0) / 2**30, 2)}
    save("memory")

    # 4. The original approach in PyTorch.
    results["torch"] = {}
    if args.skip_torch:
        results["torch"]["skipped"] = "--skip_torch"
    else:
        try:
            import torch
            from diffusers import AutoencoderKL, UNet2DConditionModel

            from original_torch import original_assign, original_ncut
        except ImportError as e:
            results["torch"]["skipped"] = f"not importable: {e}"
        else:
            del seg
            jax.clear_caches()
            device = "cuda" if torch.cuda.is_available() else "cpu"
            half = torch.float16 if device == "cuda" else torch.float32
            unet = UNet2DConditionModel.from_pretrained(root / "unet", variant="fp16", torch_dtype=half).to(device)
            vae = AutoencoderKL.from_pretrained(root / "vae", variant="fp16", torch_dtype=torch.float32).to(device)
            feats = {}
            block = unet.down_blocks[-1].attentions[-1].transformer_blocks[-1].attn1
            block.register_forward_hook(lambda m, i, o: feats.__setitem__("f", o))
            lat = args.size // 8
            cfg = unet.config
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            ctx = torch.zeros(1, 77, cfg.cross_attention_dim, dtype=half, device=device)
            added = {"text_embeds": torch.zeros(1, pooled, dtype=half, device=device),
                     "time_ids": torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]],
                                              dtype=half, device=device)}

            def torch_image(x):
                with torch.no_grad():
                    z = vae.encode(2 * x - 1).latent_dist.mean * vae.config.scaling_factor
                    noisy = z + torch.randn_like(z)
                    unet(noisy.to(half), 50, ctx, added_cond_kwargs=added)
                    side = int(round(feats["f"].shape[1] ** 0.5))
                    f = feats["f"][0].float().reshape(side, side, -1)
                    labels, _ = original_ncut(f.reshape(-1, f.shape[-1]), 0.5, 10.0)
                    original_assign(f, labels.reshape(f.shape[:2]))
                if device == "cuda":
                    torch.cuda.synchronize()

            x = torch.rand(1, 3, args.size, args.size, device=device)
            torch_image(x)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                torch_image(x)
                times.append(time.perf_counter() - t)
            results["torch"] = {"device": device, "torch": torch.__version__, "latent": lat,
                                "images_per_s_batch1": round(1 / statistics.median(times), 3)}
    save("torch")


if __name__ == "__main__":
    main()
