"""A dataset run: this process's share of the inputs, segmented, written, resumable, merged.

    summary = diffcut_jax.label_dataset(seg, ["photos/"], "out/", format=("png", "coco"),
                                        batch_size=8)

`DatasetRun` is the run in two steps, so that the command can refuse a rerun of other options,
or finish a run that is already done, before it loads any model:

1. `DatasetRun(output_dir, inputs, labels=..., options=...)`: list the inputs, record or check
   `run.json` (a rerun of other labels is refused, naming every difference; one on another
   process configuration is told so), find what earlier runs finished (COCO: complete shards
   skipped, a part-way one reopened; PNG: images whose outputs exist).
2. `run(seg, labeller)`: stream the rest through `streaming.OrderedStream` (decoded ahead,
   batched by working size over the devices, results in input order), write behind the devices
   on one thread in submission order (a shard closes after its entries), record every input in
   `summary.jsonl`, then `summary.json`; the last process to finish merges the COCO shards.

Processes: each takes every n-th input (`jax.process_index()` of `jax.process_count()`; call
`jax.distributed.initialize()` first) and writes its own shards and summaries. Stopping: `stop`
is checked before each input is read; once true, what is in flight is finished and written, the
open shard closed as part-way, and the summary says `interrupted` (the command sets it from
SIGTERM / SIGINT).
"""
from __future__ import annotations

import itertools
import json
import sys
import time
from typing import Callable, Iterable

from diffcut_jax.io import paths, shards
from diffcut_jax.io.progress import Progress
from diffcut_jax.streaming.batcher import Batcher
from diffcut_jax.streaming.inputs import path_items, share_size, tfds_items
from diffcut_jax.streaming.memory import is_out_of_memory, out_of_memory_message
from diffcut_jax.streaming.ordered import OrderedStream

from . import fingerprint, outputs
from .inputs import list_inputs
from .options import DatasetOptions
from .writing import Tally, WriteBehind

