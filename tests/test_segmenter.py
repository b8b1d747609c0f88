"""The segmenter API and the `segment` / `coherence` commands, on a tiny random checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from diffcut_jax.io import coco_output, imageio, paths
from diffcut_jax.io.image_ops import working_size
from diffcut_jax.segmenter import DiffCut
from diffcut_jax.testing import tiny_spec, write_random_checkpoint
from tests.helpers import MIXED_SIZES, REPO, SHARED

IMAGES = sorted((SHARED / "images").glob("*"))
SIZE = 64  # working size for the tiny model (features 2 x 2 .. 2 x 2)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-seg")
    write_random_checkpoint(root, tiny_spec("sdxl"), seed=3)
    return root


@pytest.fixture(scope="module")
def seg(tiny_root):
    return DiffCut.from_pretrained(tiny_root, image_size=SIZE, tau=0.99, alpha=1.0)


def test_working_size():
    assert working_size(369, 492, 1024, False) == (768, 1024)
    assert working_size(1000, 10, 1024, False) == (1024, 32)
    assert working_size(369, 492, 1024, True) == (1024, 1024)


@pytest.mark.slow
def test_labels_at_input_size_and_consecutive(seg):
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 45, 70, 3))
    labels = seg(images)
    assert labels.shape == (2, 45, 70) and labels.dtype == jnp.int32
    for lab in np.asarray(labels):
        np.testing.assert_array_equal(np.unique(lab), np.arange(lab.max() + 1))
    assert seg(images[0], output_size=(10, 12)).shape == (10, 12)


@pytest.mark.slow
def test_one_compiled_program_per_shape_and_static_options(seg, compile_counter):
    images = jax.random.uniform(jax.random.PRNGKey(1), (3, 40, 40, 3))
    others = [np.asarray(images) * (1 - 0.01 * i) for i in range(3)]  # new data, same shape
    first = np.asarray(seg(images))
    seg(others[0])  # NumPy input: its staging program (once per shape) is part of the warm-up
    warm = compile_counter.count
    for other in others:
        seg(other).block_until_ready()
    assert compile_counter.count == warm
    # tau and alpha are traced: with_options and another alpha reuse the compiled program.
    seg.with_options(tau=0.3)(images).block_until_ready()
    seg.with_options(alpha=5.0, tau=0.7)(images).block_until_ready()
    assert compile_counter.count == warm
    np.testing.assert_array_equal(np.asarray(seg(images)), first)
    # A static option is another program.
    seg.with_options(refinement=True)(images).block_until_ready()
    assert compile_counter.count > warm


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(refinement=True), dict(method="autosc"), dict(square=True),
                                     dict(method="kway"), dict(method="kway", kway_start="ncut")])
def test_options(seg, options):
    s = seg.with_options(**options)
    labels = np.asarray(s(jax.random.uniform(jax.random.PRNGKey(2), (1, 50, 30, 3))))
    assert labels.shape == (1, 50, 30)
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))


@pytest.mark.slow
def test_segment_files_reports_bad_files(seg, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    results = list(seg.segment_files([IMAGES[0], bad, IMAGES[1]], batch_size=2))
    assert [r.ok for r in results] == [True, False, True]
    assert "not an image" in results[1].error
    with Image.open(IMAGES[0]) as im:
        assert results[0].labels.shape == (im.height, im.width)


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_segment_files_is_lazy_and_flat_in_memory(seg, tmp_path):
    """100,000 paths, nearly all missing (a crawl's dead links, as benchmarks/segment_memory.py):
    the first result comes back when one chunk of the iterable has been taken, results come in
    input order, and resident memory stays flat (a list of every result would grow by tens of
    MiB)."""
    real = tmp_path / "real.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(real)
    total, pulled = 100_000, 0

    def paths():
        nonlocal pulled
        for i in range(total):
            pulled += 1
            yield real if i % 20_000 == 0 else tmp_path / f"missing-{i}.png"

    results = seg.segment_files(paths(), batch_size=2, read_threads=2)
    first = next(results)
    assert first.ok and first.labels.shape == (40, 50) and pulled < total // 50
    rss = {}
    for i, r in enumerate(results, start=1):
        assert r.ok == (i % 20_000 == 0) and r.path.name == ("real.png" if r.ok else f"missing-{i}.png")
        if i in (total // 10, total - 1):
            rss[i] = _rss_mib()
    assert pulled == total and i == total - 1
    assert rss[total - 1] - rss[total // 10] < 8, rss  # MiB, over 90,000 results


@pytest.mark.slow
def test_segment_files_compiles_once(seg, tmp_path, compile_counter):
    """Repeated calls, a changed tau or alpha (traced) and another batcher of the same devices
    reuse the batched program: one compilation per (batch, working size)."""
    paths = [IMAGES[0], IMAGES[0]]
    fresh = seg.with_options(pamr_num_iter=3)  # a static setting no other test compiled
    first = [r.labels for r in fresh.segment_files(paths, batch_size=2)]
    assert compile_counter.by_name["jit(segment_batch)"] == 1, compile_counter.by_name
    for other in (fresh, fresh.with_options(tau=0.5), fresh.with_options(alpha=5.0)):
        again = [r.labels for r in other.segment_files(paths, batch_size=2)]
        assert all(a.shape == b.shape for a, b in zip(first, again))
    assert compile_counter.by_name["jit(segment_batch)"] == 1, compile_counter.by_name


# ---------------------------------------------------------------- bad inputs of every kind


def _bad_inputs(folder: Path) -> dict[str, str | None]:
    """name -> expected skip reason fragment (None: handled, must succeed)."""
    rng = np.random.default_rng(0)
    rgb = (rng.uniform(size=(37, 53, 3)) * 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.uniform(size=(30, 41)) * 65535).astype(np.uint16)).save(folder / "gray16.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(rgb[:3, :2]).save(folder / "tiny.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    Image.fromarray(rgb).save(folder / "whole.jpg", quality=90)
    raw = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    (folder / "whole.jpg").unlink()
    # A "huge" image: a valid PNG whose header claims more pixels than --max_pixels allows.
    Image.fromarray(np.zeros((600, 600, 3), np.uint8)).save(folder / "huge.png")
    return {
        "cmyk": None, "gray16": None, "gray": None, "rgba": None, "palette": None, "tiny": None,
        "empty": "empty file", "text": "not an image", "truncated": "truncated or corrupt",
        "huge": "too large",
    }


def _run(args, env=None, timeout=600):
    cmd = [sys.executable, "-m", "diffcut_jax.launch.segment", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def _check_outputs(out: Path, name: str, source: Path):
    labels = imageio.read_labels_png(out / f"{name}_labels.png")
    with Image.open(source) as im:
        size = (im.height, im.width)
    assert labels.shape == size, name
    with Image.open(out / f"{name}_overlay.png") as ov:
        assert ov.mode == "RGB" and (ov.height, ov.width) == size
    return labels


@pytest.mark.slow
def test_segment_command_on_photos_and_bad_inputs(tiny_root, tmp_path):
    bad_dir = tmp_path / "bad"
    expected = _bad_inputs(bad_dir)
    out = tmp_path / "out"
    photos = [str(p) for p in IMAGES[:3]] + [str(SHARED / "images" / "coco.jpg")]
    res = _run(["--model", str(tiny_root), "--image_size", str(SIZE), "--output_dir", str(out),
                "--max_pixels", "310000", "--tau", "0.9", *photos, str(bad_dir),
                str(tmp_path / "missing.png")], env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    for p in photos:
        _check_outputs(out, Path(p).stem, Path(p))
    for name, reason in expected.items():
        src = next(bad_dir.glob(f"{name}.*"))
        if reason is None:
            _check_outputs(out, name, src)
        else:
            assert not (out / f"{name}_labels.png").exists()
            line = next(l for l in res.stderr.splitlines() if l.startswith("skip:") and src.name in l)
            assert reason in line, line
    assert "missing.png: no such file or folder" in res.stderr
    records = [json.loads(l) for l in (out / "summary.jsonl").read_text().splitlines()]
    done = [r for r in records if "error" not in r]
    assert len(done) == len(photos) + sum(r is None for r in expected.values())
    assert all(r["segments"] >= 1 and "segment" in r["seconds"] for r in done)
    unreadable = {Path(r["input"]).stem: r["error"] for r in records if "error" in r}
    assert unreadable.keys() == {n for n, r in expected.items() if r is not None}
    assert all(expected[n] in reason for n, reason in unreadable.items())
    assert "processed 10" in res.stderr and "failed 4" in res.stderr


@pytest.mark.slow
def test_exit_code_when_nothing_succeeds(tiny_root, tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("no")
    res = _run(["--model", str(tiny_root), "--image_size", str(SIZE), "--output_dir",
                str(tmp_path / "o"), str(bad)], env=_env())
    assert res.returncode == 1 and "not an image" in res.stderr
    res = _run(["--output_dir", str(tmp_path / "o"), str(tmp_path / "nothing*.png")], env=_env())
    assert res.returncode == 2 and "matches no file" in res.stderr


@pytest.mark.slow
def test_offline_default_model_says_how_to_download(tmp_path):
    env = _env()
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    res = _run(["--output_dir", str(tmp_path / "o"), str(IMAGES[0])], env=env)
    assert res.returncode == 2
    assert "hf download segmind/SSD-1B" in res.stderr and "local" in res.stderr


@pytest.mark.slow
def test_interrupted_run_resumes(tiny_root, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        shutil.copy(IMAGES[i % len(IMAGES)], src / f"img{i:02d}{IMAGES[i % len(IMAGES)].suffix}")
    out = tmp_path / "out"
    args = ["--model", str(tiny_root), "--image_size", str(SIZE), "--square", "--output_dir", str(out), str(src)]
    proc = subprocess.Popen([sys.executable, "-m", "diffcut_jax.launch.segment", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*_overlay.png"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_overlay.png")}
    assert 3 <= len(done_before) < 12, "the run must be interrupted part-way"
    res = _run(args, env=_env())
    assert res.returncode == 0, res.stderr[-2000:]
    for p in sorted(src.iterdir()):
        _check_outputs(out, p.stem, p)
    assert not list(out.rglob(f"*{paths.PARTIAL_SUFFIX}"))
    for name, mtime in done_before.items():  # complete outputs were not recomputed
        assert (out / name).stat().st_mtime_ns == mtime
    assert f"{len(done_before)} image(s) already done" in res.stderr


def test_sixteen_bit_labels_png(tmp_path):
    labels = np.arange(300 * 2).reshape(20, 30) % 300
    imageio.write_labels_png(tmp_path / "l.png", labels)
    with Image.open(tmp_path / "l.png") as im:
        assert im.mode.startswith("I")
    np.testing.assert_array_equal(imageio.read_labels_png(tmp_path / "l.png"), labels)


@pytest.mark.slow
def test_coherence_command(tiny_root, tmp_path):
    out = tmp_path / "coh.png"
    cmd = [sys.executable, "-m", "diffcut_jax.launch.coherence", "--model", str(tiny_root), "--image_size",
           str(SIZE), "--patch", "1,0", "--output", str(out), str(IMAGES[0])]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    with Image.open(out) as im, Image.open(IMAGES[0]) as src:
        assert im.size == src.size
    cmd[cmd.index("1,0")] = "9,9"
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 2 and "outside" in res.stderr


def _check_coco(out: Path, photos, *, named: bool):
    """coco.json against the PNG outputs: RLE decodes to the label map, area, bbox, classes."""
    from pycocotools import mask as mask_api
    from pycocotools.coco import COCO

    doc = json.loads((out / "coco.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == [str(p) for p in photos]
    api = COCO()  # pycocotools reads it as any COCO annotation file
    api.dataset = doc
    api.createIndex()
    for image in doc["images"]:
        stem = Path(image["file_name"]).stem
        labels = imageio.read_labels_png(out / f"{stem}_labels.png")
        assert (image["height"], image["width"]) == labels.shape
        anns = api.loadAnns(api.getAnnIds(imgIds=[image["id"]]))
        assert sorted(a["segment_id"] for a in anns) == np.unique(labels).tolist()
        # Round trip: decoding every RLE gives the label PNG back.
        np.testing.assert_array_equal(
            coco_output.labels_from_annotations(anns, *labels.shape), labels)
        classes = json.loads((out / f"{stem}_classes.json").read_text()) if named else None
        for a in anns:
            m = labels == a["segment_id"]
            np.testing.assert_array_equal(api.annToMask(a).astype(bool), m)
            ys, xs = np.nonzero(m)
            assert a["area"] == m.sum() and a["iscrowd"] == 0
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert a["segmentation"]["counts"] == mask_api.encode(
                np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
            if named:
                s = next(s for s in classes["segments"] if s["segment"] == a["segment_id"])
                assert (a["category_id"], a["class"], a["score"]) == (s["class_id"] + 1, s["class"], s["score"])
                assert api.cats[a["category_id"]]["name"] == s["class"]


@pytest.mark.slow
def test_segment_command_names_segments_with_a_vocabulary(tiny_root, tmp_path):
    from tests.helpers import FIXTURES

    clip_dir = FIXTURES / "openclip" / "tiny_convnext_clip"
    out = tmp_path / "out"
    photos = [IMAGES[0], SHARED / "images" / "coco.jpg"]
    vocab = "cat,kitty;dog;grass,lawn;sky"
    args = ["--model", str(tiny_root), "--image_size", str(SIZE), "--tau", "0.9",
            "--output_dir", str(out), "--vocabulary", vocab, "--clip_model", str(clip_dir),
            "--clip_image_size", "96", "--format", "png,coco", *map(str, photos)]
    res = _run(args, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    _check_coco(out, photos, named=True)
    for p in photos:
        labels = _check_outputs(out, p.stem, p)
        classes = imageio.read_labels_png(out / f"{p.stem}_classes.png")
        assert classes.shape == labels.shape and classes.max() < 4
        doc = json.loads((out / f"{p.stem}_classes.json").read_text())
        assert doc["vocabulary"] == ["cat", "dog", "grass", "sky"]
        assert doc["synonyms"][2] == ["grass", "lawn"]
        segs = doc["segments"]
        assert sorted(s["segment"] for s in segs) == sorted(np.unique(labels).tolist())
        assert sum(s["pixels"] for s in segs) == labels.size
        for s in segs:  # the PNG is the per-segment class, painted
            assert (classes[labels == s["segment"]] == s["class_id"]).all()
            assert s["class"] == doc["vocabulary"][s["class_id"]] and 0 < s["score"] <= 1
            assert s["pixels"] == int((labels == s["segment"]).sum())
        assert sum(doc["classes"].values()) == labels.size
        with Image.open(out / f"{p.stem}_classes_overlay.png") as ov:
            legend = np.asarray(ov)[:, labels.shape[1]:]
        assert legend.shape[1] > 40 and legend.shape[0] >= labels.shape[0]
        colours = imageio.palette(4)
        for name in doc["classes"]:  # a swatch of every present class's colour
            assert (legend == colours[doc["vocabulary"].index(name)]).all(-1).sum() >= 50, name
    record = json.loads((out / "summary.jsonl").read_text().splitlines()[0])
    assert record["classes"]["png"].endswith("_classes.png")
    again = _run(args, env=_env())  # outputs exist: nothing to redo
    assert again.returncode == 0 and "2 image(s) already done" in again.stderr
    _check_coco(out, photos, named=True)  # coco.json rebuilt from the per-image files

    # COCO only, class-agnostic: no PNG, the same segments (decoded against the first run's PNGs).
    agnostic = tmp_path / "agnostic"
    res = _run(["--model", str(tiny_root), "--image_size", str(SIZE), "--tau", "0.9",
                "--output_dir", str(agnostic), "--format", "coco", *map(str, photos)], env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert not list(agnostic.glob("*.png"))
    doc = json.loads((agnostic / "coco.json").read_text())
    assert doc["categories"] == [{"id": 1, "name": "segment"}]
    for image in doc["images"]:
        anns = [a for a in doc["annotations"] if a["image_id"] == image["id"]]
        assert all(a["category_id"] == 1 and "score" not in a for a in anns)
        stem = Path(image["file_name"]).stem
        np.testing.assert_array_equal(
            coco_output.labels_from_annotations(anns, image["height"], image["width"]),
            imageio.read_labels_png(out / f"{stem}_labels.png"))
    res = _run(["--output_dir", str(agnostic), "--format", "png,tiff", str(IMAGES[0])], env=_env())
    assert res.returncode == 2 and "--format=png,tiff: choose one or more of png, coco" in res.stderr

    for bad, message in [("", "vocabulary is empty"), ("voc21", "unknown vocabulary preset 'voc21'"),
                         ("cat;dog;cat", "duplicate names across classes: 'cat'"),
                         ("cat;;dog", "class 2 is empty")]:
        res = _run(["--output_dir", str(tmp_path / "bad"), "--vocabulary", bad, str(IMAGES[0])],
                   env=_env())
        assert res.returncode == 2 and message in res.stderr, (bad, res.stderr[-500:])
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").glob("*.png"))


@pytest.mark.slow
def test_offline_default_clip_model_says_how_to_download(tiny_root, tmp_path):
    env = _env()
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    res = _run(["--model", str(tiny_root), "--image_size", str(SIZE), "--output_dir",
                str(tmp_path / "o"), "--vocabulary", "voc20", str(IMAGES[0])], env=env)
    assert res.returncode == 2
    assert ("hf download laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup "
            "open_clip_config.json open_clip_model.safetensors") in res.stderr
    assert "--clip_model" in res.stderr
    # Found missing before the diffusion model loads, and without hub retries.
    assert "model loaded" not in res.stderr and "Retrying" not in res.stderr




@pytest.mark.slow
def test_the_heavy_program_compiles_once_per_working_size(seg, tiny_root, tmp_path, compile_counter):
    """Inputs of 12 sizes sharing 3 working sizes compile the heavy program (features, NCut,
    assignment) 3 times, through `seg(image)`, `segment_files` and the `segment` command; the
    resizes in and out are small programs of their own."""
    assert {working_size(h, w, SIZE, False) for h, w in MIXED_SIZES} == {(64, 64), (32, 64), (64, 32)}
    rng = np.random.default_rng(0)
    images = [rng.random((h, w, 3), dtype=np.float32) for h, w in MIXED_SIZES]
    fresh = seg.with_options(pamr_num_iter=2)  # a static setting no other test compiled
    for image in images:
        assert fresh(image).shape == image.shape[:2]
    assert compile_counter.by_name["jit(segment_images)"] == 3, compile_counter.by_name
    small = {k: v for k, v in compile_counter.seconds.items() if "_resize_with" in k or "_gather_with" in k}
    assert small and max(small.values()) / 12 < compile_counter.seconds["jit(segment_images)"] / 3

    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"im{i:02d}.png")
        Image.fromarray((image * 255).astype(np.uint8)).save(paths[-1])
    refined = fresh.with_options(refinement=True)  # another static setting: its own programs
    before = compile_counter.by_name.get("jit(segment_batch)", 0)
    results = refined.segment_files(paths)  # the engine's batched program (streaming/batcher.py)
    assert all(r.ok and r.labels.shape == im.shape[:2] for r, im in zip(results, images))
    assert compile_counter.by_name["jit(segment_batch)"] - before == 3

    env = dict(_env(), JAX_LOG_COMPILES="1")
    res = _run(["--model", str(tiny_root), "--image_size", str(SIZE),
                "--tau", "0.99", "--alpha", "1.0", "--output_dir", str(tmp_path / "out"),
                "--compilation_cache_dir=", *map(str, paths)], env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("Finished XLA compilation of jit(segment_batch)") == 3, res.stderr[-3000:]
