"""Throughput of `diffcut-jax segment` on a folder of JPEGs of mixed sizes, four ways, one run.

    python benchmarks/segment_throughput.py                      # tiny checkpoint, 256 and 512 px
    python benchmarks/segment_throughput.py --image_sizes 1024 --model segmind/SSD-1B --devices 0

1. one at a time: the command at batch 1 on one device, decoding, segmenting and writing in
   turn (`--batch_size 1 --read_threads 0`: the command before batching and streaming);
2. pipeline: the command at --batch_size per device over --devices devices, decoded ahead by
   --read_threads threads (Grain) and written behind;
3. library: the same run through `diffcut_jax.label_dataset` in a Python process (the engine
   the command calls), at the pipeline's settings: the library call and the command side by side;
4. bucket: the pipeline with its inputs on a GCS-API server on 127.0.0.1 (fake-gcs-server, as
   the tests start it: tests/object_store.py), fetched by the read-ahead threads; outputs on the
   local disk as in the other ways, so that the ratio bucket / pipeline is the inputs' cost
   alone (`--no-bucket` leaves it out);
5. device alone: the same batched device step (`streaming/batcher.py`) on images decoded
   beforehand, in a process of its own: the rate the pipeline would reach if input cost nothing.
On a CPU the host devices share the machine's cores with each other and with decoding, so the
pipeline is also run, and its device step timed alone, on one device (`*_one_device`): the
pipeline's own effect, apart from the cost of splitting the cores.

Per image size: images/s of each way, the pipeline's share of the device-alone rate, decode ms/image
(summary.jsonl), device ms/image (way 4) and the share of the pipeline's run spent waiting for
input. The command's figures are marginal: each repeat runs it on N images and on 2N (the same N, then N
more of the same sizes) and takes the N extra images' time and input wait from its summary.json
(the loop, not the model loading). A short run is otherwise dominated by what the first batches
pay once (tracing and lowering every program, compiling or loading it from the cache): on this
CPU about 6 s of a 96-image run. Median of --repeats, after a warm-up run that fills the
compilation cache; a repeat whose 2N loop took no longer than its N loop (a stall in the
first) has no marginal rate and is dropped and counted (`runs_dropped`). Host
devices (`--devices N` on a CPU) are `--xla_force_host_platform_device_count`; `--devices 0`
uses the machine's own devices (a GPU). Prints JSON (and writes it to --out).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (height, width) per 4 x 4 pixels of image size: 3 working sizes, 6 input sizes (photos of one
# camera are few sizes; each new input size costs one small resize program).
ASPECTS = [(1.0, 1.0), (0.75, 1.0), (1.0, 0.75), (1.1, 1.1), (0.8, 1.07), (1.2, 0.9)]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_jpegs(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """`n` JPEGs with smooth structure (photo-like decode cost), sizes cycling over ASPECTS."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a, b = ASPECTS[i % len(ASPECTS)]
        h, w = int(size * a) // 4 * 4, int(size * b) // 4 * 4
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        phase = rng.uniform(0, 6.28, 3)
        img = np.stack([np.sin(6 * xx + phase[c]) * np.cos(5 * yy - phase[c]) for c in range(3)], -1)
        img = (127.5 * (img + 1) + rng.normal(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:04d}.jpg", quality=90)


def env_for(devices: int, extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra or {})
    if devices:
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={devices}").strip()
    return env


LIBRARY = r"""
import sys
import jax
jax.config.update("jax_compilation_cache_dir", sys.argv[7])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
from diffcut_jax import DiffCut, label_dataset
seg = DiffCut.from_pretrained(sys.argv[1], image_size=int(sys.argv[2]))
label_dataset(seg, [sys.argv[3]], sys.argv[4], format=("coco",), batch_size=int(sys.argv[5]),
              read_threads=int(sys.argv[6]), overwrite=True, progress=False)
"""


def command(model, size, inputs, out, *, batch, threads, devices, cache, library=False,
            env=None) -> dict:
    """One run of the command (or of `label_dataset`, the same engine from Python); its
    summary.json, and the mean decode time of its images."""
    if library:
        args = [sys.executable, "-c", LIBRARY, model, str(size), str(inputs), str(out), str(batch),
                str(threads), str(cache)]
    else:
        args = [sys.executable, "-m", "diffcut_jax.launch.segment", "--model", model,
                "--image_size", str(size), "--format", "coco", "--output_dir", str(out),
                "--batch_size", str(batch), "--read_threads", str(threads), "--overwrite",
                f"--compilation_cache_dir={cache}", str(inputs)]
    res = subprocess.run(args, cwd=ROOT, env=env_for(devices, env), capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{'label_dataset' if library else 'segment'} failed:\n{res.stderr[-3000:]}")
    figures = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    decode = [r["seconds"]["decode"] for r in records[-figures["processed"]:]]
    figures["decode_ms"] = 1000 * statistics.mean(decode)
    figures["wait_seconds"] = figures["input_wait_share"] * figures["loop_seconds"]
    return figures


def marginal(model, size, small, large, out, **kw) -> dict:
    """The command on `small` (N images) and on `large` (2N: the same N, then N more of the
    same sizes): the N extra images' rate and input wait, with the first run's costs (tracing,
    compiling or loading every program, filling the pipeline) cancelled out."""
    a = command(model, size, small, out, **kw)
    b = command(model, size, large, out, **kw)
    extra, seconds = b["processed"] - a["processed"], b["loop_seconds"] - a["loop_seconds"]
    if seconds <= 0:  # a stall or a compile landed in the N run's loop: no marginal rate
        return None
    return {"images_per_second": extra / seconds,
            "input_wait_share": max(0.0, b["wait_seconds"] - a["wait_seconds"]) / seconds,
            "whole_loop_images_per_second": b["images_per_second"], "decode_ms": b["decode_ms"]}


DEVICE_ALONE = r"""
import json, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from diffcut_jax.io.imageio import read_rgb
from diffcut_jax.streaming.batcher import Batcher, stream
from diffcut_jax.segmenter import DiffCut

seg = DiffCut.from_pretrained({model!r}, image_size={size})
batcher = Batcher(seg, {batch})
images = [read_rgb(p) for p in sorted(Path({inputs!r}).glob("*.jpg"))]
stream(batcher, enumerate(images))  # compile
rates = []
for _ in range({repeats}):
    r = stream(batcher, enumerate(images))
    rates.append(r["images"] / r["seconds"])
print(json.dumps({{"rates": rates, "devices": batcher.devices}}))
"""


def device_alone(model, size, inputs, *, batch, devices, repeats) -> dict:
    code = DEVICE_ALONE.format(root=str(ROOT), model=model, size=size, batch=batch,
                               inputs=str(inputs), repeats=repeats)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env_for(devices),
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"device-alone run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="hub id or local dir (default: a tiny random checkpoint)")
    ap.add_argument("--image_sizes", default="256,512")
    ap.add_argument("--images", type=int, default=96,
                    help="N; 3 working sizes: 96 fill one batch of 8 x 4 devices per size")
    ap.add_argument("--batch_size", type=int, default=8, help="per device")
    ap.add_argument("--devices", type=int, default=4, help="host devices (0: the machine's own)")
    ap.add_argument("--read_threads", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--jpeg_scale", type=float, default=1.0,
                    help="JPEG long side / image size (photos are often larger than the working size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bucket", action=argparse.BooleanOptionalAction, default=True,
                    help="the bucket way (inputs on a local GCS-API server)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="segment-throughput-"))
    store = None
    if args.bucket:
        sys.path.insert(0, str(ROOT))
        from tests.object_store import ObjectStore

        store = ObjectStore("gs").__enter__()
        bucket = store.bucket()
    model = args.model
    if model is None:
        from diffcut_jax.testing import tiny_spec, write_random_checkpoint

        write_random_checkpoint(tmp / "ckpt", tiny_spec("sdxl"), seed=3, std=0.2)
        model = str(tmp / "ckpt")
    report = {"machine": machine(), "model": args.model or "tiny random checkpoint (std 0.2)",
              "images": args.images, "jpeg_scale": args.jpeg_scale, "batch_per_device": args.batch_size,
              "devices": args.devices or "the machine's own", "read_threads": args.read_threads,
              "repeats": args.repeats, "sizes": {}}
    for size in (int(s) for s in args.image_sizes.split(",")):
        inputs, large = tmp / f"jpegs-{size}", tmp / f"jpegs-{size}-x2"
        write_jpegs(large, 2 * args.images, int(size * args.jpeg_scale))
        inputs.mkdir()
        for p in sorted(large.glob("*.jpg"))[: args.images]:
            (inputs / p.name).symlink_to(p)
        cache = tmp / f"cache-{size}"
        ways = {"one_at_a_time": dict(batch=1, threads=0, devices=1 if args.devices else 0),
                "pipeline": dict(batch=args.batch_size, threads=args.read_threads,
                                 devices=args.devices),
                "library": dict(batch=args.batch_size, threads=args.read_threads,
                                devices=args.devices, library=True)}
        if args.devices > 1:
            ways["pipeline_one_device"] = dict(batch=args.batch_size, threads=args.read_threads,
                                               devices=1)
        sources = {k: (inputs, large) for k in ways}
        if store is not None:
            store.upload(inputs, f"{bucket}jpegs-{size}")
            store.upload(large, f"{bucket}jpegs-{size}-x2")
            ways["bucket"] = dict(batch=args.batch_size, threads=args.read_threads,
                                  devices=args.devices, env=store.env())
            sources["bucket"] = (f"{bucket}jpegs-{size}", f"{bucket}jpegs-{size}-x2")
        runs: dict[str, list] = {k: [] for k in ways}
        for name, kw in ways.items():  # warm-up
            command(model, size, sources[name][0], tmp / f"out-{size}-{name}", cache=cache, **kw)
        for _ in range(args.repeats):  # interleaved: drifts of the machine hit every way alike
            for name, kw in ways.items():
                runs[name].append(marginal(model, size, *sources[name], tmp / f"out-{size}-{name}",
                                           cache=cache, **kw))
        dropped = {k: sum(r is None for r in v) for k, v in runs.items()}
        runs = {k: [r for r in v if r is not None] for k, v in runs.items()}
        if not all(runs.values()):  # too few images for their time to stand out of the noise
            print(f"{size} px: a way has no marginal rate (use more --images): {dropped}",
                  file=sys.stderr)
            nan = {"images_per_second": math.nan, "input_wait_share": math.nan,
                   "whole_loop_images_per_second": math.nan, "decode_ms": math.nan}
            runs = {k: v or [nan] for k, v in runs.items()}
        alone = device_alone(model, size, inputs, batch=args.batch_size, devices=args.devices,
                             repeats=args.repeats)
        med = {k: statistics.median(r["images_per_second"] for r in v) for k, v in runs.items()}
        whole = {k: statistics.median(r["whole_loop_images_per_second"] for r in v)
                 for k, v in runs.items()}
        device_rate = statistics.median(alone["rates"])
        extra = {}
        if args.devices > 1:
            one = device_alone(model, size, inputs, batch=args.batch_size, devices=1,
                               repeats=args.repeats)
            extra = {"device_alone_one_device": statistics.median(one["rates"])}
        report["sizes"][str(size)] = {
            "images_per_second": {**med, "device_alone": device_rate, **extra},
            "pipeline_share_of_device_alone": med["pipeline"] / device_rate,
            "library_share_of_pipeline": med["library"] / med["pipeline"],
            **({"bucket_share_of_pipeline": med["bucket"] / med["pipeline"]} if "bucket" in med else {}),
            "pipeline_speedup_over_one_at_a_time": med["pipeline"] / med["one_at_a_time"],
            "decode_ms_per_image": statistics.median(r["decode_ms"] for r in runs["pipeline"]),
            "device_ms_per_image": 1000 / device_rate,
            "pipeline_input_wait_share": statistics.median(r["input_wait_share"] for r in runs["pipeline"]),
            "one_at_a_time_input_wait_share": statistics.median(
                r["input_wait_share"] for r in runs["one_at_a_time"]),
            "images_per_second_whole_loop_2n": whole,
            "runs": {k: [round(r["images_per_second"], 3) for r in v] for k, v in runs.items()},
            "runs_dropped": dropped,
        }
        if extra:
            report["sizes"][str(size)]["pipeline_one_device_share_of_device_alone_one_device"] = (
                med["pipeline_one_device"] / extra["device_alone_one_device"])
            report["sizes"][str(size)]["pipeline_one_device_speedup_over_one_at_a_time"] = (
                med["pipeline_one_device"] / med["one_at_a_time"])
        print(json.dumps({size: report["sizes"][str(size)]}), file=sys.stderr, flush=True)
    if store is not None:
        store.__exit__(None, None, None)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
