"""End to end on one accelerator, sized to fit one lent device window (~6 minutes with compiles).

    python benchmarks/gpu_end_to_end.py --out $OUT/gpu.json            # --quick (the default)
    python benchmarks/gpu_end_to_end.py --full --out $OUT/gpu.json     # + checkpoint, PyTorch, cost
                                                                       #   of --deterministic
    python benchmarks/gpu_end_to_end.py --tiny --size 64 --out gpu.json  # CPU smoke test

Carries its own inputs (nothing from ../shared): the full-size SSD-1B architecture with random
weights initialised on the device (`testing.random_extractor`: no checkpoint written), images of
coloured regions (`testing.region_images`) and generated features with structure for the NCut
(`testing.region_features`). Random weights give nearly constant features (cosines >= 0.999),
which NCut cuts into hundreds of segments with dense fallbacks: the time of degenerate work. So
the end to end injects structure after the UNet (`testing.structured_feature_model`: each node's
mean colour through fixed random Fourier features, added to the UNet's normalised features): the
VAE and UNet still run in full, and NCut, assignment and PAMR see segments like a trained
model's. Segment counts and dense fallbacks are reported beside every NCut figure.

Sections, in order; the JSON is rewritten after each, so a run stopped by a time limit keeps what
it measured, and each has a wall-clock guard: a section (or its remaining runs) starting after
its budget records "skipped: over N s" instead of eating the window:
  setup        weights on the device (s), the UNet dtype and the VAE's precision policy;
  features     images/s at batch 8 and 16 (compile + first call apart);
  ncut         NCut (stack, level) and the K-way NCut + assignment to 128 x 128 on 16 generated maps, ms per image at batch 1 and 16,
               both formulations, segments and dense fallbacks, and level/stack parity;
  end_to_end   `DiffCut`'s batch program at batch 16 on region images, without and with
               refinement: images/s and segments per image;
  pipeline     `segment`'s pipeline at --size on 48 generated JPEGs (region images): decoded ahead
               by Grain's threads into the batched device step (`streaming/batcher.py`, batch 16),
               against the device step alone on the same images decoded beforehand: images/s,
               the pipeline's share of the device-alone rate, decode ms per image and the share
               of the run spent waiting for input;
  memory       peak device memory;
  targets      the figures against the targets (below), and XLA compilations per section;
  checkpoint   (--full only) write a random fp16 SSD-1B checkpoint in the real layout, load it with
               `DiffCut.from_pretrained` (both timed), then the original approach in PyTorch;
  determinism  (--full only) the end to end again in a child process with --nodeterministic
               (XLA's autotuning on): the cost of reproducible results.

Targets, from the FLOPs (benchmarks/lowering.py): the float32 VAE at TF32 (the default "torch"
precision policy, as the original under PyTorch) is 4.36 TFLOP per 1024 x 1024 image; at an H100's
~495 TFLOP/s dense TF32 that bounds the features at ~113 images/s, so >= 100 images/s needs the
bf16 VAE option and the default policy's target is >= 60. End to end at batch 16: >= 50 images/s.
NCut + assignment: <= 5 ms per image at batch 16 (1024 nodes with structure).

Estimated --quick time on an H100 (compile counts from the CPU smoke run, `compiles` in the
report: setup 5 small initialisers, features 3, ncut 6, end_to_end 2; 16 in all, 4 of them with
the full UNet): at 30-60 s per full-UNet compile and a few seconds for the rest, ~3-4 min of
compilation, plus ~1 min of runs (repeats 3) and ~20 s of setup: about 5 minutes, within 6.
"""
from __future__ import annotations

import argparse
import os

# XLA:CPU (jax 0.10) can deadlock the level formulation under its concurrency-optimized
# scheduler (docs/differences.md, "Known issues"); the option is ignored by other backends.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

