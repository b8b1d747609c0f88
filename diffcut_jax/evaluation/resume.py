"""Preemptible evaluation: progress checkpoints in the workdir, and resuming from them.

    store = ProgressStore(workdir / "progress", fingerprint)
    start = store.agreed_resume_point()          # every process: the same checkpoint, or None
    ... evaluator.evaluate(..., resume=start, after_batch=...)   # store.save(...) every N batches

A checkpoint is the progress after `batches` whole batches: every process's own part (its summed
counts and per-image records, `Evaluator.local_state`), gathered to process 0, which writes it;
the dataset build is also process 0's. On resume process 0 reads the newest valid checkpoint and
broadcasts it, so all processes start from the same batch even without a shared filesystem.

File format (`progress-<batches>.ckpt`): one JSON header line with the payload's SHA-256 and
length, then the JSON payload. Written whole (`io/paths.write_bytes`: a temporary name renamed on
a disk, one whole-object upload on a bucket, where a killed upload leaves no object); the last
`keep` are kept. The workdir may be a bucket (`gs://`, `s3://`). A file whose checksum, length or JSON does not hold (a partial copy, a
corrupted disk block) is reported and skipped, and the previous one is used.

The fingerprint (config, dataset split and size, processes and batch layout) is stored in every
checkpoint: a workdir from another run is refused with the differences named, because its counts
would silently mix two experiments.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
_NAME = re.compile(r"^progress-(\d{8})\.ckpt$")


class ResumeMismatchError(ValueError):
    """The workdir holds progress of another run (config, dataset or process layout)."""


class Preempted(Exception):
    """Raised after the last checkpoint is written on SIGTERM; the command exits 143."""

    def __init__(self, batches: int):
        super().__init__(f"stopped by SIGTERM after {batches} batch(es); progress saved")
        self.batches = batches


def encode(payload: dict) -> bytes:
    body = json.dumps(payload, sort_keys=True).encode()
    header = json.dumps({"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest(),
                         "length": len(body)}).encode()
    return header + b"\n" + body


def decode(data: bytes, name: str = "checkpoint") -> dict:
    """The payload, or ValueError naming what does not hold."""
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise ValueError(f"{name}: no header line (truncated?)")
    try:
        header = json.loads(head)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: unreadable header ({e})") from e
    if header.get("format") != FORMAT:
        raise ValueError(f"{name}: format {header.get('format')!r}, this version reads {FORMAT}")
    if len(body) != header.get("length"):
        raise ValueError(f"{name}: {len(body)} bytes of payload, the header says "
                         f"{header.get('length')} (truncated or partial copy)")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise ValueError(f"{name}: checksum mismatch (corrupted)")
    return json.loads(body)


def fingerprint_differences(saved: dict, current: dict) -> list[str]:
    """`key: checkpoint X, now Y` for every leaf that differs (nested dicts flattened)."""
    from diffcut_jax.io.shards import differences

    return differences(saved, current, before="checkpoint", after="now")


def normalised(value: Any) -> Any:
    """JSON round trip (tuples -> lists, ...), so a fingerprint compares equal to its saved copy."""
    return json.loads(json.dumps(value, sort_keys=True, default=list))


class ProgressStore:
    """The checkpoints of one evaluation in `folder`, all written by process 0."""

    def __init__(self, folder: Path, fingerprint: dict, *, keep: int = 2, log=sys.stderr):
        from diffcut_jax.io.paths import as_path

        self.folder, self.fingerprint = as_path(folder), normalised(fingerprint)
        self.keep, self.log = max(1, keep), log

    def paths(self) -> list[tuple[int, Path]]:
        """(batches, path), newest first."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found, reverse=True)

    def latest(self) -> dict | None:
        """The newest checkpoint that reads back whole (process 0 only); older ones on failure.
        Raises ResumeMismatchError if it belongs to another run."""
        for batches, path in self.paths():
            try:
                payload = decode(path.read_bytes(), str(path))
            except (OSError, ValueError) as e:
                self.log.write(f"warning: skipping checkpoint {e}; trying the previous one\n")
                continue
            diff = fingerprint_differences(payload["fingerprint"], self.fingerprint)
            if diff:
                raise ResumeMismatchError(
                    f"{self.folder} holds the progress of another run ({len(diff)} difference(s): "
                    + "; ".join(diff[:8]) + (" ..." if len(diff) > 8 else "")
                    + "). Use another --workdir, or delete that folder to start over.")
            return payload
        return None

    def agreed_resume_point(self) -> dict | None:
        """Process 0's `latest()`, broadcast: every process resumes from the same checkpoint."""
        import jax

        payload = None
        error = None
        if jax.process_index() == 0:
            try:
                payload = self.latest()
            except ResumeMismatchError as e:
                error = str(e)
        if jax.process_count() > 1:
            message = {"payload": payload, "error": error}
            message = json.loads(broadcast_bytes(json.dumps(message).encode()))
            payload, error = message["payload"], message["error"]
        if error:
            raise ResumeMismatchError(error)
        return payload

    def save(self, batches: int, local_state: dict) -> Path | None:
        """Gather every process's `local_state`; process 0 writes the checkpoint atomically."""
        import jax

        from diffcut_jax.io.paths import makedirs, write_bytes

        states = gather_json(local_state)
        if jax.process_index() != 0:
            return None
        makedirs(self.folder)
        path = self.folder / f"progress-{batches:08d}.ckpt"
        data = encode({"fingerprint": self.fingerprint, "batches": batches, "processes": states})
        write_bytes(path, data)  # renamed into place locally; one whole object on a bucket
        for _, old in self.paths()[self.keep:]:
            old.unlink(missing_ok=True)
        return path


