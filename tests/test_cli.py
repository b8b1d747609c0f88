"""The console script as a new user meets it: `--help` lists the command's own flags with their
defaults (not absl's logging flags), and no command logs JAX's backend probing."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, SHARED


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("JAX_PLATFORMS", None)  # let JAX probe its backends, as on a user's machine
    return subprocess.run([sys.executable, "-m", "diffcut_jax.launch.cli", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command,own", [
    ("segment", ["--output_dir:", "--format:", "--tau:", "--vocabulary:", "--model:"]),
    ("eval", ["--config:", "--workdir:", "--checkpoint_every:", "--distributed:"]),
    ("coherence", ["--patch:", "--opacity:", "--image_size:"]),
    ("demo", ["--port:", "--samples:", "--clip_model:", "--tau:"]),
])
def test_help_lists_the_commands_own_flags(command, own):
    res = _run(command, "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    for flag in own:
        boolean = f"  --[no]{flag[2:]}"  # absl's spelling of a boolean flag
        assert f"  {flag}" in res.stdout or boolean in res.stdout, (flag, res.stdout[:3000])
    assert "(default: " in res.stdout and "--compilation_cache_dir:" in res.stdout
    assert "--logtostderr" not in res.stdout and "Try --helpfull" not in res.stdout
    assert res.stdout.startswith(("Segment", "Benchmark", "Semantic", "Local web demo"))


def test_no_backend_probing_in_the_output(tmp_path):
    res = _run("coherence", str(SHARED / "images" / "coco.jpg"), "--patch", "0,0",
               "--model", str(tmp_path / "missing"))
    assert res.returncode == 2 and "model directory not found" in res.stderr
    assert "Unable to initialize backend" not in res.stderr and "I1" not in res.stderr