class DatasetRun:
    """One process's dataset run (module docstring). `labels`: the labels' fingerprint
    (`fingerprint.of_segmenter`, or the same values from a command's flags); `option_prefix`:
    how messages name an option (the command's "--"). A context manager: the listing of the
    inputs is removed on exit."""

    def __init__(self, output_dir, inputs: Iterable = (), *, labels: dict,
                 options: DatasetOptions = DatasetOptions(), inputs_from: Iterable = (),
                 tfds: str | None = None, data_dir=None, devices=None, log=None,
                 option_prefix: str = ""):
        import jax

        self.out_dir, self.options, self.labels = paths.as_path(output_dir), options, labels
        self.devices, self.log, self.prefix = devices, log or sys.stderr, option_prefix
        self.process, self.count = jax.process_index(), jax.process_count()
        # A missing bucket, missing credentials or a denied write: one line, before any model.
        paths.check_output(self.out_dir, f"{option_prefix}output_dir")
        paths.makedirs(self.out_dir)  # a local folder; a bucket has none to make
        for spec in [*inputs, *inputs_from]:
            paths.check_input(spec, "input")
        # Other processes may be writing into the same folder now: only old leftovers are removed.
        stale = paths.remove_partials(self.out_dir, older_than_s=0 if self.count == 1 else 120)
        if stale:
            self.log.write(f"removed {stale} partial file(s) left by an interrupted run\n")
        self.inputs = list_inputs(self.out_dir, self.process, inputs, inputs_from=inputs_from,
                                  tfds=tfds, data_dir=data_dir, log=self.log)
        try:
            self._check()
            self._resume()
        except BaseException:
            self.inputs.close()
            raise

    @property
    def vocabulary_names(self):
        classes = self.labels.get("classes")
        return None if classes is None else [c[0] for c in classes]

    def _check(self) -> None:
        opts = self.options
        self.device_configuration = fingerprint.device_configuration(self.devices)
        doc = {"fingerprint": fingerprint.run_fingerprint(
                   self.labels, inputs=self.inputs.identity, formats=opts.format,
                   processes=self.count, shard_size=opts.shard_size),
               "devices": self.device_configuration,
               "categories": self.vocabulary_names,
               "info": {"model": self.labels["model"], "vocabulary": self.vocabulary_names}}
        self.device_changes = shards.check_run(self.out_dir, doc, overwrite=opts.overwrite)
        if self.device_changes:
            self.log.write(
                f"warning: {self.out_dir} was started on another process configuration "
                f"({'; '.join(self.device_changes)}): its labels can differ from this run's in "
                f"round-off (docs/usage.md, \"Which results are reproducible\"); "
                f"{self.prefix}overwrite redoes every input\n")

    def _resume(self) -> None:
        opts, inputs = self.options, self.inputs
        self.share = share_size(inputs.total, self.process, self.count)
        name_of = (outputs.png_names(inputs.paths) if opts.png and inputs.paths is not None
                   else outputs.dataset_key_name)
        self.files = outputs.ImageFiles(self.out_dir, name_of, png=opts.png,
                                        named="classes" in self.labels)
        self.writer = (shards.ShardWriter(self.out_dir, self.process, opts.shard_size)
                       if opts.coco else None)
        self.start, self.skip, self.reopened = 0, set(), {}
        if opts.coco:
            if opts.overwrite:
                shards.clear(self.out_dir, self.process)
            self.start, self.skip, self.reopened = self.writer.resume()
        elif not opts.overwrite and inputs.paths is not None:
            mine = itertools.islice(inputs.paths, self.process, None, self.count)
            self.skip = {pos for pos, key in enumerate(mine) if self.files.exist(key)}
        self.already = self.start + len(self.skip)
        if self.already:
            where = "in closed shards" if opts.coco else "outputs exist"
            self.log.write(f"{self.already} image(s) already done ({where}; "
                           f"{self.prefix}overwrite to redo)\n")

    @property
    def todo(self) -> int:
        """Inputs of this process left to segment."""
        return max(0, self.share - self.already)

    def close(self) -> None:
        self.inputs.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ the run

    def _items(self, batch: int):
        opts = self.options
        common = dict(process=self.process, count=self.count, start=self.start, skip=self.skip,
                      max_pixels=opts.max_pixels, threads=opts.read_threads)
        if self.inputs.is_tfds:
            return tfds_items(self.inputs.builder, self.inputs.split, **common)
        buffer = opts.read_ahead or max(2 * batch, opts.read_threads, 1)
        return path_items(self.inputs.paths, buffer=buffer, **common)

    def _oom_message(self, seg, batcher):
        p, opts, batch = self.prefix, seg.options, self.options.batch_size

        def message(e) -> str:
            return out_of_memory_message(
                "the DiffCut batch function",
                f"batch {batcher.size}, working size {e.size[0]} x {e.size[1]}, "
                f"refinement {'on' if opts.refinement else 'off'}",
                f"lower {p}image_size (now {opts.image_size})"
                + (f", or leave out {p}refinement" if opts.refinement else "")
                + (f", or {p}batch_size (now {batch})" if batch > 1 else ""))

        return message

    def _label(self, labeller, image, labels):
        """CLIP's names of the segments, or (None, the out-of-memory message)."""
        try:
            return labeller(image, labels), None
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_out_of_memory(e):
                raise
            clip = labeller.working_size(*image.shape[:2])
            return None, out_of_memory_message(
                "the labelling step", f"batch 1, CLIP at {clip[0]} x {clip[1]}, masks "
                f"{labels.shape[0]} x {labels.shape[1]}, {int(labels.max()) + 1} segments",
                f"lower {self.prefix}clip_image_size (now {self.labels.get('clip_image_size')})")

    def _emit(self, tally: Tally, seg, labeller, item, image, labels, run_s) -> None:
        """One segmented input: its files, its COCO entry, its record (the write-behind step)."""
        t = time.perf_counter()
        written = self.files.write(item.key, image, labels)
        classes, named = None, None
        if labeller is not None:
            t_label = time.perf_counter()
            named, problem = self._label(labeller, image, labels)
            if problem is not None:
                self._fail(tally, item, "failed", problem, **written)
                return
            classes = {"present": len({s["class"] for s in named.segments(0)})}
            if self.options.png:
                classes = self.files.write_classes(item.key, image, named, labeller.vocabulary)
            classes["seconds"] = round(time.perf_counter() - t_label, 4)
        rec = outputs.record(item, labels, working_size=seg.working_size(*labels.shape),
                             written=written, classes=classes, seconds={
                                 "decode": round(item.seconds, 4), "segment": round(run_s, 4),
                                 "write": round(time.perf_counter() - t, 4)})
        if self.writer is not None:
            self.writer.add(outputs.coco_entry(item, labels, rec, named))
        tally.ok(rec)

    def _fail(self, tally: Tally, item, kind: str, message: str, **written) -> None:
        tally.failed(item.key, kind, message, **written)
        if self.writer is not None:
            self.writer.add(outputs.failure_entry(item, kind, message))

    def _check_segmenter(self, seg, labeller) -> None:
        got = fingerprint.of_segmenter(seg, labeller)
        diff = shards.differences(self.labels, got, before="the run's", after="the segmenter's")
        if diff:
            raise ValueError(f"the segmenter does not match the run it labels: {'; '.join(diff)}")
        if ("classes" in self.labels) != (labeller is not None):
            raise ValueError("labeller: the run names segments exactly when a labeller is given")

    def run(self, seg, labeller=None, *, stop: Callable[[], bool] | None = None,
            progress: bool = True, load_seconds: float | None = None) -> dict:
        """Segment what is left of this process's share with `seg` (and name the segments with
        `labeller`); returns the summary (as `summary.json`, plus `merged`: coco.json or None)."""
        self._check_segmenter(seg, labeller)
        if self.todo == 0:
            return self.finish(processed=0)
        batcher = Batcher(seg, self.options.batch_size, self.devices)
        where = f"process {self.process} of {self.count}, " if self.count > 1 else ""
        self.log.write(f"{self.todo} image(s) to segment ({where}{batcher.devices} device(s), "
                       f"batch {batcher.size})\n")
        tally = Tally(paths.AppendLog(self.out_dir / f"summary{self._suffix}.jsonl"), self.log,
                      Progress(self.todo, stream=self.log, disable=not progress))
        stream = OrderedStream(batcher, self._items(batcher.size), window=self.options.window,
                               stop=stop, out_of_memory=self._oom_message(seg, batcher))
        write = WriteBehind(self.options.read_threads, max(2 * batcher.size, 4))
        t_loop = time.perf_counter()
        with paths.RetryCounter() as retries:
            try:
                self._stream(stream, write, tally, seg, labeller)
            finally:
                try:
                    write.close()
                finally:
                    tally.close()
                    tally.progress.close()
            loop_s = time.perf_counter() - t_loop
            return self._summarise(tally, batcher, stream, loop_s, load_seconds, retries.count)

    @property
    def _suffix(self) -> str:
        return "" if self.count == 1 else f"-{self.process}"

    def _stream(self, stream, write, tally, seg, labeller) -> None:
        """Results in input order to the writer; a shard closes when the next one's first
        input arrives (all of its inputs are then done), the last one when the stream ends."""
        size, shard = self.options.shard_size, None
        for done in stream:
            item = done.item
            if self.writer is not None and item.position // size != shard:
                if shard is not None:
                    write(self.writer.close, complete=True)
                shard = item.position // size
                write(self.writer.open, shard, self.reopened.get(shard))
            if item.skipped:
                continue
            if done.kind:
                write(self._fail, tally, item, done.kind, done.error)
                continue
            write(self._emit, tally, seg, labeller, item, done.image, done.labels, done.seconds)
        if self.writer is not None:
            write(self.writer.close, complete=not stream.stopped)

    def _summarise(self, tally, batcher, stream, loop_s, load_seconds, retries: int = 0) -> dict:
        counts = tally.counts
        ok, failed = counts["ok"], counts["unreadable"] + counts["failed"]
        figures = {
            "processed": ok, "already_done": self.already, "failed": failed,
            "unreadable_count": counts["unreadable"], "out_of_memory_count": counts["failed"],
            "failures_listed": tally.failures,
            "unreadable": [f for f in tally.failures if f["kind"] == "unreadable"],
            "load_seconds": None if load_seconds is None else round(load_seconds, 3),
            "loop_seconds": round(loop_s, 3),
            "images_per_second": round(ok / loop_s, 4) if loop_s else None,
            # Time the loop was blocked on the next decoded image while it could have fed the
            # devices: an upper bound of the devices' wait for input.
            "input_wait_share": round(stream.input_wait_seconds / loop_s, 4) if loop_s else None,
            "batch_per_device": self.options.batch_size, "devices": batcher.devices,
            "device_configuration": self.device_configuration,
            "device_configuration_changed": self.device_changes,
            "process": self.process, "processes": self.count,
            "read_threads": self.options.read_threads, "window": stream.window,
            # Transient storage failures (5xx, timeouts) the storage client retried (io/paths.py).
            "storage_retries": retries,
            "interrupted": stream.stopped}
        paths.write_text(self.out_dir / f"summary{self._suffix}.json", json.dumps(figures, indent=1))
        self.log.write(
            f"{'stopped' if stream.stopped else 'done'}: processed {ok}, skipped {self.already} "
            f"(already done), failed {failed}; {figures['images_per_second'] or 0:.2f} img/s, "
            f"{100 * (figures['input_wait_share'] or 0):.0f}% of it waiting for input\n")
        if stream.stopped:
            return {**figures, "merged": None}
        return {**figures, **self.finish(processed=ok, summarised=True)}

    def finish(self, *, processed: int, summarised: bool = False) -> dict:
        """Mark this process done; the last process to finish merges the shards into coco.json.
        Returns {"merged": its path or None} (with the counts of a run that had nothing left)."""
        merged = None
        if self.options.coco:
            shards.mark_done(self.out_dir, self.process, self.share,
                             -(-self.share // self.options.shard_size))
            _, done = shards.processes_done(self.out_dir)
            if len(done) == self.count:
                merged, n = shards.merge(self.out_dir)
                self.log.write(f"COCO results: {merged} ({n['images']} images, {n['annotations']} "
                               f"segments; {n['unreadable']} unreadable, {n['failed']} failed)\n")
            else:
                self.log.write(f"process {self.process} done; {self.count - len(done)} "
                               "process(es) still running: the last to finish writes coco.json "
                               f"(or merge the shards: {self.prefix or 'shards.'}merge)\n")
        out = {"merged": None if merged is None else str(merged)}
        if not summarised:
            out.update(processed=processed, already_done=self.already, failed=0,
                       interrupted=False)
        return out


def label_dataset(seg, inputs: Iterable = (), output_dir=None, *, labeller=None,
                  inputs_from: Iterable = (), tfds: str | None = None, data_dir=None,
                  devices=None, stop: Callable[[], bool] | None = None, progress: bool = True,
                  log=None, options: DatasetOptions | None = None, **option_values) -> dict:
    """Label a dataset with `seg` (and name the segments with `labeller`) into `output_dir`:
    the `segment` command's run, from Python (module docstring; docs/usage.md, "Datasets").

    inputs: files, folders (walked, sorted), globs; inputs_from: list files (one path per line);
      or tfds: a split "NAME[:VERSION]/SPLIT", prepared under data_dir.
    options / option_values: `DatasetOptions` (format, batch_size, shard_size, read_threads,
      read_ahead, window, max_pixels, overwrite), as an object or by name.
    devices: this process's devices to batch over (default: every local device).
    stop: called before each input is read; true stops the run resumably (SIGTERM's path).
    Returns the summary (`summary.json`'s figures, and `merged`: the path of coco.json or None).
    Raises ValueError for bad options or inputs, and `shards.RunMismatchError` when
    `output_dir` holds a run of other labels (unless overwrite)."""
    if output_dir is None:
        raise ValueError("output_dir is required")
    opts = (options or DatasetOptions()).replace(**option_values)
    labels = fingerprint.of_segmenter(seg, labeller)
    with DatasetRun(output_dir, inputs, labels=labels, options=opts, inputs_from=inputs_from,
                    tfds=tfds, data_dir=data_dir, devices=devices, log=log) as job:
        return job.run(seg, labeller, stop=stop, progress=progress)
