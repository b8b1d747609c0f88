"""Cold and warm start: load + first call of `DiffCut`, in fresh processes, with JAX's persistent
compilation cache empty (cold) and then filled (warm).

    python benchmarks/cold_start.py --model tiny [--size 64] [--out start.json]
    python benchmarks/cold_start.py --model ssd-1b --size 1024      # writes a 4.5 GB checkpoint

`--model tiny|ssd-1b` writes a random checkpoint in the real layout (tiny: a few MB of the same
structure; ssd-1b: the full-size fp16 one) unless `--checkpoint DIR` names an existing one. Each
start runs in its own process, as a user's would: import, `DiffCut.from_pretrained`, one call on
one image. Times are wall clock, median of `--repeats` warm starts.

Then the same starts from the converted parameters saved by `DiffCut.save` (features/saved.py:
safetensors in Flax layout, no name mapping, transposition or text encoding): `saved_warm_median`
against `warm_median`, same run, same compilation cache. `--load_only` skips the first call
(at SSD-1B's size on a CPU it is minutes of compilation and says nothing about loading).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import jax
jax.config.update("jax_compilation_cache_dir", sys.argv[2])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
import numpy as np
from diffcut_jax.segmenter import DiffCut
t1 = time.perf_counter()
seg = DiffCut.from_pretrained(sys.argv[1], image_size=int(sys.argv[3]), square=True)
import jax
jax.block_until_ready(seg.params)
t2 = time.perf_counter()
if sys.argv[4] == "call":
    image = np.random.default_rng(0).random((1, int(sys.argv[3]), int(sys.argv[3]), 3), np.float32)
    np.asarray(seg(image))
if len(sys.argv) > 5:
    seg.save(sys.argv[5])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_call_s": t3 - t2, "total_s": t3 - t0}))
"""


def start(checkpoint: Path, cache: Path, size: int, call: bool = True, save_to: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [str(checkpoint), str(cache), str(size), "call" if call else "load"]
    argv += [str(save_to)] if save_to else []
    out = subprocess.run([sys.executable, "-c", _CHILD, *argv],
                         env=env, capture_output=True, text=True, check=True)
    return {k: round(v, 2) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "ssd-1b"])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--load_only", action="store_true", help="skip the first call")
    args = parser.parse_args()
    size = args.size or (64 if args.model == "tiny" else 1024)
    work = Path(tempfile.mkdtemp(prefix="diffcut_start_"))
    checkpoint = Path(args.checkpoint) if args.checkpoint else work / "ckpt"
    result = {"model": args.model, "size": size}
    if not args.checkpoint:
        sys.path.insert(0, str(REPO))
        from diffcut_jax.testing import tiny_spec, write_random_checkpoint

        t = time.perf_counter()
        if args.model == "tiny":
            write_random_checkpoint(checkpoint, tiny_spec("sdxl"))
        else:
            write_random_checkpoint(checkpoint, "ssd-1b", dtype="float16", variant="fp16")
        result["write_checkpoint_s"] = round(time.perf_counter() - t, 2)
    cache = work / "jax_cache"
    call = not args.load_only
    result["first_call"] = call
    result["cold"] = start(checkpoint, cache, size, call)
    saved = work / "saved"
    t = time.perf_counter()
    start(checkpoint, cache, size, False, save_to=saved)
    result["convert_and_save_s"] = round(time.perf_counter() - t, 2)
    warm, warm_saved = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        warm.append(start(checkpoint, cache, size, call))
        warm_saved.append(start(saved, cache, size, call))
    result["warm_median"] = {k: statistics.median(w[k] for w in warm) for k in warm[0]}
    result["saved_warm_median"] = {k: statistics.median(w[k] for w in warm_saved) for k in warm_saved[0]}
    result["load_speedup"] = round(result["warm_median"]["load_s"] / result["saved_warm_median"]["load_s"], 2)
    result["cache_files"] = len(list(cache.glob("*")))
    result["machine"] = f"{platform.machine()} {os.cpu_count()} cores, {platform.processor() or 'cpu'}"
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
