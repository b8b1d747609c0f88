"""The path layer on real object-store API servers (tests/object_store.py: fake-gcs-server for
gs://, moto's server for s3://; both schemes run every test here): whole-object writes,
exclusive creation under a race, killed uploads, append logs, errors at start-up, converted
parameters and diffusers folders on a bucket, and the `segment` command reading and writing a
bucket without ever creating a local `gs:` / `s3:` folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from diffcut_jax.io import paths
from tests.helpers import REPO
from tests.object_store import SCHEMES, FlakyProxy, ObjectStore


@pytest.fixture(scope="module", params=SCHEMES)
def store(request):
    with ObjectStore(request.param) as s:
        s.activate()
        yield s


def test_a_url_is_a_upath_and_a_local_path_stays_a_path(tmp_path):
    assert paths.as_path(str(tmp_path)) == tmp_path and type(paths.as_path(str(tmp_path))) is type(tmp_path)
    assert paths.as_path("file://" + str(tmp_path)) == tmp_path
    assert paths.is_url("gs://b/x") and paths.is_url("s3://b/x") and not paths.is_url("gs:/b/x")
    assert str(paths.as_path("gs://b/x") / "y.png") == "gs://b/x/y.png"
    assert paths.redact("s3://AKIA:secret@b/x") == "s3://b/x"
    assert paths.resolve_relative("a/im.png", "gs://b/lists") == "gs://b/lists/a/im.png"
    assert paths.resolve_relative("a/im.png", str(tmp_path)) == "a/im.png"  # local: as always
    assert paths.resolve_relative("s3://c/im.png", "gs://b/lists") == "s3://c/im.png"


def test_whole_object_writes_and_exclusive_creation(store):
    root = paths.as_path(store.bucket())
    paths.write_text(root / "a" / "x.json", "one")
    assert (root / "a" / "x.json").read_text() == "one"
    paths.atomic_write(root / "a" / "y.bin", lambda tmp: tmp.write_bytes(b"\0" * 1000))
    assert (root / "a" / "y.bin").read_bytes() == b"\0" * 1000

    def fails(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError):
        paths.atomic_write(root / "a" / "z.bin", fails)
    assert not (root / "a" / "z.bin").exists()  # nothing under the final name

    # Eight threads race to create one object: exactly one wins, its content stays.
    won = []
    barrier = threading.Barrier(8)

    def race(i):
        barrier.wait()
        if paths.create_exclusive(root / "run.json", f"{i}".encode()):
            won.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(won) == 1 and (root / "run.json").read_text() == str(won[0])

    paths.remove_tree(root / "a")
    assert not (root / "a" / "x.json").exists() and (root / "run.json").exists()


def test_a_vocabulary_and_the_demo_samples_on_a_bucket(store, tmp_path, monkeypatch):
    from diffcut_jax.demo import sample_images
    from diffcut_jax.naming.vocabulary import parse_vocabulary

    monkeypatch.setenv("DIFFCUT_JAX_CACHE", str(tmp_path / "cache"))
    root = paths.as_path(store.bucket())
    paths.write_text(root / "vocab.txt", "cat, kitty\ndog  # a comment\ngrass\n")
    assert parse_vocabulary(str(root / "vocab.txt")).classes == (("cat", "kitty"), ("dog",), ("grass",))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "s.png")
    store.upload(tmp_path / "s.png", str(root / "samples" / "s.png"))
    samples = sample_images(tmp_path / "drawn", str(root / "samples"))
    assert samples["s.png"].read_bytes() == (tmp_path / "s.png").read_bytes()
    assert str(tmp_path / "cache" / "remote") in str(samples["s.png"])  # a local copy, cached


def test_append_log_on_a_bucket_continues_and_loses_nothing(store, tmp_path):
    for where in (paths.as_path(store.bucket()) / "summary.jsonl", tmp_path / "summary.jsonl"):
        log = paths.AppendLog(where, every=3)
        for i in range(7):
            log.write(f"{i}\n")
        log.close()
        again = paths.AppendLog(where, every=3)  # a rerun: numbering continues
        again.write("7\n")
        again.close()
        assert paths.read_log(where) == "".join(f"{i}\n" for i in range(8))
        parts = [p.name for p in paths.part_files(where)]
        assert parts == ([] if not paths.is_url(where) else
                         [f"summary-part{k:05d}.jsonl" for k in range(4)])


_UPLOAD = """
import sys
from diffcut_jax.io import paths
def slow(tmp):
    with open(tmp, "wb") as fh:
        fh.write(b"x" * (24 << 20))
