"""Every command at its default sizes, with the tiny checkpoints: everything after the features has
the paper's shapes (a 32 x 32 feature map, so 1024 nodes and a label capacity of 1024; masks and
PAMR at 1024 x 1024 in `segment --refinement` and the open-vocabulary evaluation), on the 24 GB
CI machine. The small-size tests elsewhere stay; these catch the memory wall they cannot see.
Also: an out-of-memory image is a clear error, recorded in summary.jsonl, and loses nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from diffcut_jax.io import imageio
from diffcut_jax.testing import tiny_spec, write_random_checkpoint
from tests.helpers import FIXTURES, REPO, SHARED

pytestmark = pytest.mark.slow

PHOTO = SHARED / "images" / "2007_000925.png"
OTHER = SHARED / "images" / "coco.jpg"
CLIP = FIXTURES / "openclip" / "tiny_convnext_clip"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-real-sizes")
    # std 0.2: features with some structure, so that the NCut makes several segments.
    write_random_checkpoint(root, tiny_spec("sdxl"), seed=3, std=0.2)
    return root


def _command(module, args, devices=1):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([sys.executable, "-m", f"diffcut_jax.launch.{module}", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)


def _records(out):
    return [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [[], ["--refinement"],
                                   ["--vocabulary", "cat;dog;grass,lawn;sky;person",
                                    "--clip_model", str(CLIP)], ["--method", "kway"]],
                         ids=["plain", "refinement", "vocabulary", "kway"])
def test_segment_at_the_default_size(tiny_root, tmp_path, extra):
    out = tmp_path / "out"
    res = _command("segment", ["--model", str(tiny_root), "--tau", "0.9", "--output_dir", str(out),
                               "--compilation_cache_dir=", str(PHOTO), *extra])
    assert res.returncode == 0, res.stderr[-3000:]
    (record,) = _records(out)
    with Image.open(PHOTO) as im:
        h, w = im.height, im.width
    assert max(record["working_size"]) == 1024  # the default --image_size
    labels = imageio.read_labels_png(out / f"{PHOTO.stem}_labels.png")
    assert labels.shape == (h, w) and labels.max() + 1 == record["segments"] >= 1
    if "--vocabulary" in extra:
        doc = json.loads((out / f"{PHOTO.stem}_classes.json").read_text())
        assert sum(s["pixels"] for s in doc["segments"]) == h * w


def test_coherence_at_the_default_size(tiny_root, tmp_path):
    output = tmp_path / "coh.png"
    res = _command("coherence", ["--model", str(tiny_root), "--patch", "20,31", "--output",
                                 str(output), "--compilation_cache_dir=", str(PHOTO)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "feature map 24 x 32" in res.stderr or "feature map 32 x" in res.stderr, res.stderr[-500:]
    with Image.open(output) as im, Image.open(PHOTO) as src:
        assert im.size == src.size


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    from diffcut_jax.data import fake_downloads

    root = tmp_path_factory.mktemp("voc-real-sizes")
    fake_downloads.write_voc2012(root / "raw", num_images=2)
    return root


@pytest.mark.parametrize("config", [["--config=voc20", "--config.segmentation.refinement=True"],
                                    ["--config=openvoc_voc20"],
                                    ["--config=voc20", "--config.segmentation.method=kway"]],
                         ids=["voc20_pamr", "openvoc_voc20", "voc20_kway"])
def test_eval_at_the_configured_sizes(tiny_root, voc, tmp_path, config):
    pytest.importorskip("tensorflow_datasets")
    args = [*config, f"--config.model.path={tiny_root}", f"--data_dir={voc / 'tfds'}",
            f"--manual_dir={voc / 'raw'}", f"--workdir={tmp_path / 'work'}",
            "--compilation_cache_dir="]
    if config[0] == "--config=openvoc_voc20":
        args.append(f"--config.clip_model.path={CLIP}")
    res = _command("eval", args)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads((tmp_path / "work" / "results.json").read_text())
    assert r["images"] == 2
    seg = r["config"]["segmentation"]
    assert seg["image_size"] == 1024
    if "--config.segmentation.method=kway" in config:
        assert seg["method"] == "kway" and seg["kway_start"] == "spectral"
    else:
        assert seg["refinement"] is True
    if config[0] == "--config=openvoc_voc20":
        assert r["config"]["mask_size"] == 1024 and seg["pamr_num_iter"] == 15
        assert len(seg["pamr_dilations"]) == 8


def test_out_of_memory_is_a_clear_error_and_loses_nothing(tiny_root, tmp_path):
    """At a working size of 16384 (a 512 x 384 feature map) the NCut's graph alone needs far more
    than this machine's memory: XLA's allocation fails at once."""
    out = tmp_path / "out"
    first = _command("segment", ["--model", str(tiny_root), "--image_size", "64", "--output_dir",
                                 str(out), "--compilation_cache_dir=", str(PHOTO)])
    assert first.returncode == 0, first.stderr[-2000:]
    kept = {p.name: p.read_bytes() for p in out.glob("*.png")}
    args = ["--model", str(tiny_root), "--image_size", "16384", "--output_dir", str(out),
            "--compilation_cache_dir=", str(PHOTO), str(OTHER)]
    res = _command("segment", args)  # other labels into the same folder: refused
    assert res.returncode == 2 and "labels.image_size: earlier run 64, this run 16384" in res.stderr
    res = _command("segment", [*args, "--overwrite"])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 1  # nothing succeeded
    assert ("out of memory on cpu (cpu) in the DiffCut batch function (batch 1, working size "
            "12288 x 16384, refinement off): lower --image_size (now 16384)") in res.stderr
    records = _records(out)
    assert records[0]["input"] == str(PHOTO) and "error" not in records[0]
    assert [r["input"] for r in records[1:]] == [str(PHOTO), str(OTHER)]
    assert all("out of memory" in r["error"] for r in records[1:])
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == kept  # failures overwrite nothing
