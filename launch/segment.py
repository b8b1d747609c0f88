r"""Segment images: `diffcut-jax segment` = `python -m diffcut_jax.launch.segment`.

    diffcut-jax segment --output_dir out/ photos/ 'more/*.jpg' one.png [--refinement] [--tau 0.5]
    diffcut-jax segment --output_dir out/ --format coco --batch_size 8 --inputs_from list.txt
    diffcut-jax segment --output_dir out/ --format coco --tfds coco/2017:validation --data_dir ~/tfds
    diffcut-jax segment --output_dir out/ --merge

Per image, into --output_dir: `<name>_labels.png` (the label map at the input size, 16-bit where
there are more than 255 segments) and `<name>_overlay.png` (colours over the photo), plus one JSON
line in `summary.jsonl` (segments, timings; or why the input failed). At the end, `summary.json`:
images/s, the share of the run spent waiting for input, and the failures with their reasons.

With `--vocabulary` (a preset: voc20, context59, coco_object; a file; or "cat,kitty;dog;grass")
every segment is also named by an open-vocabulary CLIP (`--clip_model`, docs/algorithm.md §7):
`<name>_classes.png` (class id per pixel, in vocabulary order), `<name>_classes.json` (per
segment: class, score, pixels; the vocabulary) and `<name>_classes_overlay.png` (class colours
and a legend).

Datasets: `--format coco` writes COCO RLE results in shards instead of files per image
(`coco-<process>-<shard>.json`, each closed atomically every --shard_size inputs, unreadable
inputs recorded with their reason), then one `coco.json` over every input (images in input
order; one annotation per segment: compressed RLE, area, bbox, segment_id, and with
--vocabulary the category, class and score; diffcut_jax/io/shards.py). Inputs: files, folders
(walked lazily), globs, `--inputs_from` lists (one path per line) or `--tfds` splits.

Scale: images of one working size are batched, --batch_size per device, over every local
device (the labels are the same at any batch size and device count), decoded ahead by
--read_threads threads and written behind the devices. With --distributed each process takes
every n-th input and writes its own shards; the last to finish merges them (or `--merge`).

Resumable: a rerun of the same command continues (PNG: images whose outputs exist are skipped;
COCO: finished shards are kept, a shard closed part-way is completed); SIGTERM or Ctrl-C closes
the open shard first (exit 143 / 130). A rerun into the same --output_dir with options that change
the labels is refused, naming them (--overwrite starts afresh). The exit status is non-zero only
if nothing succeeded.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import flags

from . import common

FLAGS = flags.FLAGS


def _default_clip():
    from diffcut_jax.naming.clip_model import DEFAULT_CLIP
    return DEFAULT_CLIP


def _label_options():
    from diffcut_jax.naming.labelling import LabelOptions
    return LabelOptions


flags.DEFINE_string("output_dir", None, "Where the outputs go (created if needed).")
flags.DEFINE_bool("overwrite", False, "Start afresh: redo every input and discard earlier results "
                  "(and a run of other options) in --output_dir.")
flags.DEFINE_integer("max_pixels", 178_956_970, "Larger images are skipped.")
flags.DEFINE_integer("batch_size", 1, "Images per device and step: images of one working size are "
                     "batched and the batch is split over every local device (the labels do not "
                     "depend on the batch size or the device count).", lower_bound=1)
FORMATS = ("png", "coco")
flags.DEFINE_list("format", ["png"], "Outputs, comma-separated: png (label map and overlays per "
                  "image), coco (COCO RLE results in shards, merged into coco.json).")
flags.DEFINE_multi_string("inputs_from", [], "A text file listing input paths, one per line (read "
                          "lazily: any number of lines).")
flags.DEFINE_string("tfds", None, "Segment a TFDS split: NAME[:VERSION]/SPLIT or NAME:SPLIT "
                    "(coco/2017:validation, voc20:validation), prepared under --data_dir.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir for --tfds (default: TFDS's own).")
flags.DEFINE_integer("shard_size", 1000, "With --format coco: inputs per output shard (a killed "
                     "run loses at most one shard per process).", lower_bound=1)
flags.DEFINE_integer("read_threads", min(16, os.cpu_count() or 1),
                     "Threads decoding images ahead of the devices. 0: decode, segment and write "
                     "one after the other (no read-ahead, no write-behind).", lower_bound=0)
flags.DEFINE_integer("read_ahead", None, "Decoded images buffered ahead of the devices (default: "
                     "2 batches, at least --read_threads).", lower_bound=1)
flags.DEFINE_bool("merge", False, "Only merge the shards in --output_dir into coco.json.")
flags.DEFINE_string("clip_model", _default_clip(),
                    "With --vocabulary: open_clip ConvNeXt CLIP, a hub id or a local directory "
                    "(open_clip_config.json + open_clip_model.safetensors).")
common.define_model_flags()
common.define_option_flags()
common.define_option_flags(options=_label_options())
common.define_distributed_flags()

MAX_LISTED_FAILURES = 100  # on stderr and in summary.json; all in summary.jsonl and the shards


def png_names(paths) -> callable:
    """Output base name of a path: its stem, plus a short path hash where stems collide."""
    stems = collections.Counter(Path(p).stem for p in paths)

    def name(key: str) -> str:
        stem = Path(key).stem
        if stems.get(stem, 0) <= 1:
            return stem
        return f"{stem}-{hashlib.sha1(str(Path(key).resolve()).encode()).hexdigest()[:8]}"

    return name


def _tfds_name(key: str) -> str:
    """Output base name of a dataset key (a file name or an id)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(key).stem) or "image"


