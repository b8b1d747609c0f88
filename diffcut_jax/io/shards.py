"""Segmentation results of a dataset run in shards: per process, atomic, resumable, merged.

The files `segment --format coco` keeps in its output directory (docs/usage.md, "The COCO shard
format"):

- `run.json`: what the labels depend on (model, options, vocabulary) and how the inputs are cut
  (the inputs' digest, processes, shard size). A rerun into the same directory with other values
  is refused, naming every difference (`check_run`). Also the process configuration (platform,
  device kind, devices per process): a rerun on another one is told so, not refused.
- `coco-<process>-<shard>.json`: shard k of process p holds positions [k S, (k + 1) S) of that
  process's share of the inputs (S = `--shard_size`), one entry per input: the image (its index
  in the whole input list, `file_name`, height, width) with its COCO annotations and timings, or
  the reason it failed (`unreadable`: not an image, truncated, missing, ...; `failed`: out of
  memory). Written atomically when the shard closes: `complete` is false only for a shard
  closed part-way by SIGTERM, whose entries a rerun keeps and completes.
- `done-<process>.json`: the process closed its last shard (how many shards and inputs).
- `coco.json`: every process's shards merged in input order, image and annotation ids from 1
  (`merge`); written by the last process to finish, or by `segment --merge`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from diffcut_jax.io import coco_output
from diffcut_jax.io.paths import as_path, atomic_write, create_exclusive, write_text

FORMAT = 1
SHARD_RE = re.compile(r"coco-(\d+)-(\d+)\.json")


class RunMismatchError(ValueError):
    """The output directory holds a run of other options or inputs."""


def differences(saved: dict, current: dict, *, before: str = "earlier run",
                after: str = "this run", prefix: str = "") -> list[str]:
    """`key: <before> X, <after> Y` for every leaf that differs (nested dicts flattened): what a
    rerun changed against a saved fingerprint (here, and `eval`'s checkpoints)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, before=before, after=after, prefix=f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {before} {a!r}, {after} {b!r}")
    return out


def check_run(out_dir, run: dict, *, overwrite: bool = False) -> list[str]:
    """Record `run` ({"fingerprint": ..., "devices": ..., "categories": ...}) in `run.json`, or
    refuse (RunMismatchError) when the directory holds a run of another fingerprint, unless
    `overwrite`. Returns how this run's `devices` (the process configuration, which can change
    round-off but is no reason to refuse) differ from the recorded run's: [] when they do not."""
    run = json.loads(json.dumps(run, default=list))  # tuples -> lists, as saved
    path = as_path(out_dir) / "run.json"
    text = json.dumps(run, indent=1)
    if overwrite:
        write_text(path, text)
        return []
    # Every process of a run records it: the first write wins (a generation precondition on a
    # bucket), the others compare against it as a rerun would.
    if not create_exclusive(path, text.encode("utf-8")):
        saved = json.loads(path.read_text())
        diff = differences(saved.get("fingerprint", {}), run["fingerprint"])
        if diff:
            raise RunMismatchError(
                f"{out_dir} holds the results of another run ({'; '.join(diff)}): use another "
                "--output_dir, or --overwrite to discard them")
        return differences(saved.get("devices", {}), run.get("devices", {}), prefix="devices.")
    return []


def shard_path(out_dir: Path, process: int, shard: int) -> Path:
    return as_path(out_dir) / f"coco-{process}-{shard:05d}.json"


def done_path(out_dir: Path, process: int) -> Path:
    return as_path(out_dir) / f"done-{process}.json"


def clear(out_dir: Path, process: int) -> None:
    """Remove a process's shards and done mark, and the merged file (`--overwrite`)."""
    out_dir = as_path(out_dir)
    for p in out_dir.glob(f"coco-{process}-*.json"):
        p.unlink()
    done_path(out_dir, process).unlink(missing_ok=True)
    (out_dir / "coco.json").unlink(missing_ok=True)


class ShardWriter:
    """One process's shards: what earlier runs finished (`resume`), then entries added to the
    open shard and the shard closed atomically (`close`)."""

    def __init__(self, out_dir: Path, process: int, shard_size: int):
        self.out_dir, self.process, self.size = as_path(out_dir), process, shard_size
        self.shard: int | None = None
        self.entries: list[dict] = []

    def resume(self) -> tuple[int, set[int], dict[int, list[dict]]]:
        """(positions in complete shards, positions done in part-way shards, their entries by
        shard). Complete shards are skipped; a part-way shard is reopened with its entries."""
        complete, partial = 0, {}
        for p in sorted(self.out_dir.glob(f"coco-{self.process}-*.json")):
            m = SHARD_RE.fullmatch(p.name)
            if not m:
                continue
            doc = json.loads(p.read_text())
            if doc.get("format") != FORMAT:
                raise RunMismatchError(f"{p}: shard format {doc.get('format')}, expected {FORMAT}")
            if doc["complete"]:
                complete += len(doc["entries"])
            else:
                partial[int(m.group(2))] = doc["entries"]
        done = {e["position"] for entries in partial.values() for e in entries}
        return complete, done, partial

    def open(self, shard: int, entries: list[dict] | None = None) -> None:
        self.shard, self.entries = shard, list(entries or [])

    def add(self, entry: dict) -> None:
        self.entries.append(entry)

    def close(self, *, complete: bool = True) -> Path | None:
        """Write the open shard (entries in position order); None when no shard is open."""
        if self.shard is None:
            return None
        entries = sorted(self.entries, key=lambda e: e["position"])
        doc = {"format": FORMAT, "process": self.process, "shard": self.shard,
               "first_position": self.shard * self.size, "shard_size": self.size,
               "complete": complete, "entries": entries}
        path = shard_path(self.out_dir, self.process, self.shard)
        write_text(path, json.dumps(doc))
        self.shard, self.entries = None, []
        return path


def mark_done(out_dir: Path, process: int, positions: int, shards: int) -> None:
    doc = {"process": process, "positions": positions, "shards": shards}
    write_text(done_path(out_dir, process), json.dumps(doc))


def processes_done(out_dir: Path) -> tuple[int, list[int]]:
    """(processes of the run, the processes that have finished)."""
    out_dir = as_path(out_dir)
    run = json.loads((out_dir / "run.json").read_text())
    count = int(run["fingerprint"]["layout"]["processes"])
    return count, [p for p in range(count) if done_path(out_dir, p).exists()]


def _ordered_entries(out_dir: Path, count: int, shards: list[int]):
    """Every entry of every process, in input order, one shard index at a time: shard k of all
    processes holds inputs n k S to n (k + 1) S - 1, so memory stays n x S entries."""
    last, where = -1, ""
    for k in range(max(shards, default=0)):
        group = []
        for p in range(count):
            if k >= shards[p]:
                continue
            path = shard_path(out_dir, p, k)
            if not path.exists():
                raise ValueError(f"{path}: missing (process {p} reported {shards[p]} shards)")
            doc = json.loads(path.read_text())
            if not doc["complete"]:
                raise ValueError(f"{path}: closed part-way; rerun process {p} to complete it")
            group += [(e, path.name) for e in doc["entries"]]
        group.sort(key=lambda e: e[0]["index"])
        for e, name in group:
            if e["index"] <= last:
                raise ValueError(f"input {e['index']} ({e['input']}) is in {where} and in {name}"
                                 if e["index"] == last else f"{name}: inputs out of order")
            last, where = e["index"], name
            yield e


def merge(out_dir: Path) -> tuple[Path, dict]:
    """Every process's shards -> `coco.json`: images in input order, ids from 1, every failure
    with its reason in `info.failures`. Streamed (three passes over the shards: failures, images,
    annotations), so memory stays that of one shard per process whatever the number of inputs.
    Returns the path and the counts (images, annotations, unreadable, failed). Raises ValueError,
    naming what is missing, unless every process has finished, and if an input appears twice."""
    out_dir = as_path(out_dir)
    run = json.loads((out_dir / "run.json").read_text())
    count, done = processes_done(out_dir)
    if len(done) < count:
        missing = sorted(set(range(count)) - set(done))
        raise ValueError(f"{out_dir}: process(es) {missing} of {count} have not finished "
                         "(no done-<process>.json): rerun them, then merge")
    shards = [json.loads(done_path(out_dir, p).read_text())["shards"] for p in range(count)]
    counts = {"images": 0, "annotations": 0, "unreadable": 0, "failed": 0}

    def entries():
        return _ordered_entries(out_dir, count, shards)

    def write(path: Path) -> None:
        with open(path, "w") as fh:
            info = {"description": "diffcut_jax segments", **run.get("info", {})}
            fh.write('{"info": ' + json.dumps(info)[:-1] + ', "failures": [')
            sep, inputs = "", 0
            for e in entries():
                inputs += 1
                if "error" in e:
                    counts[e["kind"]] += 1
                    fh.write(sep + json.dumps({k: e[k] for k in ("index", "input", "error", "kind")}))
                    sep = ", "
            fh.write(f'], "inputs": {inputs}}}, "images": [')
            sep, image_id = "", 0
            for e in entries():
                if "image" in e:
                    image_id += 1
                    fh.write(sep + json.dumps({"id": image_id, **e["image"]}))
                    sep = ", "
            counts["images"] = image_id
            fh.write('], "annotations": [')
            sep, image_id, ann_id = "", 0, 0
            for e in entries():
                if "image" not in e:
                    continue
                image_id += 1
                for ann in e["annotations"]:
                    ann_id += 1
                    fh.write(sep + json.dumps({"id": ann_id, "image_id": image_id, **ann}))
                    sep = ", "
            counts["annotations"] = ann_id
            cats = coco_output.categories(run.get("categories"))
            fh.write('], "categories": ' + json.dumps(cats) + "}")

    path = out_dir / "coco.json"
    atomic_write(path, write)
    return path, counts
