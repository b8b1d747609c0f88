"""Behind the devices: the writer thread, and the run's tally of results (counts, the failures
listed, the log of failures and `summary.jsonl`)."""
from __future__ import annotations

import collections
import json

MAX_LISTED_FAILURES = 100  # in the log and in summary.json; all in summary.jsonl and the shards


class Tally:
    """Counts, the failures listed, the log of failures and `summary.jsonl` (an
    `io.paths.AppendLog`: appended to on a disk, whole part objects on a bucket)."""

    def __init__(self, summary, log, progress):
        self.summary, self.log, self.progress = summary, log, progress
        self.counts: collections.Counter = collections.Counter()
        self.failures: list[dict] = []

    def record(self, rec: dict) -> None:
        self.summary.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        self.summary.close()

    def ok(self, rec: dict) -> None:
        self.record(rec)
        self.counts["ok"] += 1
        self.progress.update("ok")

    def failed(self, key: str, kind: str, message: str, **written) -> None:
        shown = self.counts["unreadable"] + self.counts["failed"]
        if shown < MAX_LISTED_FAILURES:
            self.log.write(f"\n{'skip' if kind == 'unreadable' else 'error'}: {key}: {message}\n")
        elif shown == MAX_LISTED_FAILURES:
            self.log.write(f"\n(further failures are recorded in {self.summary.name} only)\n")
        self.record({"input": key, "error": message, "kind": kind, **written})
        self.counts[kind] += 1
        if len(self.failures) < MAX_LISTED_FAILURES:
            self.failures.append({"input": key, "kind": kind, "error": message})
        self.progress.update("failed")


class WriteBehind:
    """Writes on one thread (stdlib), in submission order, at most `behind` waiting (which
    bounds the images held for them); threads=0 writes in the caller's loop."""

    def __init__(self, threads: int, behind: int):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dataset-writer") if threads else None
        self.queued: collections.deque = collections.deque()
        self.behind = behind

    def __call__(self, fn, *args, **kwargs) -> None:
        if self.pool is None:
            fn(*args, **kwargs)
            return
        self.queued.append(self.pool.submit(fn, *args, **kwargs))
        while len(self.queued) > self.behind or (self.queued and self.queued[0].done()):
            self.queued.popleft().result()  # re-raises a failed write here

    def close(self) -> None:
        try:
            while self.queued:
                self.queued.popleft().result()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
