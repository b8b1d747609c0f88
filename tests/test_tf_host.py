"""TensorFlow never sees the accelerators: they are hidden before its first use, on every path
(`data/tf_host.py` is the project's one way in to TensorFlow and TFDS)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytest.importorskip("tensorflow_datasets")


def test_tensorflow_is_imported_through_tf_host_only():
    found = []
    for folder in ("diffcut_jax", "launch", "benchmarks", "configs"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "tf_host.py" or path.is_symlink() or "diffcut_jax/launch" in str(path) \
                    or "diffcut_jax/configs" in str(path):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                found += [f"{path.relative_to(REPO)}: {n}" for n in names
                          if n.split(".")[0] in ("tensorflow", "tensorflow_datasets")]
    assert not found, "TensorFlow imported around data/tf_host.py:\n" + "\n".join(found)


# Records every `set_visible_devices` call with whether TensorFlow had started (its eager context
# initialised) at that moment, runs the evaluation's data path (build a benchmark with TFDS, read
# batches through tf.data), and reports the calls and the device kinds TensorFlow sees.
_PROBE = r"""
import json, sys, tempfile
from pathlib import Path
import tensorflow as tf
from tensorflow.python.eager import context  # private: the one way to see "already started"

calls = []
real = tf.config.set_visible_devices
def recorded(devices, device_type=None):
    calls.append([device_type, bool(context.context()._initialized)])
    return real(devices, device_type)
tf.config.set_visible_devices = recorded

from diffcut_jax.data import builders, fake_downloads, pipeline
root = Path(tempfile.mkdtemp())
fake_downloads.write_voc2012(root / "raw", num_images=2)
builder = builders.builder("voc20", root / "tfds")
builders.prepare(builder, root / "raw")
ds, _ = pipeline.eval_batches(builder, batch_size=2, image_size=64, mask_size=16)
next(iter(ds))
print(json.dumps({"calls": calls,
                  "kinds": sorted({d.device_type for d in tf.config.get_visible_devices()})}))
"""


@pytest.mark.slow
def test_accelerators_are_hidden_before_tensorflow_starts(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    hidden = {kind for kind, started in out["calls"] if not started}
    assert {"GPU", "TPU"} <= hidden, f"hidden after TensorFlow started: {out['calls']}"
    assert out["kinds"] == ["CPU"]