def write_classes(paths, source: str, image, named, vocabulary) -> dict:
    """The class PNG, the per-image JSON and the overlay with a legend; returns a summary."""
    from diffcut_jax.io import imageio

    png, js, overlay = paths
    class_map = named.class_map[0]
    imageio.write_labels_png(png, np.maximum(class_map, 0))
    segments = named.segments(0)
    present: dict[str, int] = {}
    for s in segments:
        present[s["class"]] = present.get(s["class"], 0) + s["pixels"]
    doc = {
        "input": source, "class_png": png.name, "vocabulary": list(vocabulary.names),
        "synonyms": [list(c) for c in vocabulary.classes], "segments": segments,
        "classes": dict(sorted(present.items(), key=lambda kv: -kv[1])),
    }
    imageio.atomic_write(js, lambda p: p.write_text(json.dumps(doc, indent=1)))
    imageio.write_rgb_png(overlay, imageio.overlay_with_legend(image, class_map, vocabulary.names))
    return {"png": png.name, "json": js.name, "overlay": overlay.name, "present": len(present)}


def fingerprint(seg_options: dict, label_opts, vocabulary, inputs: dict, formats, count: int) -> dict:
    """What a rerun into the same directory must share: everything the labels depend on and,
    for COCO shards, the inputs and how they are cut into shards (never the batch size or the
    device count, which change no label)."""
    labels = {"model": FLAGS.model, "dtype": FLAGS.dtype, "timestep": FLAGS.timestep,
              "seed": FLAGS.seed, **seg_options}
    if vocabulary is not None:
        import dataclasses

        labels.update(clip_model=FLAGS.clip_model, **dataclasses.asdict(label_opts),
                      classes=[list(c) for c in vocabulary.classes])
    if "coco" not in formats:  # files per image: later runs may add inputs to the folder
        return {"labels": labels}
    layout = {"processes": count, "shard_size": FLAGS.shard_size}
    return {"labels": labels, "inputs": inputs, "layout": layout}


