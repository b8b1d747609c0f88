"""The public functional API under the user's own transformations, on 8 host devices
(tests/functional_api_check.py in a subprocess): the user's jit equals `seg(images)`; the batch
sharded over 8 devices and under `shard_map` runs, keeps its sharding and gives the features of
1 device up to float32 round-off; composition with the user's own code in one program; one
compile per shape; traced tau/alpha; the extractor's and the labeller's functions.

Labels: with `feature_batch=1` (fixed UNet chunks) the batch sharded over 8 devices and under
`shard_map` equals 1 device exactly. Without it (the whole share in one UNet call) XLA:CPU's
batch-dependent round-off (~1e-6) can move NCut partitions of the tiny random model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_functional_api_on_eight_devices(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    res = subprocess.run([sys.executable, "tests/functional_api_check.py", str(tmp_path / "ckpt")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["devices"] == 8
    assert max(r["segments"]) > 1  # features with structure: several segments to compare
    for key in ("user_jit_equals_call", "composed_counts_equal", "traced_tau_equals_with_options",
                "features_equal", "labeller_equal"):
        assert r[key] is True, (key, r)
    assert r["sharded_features_max_rel_diff"] < 1e-5 and r["shard_map_features_max_rel_diff"] < 1e-5
    assert r["chunked_sharded_equal"] is True and r["chunked_shard_map_equal"] is True
    assert max(r["chunked_segments"]) > 1
    assert r["sharded_output_batch_sharded"] is True
    assert r["compiles_after_new_shape"] > r["compiles_same_shape"] >= 1
    assert r["traced_options_recompiles"] == 0
