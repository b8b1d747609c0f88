"""Preemptible `eval`: interrupted runs (SIGTERM, SIGKILL, a damaged checkpoint), one process and
two processes through jax.distributed, rerun to the end, give the results of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("tensorflow_datasets")

from diffcut_jax.data import fake_downloads  # noqa: E402
from diffcut_jax.testing import tiny_spec, write_random_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGES = 16
# Fields that measure this run's time, or say it resumed: everything else must be identical.
TIMING = {"seconds", "images_per_second", "input_wait_share", "checkpoint_seconds", "resumed_images"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("preempt")
    # std 0.2: features with structure, so that partitions do not hang on round-off.
    write_random_checkpoint(root / "ckpt", tiny_spec("sdxl"), seed=3, std=0.2)
    fake_downloads.write_voc2012(root / "raw", num_images=IMAGES)
    args = ["--config=voc20", f"--config.model.path={root / 'ckpt'}",
            "--config.segmentation.image_size=128", "--config.mask_size=32",
            "--config.segmentation.pamr_num_iter=3", "--config.per_device_batch_size=1",
            f"--data_dir={root / 'tfds'}", f"--manual_dir={root / 'raw'}",
            f"--compilation_cache_dir={root / 'cache'}", "--checkpoint_every=2"]
    clean = _start(args + [f"--workdir={root / 'clean'}"])
    out, err = clean.communicate(timeout=600)
    assert clean.returncode == 0, err[-3000:]
    assert not (root / "clean" / "progress").exists()  # removed once the results are written
    return {"root": root, "args": args, "clean": _results(root / "clean")}


def _start(args, *, process=None, port=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    if process is not None:
        args = args + ["--distributed", f"--coordinator_address=localhost:{port}",
                       "--num_processes=2", f"--process_id={process}"]
    return subprocess.Popen([sys.executable, "-m", "diffcut_jax.launch.eval", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(workdir: Path) -> dict:
    r = json.loads((workdir / "results.json").read_text())
    return {k: v for k, v in r.items() if k not in TIMING}


def _checkpoints(workdir: Path) -> list[int]:
    return sorted(int(p.name[9:17]) for p in (workdir / "progress").glob("progress-*.ckpt"))


def _interrupt(procs, workdir: Path, sig, after: int) -> list[int]:
    """Send `sig` to every process once a checkpoint of more than `after` batches exists."""
    deadline = time.monotonic() + 600
    while not [k for k in _checkpoints(workdir) if k > after]:
        assert all(p.poll() is None for p in procs), "finished before it could be interrupted: " + \
            procs[0].communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for p in procs:
        p.send_signal(sig)
    outs = [p.communicate(timeout=600) for p in procs]
    return [p.returncode for p in procs], outs


def _run(setup, workdir, processes, extra=()):
    args = setup["args"] + [f"--workdir={workdir}", *extra]
    if processes == 1:
        return [_start(args)]
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    return [_start(args, process=i, port=port) for i in range(processes)]


def _per_image(workdir: Path, processes: int) -> list[dict]:
    names = ["per_image.jsonl"] if processes == 1 else [f"per_image.{i}.jsonl" for i in range(processes)]
    return [json.loads(line) for n in names for line in (workdir / n).read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_interrupted_runs_resume_to_the_clean_result(setup, processes):
    work = setup["root"] / f"run{processes}"
    batches = IMAGES // processes

    # SIGTERM (preemption's notice): a last checkpoint at the next batch boundary, exit 143.
    codes, outs = _interrupt(_run(setup, work, processes), work, signal.SIGTERM, after=0)
    assert codes == [143] * processes, outs[0][1][-3000:]
    assert "rerun the same command to continue" in outs[0][1]
    stopped = _checkpoints(work)[-1]
    assert 1 <= stopped < batches

    if processes == 1:  # a workdir of another config is refused, naming the difference
        other = _run(setup, work, 1, ["--config.segmentation.tau=0.4"])[0]
        _, err = other.communicate(timeout=600)
        assert other.returncode == 2 and "config.segmentation.tau: checkpoint 0.5, now 0.4" in err
        assert _checkpoints(work)[-1] == stopped  # nothing lost

    # SIGKILL (no notice) after a later periodic checkpoint: the rerun resumed first.
    procs = _run(setup, work, processes)
    codes, outs = _interrupt(procs, work, signal.SIGKILL, after=stopped)
    assert codes == [-9] * processes
    assert f"resuming after batch {stopped}" in outs[0][1]

    # The newest checkpoint damaged (a partial copy): the rerun falls back to the one before.
    newest, previous = _checkpoints(work)[-1], _checkpoints(work)[-2]
    path = work / "progress" / f"progress-{newest:08d}.ckpt"
    path.write_bytes(path.read_bytes()[:-100])
    procs = _run(setup, work, processes)
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * processes, outs[0][1][-3000:]
    err = outs[0][1]
    assert f"skipping checkpoint {path}" in err and f"resuming after batch {previous}" in err
    # Every process resumed from the same point (process 0's choice, broadcast).
    assert all(f"resuming after batch {previous}" in o[1] for o in outs)

    result = _results(work)
    clean = setup["clean"]
    assert {k: v for k, v in result.items() if k not in ("devices", "processes")} == \
        {k: v for k, v in clean.items() if k not in ("devices", "processes")}
    assert result["processes"] == processes
    raw = json.loads((work / "results.json").read_text())
    assert raw["resumed_images"] == previous * processes
    records = _per_image(work, processes)
    assert sorted(r["image_id"] for r in records) == sorted(r["image_id"] for r in _per_image(
        setup["root"] / "clean", 1))  # each image once
    if processes == 1:
        assert records == _per_image(setup["root"] / "clean", 1)
    assert not (work / "progress").exists()


@pytest.mark.slow
def test_a_workdir_on_a_bucket_survives_a_killed_host(setup, tmp_path):
    """Issue 40: `--workdir` on an S3-API server (moto on 127.0.0.1), the built dataset on a
    local disk shared by the two processes; each process has its own cwd, TMPDIR, HOME and
    compilation cache. SIGKILL after a checkpoint, the scratch wiped, rerun: it resumes from the
    bucket and ends with the uninterrupted run's results; another config is refused."""
    import shutil

    from diffcut_jax.io import paths
    from tests.helpers import kill_when, private_scratch
    from tests.object_store import ObjectStore

    args = [a for a in setup["args"] if not a.startswith("--compilation_cache_dir")]
    with ObjectStore("s3") as store:
        work = paths.as_path(store.bucket() + "runs/voc20")

        def start(extra=()):
            with socket.socket() as sock:
                sock.bind(("localhost", 0))
                port = sock.getsockname()[1]
            procs = []
            for i in range(2):
                host, private = private_scratch(tmp_path, f"host{i}", setup["root"] / "cache")
                env = store.env(dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
                                     XLA_FLAGS="--xla_force_host_platform_device_count=1", **private))
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "diffcut_jax.launch.eval", *args, f"--workdir={work}",
                     f"--compilation_cache_dir={private['JAX_COMPILATION_CACHE_DIR']}", *extra,
                     "--distributed",
                     f"--coordinator_address=localhost:{port}", "--num_processes=2",
                     f"--process_id={i}"],
                    cwd=host / "cwd", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True))
            return procs

        def checkpoints():
            return sorted(int(p.name[9:17]) for p in (work / "progress").glob("progress-*.ckpt"))

        kill_when(start(), checkpoints)
        stopped = checkpoints()[-1]
        assert 1 <= stopped < IMAGES // 2
        for i in range(2):  # the hosts come back with empty disks
            shutil.rmtree(tmp_path / f"host{i}")

        other = start(["--config.segmentation.tau=0.4"])
        outs = [p.communicate(timeout=600) for p in other]
        assert [p.returncode for p in other] == [2, 2], outs[0][1][-3000:]
        assert "config.segmentation.tau: checkpoint 0.5, now 0.4" in outs[0][1]

        procs = start()
        outs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
        assert all(f"resuming after batch {stopped}" in o[1] for o in outs), outs[0][1][-3000:]
        result = json.loads((work / "results.json").read_text())
        result = {k: v for k, v in result.items() if k not in TIMING}
        assert {k: v for k, v in result.items() if k not in ("devices", "processes")} == \
            {k: v for k, v in setup["clean"].items() if k not in ("devices", "processes")}
        assert not (work / "progress").exists()
        assert not any(any((tmp_path / f"host{i}" / "cwd").iterdir()) for i in range(2))