class Stop:
    """SIGTERM / SIGINT: finish the batches in flight, close the open shard, exit 128 + signal."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):  # noqa: ARG002 - the signal handler's signature
        self.signum = signum


def run(inputs: list[str]) -> int:
    from diffcut_jax.io import imageio, shards

    if not FLAGS.output_dir:
        sys.stderr.write("error: --output_dir is required\n")
        return 2
    out_dir = Path(FLAGS.output_dir)
    if FLAGS.merge:
        try:
            path, counts = shards.merge(out_dir)
        except (OSError, ValueError) as e:
            sys.stderr.write(f"error: --merge: {e}\n")
            return 2
        sys.stderr.write(f"merged: {path} ({counts['images']} images, {counts['annotations']} "
                         f"segments; {counts['unreadable']} unreadable, {counts['failed']} failed)\n")
        return 0
    formats = {f.strip() for f in FLAGS.format if f.strip()}
    if not formats or formats - set(FORMATS):
        sys.stderr.write(f"error: --format={','.join(FLAGS.format)}: choose one or more of "
                         f"{', '.join(FORMATS)}\n")
        return 2
    from diffcut_jax.naming.labelling import LabelOptions
    from diffcut_jax.naming.vocabulary import parse_vocabulary
    from diffcut_jax.segmentation import SegmenterOptions

    try:
        label_opts = LabelOptions(**common.options_from_flags(options=LabelOptions))
        # Given but empty (--vocabulary='') is an error, not "no labelling".
        asked = FLAGS["vocabulary"].present or label_opts.vocabulary
        vocabulary = parse_vocabulary(label_opts.vocabulary) if asked else None
    except ValueError as e:
        sys.stderr.write(f"error: --vocabulary / --clip_image_size: {e}\n")
        return 2
    try:
        seg_options = common.options_from_flags()
        SegmenterOptions(**seg_options)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    if FLAGS.tfds and (inputs or FLAGS.inputs_from):
        sys.stderr.write("error: --tfds segments a dataset split: give no input files with it\n")
        return 2

    import jax

    common.initialize_distributed()
    process, count = jax.process_index(), jax.process_count()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Other processes may be writing into the same folder now: only old leftovers are removed.
    stale = imageio.remove_partials(out_dir, older_than_s=0 if count == 1 else 120)
    if stale:
        sys.stderr.write(f"removed {stale} partial file(s) left by an interrupted run\n")

    # The inputs: listed once (paths to a file read by index), or a TFDS split.
    list_file = paths = builder = split = None
    try:
        if FLAGS.tfds:
            from diffcut_jax.data import tfds_images

            name, split = tfds_images.parse_spec(FLAGS.tfds)
            builder = tfds_images.open_builder(name, FLAGS.data_dir)
            total = tfds_images.num_examples(builder, split)
            input_id = {"tfds": builder.info.full_name, "split": split, "examples": total}
        else:
            from diffcut_jax.io.input_list import iter_paths, write_path_list

            problems: list[str] = []
            for old in out_dir.glob(f".inputs-{process}-*.txt"):  # left by a killed run of ours
                old.unlink(missing_ok=True)
            fd, list_file = tempfile.mkstemp(prefix=f".inputs-{process}-", suffix=".txt", dir=out_dir)
            os.close(fd)
            paths = write_path_list(iter_paths(inputs, FLAGS.inputs_from, problems), list_file)
            for p in problems:
                sys.stderr.write(f"skip: {p}\n")
            total = len(paths)
            input_id = {"paths": total, "sha1": paths.digest}
        if not total:
            raise ValueError("no input images (pass files, folders, globs, --inputs_from or --tfds)")
        run_doc = {"fingerprint": fingerprint(seg_options, label_opts, vocabulary, input_id,
                                              formats, count),
                   "categories": None if vocabulary is None else list(vocabulary.names),
                   "info": {"model": FLAGS.model,
                            "vocabulary": None if vocabulary is None else list(vocabulary.names)}}
        shards.check_run(out_dir, run_doc, overwrite=FLAGS.overwrite)
    except ValueError as e:  # bad inputs or options; RunMismatchError included
        if list_file is not None:
            Path(list_file).unlink(missing_ok=True)
        sys.stderr.write(f"error: {e}\n")
        return 2
    try:
        return _segment(out_dir, process, count, paths, builder, split, total, formats,
                        vocabulary, label_opts)
    finally:
        if list_file is not None:
            Path(list_file).unlink(missing_ok=True)


def _segment(out_dir, process, count, paths, builder, split, total, formats, vocabulary,
             label_opts) -> int:
    """This process's share of the inputs: resume, load the model, stream, finish."""
    import itertools

    from diffcut_jax.features.checkpoint import CheckpointError
    from diffcut_jax.features.hub import ModelNotAvailableError
    from diffcut_jax.io import coco_output, imageio, shards
    from diffcut_jax.naming.labelling import Labeller
    from diffcut_jax.segmenter import DiffCut

    from .batcher import Batcher, BatchOutOfMemory
    from .segment_inputs import path_items, share_size, tfds_items

    share = share_size(total, process, count)
    coco = "coco" in formats
    png = "png" in formats
    name_of = png_names(paths) if (png and paths is not None) else _tfds_name
    suffix = "" if count == 1 else f"-{process}"
    summary = out_dir / f"summary{suffix}.jsonl"

    def outputs(key: str) -> dict[str, Path]:
        if not png:
            return {}
        base = out_dir / name_of(key)
        suffixes = {"labels": "_labels.png", "overlay": "_overlay.png"}
        if vocabulary is not None:
            suffixes.update(class_png="_classes.png", class_json="_classes.json",
                            class_overlay="_classes_overlay.png")
        return {k: base.with_name(base.name + v) for k, v in suffixes.items()}

    # What earlier runs did: COCO by shards (complete ones skipped, a part-way one reopened),
    # PNG by the outputs of each image.
    writer = shards.ShardWriter(out_dir, process, FLAGS.shard_size) if coco else None
    start, skip, reopened = 0, set(), {}
    if coco:
        if FLAGS.overwrite:
            shards.clear(out_dir, process)
        start, skip, reopened = writer.resume()
    elif not FLAGS.overwrite and paths is not None:
        skip = {pos for pos, key in enumerate(itertools.islice(paths, process, None, count))
                if all(p.exists() for p in outputs(key).values())}
    already = start + len(skip)
    if already:
        sys.stderr.write(f"{already} image(s) already done ("
                         + ("in closed shards" if coco else "outputs exist")
                         + "; --overwrite to redo)\n")
    if already >= share:
        return _finish_process(out_dir, process, count, share, coco, ok=0, already=already)

    t0 = time.perf_counter()
    problem = common.unavailable_model(FLAGS.model, FLAGS.clip_model if vocabulary is not None else None)
    if problem is not None:
        return common.model_error_exit(problem)
    try:
        seg = DiffCut.from_pretrained(
            FLAGS.model, dtype=FLAGS.dtype, timestep=FLAGS.timestep, seed=FLAGS.seed,
            **common.options_from_flags(),
        )
        labeller = None
        if vocabulary is not None:
            sys.stderr.write(common.clip_loading_message(FLAGS.clip_model, vocabulary))
            labeller = Labeller.from_pretrained(
                FLAGS.clip_model, vocabulary,
                image_size=label_opts.clip_image_size or seg.options.image_size,
                square=seg.options.square, normalize_input=label_opts.clip_normalize,
                cache=common.text_cache_dir(), progress=True)
    except (ModelNotAvailableError, CheckpointError, ValueError) as e:
        return common.model_error_exit(e)
    load_s = time.perf_counter() - t0
    batcher = Batcher(seg, FLAGS.batch_size)
    todo = share - already
    where = f"process {process} of {count}, " if count > 1 else ""
    sys.stderr.write(f"model loaded in {load_s:.1f} s; {todo} image(s) to segment ({where}"
                     f"{batcher.devices} device(s), batch {batcher.size})\n")

    threads = FLAGS.read_threads
    buffer = FLAGS.read_ahead or max(2 * batcher.size, threads, 1)
    if paths is not None:
        items = path_items(paths, process=process, count=count, start=start, skip=skip,
                           max_pixels=FLAGS.max_pixels, threads=threads, buffer=buffer)
    else:
        items = tfds_items(builder, split, process=process, count=count, start=start, skip=skip,
                           max_pixels=FLAGS.max_pixels, threads=threads)

    counts = collections.Counter()
    failures: list[dict] = []
    progress = common.Progress(todo)

    def log(record: dict) -> None:
        with open(summary, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def fail(item, kind: str, message: str, **written) -> None:
        """An input that could not be segmented: stderr, summary.jsonl, the shard, summary.json."""
        word = "skip" if kind == "unreadable" else "error"
        shown = counts["unreadable"] + counts["failed"]
        if shown < MAX_LISTED_FAILURES:
            sys.stderr.write(f"\n{word}: {item.key}: {message}\n")
        elif shown == MAX_LISTED_FAILURES:
            sys.stderr.write(f"\n(further failures are recorded in {summary.name} only)\n")
        log({"input": item.key, "error": message, "kind": kind, **written})
        if writer is not None:
            writer.add({"position": item.position, "index": item.index, "input": item.key,
                        "error": message, "kind": kind})
        counts[kind] += 1
        if len(failures) < MAX_LISTED_FAILURES:
            failures.append({"input": item.key, "kind": kind, "error": message})
        progress.update("failed")

    def emit(item, image, labels, run_s) -> None:
        """One segmented image: its files, its COCO entry, its record (the write-behind step)."""
        paths_out = outputs(item.key)
        written = {k: paths_out[k].name for k in ("labels", "overlay") if k in paths_out}
        t = time.perf_counter()
        if png:
            imageio.write_labels_png(paths_out["labels"], labels)
            imageio.write_rgb_png(paths_out["overlay"], imageio.overlay(image, labels))
        classes, named = None, None
        if labeller is not None:
            t_label = time.perf_counter()
            try:
                named = labeller(image, labels)
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not common.is_out_of_memory(e):
                    raise
                clip = labeller.working_size(*image.shape[:2])
                fail(item, "failed", common.out_of_memory_message(
                    "the labelling step", f"batch 1, CLIP at {clip[0]} x {clip[1]}, masks "
                    f"{labels.shape[0]} x {labels.shape[1]}, {int(labels.max()) + 1} segments",
                    f"lower --clip_image_size (now {label_opts.clip_image_size or 'the working size'})"),
                    **written)
                return
            label_s = time.perf_counter() - t_label
            classes = {"present": len({s["class"] for s in named.segments(0)})}
            if png:
                classes = write_classes([paths_out[k] for k in ("class_png", "class_json", "class_overlay")],
                                        item.key, image, named, vocabulary)
            classes["seconds"] = round(label_s, 4)
        record = {
            "input": item.key, **written,
            "height": int(labels.shape[0]), "width": int(labels.shape[1]),
            "working_size": list(seg.working_size(*labels.shape)),
            "segments": int(labels.max()) + 1,
            "seconds": {"decode": round(item.seconds, 4), "segment": round(run_s, 4),
                        "write": round(time.perf_counter() - t, 4)},
        }
        if classes is not None:
            record["classes"] = classes
        if writer is not None:
            anns = coco_output.segment_annotations(labels, None if named is None else named.segments(0))
            writer.add({"position": item.position, "index": item.index, "input": item.key,
                        "image": {"file_name": item.key, "height": int(labels.shape[0]),
                                  "width": int(labels.shape[1])},
                        "annotations": anns, "record": record})
        log(record)
        counts["ok"] += 1
        progress.update("ok")

    # Write-behind: one thread (stdlib) runs every write in submission order, so a shard closes
    # after its entries; at most `behind` writes wait, which bounds the images held for them.
    pool = None
    if threads:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment-writer")
    queued: collections.deque = collections.deque()
    behind = max(2 * batcher.size, 4)

    def submit(fn, *args, **kwargs) -> None:
        if pool is None:
            fn(*args, **kwargs)
            return
        queued.append(pool.submit(fn, *args, **kwargs))
        while len(queued) > behind or (queued and queued[0].done()):
            queued.popleft().result()  # re-raises a failed write here

    def drain() -> None:
        while queued:
            queued.popleft().result()

    inflight = []

    def oom_message(e) -> str:
        opts = seg.options
        return common.out_of_memory_message(
            "the DiffCut batch function",
            f"batch {batcher.size}, working size {e.size[0]} x {e.size[1]}, "
            f"refinement {'on' if opts.refinement else 'off'}",
            f"lower --image_size (now {opts.image_size})"
            + (", or leave out --refinement" if opts.refinement else "")
            + (f", or --batch_size (now {FLAGS.batch_size})" if FLAGS.batch_size > 1 else ""))

    def collect(pending) -> None:
        """Wait for a dispatched batch's labels and hand its images to the writer."""
        try:
            results = pending.result()
        except BatchOutOfMemory as e:
            for item in e.items:
                submit(fail, item, "failed", oom_message(e))
            return
        for item, image, labels, run_s in results:
            submit(emit, item, image, labels, run_s)

    def dispatched(make) -> None:
        """Run `make()` (a batcher call that may dispatch a batch); the batch before it is
        collected only now, so the devices work while the host collects and writes."""
        try:
            pending = make()
        except BatchOutOfMemory as e:
            for item in e.items:
                submit(fail, item, "failed", oom_message(e))
            return
        if pending is None:
            return
        inflight.append(pending)
        while len(inflight) > (1 if pool is not None else 0):
            collect(inflight.pop(0))

    def flush_everything() -> None:
        for size in list(batcher.pending):
            dispatched(lambda size=size: batcher.flush(size))
        while inflight:
            collect(inflight.pop(0))

    def close_shard(complete: bool) -> None:
        flush_everything()
        if writer is not None:
            submit(writer.close, complete=complete)
        drain()

    stop = Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    wait_s, t_loop, shard = 0.0, time.perf_counter(), None
    try:
        while stop.signum is None:
            t = time.perf_counter()
            item = next(items, None)
            wait_s += time.perf_counter() - t
            if item is None:
                break
            if writer is not None and item.position // FLAGS.shard_size != shard:
                if shard is not None:
                    close_shard(True)
                shard = item.position // FLAGS.shard_size
                submit(writer.open, shard, reopened.get(shard))
            if item.skipped:
                continue
            if item.error:
                submit(fail, item, "unreadable", item.error)
                continue
            dispatched(lambda item=item: batcher.add(item, item.image))
        close_shard(stop.signum is None)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pool is not None:
            pool.shutdown(wait=True)
    progress.close()
    loop_s = time.perf_counter() - t_loop
    ok, failed = counts["ok"], counts["unreadable"] + counts["failed"]
    figures = {"processed": ok, "already_done": already, "failed": failed,
               "unreadable_count": counts["unreadable"], "out_of_memory_count": counts["failed"],
               "failures_listed": failures, "unreadable": [f for f in failures if f["kind"] == "unreadable"],
               "load_seconds": round(load_s, 3), "loop_seconds": round(loop_s, 3),
               "images_per_second": round(ok / loop_s, 4) if loop_s else None,
               # Time the loop was blocked on the next decoded image while it could have fed the
               # devices: an upper bound of the devices' wait for input.
               "input_wait_share": round(wait_s / loop_s, 4) if loop_s else None,
               "batch_per_device": FLAGS.batch_size, "devices": batcher.devices,
               "process": process, "processes": count, "read_threads": threads,
               "interrupted": stop.signum is not None}
    imageio.atomic_write(out_dir / f"summary{suffix}.json",
                         lambda p: p.write_text(json.dumps(figures, indent=1)))
    sys.stderr.write(
        f"{'stopped' if stop.signum else 'done'}: processed {ok}, skipped {already} (already "
        f"done), failed {failed}; {figures['images_per_second'] or 0:.2f} img/s, "
        f"{100 * (figures['input_wait_share'] or 0):.0f}% of it waiting for input\n")
    if stop.signum is not None:
        where = "the open shard closed; " if coco else ""
        sys.stderr.write(f"interrupted: {where}rerun the same command to continue\n")
        return 128 + stop.signum
    return _finish_process(out_dir, process, count, share, coco, ok=ok, already=already)


def _finish_process(out_dir, process, count, share, coco, *, ok, already) -> int:
    """Mark this process done; the last process to finish merges the shards into coco.json."""
    from diffcut_jax.io import shards

    if coco:
        shards.mark_done(out_dir, process, share, -(-share // FLAGS.shard_size))
        _, done = shards.processes_done(out_dir)
        if len(done) == count:
            path, n = shards.merge(out_dir)
            sys.stderr.write(f"COCO results: {path} ({n['images']} images, {n['annotations']} "
                             f"segments; {n['unreadable']} unreadable, {n['failed']} failed)\n")
        else:
            sys.stderr.write(f"process {process} done; {count - len(done)} process(es) still "
                             "running: the last to finish writes coco.json (or run with --merge)\n")
    return 0 if ok or already else 1


cli = common.entry_point(run)

if __name__ == "__main__":
    cli()