class CheckpointPolicy:
    """`after_batch` of the evaluation: a checkpoint every `every` batches, and on SIGTERM a last
    one, then `Preempted`.

    A SIGTERM may reach only some processes, and all must stop at the same batch, so with several
    processes the flag is agreed (a small all-gather) at every checkpoint and every `agree_every`
    batches, not at every batch: that collective queues behind the running device step and would
    make the host wait for it, leaving the evaluation's pipeline one batch deep. A stop then comes
    at most `agree_every` batches after the signal. One process checks its flag at every batch
    (no collective)."""

    def __init__(self, store, evaluator, every: int, agree_every: int = 8):
        self.store, self.evaluator, self.every = store, evaluator, every
        self.agree_every = max(1, int(agree_every))
        self.terminated = False
        self.seconds = 0.0

    def on_sigterm(self, signum, frame):  # noqa: ARG002 - the signal handler's signature
        self.terminated = True  # acted on at the next batch boundary, with whole counts

    def __call__(self, done: int, result) -> None:
        import jax

        checkpoint = bool(self.every) and done % self.every == 0
        if jax.process_count() == 1:
            stop = self.terminated
        elif checkpoint or done % self.agree_every == 0:
            stop = any_process(self.terminated)
        else:
            stop = False
        if stop or checkpoint:
            t = time.perf_counter()
            self.store.save(done, self.evaluator.local_state(result))
            self.seconds += time.perf_counter() - t
        if stop:
            raise Preempted(done)


def _padded(data: bytes, length: int) -> np.ndarray:
    out = np.zeros(length, np.uint8)
    out[: len(data)] = np.frombuffer(data, np.uint8)
    return out


def gather_json(value) -> list:
    """`value` of every process, in process order (a list of one with a single process)."""
    import jax

    if jax.process_count() == 1:
        return [normalised(value)]
    from jax.experimental import multihost_utils

    data = json.dumps(value, sort_keys=True).encode()
    lengths = np.asarray(multihost_utils.process_allgather(np.asarray([len(data)], np.int32)))
    lengths = lengths.reshape(-1)
    blobs = np.asarray(multihost_utils.process_allgather(_padded(data, int(lengths.max()))))
    return [json.loads(bytes(b[:n])) for b, n in zip(blobs, lengths)]


def broadcast_bytes(data: bytes) -> bytes:
    """Process 0's `data` on every process."""
    from jax.experimental import multihost_utils

    n = int(np.asarray(multihost_utils.broadcast_one_to_all(np.asarray([len(data)], np.int32)))[0])
    blob = np.asarray(multihost_utils.broadcast_one_to_all(_padded(data[:n], n)))
    return bytes(blob[:n])


def any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process (a SIGTERM may reach only some of them)."""
    import jax

    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.asarray(multihost_utils.process_allgather(np.asarray([flag], np.int32))).any())