paths.atomic_write(sys.argv[1], slow)
print("uploaded")
"""


def test_a_killed_upload_leaves_no_object(store):
    """SIGKILL while a 24 MB object is being uploaded (gcsfs: resumable, s3fs: multipart): no
    object under its name, so no listing takes it for a finished file."""
    url = store.bucket() + "big.bin"
    proc = subprocess.Popen([sys.executable, "-c", _UPLOAD, url], cwd=REPO,
                            env=store.env(dict(os.environ, PYTHONPATH=str(REPO))),
                            stdout=subprocess.PIPE, text=True)
    time.sleep(2.0)  # importing, writing the local file, uploading
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    if "uploaded" in out:
        pytest.skip("the upload finished before the kill on this machine")
    path = paths.as_path(url)
    assert not path.exists()
    assert [p.name for p in path.parent.iterdir()] == []


def test_output_location_errors_name_the_url(store):
    with pytest.raises(paths.OutputLocationError, match=r"^--output_dir \w+://no-such-bucket-x/out: "
                       r"the bucket does not exist$"):
        paths.check_output(f"{store.scheme}://no-such-bucket-x/out", "--output_dir")
    paths.check_output(store.bucket() + "out", "--output_dir")  # writable: no error, no leftovers
    with pytest.raises(paths.OutputLocationError, match="bucket does not exist"):
        paths.check_input(f"{store.scheme}://no-such-bucket-x/in/", "input")


def test_a_missing_bucket_stops_each_command_before_its_model(store):
    """segment and eval: exit status 2, one line naming the URL, before any model is looked for
    (the model given does not exist, and is not what the line is about)."""
    env = store.env(dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
    url = f"{store.scheme}://no-such-bucket-y/out"
    for module, args, flag in (
            ("segment", ["--model", "/nonexistent/model", "--output_dir", url, str(REPO / "tests")],
             "--output_dir"),
            ("eval", ["--config=voc20", "--config.model.path=/nonexistent/model",
                      f"--workdir={url}", "--manual_dir=/nonexistent/raw"], "--workdir")):
        res = subprocess.run([sys.executable, "-m", f"diffcut_jax.launch.{module}", *args],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2, res.stderr[-2000:]
        assert lines == [f"error: {flag} {url}: the bucket does not exist"], res.stderr[-2000:]


def test_denied_and_unauthenticated_writes_exit_early():
    """S3 with authorization enforced (moto's IAM): a read-only user's write is denied, a wrong
    secret is refused; each is one line naming the URL, without the secret."""
    import boto3

    with ObjectStore("s3", extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as s:
        kw = dict(endpoint_url=s.endpoint, aws_access_key_id="admin", aws_secret_access_key="x",
                  region_name="us-east-1")
        boto3.client("s3", **kw).create_bucket(Bucket="readonly")
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*",
                                                   "Action": ["s3:GetObject", "s3:ListBucket"]}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        env = s.env(dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
        env.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        for secret, problem in ((key["SecretAccessKey"], "writing is denied"),
                                ("wrong-secret-123", "signature")):
            env["AWS_SECRET_ACCESS_KEY"] = secret
            res = subprocess.run([sys.executable, "-m", "diffcut_jax.launch.segment",
                                  "--model", "/nonexistent/model", "--output_dir", "s3://readonly/out",
                                  str(REPO / "tests")], cwd=REPO, env=env, capture_output=True,
                                 text=True, timeout=300)
            lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
            assert res.returncode == 2, res.stderr[-2000:]
            # One line, the URL and the problem; before the model is looked for (it is missing).
            assert len(lines) == 1 and lines[0].startswith("error: --output_dir s3://readonly/out: ")
            assert problem in lines[0] and secret not in res.stderr and "model" not in lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from diffcut_jax.testing import tiny_spec, write_random_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    write_random_checkpoint(root / "ckpt", tiny_spec("sdxl"), seed=3, std=0.2)
    return root / "ckpt"


@pytest.mark.slow
def test_saved_parameters_and_a_diffusers_folder_on_a_bucket(store, tiny, tmp_path, monkeypatch):
    import jax

    from diffcut_jax.segmenter import DiffCut

    monkeypatch.setenv("DIFFCUT_JAX_CACHE", str(tmp_path / "cache"))
    local = DiffCut.from_pretrained(str(tiny), image_size=64)
    bucket = store.bucket()
    local.save(bucket + "saved")
    assert (paths.as_path(bucket) / "saved" / "diffcut_jax.json").exists()
    again = DiffCut.from_pretrained(bucket + "saved", image_size=64)
    for a, b in zip(jax.tree.leaves(local.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    store.upload(tiny, bucket + "diffusers")
    remote = DiffCut.from_pretrained(bucket + "diffusers", image_size=64)
    for a, b in zip(jax.tree.leaves(local.params), jax.tree.leaves(remote.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    image = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(local(image)), np.asarray(remote(image)))


@pytest.mark.slow
def test_segment_reads_and_writes_a_bucket_and_never_a_local_scheme_folder(store, tiny, tmp_path):
    """Inputs as a file, a glob and a list of relative lines on the bucket; PNG outputs and
    summaries on the bucket. The working directory gets no `gs:`/`s3:`. Through a proxy that
    answers 503 to the first read of every object: the client retries, every image is
    segmented, and summary.json counts the retries."""
    bucket = store.bucket()
    src = tmp_path / "src"
    (src / "photos").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(src / "photos" / f"p{i}.png")
    (src / "photos" / "broken.png").write_text("not an image")
    (src / "list.txt").write_text("photos/p2.png\nphotos/missing.png\n")
    store.upload(src, bucket)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = bucket + "out"
    with FlakyProxy(store.endpoint) as proxy:
        env = store.env(dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
        env.update({"STORAGE_EMULATOR_HOST": proxy.endpoint} if store.scheme == "gs"
                   else {"AWS_ENDPOINT_URL": proxy.endpoint})
        res = subprocess.run(
            [sys.executable, "-m", "diffcut_jax.launch.segment", "--model", str(tiny),
             "--image_size", "64", "--output_dir", out, "--inputs_from", bucket + "list.txt",
             bucket + "photos/p0.png", bucket + "photos/p[01].png",
             "--compilation_cache_dir=" + str(tmp_path / "cc")],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list(cwd.iterdir()) == []  # no local folder named after the scheme, nothing at all
    outp = paths.as_path(out)
    names = sorted(p.name for p in outp.iterdir())
    assert {"p0_labels.png", "p0_overlay.png", "p1_labels.png", "p2_labels.png",
            "summary.json", "run.json"} <= set(names), (names, res.stderr[:3000])
    records = [json.loads(line) for line in paths.read_log(outp / "summary.jsonl").splitlines()]
    assert sorted(r["input"] for r in records) == sorted([
        "photos/missing.png", "photos/p2.png", bucket + "photos/p0.png", bucket + "photos/p1.png"])
    missing = next(r for r in records if r["input"] == "photos/missing.png")
    assert missing["kind"] == "unreadable" and "no such object" in missing["error"]
    summary = json.loads((outp / "summary.json").read_text())
    assert summary["processed"] == 3 and summary["failed"] == 1
    # The three images, the list and more were each refused once, and retried.
    assert proxy.failed >= 4 and summary["storage_retries"] >= 3, (proxy.failed, summary)
    labels = paths.as_path(out) / "p2_labels.png"
    from diffcut_jax.io.imageio import read_labels_png

    assert read_labels_png(labels).shape == (48, 64)
