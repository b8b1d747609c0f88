"""XLA's memory analysis of every program a user runs, with abstract weights (nothing allocated).

    python benchmarks/memory_analysis.py [--model ssd-1b] [--dtype float32] [--only diffcut]
        [--out memory.json]

The programs (`diffcut_jax/programs.py`, the memory table of docs/performance.md): the `DiffCut` batch function
at 1024 x 1024, batch 1 and 16, with and without refinement; the evaluator's device steps of
`voc20` (with and without PAMR) and of `openvoc_voc20` / `openvoc_coco_object` at their configured
settings; the labeller step; the coherence command; the features alone for comparison. Each is
the library's own jitted function, lowered with `jax.ShapeDtypeStruct` arguments of the
full-size model, compiled for this backend (CPU here), and its `memory_analysis()` printed as one
JSON line; the JSON file is rewritten after every program. The budget is 8 GiB of temporaries
(`programs.BUDGET_GIB`; `tests/test_memory_budget.py` enforces it in CI).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from diffcut_jax import presets, programs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ssd-1b", choices=presets.NAMES)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--only", default="", help="only programs whose name contains this")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
              "jax": jax.__version__, "model": args.model, "dtype": args.dtype,
              "budget_gib": programs.BUDGET_GIB, "rows": []}
    for prog in programs.catalogue(args.model, args.dtype):
        if args.only not in prog.name:
            continue
        t = time.perf_counter()
        row = {"program": prog.name, "batch": prog.images, **programs.memory(prog),
               "compile_s": round(time.perf_counter() - t, 1)}
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