TARGETS = {"features_images_per_s": 60.0, "ncut_ms_per_image": 5.0, "end_to_end_images_per_s": 50.0}
SECTION_BUDGET_S = {"setup": 90, "features": 150, "ncut": 150, "end_to_end": 240, "pipeline": 150,
                    "memory": 10, "targets": 5}


class Guard:
    """Wall-clock budgets: `over(section)` once the section has run past its budget (or the
    whole run past `--budget_s`); the section records what it skipped."""

    def __init__(self, total_s: float):
        self.start = time.perf_counter()
        self.total_s = total_s
        self.section_start = self.start

    def begin(self):
        self.section_start = time.perf_counter()

    def over(self, section: str) -> str | None:
        now = time.perf_counter()
        if now - self.start > self.total_s:
            return f"skipped: over {self.total_s:.0f} s (whole run)"
        if now - self.section_start > SECTION_BUDGET_S.get(section, self.total_s):
            return f"skipped: over {SECTION_BUDGET_S[section]} s"
        return None


class Compiles:
    """XLA compilations (jax.monitoring), counted per section."""

    def __init__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._heard)

    def _heard(self, event, duration, **kwargs):
        del duration, kwargs
        if event == "/jax/core/compile/backend_compile_duration":
            self.count += 1


def _timed(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def _rate(fn, args, batch: int, repeats: int) -> dict:
    _, first = _timed(fn, *args)
    times = [_timed(fn, *args)[1] for _ in range(repeats)]
    return {"compile_plus_first_call_s": round(first, 2),
            "images_per_s": round(batch / statistics.median(times), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_end_to_end.json"))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the default: no checkpoint section")
    mode.add_argument("--full", action="store_true", help="also write/load a checkpoint, PyTorch")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="tiny architecture (smoke test)")
    ap.add_argument("--workdir", default="/tmp/diffcut_ssd1b_random", help="--full's checkpoint")
    ap.add_argument("--budget_s", type=float, default=330.0, help="the whole run's wall-clock guard")
    ap.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                    help="XLA's reproducibility options on GPUs (diffcut_jax/determinism.py)")
    ap.add_argument("--sections", default="", help="only these (comma-separated; child runs)")
    args = ap.parse_args()
    if args.deterministic:
        from diffcut_jax import determinism
        determinism.enable()

    import diffcut_jax as dc
    from diffcut_jax.cut.labels import partition_mismatch
    from diffcut_jax.segmentation import SegmenterOptions, segment_fn
    from diffcut_jax.testing import (random_extractor, region_features, region_images,
                                     structured_feature_model, tiny_spec)

    dev = jax.devices()[0]
    report: dict = {"device": getattr(dev, "device_kind", str(dev)), "backend": jax.default_backend(),
                    "jax": jax.__version__, "size": args.size, "repeats": args.repeats,
                    "mode": "full" if args.full else "quick", "tiny": args.tiny,
                    "deterministic": args.deterministic, "wall_s": {}, "compiles": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    guard, compiles = Guard(args.budget_s), Compiles()
    wanted = set(filter(None, args.sections.split(",")))

    starts: dict = {}

    def run(section) -> bool:
        guard.begin()
        starts[section] = compiles.count
        if wanted and section not in wanted:
            return False
        skipped = guard.over(section)
        if skipped:
            report[section] = {"skipped": skipped}
            done(section)
        return not skipped

    def save(section):
        report["wall_s"][section] = round(time.perf_counter() - t_start, 1)
        out.write_text(json.dumps(report, indent=1))
        print(f"[{section}] {json.dumps(report.get(section), default=str)}", flush=True)

    def done(section):
        report["compiles"][section] = compiles.count - starts[section]
        save(section)

    # setup: weights initialised on the device.
    guard.begin()
    starts["setup"] = compiles.count
    t = time.perf_counter()
    spec = tiny_spec("sdxl") if args.tiny else "ssd-1b"
    ex = random_extractor(spec, image_size=args.size)
    jax.block_until_ready(ex.params)
    report["setup"] = {"weights_on_device_s": round(time.perf_counter() - t, 2),
                       "unet_dtype": jnp.dtype(jax.tree.leaves(ex.params["unet"])[0].dtype).name,
                       "vae_precision": "torch", "model": "tiny" if args.tiny else "ssd-1b (random)"}
    done("setup")

    size = (args.size, args.size)
    noise = ex.noise_for(size)
    images16 = jnp.asarray(region_images(16, args.size, seed=0))

    # features at batch 8 and 16.
    if run("features"):
        report["features"] = {}
        for b in (8, 16):
            if guard.over("features"):
                report["features"][f"batch{b}"] = guard.over("features")
                continue
            report["features"][f"batch{b}"] = _rate(lambda im: ex(im, noise), (images16[:b],), b,
                                                    args.repeats)
        done("features")

    # NCut + assignment on generated maps (the real feature shape unless --tiny).
    if run("ncut"):
        ncut_section(args, report, guard, dc, partition_mismatch, region_features)
        done("ncut")

    # DiffCut's batch program at batch 16 on region images, structure injected after the UNet.
    if run("end_to_end"):
        report["end_to_end"] = {}
        model = structured_feature_model(ex)
        for refinement in (False, True):
            key = "refinement" if refinement else "plain"
            if guard.over("end_to_end"):
                report["end_to_end"][key] = guard.over("end_to_end")
                continue
            opts = SegmenterOptions(image_size=args.size, square=True, refinement=refinement)
            fn = segment_fn(model, opts, size, size)
            a = (ex.params, images16, noise, jnp.float32(0.5), jnp.float32(10.0))
            row = _rate(fn, a, 16, args.repeats)
            labels = np.asarray(fn(*a))
            row["segments_per_image"] = [int(x.max()) + 1 for x in labels]
            report["end_to_end"][key] = {"batch16": row}
        done("end_to_end")

    if run("pipeline"):
        pipeline_section(args, report, ex)
        done("pipeline")

    if run("memory"):
        stats = dev.memory_stats() or {}
        report["memory"] = {"peak_bytes_in_use_gib": round(stats.get("peak_bytes_in_use", 0) / 2**30, 2),
                            "bytes_limit_gib": round(stats.get("bytes_limit", 0) / 2**30, 2)}
        done("memory")

    if run("targets"):
        report["targets"] = targets(report)
        done("targets")

    if args.full:
        checkpoint_section(args, report, save)
        determinism_section(args, report, save)


def _figure(report, *path):
    node = report
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def targets(report) -> dict:
    got = {"features_images_per_s": _figure(report, "features", "batch16", "images_per_s"),
           "ncut_ms_per_image": min((x for x in (_figure(report, "ncut", f, "batch16", "ms_per_image")
                                                 for f in ("stack", "level")) if x is not None),
                                    default=None),
           "end_to_end_images_per_s": _figure(report, "end_to_end", "plain", "batch16",
                                              "images_per_s")}
    return {k: {"measured": got[k], "target": v,
                "met": None if got[k] is None else (got[k] <= v if k.startswith("ncut") else got[k] >= v)}
            for k, v in TARGETS.items()}


def ncut_section(args, report, guard, dc, partition_mismatch, region_features) -> None:
    """NCut + assignment on 16 generated maps with structure, both formulations; each timed
    program also returns the labels and the dense-fallback counts (no compile of its own)."""
    h = max(2, args.size // 32) if args.tiny else 32
    maps = [region_features(k, h, h, 1280 if not args.tiny else 32, seed=i)[0]
            for i, k in enumerate([3, 5, 8, 12, 20, 30, 50, 6] * 2)]
    feats = jnp.asarray(np.stack(maps))
    report["ncut"] = {}
    labels = {}
    for form in ("stack", "level", "kway"):
        def program(f, form=form):
            if form == "kway":  # the K-way NCut on the same graph (no dense fallback)
                lab = dc.kway_ncut(f, 10.0)
                return dc.assign_concepts(f, lab, (128, 128)), lab, jnp.zeros(f.shape[0], jnp.int32)
            lab, info = dc.recursive_ncut(f, 0.5, 10.0, formulation=form, return_info=True)
            return dc.assign_concepts(f, lab, (128, 128)), lab, info.dense_fallbacks

        fn = jax.jit(program)
        row = {}
        for b in (1, 16):
            if guard.over("ncut"):
                row[f"batch{b}"] = guard.over("ncut")
                continue
            _, first = _timed(fn, feats[:b])
            if b == 1:  # each map alone, median over maps of the median over repeats
                per = [statistics.median(_timed(fn, feats[i:i + 1])[1] for _ in range(args.repeats))
                       for i in range(len(maps))]
                ms = statistics.median(per) * 1e3
            else:
                ms = statistics.median(_timed(fn, feats)[1] for _ in range(args.repeats)) * 1e3 / 16
            row[f"batch{b}"] = {"compile_plus_first_call_s": round(first, 2),
                                "ms_per_image": round(ms, 3)}
        if isinstance(row.get("batch16"), dict):
            _, lab, dense = fn(feats)
            labels[form] = np.asarray(lab)
            row["segments"] = [int(x.max()) + 1 for x in labels[form]]
            row["dense_fallbacks"] = [int(d) for d in np.asarray(dense)]
        report["ncut"][form] = row
    if "stack" in labels and "level" in labels:
        # Nodes outside a one-to-one match of the two partitions. On CPU (jax 0.10.2) these maps
        # give 0-2 per map: the exact-zero rows whose side round-off decides (docs/differences.md).
        diff = [int(partition_mismatch(a, b).sum()) for a, b in zip(labels["stack"], labels["level"])]
        report["ncut"]["level_stack_parity"] = {
            "identical_partitions": f"{diff.count(0)}/{len(diff)}", "nodes_differing": diff}


def pipeline_section(args, report, ex, images: int = 48, batch: int = 16) -> None:
    """`segment`'s input pipeline and batched device step on generated JPEGs at --size."""
    import os
    import tempfile

    from PIL import Image

    from diffcut_jax.io.imageio import read_rgb
    from diffcut_jax.io.input_list import write_path_list
    from diffcut_jax.streaming.batcher import Batcher, stream
    from diffcut_jax.streaming.inputs import path_items
    from diffcut_jax.segmentation import SegmenterOptions
    from diffcut_jax.segmenter import DiffCut
    from diffcut_jax.testing import region_images, structured_feature_model

    folder = Path(tempfile.mkdtemp(prefix="gpu-pipeline-"))
    for i, im in enumerate(region_images(images, args.size, seed=1)):
        Image.fromarray((np.asarray(im) * 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)
    paths = write_path_list((str(p) for p in sorted(folder.glob("*.jpg"))), folder / "list.txt")
    seg = DiffCut(ex, SegmenterOptions(image_size=args.size, square=True))
    seg.model = structured_feature_model(ex)
    batcher = Batcher(seg, batch)
    decoded = [read_rgb(paths[i]) for i in range(len(paths))]
    t = time.perf_counter()
    stream(batcher, enumerate(decoded))  # compile
    compile_s = time.perf_counter() - t
    threads = min(16, os.cpu_count() or 1)
    alone, piped = [], []
    for _ in range(args.repeats):
        alone.append(stream(batcher, enumerate(decoded)))
        items = path_items(paths, process=0, count=1, start=0, skip=set(), max_pixels=1 << 30,
                           threads=threads, buffer=2 * batch)
        piped.append(stream(batcher, ((it, it.image) for it in items)))
    rate = lambda rs: statistics.median(r["images"] / r["seconds"] for r in rs)  # noqa: E731
    t = time.perf_counter()
    for i in range(len(paths)):
        read_rgb(paths[i])
    report["pipeline"] = {
        "images": len(paths), "batch": batch, "read_threads": threads,
        "compile_plus_first_run_s": round(compile_s, 2),
        "device_alone_images_per_s": round(rate(alone), 2),
        "pipeline_images_per_s": round(rate(piped), 2),
        "pipeline_share_of_device_alone": round(rate(piped) / rate(alone), 3),
        "decode_ms_per_image_one_thread": round(1000 * (time.perf_counter() - t) / len(paths), 2),
        "input_wait_share": round(statistics.median(r["input_wait_seconds"] / r["seconds"]
                                                    for r in piped), 3)}


def determinism_section(args, report, save) -> None:
    """The end to end in a child process without the reproducibility options: their cost."""
    import subprocess

    child = Path(args.out).with_name("gpu_end_to_end_nondeterministic.json")
    cmd = [sys.executable, __file__, "--out", str(child), "--size", str(args.size), "--repeats",
           str(args.repeats), "--sections", "end_to_end", "--nodeterministic"]
    if args.tiny:
        cmd.append("--tiny")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    other = json.loads(child.read_text()) if child.exists() else {}
    with_flags = _figure(report, "end_to_end", "plain", "batch16", "images_per_s")
    without = _figure(other, "end_to_end", "plain", "batch16", "images_per_s")
    report["determinism"] = {"images_per_s_deterministic": with_flags,
                             "images_per_s_autotuned": without,
                             "error": None if res.returncode == 0 else res.stderr[-2000:]}
    save("determinism")


def checkpoint_section(args, report, save) -> None:
    """Write a random checkpoint in the real layout, load it, then the original in PyTorch."""
    from diffcut_jax.segmenter import DiffCut
    from diffcut_jax.testing import tiny_spec, write_random_checkpoint

    root = Path(args.workdir)
    t = time.perf_counter()
    if not (root / "unet" / "config.json").exists():
        spec = tiny_spec("sdxl") if args.tiny else "ssd-1b"
        write_random_checkpoint(root, spec, dtype="float16", variant="fp16")
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    seg = DiffCut.from_pretrained(root, image_size=args.size, square=True)
    jax.block_until_ready(seg.extractor.params)
    report["checkpoint"] = {"write_s": round(write_s, 2), "load_s": round(time.perf_counter() - t, 2)}
    save("checkpoint")
    try:
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from original_torch import original_assign, original_ncut
    except ImportError as e:
        report["checkpoint"]["torch"] = f"skipped, not importable: {e}"
        save("checkpoint")
        return
    del seg
    jax.clear_caches()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    half = torch.float16 if device == "cuda" else torch.float32
    unet = UNet2DConditionModel.from_pretrained(root / "unet", variant="fp16", torch_dtype=half).to(device)
    vae = AutoencoderKL.from_pretrained(root / "vae", variant="fp16", torch_dtype=torch.float32).to(device)
    feats = {}
    block = unet.down_blocks[-1].attentions[-1].transformer_blocks[-1].attn1
    block.register_forward_hook(lambda m, i, o: feats.__setitem__("f", o))
    cfg = unet.config
    pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    ctx = torch.zeros(1, 77, cfg.cross_attention_dim, dtype=half, device=device)
    added = {"text_embeds": torch.zeros(1, pooled, dtype=half, device=device),
             "time_ids": torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]],
                                      dtype=half, device=device)}

    def torch_image(x):
        with torch.no_grad():
            z = vae.encode(2 * x - 1).latent_dist.mean * vae.config.scaling_factor
            unet((z + torch.randn_like(z)).to(half), 50, ctx, added_cond_kwargs=added)
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
    report["checkpoint"]["torch"] = {"device": device, "torch": torch.__version__,
                                     "images_per_s_batch1": round(1 / statistics.median(times), 3)}
    save("checkpoint")


if __name__ == "__main__":
    main()
