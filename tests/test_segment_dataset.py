"""`segment` on a dataset: batched over 8 host devices, 2 processes x 4 devices through
jax.distributed, a TFDS split, and interrupted (SIGKILL, SIGTERM) then resumed: every way gives
the labels and COCO results of one image at a time on one device, each image exactly once.

Features with structure (weights at std 0.2), so that comparisons are of partitions, not of
round-off; working size 64 (features 2 x 2 .. 4 x 4: the post-feature program is small)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcut_jax.io import imageio, paths
from diffcut_jax.testing import tiny_spec, write_random_checkpoint
from tests.helpers import MIXED_SIZES, REPO, kill_when, private_scratch

pytestmark = pytest.mark.slow

SIZE = 64
UNREADABLE = {"bad.png": "not an image", "empty.jpg": "empty file", "trunc.png": "truncated"}


def _env(devices: int = 1) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _cmd(args):
    return [sys.executable, "-m", "diffcut_jax.launch.segment", *args]


def _run(args, devices: int = 1, env=None):
    return subprocess.run(_cmd(args), cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=env or _env(devices))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """40 images of 12 sizes and 3 unreadable files; the reference run (batch 1, one device),
    through Grain and without TensorFlow."""
    root = tmp_path_factory.mktemp("dataset")
    write_random_checkpoint(root / "ckpt", tiny_spec("sdxl"), seed=3, std=0.2)
    inputs = root / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        h, w = MIXED_SIZES[i % len(MIXED_SIZES)]
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inputs / f"im{i:02d}.png")
    (inputs / "bad.png").write_text("not an image")
    (inputs / "empty.jpg").write_bytes(b"")
    (inputs / "trunc.png").write_bytes((inputs / "im00.png").read_bytes()[:100])
    args = ["--model", str(root / "ckpt"), "--image_size", str(SIZE), "--tau", "0.5",
            f"--compilation_cache_dir={root / 'cache'}"]
    ref = root / "reference"
    # Photos need no TensorFlow: importing it fails in this run.
    for name in ("tensorflow", "tensorflow_datasets"):
        (root / "no_tf" / name).mkdir(parents=True)
        (root / "no_tf" / name / "__init__.py").write_text("raise ImportError('not for photos')\n")
    env = _env()
    env["PYTHONPATH"] = str(root / "no_tf") + os.pathsep + env["PYTHONPATH"]
    res = _run([*args, "--format", "png,coco", "--batch_size", "1", "--output_dir", str(ref),
                str(inputs)], env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    _check_run(ref, res.stderr, devices=1)
    return {"root": root, "inputs": inputs, "args": args, "ref": ref}


def _coco(out: Path) -> dict:
    return json.loads((out / "coco.json").read_text())


def _check_run(out: Path, stderr: str, *, devices: int, processes: int = 1) -> None:
    """Every readable image once in coco.json (input order), the unreadable with their reasons."""
    doc = _coco(out)
    names = [Path(im["file_name"]).name for im in doc["images"]]
    assert names == [f"im{i:02d}.png" for i in range(40)]
    failures = {Path(f["input"]).name: f for f in doc["info"]["failures"]}
    assert failures.keys() == UNREADABLE.keys()
    for name, reason in UNREADABLE.items():
        assert failures[name]["kind"] == "unreadable" and reason in failures[name]["error"], failures
    suffixes = [""] if processes == 1 else [f"-{p}" for p in range(processes)]
    figures = [json.loads((out / f"summary{s}.json").read_text()) for s in suffixes]
    assert sum(f["processed"] for f in figures) == 40 and sum(f["failed"] for f in figures) == 3
    assert {Path(u["input"]).name for f in figures for u in f["unreadable"]} == UNREADABLE.keys()
    assert all(f["devices"] == devices and 0 <= f["input_wait_share"] <= 1 for f in figures)
    assert not list(out.glob(f"*{paths.PARTIAL_SUFFIX}"))


def _same_labels(a: Path, b: Path) -> None:
    segments = []
    for i in range(40):
        x = imageio.read_labels_png(a / f"im{i:02d}_labels.png")
        np.testing.assert_array_equal(x, imageio.read_labels_png(b / f"im{i:02d}_labels.png"))
        assert x.shape == MIXED_SIZES[i % len(MIXED_SIZES)]
        segments.append(int(x.max()) + 1)
    assert max(segments) > 1  # structure: partitions, not one segment everywhere


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_batched_and_multi_process_runs_equal_one_image_at_a_time(data, tmp_path):
    """(b) batch 2 per device on 8 host devices; (c) 2 processes x 4 host devices through
    jax.distributed, reading a list of paths: the reference's labels and coco.json, byte for byte."""
    eight = tmp_path / "eight"
    res = _run([*data["args"], "--format", "png,coco", "--batch_size", "2", "--shard_size", "8",
                "--output_dir", str(eight), str(data["inputs"])], devices=8)
    assert res.returncode == 0, res.stderr[-3000:]
    _check_run(eight, res.stderr, devices=8)
    _same_labels(data["ref"], eight)
    assert (eight / "coco.json").read_text() == (data["ref"] / "coco.json").read_text()
    # Resumed in another process configuration: done already, and told so.
    res = _run([*data["args"], "--format", "png,coco", "--batch_size", "2", "--shard_size", "8",
                "--output_dir", str(eight), str(data["inputs"])], devices=1)
    assert res.returncode == 0 and "43 image(s) already done" in res.stderr, res.stderr[-3000:]
    assert "another process configuration (devices.devices: earlier run 8, this run 1; " \
           "devices.local_devices: earlier run 8, this run 1)" in res.stderr, res.stderr[-3000:]

    listing = tmp_path / "list.txt"  # the folder walk's order: sorted names
    listing.write_text("".join(f"{p}\n" for p in sorted(data["inputs"].iterdir())))
    pods = tmp_path / "pods"
    port = _free_port()
    procs = [subprocess.Popen(
        _cmd([*data["args"], "--format", "png,coco", "--batch_size", "2", "--shard_size", "8",
              "--output_dir", str(pods), "--inputs_from", str(listing), "--distributed",
              f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={p}"]),
        cwd=REPO, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert sorted(p.name for p in pods.glob("coco-*.json")) == [
        "coco-0-00000.json", "coco-0-00001.json", "coco-0-00002.json",
        "coco-1-00000.json", "coco-1-00001.json", "coco-1-00002.json"]
    for p in range(2):  # each process took every other input
        for shard in pods.glob(f"coco-{p}-*.json"):
            assert all(e["index"] % 2 == p for e in json.loads(shard.read_text())["entries"])
    _check_run(pods, outs[0][1] + outs[1][1], devices=4, processes=2)
    _same_labels(data["ref"], pods)
    assert (pods / "coco.json").read_text() == (data["ref"] / "coco.json").read_text()
    (pods / "coco.json").unlink()  # --merge writes it again from the shards alone
    res = _run(["--output_dir", str(pods), "--merge"])
    assert res.returncode == 0 and "40 images" in res.stderr, res.stderr[-2000:]
    assert (pods / "coco.json").read_text() == (data["ref"] / "coco.json").read_text()


def _interrupt(args, out: Path, sig) -> subprocess.CompletedProcess:
    """Start a run, send `sig` once its second shard is closed; returns how it ended."""
    proc = subprocess.Popen(_cmd(args), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "coco-0-00001.json").exists():
        assert proc.poll() is None, "ended before it could be interrupted: " + proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_killed_and_terminated_runs_resume_to_the_same_results(data, tmp_path):
    """SIGKILL part-way, rerun: the uninterrupted results, each image once. SIGTERM: exit 143
    with the open shard closed (complete: false), rerun completes it. Another tau is refused."""
    args = [*data["args"], "--format", "coco", "--shard_size", "4", "--read_threads", "0",
            str(data["inputs"])]
    killed = tmp_path / "killed"
    res = _interrupt([*args, "--output_dir", str(killed)], killed, signal.SIGKILL)
    assert res.returncode == -signal.SIGKILL
    kept = {p.name: p.read_text() for p in killed.glob("coco-*.json")}
    assert 2 <= len(kept) < 11 and not (killed / "coco.json").exists()
    res = _run([*args, "--output_dir", str(killed)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{4 * len(kept)} image(s) already done" in res.stderr
    for name, text in kept.items():  # closed shards are kept, not redone
        assert (killed / name).read_text() == text
    assert (killed / "coco.json").read_text() == (data["ref"] / "coco.json").read_text()

    stopped = tmp_path / "stopped"
    res = _interrupt([*args, "--output_dir", str(stopped)], stopped, signal.SIGTERM)
    assert res.returncode == 143, res.stderr[-3000:]
    assert "the open shard closed" in res.stderr
    docs = [json.loads(p.read_text()) for p in sorted(stopped.glob("coco-*.json"))]
    assert all(d["complete"] for d in docs[:-1]) and not docs[-1]["complete"]
    assert not list(stopped.glob(f"*{paths.PARTIAL_SUFFIX}")) and not (stopped / "coco.json").exists()
    res = _run([*args, "--output_dir", str(stopped)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert (stopped / "coco.json").read_text() == (data["ref"] / "coco.json").read_text()
    entries = [e for p in stopped.glob("coco-*.json") for e in json.loads(p.read_text())["entries"]]
    assert sorted(e["index"] for e in entries) == list(range(43))  # each input once

    other = [a if a != "0.5" else "0.6" for a in args]
    res = _run([*other, "--output_dir", str(stopped)])
    assert res.returncode == 2
    assert "labels.tau: earlier run 0.5, this run 0.6" in res.stderr, res.stderr[-2000:]


def test_a_tfds_split_is_segmented_like_its_files(data, tmp_path):
    """`--tfds voc20:validation` (this project's builder, from a fake download): the same
    segments as the split's JPEG files given as paths, keyed by the dataset's image id."""
    from diffcut_jax.data import builders, fake_downloads

    examples = fake_downloads.write_voc2012(tmp_path / "raw", num_images=4)
    builders.prepare(builders.builder("voc20", tmp_path / "tfds"), tmp_path / "raw")
    out = tmp_path / "tfds_out"
    res = _run([*data["args"], "--format", "coco", "--batch_size", "2", "--output_dir", str(out),
                "--tfds", "voc20:validation", "--data_dir", str(tmp_path / "tfds")])
    assert res.returncode == 0, res.stderr[-3000:]
    files = tmp_path / "files_out"
    res = _run([*data["args"], "--format", "coco", "--output_dir", str(files),
                *[str(e.image_path) for e in examples]])
    assert res.returncode == 0, res.stderr[-3000:]
    by_tfds, by_file = _coco(out), _coco(files)
    assert sorted(im["file_name"] for im in by_tfds["images"]) == sorted(e.image_id for e in examples)
    anns = {}
    for doc, key in ((by_tfds, lambda im: im["file_name"]), (by_file, lambda im: Path(im["file_name"]).stem)):
        ids = {im["id"]: key(im) for im in doc["images"]}
        for a in doc["annotations"]:
            anns.setdefault(doc is by_tfds, {}).setdefault(ids[a["image_id"]], []).append(
                (a["segment_id"], a["segmentation"]["counts"], a["bbox"]))
    assert anns[True] == anns[False]
    res = _run([*data["args"], "--output_dir", str(tmp_path / "x"), "--tfds", "voc20"])
    assert res.returncode == 2 and "expected NAME[:VERSION]/SPLIT" in res.stderr


# The same run through the library: `label_dataset` and `segment_files` in a process of their own
# (host devices are fixed when a process starts).
LIBRARY = r"""
import json, sys

import jax

args = json.loads(sys.argv[1])
# The command's compilation cache (its runs above filled it): the same engine, the same programs.
jax.config.update("jax_compilation_cache_dir", args["cache"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
if args["process"] is not None:
    jax.distributed.initialize(coordinator_address=args["coordinator"], num_processes=2,
                               process_id=args["process"])
import numpy as np

from diffcut_jax import DiffCut, label_dataset
from diffcut_jax.io.imageio import read_rgb

seg = DiffCut.from_pretrained(args["model"], image_size=args["size"], tau=0.5)
summary = label_dataset(seg, args["inputs"], args["out"], inputs_from=args["inputs_from"],
                        format=("png", "coco"), batch_size=2, shard_size=8, progress=False)
same = None
if args["files"]:  # segment_files at batch 2 against the single-image path, in input order
    same = []
    for path, r in zip(args["files"], seg.segment_files(args["files"], batch_size=2)):
        assert str(r.path) == path, (r.path, path)
        same.append(r.error if not r.ok else bool(np.array_equal(r.labels, np.asarray(seg(read_rgb(path))))))
print(json.dumps({"summary": {k: summary[k] for k in ("processed", "failed", "devices", "merged")},
                  "same": same}))
"""


def _library(data, out, devices, *, inputs=(), inputs_from=(), files=(), process=None, port=None):
    args = {"model": str(data["root"] / "ckpt"), "size": SIZE, "out": str(out), "inputs": list(inputs),
            "inputs_from": list(inputs_from), "files": list(files), "process": process,
            "coordinator": f"localhost:{port}", "cache": str(data["root"] / "cache")}
    return subprocess.Popen([sys.executable, "-c", LIBRARY, json.dumps(args)], cwd=REPO,
                            env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _same_bytes(a: Path, b: Path) -> None:
    for i in range(40):
        name = f"im{i:02d}_labels.png"
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "coco.json").read_text() == (b / "coco.json").read_text()


def test_the_library_call_writes_what_the_command_writes(data, tmp_path):
    """`label_dataset` at batch 2 on 8 host devices, and 2 processes x 4 devices: the labels and
    coco.json of the command (its reference run, which equals its own 8-device and 2 x 4 runs:
    the test above), byte for byte; `segment_files` at batch 2 equals `seg(image)` per file."""
    files = [str(p) for p in sorted(data["inputs"].iterdir())]
    proc = _library(data, tmp_path / "eight", 8, inputs=[str(data["inputs"])], files=files)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    got = json.loads(stdout.strip().splitlines()[-1])
    assert got["summary"] == {"processed": 40, "failed": 3, "devices": 8,
                              "merged": str(tmp_path / "eight" / "coco.json")}
    same = got["same"]  # sorted names: bad.png, empty.jpg, im00 .. im39, trunc.png
    assert [i for i, s in enumerate(same) if isinstance(s, str)] == [0, 1, 42], same
    assert all(s is True for s in same[2:42]), same
    assert "not an image" in same[0] and "empty file" in same[1] and "truncated" in same[42]
    _same_bytes(data["ref"], tmp_path / "eight")

    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in files))
    port = _free_port()
    procs = [_library(data, tmp_path / "pods", 4, inputs_from=[str(listing)], process=p, port=port)
             for p in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    _same_bytes(data["ref"], tmp_path / "pods")


def _two_processes(args, envs, cwds):
    port = _free_port()
    procs = [subprocess.Popen(
        _cmd([*args, "--distributed", f"--coordinator_address=localhost:{port}",
              "--num_processes=2", f"--process_id={p}"]),
        cwd=cwds[p], env=envs[p], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in range(2)]
    return procs


def test_two_processes_on_a_bucket_equal_the_local_run_and_resume_after_a_kill(data, tmp_path):
    """Issue 40: inputs, their list and the outputs on a GCS-API server (fake-gcs-server on
    127.0.0.1); two processes x 4 host devices sharing only the bucket and the coordinator.
    Killed (SIGKILL, both) part-way, their scratch deleted, rerun: the bucket's coco.json equals,
    byte for byte, the same two-process run on a local disk, and each image is labelled once."""
    from tests.object_store import FlakyProxy, ObjectStore

    common = [a for a in data["args"] if not a.startswith("--compilation_cache_dir")]
    common += ["--format", "coco", "--batch_size", "2", "--shard_size", "4"]
    lines = "".join(f"in/{p.name}\n" for p in sorted(data["inputs"].iterdir()))
    # The local run: relative lines, relative to the working directory (as always).
    (data["root"] / "relative.txt").write_text(lines)
    local = tmp_path / "local"
    procs = _two_processes([*common, "--output_dir", str(local), "--inputs_from", "relative.txt",
                            f"--compilation_cache_dir={data['root'] / 'cache'}"],
                           [_env(4)] * 2, [data["root"]] * 2)
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]

    with ObjectStore("gs") as store:
        bucket = store.bucket()
        store.upload(data["inputs"], bucket + "in")
        (tmp_path / "list.txt").write_text(lines)  # relative to the list's folder on a bucket
        store.upload(tmp_path / "list.txt", bucket + "list.txt")
        out = paths.as_path(bucket + "labels")
        # Decoded in the loop (no read-ahead): slow enough to be killed part-way.
        args = [*common, "--output_dir", str(out), "--inputs_from", bucket + "list.txt",
                "--read_threads", "0"]

        def start(endpoint=None):
            scratch = [private_scratch(tmp_path, f"host{p}", data["root"] / "cache") for p in range(2)]
            envs = [store.env({**_env(4), **extra}) for _, extra in scratch]
            for env in envs if endpoint else ():
                env["STORAGE_EMULATOR_HOST"] = endpoint
            return scratch, _two_processes(args, envs, [s / "cwd" for s, _ in scratch])

        # Through a slow link (0.2 s an image read): the kill lands part-way, not after the end.
        with FlakyProxy(store.endpoint, delay=0.2) as slow:
            scratch, procs = start(slow.endpoint)
            kill_when(procs, (out / "coco-0-00001.json").exists, timeout=300)
        kept = {p.name: p.read_text() for p in out.glob("coco-*.json")}
        assert 2 <= len(kept) < 12 and not (out / "coco.json").exists(), sorted(kept)
        for folder, _ in scratch:  # the hosts come back with empty disks
            import shutil

            shutil.rmtree(folder)

        scratch, procs = start()
        outs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
        done = sum(len(json.loads(text)["entries"]) for text in kept.values())
        assert sum(int(o[1].split(" image(s) already done")[0].rsplit("\n", 1)[-1])
                   for o in outs if "already done" in o[1]) == done
        for name, text in kept.items():  # closed shards kept, not redone
            assert (out / name).read_text() == text
        assert (out / "coco.json").read_text() == (local / "coco.json").read_text()
        entries = [e for p in out.glob("coco-*.json") for e in json.loads(p.read_text())["entries"]]
        assert sorted(e["index"] for e in entries) == list(range(43))  # each input once
        assert not any(p.name in ("gs:", "labels") for f, _ in scratch for p in (f / "cwd").iterdir())
