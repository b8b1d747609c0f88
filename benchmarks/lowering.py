"""Every accelerator program lowered for GPU and TPU on this machine (`jax.export`), with what a
GPU pays for in host round trips and XLA's FLOPs per image.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/lowering.py \
        [--platforms cuda,tpu] [--out lowering.json]

Programs (`programs.accelerator_programs`): the `DiffCut` batch function at 1024 x 1024 with and
without refinement, with AutoSC and with the K-way NCut (bf16 UNet, level NCut formulation, the
platform's numerics), the voc20 evaluator step and the dataset engine's step (`label_dataset`,
`segment_files`, the `segment` command), both `shard_map`ped over every local device (8 host
devices simulate a pod slice), and the labeller step. Attention is "auto", which picks a non-cuDNN kernel where cuDNN cannot be
detected (here). For each program and platform: the number of `while` and conditional
(`case`/`if`) ops in the exported StableHLO module, and XLA's HLO cost analysis of the lowered
program per image (loop bodies counted once, so a lower bound for the loops). JSON is rewritten
after every row; `tests/test_lowering.py` runs this script in CI.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from diffcut_jax import programs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platforms", default="cuda,tpu")
    ap.add_argument("--out", default="lowering.json")
    args = ap.parse_args()
    report = {"jax": jax.__version__, "lowered_on": jax.default_backend(),
              "devices": jax.device_count(), "rows": []}
    for platform in args.platforms.split(","):
        for prog in programs.accelerator_programs(platform, devices=jax.devices()):
            t = time.perf_counter()
            row = {"program": prog.name, "batch": prog.images, **programs.lowered_for(prog, platform),
                   "gflop_per_image": round(programs.flops_per_image(prog) / 1e9, 1),
                   "seconds": round(time.perf_counter() - t, 1)}
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
