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
device (the labels are the same at any batch size within one process configuration:
docs/usage.md, "Which results are reproducible"), decoded ahead by --read_threads threads and
written behind the devices, in input order. With --distributed each process takes every n-th
input and writes its own shards; the last to finish merges them (or `--merge`).

The engine is the library's (`diffcut_jax.label_dataset`, diffcut_jax/engine/): this command is
its flags, the model loading and one call.

Resumable: a rerun of the same command continues (PNG: images whose outputs exist are skipped;
COCO: finished shards are kept, a shard closed part-way is completed); SIGTERM or Ctrl-C closes
the open shard first (exit 143 / 130). A rerun into the same --output_dir with options that change
the labels is refused, naming them (--overwrite starts afresh). The exit status is non-zero only
if nothing succeeded.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from absl import flags

from . import common

FLAGS = flags.FLAGS


def _default_clip():
    from diffcut_jax.naming.clip_model import DEFAULT_CLIP
    return DEFAULT_CLIP


def _label_options():
    from diffcut_jax.naming.labelling import LabelOptions
    return LabelOptions


def _dataset_options():
    from diffcut_jax.engine.options import DatasetOptions
    return DatasetOptions


flags.DEFINE_string("output_dir", None, "Where the outputs go (created if needed).")
flags.DEFINE_multi_string("inputs_from", [], "A text file listing input paths, one per line (read "
                          "lazily: any number of lines).")
flags.DEFINE_string("tfds", None, "Segment a TFDS split: NAME[:VERSION]/SPLIT or NAME:SPLIT "
                    "(coco/2017:validation, voc20:validation), prepared under --data_dir.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir for --tfds (default: TFDS's own).")
flags.DEFINE_bool("merge", False, "Only merge the shards in --output_dir into coco.json.")
flags.DEFINE_string("clip_model", _default_clip(),
                    "With --vocabulary: open_clip ConvNeXt CLIP, a hub id or a local directory "
                    "(open_clip_config.json + open_clip_model.safetensors).")
common.define_model_flags()
common.define_option_flags()
common.define_option_flags(options=_label_options())
common.define_option_flags(options=_dataset_options())
common.define_distributed_flags()


class Stop:
    """SIGTERM / SIGINT: the engine's stop hook (finish what is in flight, close the open shard);
    the command then exits 128 + signal."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):  # noqa: ARG002 - the signal handler's signature
        self.signum = signum

    def requested(self) -> bool:
        return self.signum is not None


def _merge_only(out_dir: Path) -> int:
    from diffcut_jax.io import shards

    try:
        path, counts = shards.merge(out_dir)
    except (OSError, ValueError) as e:
        sys.stderr.write(f"error: --merge: {e}\n")
        return 2
    sys.stderr.write(f"merged: {path} ({counts['images']} images, {counts['annotations']} "
                     f"segments; {counts['unreadable']} unreadable, {counts['failed']} failed)\n")
    return 0


def _options():
    """(dataset options, segmenter options, label options, vocabulary or None) from the flags;
    ValueError naming the flag."""
    from diffcut_jax.engine.options import DatasetOptions
    from diffcut_jax.naming.labelling import LabelOptions
    from diffcut_jax.naming.vocabulary import parse_vocabulary
    from diffcut_jax.segmentation import SegmenterOptions

    try:
        dataset = DatasetOptions(**common.options_from_flags(options=DatasetOptions))
    except ValueError as e:
        raise ValueError(f"--{e}") from e
    try:
        label_opts = LabelOptions(**common.options_from_flags(options=LabelOptions))
        # Given but empty (--vocabulary='') is an error, not "no labelling".
        asked = FLAGS["vocabulary"].present or label_opts.vocabulary
        vocabulary = parse_vocabulary(label_opts.vocabulary) if asked else None
    except ValueError as e:
        raise ValueError(f"--vocabulary / --clip_image_size: {e}") from e
    return dataset, SegmenterOptions(**common.options_from_flags()), label_opts, vocabulary


def _labels(seg_options, label_opts, vocabulary) -> dict:
    """The labels' fingerprint from the flags, before any model loads: the values
    `fingerprint.of_segmenter` reads from the loaded models (the engine checks that they agree)."""
    import dataclasses

    import jax.numpy as jnp

    from diffcut_jax.engine import fingerprint
    from diffcut_jax.features.extractor import default_dtype

    clip = None
    if vocabulary is not None:
        clip = fingerprint.clip_fingerprint(
            clip_model=FLAGS.clip_model, image_size=label_opts.clip_image_size or seg_options.image_size,
            square=seg_options.square, normalize=label_opts.clip_normalize, classes=vocabulary.classes)
    return fingerprint.labels_fingerprint(
        model=FLAGS.model, dtype=FLAGS.dtype or jnp.dtype(default_dtype()).name,
        timestep=FLAGS.timestep, seed=FLAGS.seed, options=dataclasses.asdict(seg_options), clip=clip)


def _load(vocabulary, label_opts):
    """(segmenter, labeller or None, seconds), or the exit status of a model that is missing
    or broken (every model looked for before any loads)."""
    from diffcut_jax.features.checkpoint import CheckpointError
    from diffcut_jax.features.hub import ModelNotAvailableError
    from diffcut_jax.naming.labelling import Labeller
    from diffcut_jax.segmenter import DiffCut

    t0 = time.perf_counter()
    problem = common.unavailable_model(FLAGS.model, FLAGS.clip_model if vocabulary is not None else None)
    if problem is not None:
        return common.model_error_exit(problem)
    try:
        seg = DiffCut.from_pretrained(FLAGS.model, dtype=FLAGS.dtype, timestep=FLAGS.timestep,
                                      seed=FLAGS.seed, **common.options_from_flags())
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
    sys.stderr.write(f"model loaded in {load_s:.1f} s\n")
    return seg, labeller, load_s


def run(inputs: list[str]) -> int:
    if not FLAGS.output_dir:
        sys.stderr.write("error: --output_dir is required\n")
        return 2
    if FLAGS.merge:
        from diffcut_jax.io.paths import as_path
        return _merge_only(as_path(FLAGS.output_dir))
    try:
        dataset, seg_options, label_opts, vocabulary = _options()
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    from diffcut_jax.engine.run import DatasetRun

    common.initialize_distributed()
    try:
        job = DatasetRun(FLAGS.output_dir, inputs, labels=_labels(seg_options, label_opts, vocabulary),
                         options=dataset, inputs_from=FLAGS.inputs_from, tfds=FLAGS.tfds,
                         data_dir=FLAGS.data_dir, option_prefix="--")
    except ValueError as e:  # bad inputs; another run's directory (RunMismatchError)
        sys.stderr.write(f"error: {e}\n")
        return 2
    with job:
        if job.todo == 0:  # a finished run: no model to load
            job.finish(processed=0)
            return 0 if job.already else 1
        loaded = _load(vocabulary, label_opts)
        if isinstance(loaded, int):
            return loaded
        seg, labeller, load_s = loaded
        stop = Stop()
        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            summary = job.run(seg, labeller, stop=stop.requested, load_seconds=load_s)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if stop.signum is not None:
        where = "the open shard closed; " if dataset.coco else ""
        sys.stderr.write(f"interrupted: {where}rerun the same command to continue\n")
        return 128 + stop.signum
    return 0 if summary["processed"] or summary["already_done"] else 1


cli = common.entry_point(run)

if __name__ == "__main__":
    cli()
