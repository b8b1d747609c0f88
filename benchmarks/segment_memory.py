"""Resident memory of `diffcut-jax segment` over a list of 100,000 paths: flat, whatever the count.

    python benchmarks/segment_memory.py                  # 100,000 paths, one real image per 500
    python benchmarks/segment_memory.py --paths 1000000

Writes `--paths` lines to a list (`--inputs_from`): most name files that do not exist (recorded
as unreadable, as a crawl's dead links are), every `--every`-th a real JPEG (so the model runs
throughout: tiny random checkpoint, 64 px). Samples the command's VmRSS every 0.1 s and reports
it against the inputs done (from the closed shards): resident memory at 10%, 50% and 100% of the
inputs, and the growth from 10% to the end. Prints JSON (and writes it to --out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from segment_throughput import machine  # noqa: E402


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=500, help="one real image per this many paths")
    ap.add_argument("--shard_size", type=int, default=1000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import numpy as np
    from PIL import Image

    from diffcut_jax.testing import tiny_spec, write_random_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="segment-memory-"))
    write_random_checkpoint(tmp / "ckpt", tiny_spec("sdxl"), seed=3, std=0.2)
    rng = np.random.default_rng(0)
    (tmp / "real").mkdir()
    listing = tmp / "list.txt"
    with open(listing, "w") as fh:
        for i in range(args.paths):
            if i % args.every == 0:  # a file of its own (a path listed twice is segmented once)
                h, w = [(64, 64), (48, 64), (64, 48)][(i // args.every) % 3]
                real = tmp / "real" / f"real{i:08d}.jpg"
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(real)
                fh.write(f"{real}\n")
            else:
                fh.write(f"{tmp}/missing/photo_{i:08d}.jpg\n")
    out = tmp / "out"
    cmd = [sys.executable, "-m", "diffcut_jax.launch.segment", "--model", str(tmp / "ckpt"),
           "--image_size", "64", "--format", "coco", "--shard_size", str(args.shard_size),
           "--output_dir", str(out), "--inputs_from", str(listing), f"--compilation_cache_dir={tmp / 'cache'}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    samples = []  # (seconds, inputs in closed shards, RSS MiB)
    while proc.poll() is None:
        rss = rss_mib(proc.pid)
        if rss is not None:
            closed = len(list(out.glob("coco-*.json"))) * args.shard_size if out.exists() else 0
            samples.append((time.perf_counter() - t0, min(closed, args.paths), rss))
        time.sleep(0.1)
    stderr = proc.stderr.read()
    if proc.returncode:
        raise SystemExit(stderr[-3000:])

    def at(fraction: float) -> float:
        """RSS when `fraction` of the inputs were in closed shards (the last sample before)."""
        return [s[2] for s in samples if s[1] <= fraction * args.paths][-1]

    figures = json.loads((out / "summary.json").read_text())
    growth = samples[-1][2] - at(0.1)
    report = {"machine": machine(), "paths": args.paths, "real_images": figures["processed"],
              "unreadable": figures["unreadable_count"], "seconds": round(samples[-1][0], 1),
              "rss_mib": {"10%": round(at(0.1), 1), "50%": round(at(0.5), 1),
                          "100%": round(samples[-1][2], 1), "peak": round(max(s[2] for s in samples), 1)},
              "growth_10_to_100_percent_mib": round(growth, 1),
              "bytes_per_input_growth": round(growth * 2**20 / (0.9 * args.paths), 1),
              "samples": len(samples)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
