"""Every accelerator program lowers for cuda and tpu on this CPU-only machine (`jax.export`):
the `DiffCut` batch function at 1024 x 1024 (NCut, AutoSC and the K-way NCut), the evaluator
step and the dataset engine's step under `shard_map` over 8 host devices, and the labeller step (benchmarks/lowering.py, whose table is in docs/performance.md)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from diffcut_jax import determinism
from tests.helpers import REPO


@pytest.mark.slow
def test_every_program_lowers_for_cuda_and_tpu(tmp_path):
    out = tmp_path / "lowering.json"
    # With the reproducibility options the commands set on GPUs (XLA refuses unknown ones).
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS=determinism.flags_with("--xla_force_host_platform_device_count=8"))
    res = subprocess.run([sys.executable, "benchmarks/lowering.py", "--out", str(out)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["devices"] == 8
    rows = {(r["program"], r["platform"]): r for r in report["rows"]}
    for platform in ("cuda", "tpu"):
        names = [n for n, p in rows if p == platform]
        assert len(names) == 7, names
        assert any("evaluator step" in n for n in names)
        for name in names:
            r = rows[(name, platform)]
            assert r["gflop_per_image"] > 0 and r["module_kib"] > 0
        seg = rows[("DiffCut batch function, 1024 x 1024", platform)]
        refined = rows[("DiffCut batch function, 1024 x 1024, refinement", platform)]
        assert seg["while"] >= 1 and refined["while"] > seg["while"]  # the refinement's loops
        assert refined["gflop_per_image"] > seg["gflop_per_image"]
        # AutoSC lowers too (no pivoted-QR custom call: geqp3 has no TPU lowering).
        autosc = rows[("DiffCut batch function, 1024 x 1024, AutoSC", platform)]
        assert autosc["module_kib"] > 0 and not any("geqp3" in c for c in autosc["custom_calls"])
        # The K-way NCut: its solver loop, no pivoted QR either.
        kway = rows[("DiffCut batch function, 1024 x 1024, K-way", platform)]
        assert kway["while"] >= 2 and not any("geqp3" in c for c in kway["custom_calls"])
    # The evaluator step covers 8 devices x the per-device batch.
    assert rows[("voc20 evaluator step (prediction), masks 128", "cuda")]["batch"] == 64
    # The dataset engine's step: one image per device, the per-image NCut program inside.
    for platform in ("cuda", "tpu"):
        engine = rows[("dataset engine step, 1024 x 1024", platform)]
        assert engine["batch"] == 8 and engine["while"] >= 1
        assert engine["gflop_per_image"] > 0
