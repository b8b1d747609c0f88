"""benchmarks/gpu_end_to_end.py runs on CPU as a smoke test (tiny architecture, 64 px) and
writes every section of its report, so that a lent GPU's one window is not spent on a bug."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_quick_mode_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "benchmarks/gpu_end_to_end.py", "--tiny", "--size", "64",
                          "--repeats", "1", "--out", str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mode"] == "quick" and "checkpoint" not in r  # no checkpoint write by default
    assert list(r["wall_s"]) == ["setup", "features", "ncut", "end_to_end", "pipeline", "memory",
                                 "targets"]
    assert set(r["features"]) == {"batch8", "batch16"}
    for form in ("stack", "level", "kway"):
        assert set(r["ncut"][form]) == {"batch1", "batch16", "segments", "dense_fallbacks"}
    parity = r["ncut"]["level_stack_parity"]
    assert len(parity["nodes_differing"]) == 16
    for form in ("stack", "level"):  # beside every NCut figure: segments and dense fallbacks
        assert len(r["ncut"][form]["segments"]) == len(r["ncut"][form]["dense_fallbacks"]) == 16
    assert set(r["end_to_end"]) == {"plain", "refinement"}
    for row in r["end_to_end"].values():
        assert len(row["batch16"]["segments_per_image"]) == 16
    p = r["pipeline"]  # segment's pipeline against its device step alone, on the same images
    assert p["images"] == 48 and p["pipeline_images_per_s"] > 0 and p["device_alone_images_per_s"] > 0
    assert 0 <= p["input_wait_share"] <= 1
    # One compile per program: features 2, NCut 2 per formulation and K-way 2, end to end 2.
    assert r["compiles"]["ncut"] <= 6 + 2 and r["compiles"]["end_to_end"] <= 2 + 2, r["compiles"]
    assert set(r["targets"]) == {"features_images_per_s", "ncut_ms_per_image",
                                 "end_to_end_images_per_s"}
