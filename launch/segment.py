r"""Segment images: `diffcut-jax segment` = `python -m diffcut_jax.launch.segment`.

    diffcut-jax segment --output_dir out/ photos/ 'more/*.jpg' one.png [--refinement] [--tau 0.5]

Per image, into --output_dir: `<name>_labels.png` (the label map at the input size, 16-bit where
there are more than 255 segments) and `<name>_overlay.png` (colours over the photo), plus one JSON
line in `summary.jsonl` (segments, timings). At the end, `summary.json`: images/s, the share of
the loop spent decoding (the devices wait for it), and the failures with their reasons.

With `--vocabulary` (a preset: voc20, context59, coco_object; a file; or "cat,kitty;dog;grass")
every segment is also named by an open-vocabulary CLIP (`--clip_model`, docs/algorithm.md §7):
`<name>_classes.png` (class id per pixel, in vocabulary order), `<name>_classes.json` (per
segment: class, score, pixels; the vocabulary) and `<name>_classes_overlay.png` (class colours
and a legend).

`--format png,coco` also writes COCO-style results: `<name>_coco.json` per image and, at the end
of each run, `coco.json` over every input of the run (images with their sizes; one annotation per
segment: compressed RLE, area, bbox [x, y, w, h], segment_id, and with --vocabulary the
category, class and score; diffcut_jax/io/coco_output.py). `--format coco` writes no PNG.

`--batch_size N` batches images of one working size, N per device, over every local device; the
labels are the same at any batch size and device count.

Unreadable inputs are skipped with a one-line reason; the exit status is non-zero only if nothing succeeded. A re-run skips images whose outputs exist
(--overwrite redoes them); outputs are written atomically.
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
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
flags.DEFINE_bool("overwrite", False, "Redo images whose outputs exist.")
flags.DEFINE_integer("max_pixels", 178_956_970, "Larger images are skipped.")
flags.DEFINE_integer("batch_size", 1, "Images per device and step: images of one working size are "
                     "batched and the batch is split over every local device (the labels do not "
                     "depend on the batch size or the device count).", lower_bound=1)
FORMATS = ("png", "coco")
flags.DEFINE_list("format", ["png"], "Outputs, comma-separated: png (label map and overlays), "
                  "coco (COCO-style RLE JSON: <name>_coco.json and coco.json for the run).")
flags.DEFINE_string("clip_model", _default_clip(),
                    "With --vocabulary: open_clip ConvNeXt CLIP, a hub id or a local directory "
                    "(open_clip_config.json + open_clip_model.safetensors).")
common.define_model_flags()
common.define_option_flags()
common.define_option_flags(options=_label_options())


def output_names(files: list[Path]) -> dict[Path, str]:
    """Output base names: the file stem, plus a short path hash where stems collide."""
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    names = {}
    for f in files:
        if stems[f.stem] == 1:
            names[f] = f.stem
        else:
            digest = hashlib.sha1(str(f.resolve()).encode()).hexdigest()[:8]
            names[f] = f"{f.stem}-{digest}"
    return names


def write_classes(paths, source: Path, image, named, vocabulary) -> dict:
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
        "input": str(source), "class_png": png.name, "vocabulary": list(vocabulary.names),
        "synonyms": [list(c) for c in vocabulary.classes], "segments": segments,
        "classes": dict(sorted(present.items(), key=lambda kv: -kv[1])),
    }
    imageio.atomic_write(js, lambda p: p.write_text(json.dumps(doc, indent=1)))
    imageio.write_rgb_png(overlay, imageio.overlay_with_legend(image, class_map, vocabulary.names))
    return {"png": png.name, "json": js.name, "overlay": overlay.name, "present": len(present)}


def write_coco_fragment(path: Path, source: Path, labels, named) -> None:
    """This image's COCO entry and annotations (`coco.json` is assembled from these)."""
    from diffcut_jax.io import coco_output, imageio

    anns = coco_output.segment_annotations(labels, None if named is None else named.segments(0))
    doc = {"image": {"file_name": str(source), "height": int(labels.shape[0]),
                     "width": int(labels.shape[1])}, "annotations": anns}
    imageio.atomic_write(path, lambda p: p.write_text(json.dumps(doc)))


def write_coco_run(out_dir: Path, fragments: list[Path], vocabulary) -> Path:
    """`coco.json`: every image of the run whose fragment exists, in input order."""
    from diffcut_jax.io import coco_output, imageio

    images, annotations = [], []
    for f in fragments:
        if f.exists():
            doc = json.loads(f.read_text())
            images.append(doc["image"])
            annotations.append(doc["annotations"])
    cats = coco_output.categories(None if vocabulary is None else list(vocabulary.names))
    info = {"description": "diffcut_jax segments", "model": FLAGS.model,
            "vocabulary": None if vocabulary is None else list(vocabulary.names)}
    doc = coco_output.coco_document(images, annotations, cats, info)
    path = out_dir / "coco.json"
    imageio.atomic_write(path, lambda p: p.write_text(json.dumps(doc)))
    return path


def _record_failure(summary: Path, source: Path, message: str, **written) -> None:
    """Say why an image failed (stderr and summary.jsonl); outputs already written stay."""
    sys.stderr.write(f"\nerror: {source}: {message}\n")
    with open(summary, "a") as fh:
        fh.write(json.dumps({"input": str(source), "error": message, **written}) + "\n")


class BatchOutOfMemory(Exception):
    """A batch did not fit on the devices: its working size and its items."""

    def __init__(self, size, items):
        super().__init__(f"out of memory at working size {size}")
        self.size, self.items = size, items


class Batcher:
    """The heavy program on batches: images of one working size are grouped until a batch of
    `--batch_size` per local device is full (or the inputs end: the last batch of each size is
    padded with blank images, whose labels are dropped), then run sharded over the local devices.

    One jitted program per (batch, working size): `DiffCut.function(feature_batch=1)` runs the
    UNet one image at a time, so every image's labels are the same whatever batch and device it
    ran on. Images are resized to the working size in a small program each, and labels back."""

    def __init__(self, seg, per_device: int):
        import jax
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        devices = jax.local_devices()
        self.seg, self.size = seg, per_device * len(devices)
        mesh = Mesh(np.asarray(devices), ("batch",))
        self._params = jax.device_put(seg.params, NamedSharding(mesh, P()))
        f = seg.function(feature_batch=1)

        def segment_batch(params, images):
            return f(params, images)

        self._fn = jax.jit(segment_batch, in_shardings=(NamedSharding(mesh, P()),
                                                        NamedSharding(mesh, P("batch"))),
                           out_shardings=NamedSharding(mesh, P("batch")))
        self.pending: dict[tuple[int, int], list] = {}

    def add(self, item, image) -> list:
        """Queue one decoded image; returns the items of a batch that became full, run."""
        size = self.seg.working_size(*image.shape[:2])
        group = self.pending.setdefault(size, [])
        group.append((item, image))
        return self.flush(size) if len(group) == self.size else []

    def flush(self, size) -> list:
        """Run the queued images of one working size: [(item, image, labels, seconds)]."""
        import jax.numpy as jnp

        from diffcut_jax.io.image_ops import nearest_exact_indices, resize_images

        group = self.pending.pop(size, [])
        if not group:
            return []
        t = time.perf_counter()
        # Resized on the device, one small program per input size, with no host round trip.
        work = [resize_images(image[None], size) for _, image in group]
        if len(group) < self.size:
            work.append(np.zeros((self.size - len(group), *size, 3), np.float32))
        try:
            labels = np.asarray(self._fn(self._params, jnp.concatenate(work)))[: len(group)]
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not common.is_out_of_memory(e):
                raise
            raise BatchOutOfMemory(size, [item for item, _ in group]) from e
        seconds = (time.perf_counter() - t) / len(group)
        out = []
        for (item, image), lab in zip(group, labels):  # back to the input size, on the host
            h, w = image.shape[:2]
            lab = lab[nearest_exact_indices(size[0], h)][:, nearest_exact_indices(size[1], w)]
            out.append((item, image, lab, seconds))
        return out


def run(inputs: list[str]) -> int:
    from diffcut_jax.features.checkpoint import CheckpointError
    from diffcut_jax.features.hub import ModelNotAvailableError
    from diffcut_jax.io import imageio
    from diffcut_jax.segmenter import DiffCut

    if not FLAGS.output_dir:
        sys.stderr.write("error: --output_dir is required\n")
        return 2
    formats = {f.strip() for f in FLAGS.format if f.strip()}
    if not formats or formats - set(FORMATS):
        sys.stderr.write(f"error: --format={','.join(FLAGS.format)}: choose one or more of "
                         f"{', '.join(FORMATS)}\n")
        return 2
    from diffcut_jax.naming.labelling import Labeller, LabelOptions
    from diffcut_jax.naming.vocabulary import parse_vocabulary

    try:
        label_opts = LabelOptions(**common.options_from_flags(options=LabelOptions))
        # Given but empty (--vocabulary='') is an error, not "no labelling".
        asked = FLAGS["vocabulary"].present or label_opts.vocabulary
        vocabulary = parse_vocabulary(label_opts.vocabulary) if asked else None
    except ValueError as e:
        sys.stderr.write(f"error: --vocabulary / --clip_image_size: {e}\n")
        return 2
    files, problems = common.expand_inputs(inputs)
    for p in problems:
        sys.stderr.write(f"skip: {p}\n")
    if not files:
        sys.stderr.write("error: no input images (pass files, folders or globs)\n")
        return 2
    out_dir = Path(FLAGS.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = imageio.remove_partials(out_dir)
    if stale:
        sys.stderr.write(f"removed {stale} partial file(s) left by an interrupted run\n")
    names = output_names(files)

    def outputs(f) -> dict[str, Path]:
        base = out_dir / names[f]
        suffixes = {}
        if "png" in formats:
            suffixes.update(labels="_labels.png", overlay="_overlay.png")
            if vocabulary is not None:
                suffixes.update(class_png="_classes.png", class_json="_classes.json",
                                class_overlay="_classes_overlay.png")
        if "coco" in formats:
            suffixes["coco"] = "_coco.json"
        return {k: base.with_name(base.name + v) for k, v in suffixes.items()}

    todo = [f for f in files if FLAGS.overwrite or not all(p.exists() for p in outputs(f).values())]
    already = len(files) - len(todo)
    if already:
        sys.stderr.write(f"{already} image(s) already done (outputs exist; --overwrite to redo)\n")

    def finish() -> None:
        if "coco" in formats:
            path = write_coco_run(out_dir, [outputs(f)["coco"] for f in files], vocabulary)
            sys.stderr.write(f"COCO results of the run: {path}\n")

    if not todo:
        finish()
        return 0

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
    sys.stderr.write(f"model loaded in {load_s:.1f} s; {len(todo)} image(s) to segment\n")

    progress = common.Progress(len(todo))
    ok = failed = 0
    summary = out_dir / "summary.jsonl"
    batcher = Batcher(seg, FLAGS.batch_size)

    def emit(f, image, labels, decode_s, run_s) -> None:
        nonlocal ok, failed
        paths = outputs(f)
        written = {k: paths[k].name for k in ("labels", "overlay") if k in paths}
        t = time.perf_counter()
        if "labels" in paths:
            imageio.write_labels_png(paths["labels"], labels)
            imageio.write_rgb_png(paths["overlay"], imageio.overlay(image, labels))
        write_s = time.perf_counter() - t
        classes = None
        if labeller is not None:
            t = time.perf_counter()
            try:
                named = labeller(image, labels)
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not common.is_out_of_memory(e):
                    raise
                clip = labeller.working_size(*image.shape[:2])
                msg = common.out_of_memory_message(
                    "the labelling step", f"batch 1, CLIP at {clip[0]} x {clip[1]}, masks "
                    f"{labels.shape[0]} x {labels.shape[1]}, {int(labels.max()) + 1} segments",
                    f"lower --clip_image_size (now {label_opts.clip_image_size or 'the working size'})")
                _record_failure(summary, f, msg, **written)
                failed += 1
                progress.update("failed")
                return
            label_s = time.perf_counter() - t
            classes = {"present": len({s["class"] for s in named.segments(0)})}
            if "class_png" in paths:
                classes = write_classes([paths[k] for k in ("class_png", "class_json", "class_overlay")],
                                        f, image, named, vocabulary)
            classes["seconds"] = round(label_s, 4)
        if "coco" in paths:
            written["coco"] = paths["coco"].name
            write_coco_fragment(paths["coco"], f, labels, named if labeller is not None else None)
        record = {
            "input": str(f), **written,
            "height": int(labels.shape[0]), "width": int(labels.shape[1]),
            "working_size": list(seg.working_size(*labels.shape)),
            "segments": int(labels.max()) + 1,
            "seconds": {"decode": round(decode_s, 4), "segment": round(run_s, 4), "write": round(write_s, 4)},
        }
        if classes is not None:
            record["classes"] = classes
        with open(summary, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        ok += 1
        progress.update("ok")

    def run_batch(done) -> None:
        """Emit a batch's images (`done`: a thunk that runs it); out of memory fails them all."""
        nonlocal failed
        try:
            results = done()
        except BatchOutOfMemory as e:
            opts = seg.options
            msg = common.out_of_memory_message(
                "the DiffCut batch function",
                f"batch {batcher.size}, working size {e.size[0]} x {e.size[1]}, "
                f"refinement {'on' if opts.refinement else 'off'}",
                f"lower --image_size (now {opts.image_size})"
                + (", or leave out --refinement" if opts.refinement else "")
                + (f", or --batch_size (now {FLAGS.batch_size})" if FLAGS.batch_size > 1 else ""))
            for f, _ in e.items:
                _record_failure(summary, f, msg)
                failed += 1
                progress.update("failed")
            return
        for (f, decode_s), image, labels, run_s in results:
            emit(f, image, labels, decode_s, run_s)

    t_loop, decode_total, unreadable = time.perf_counter(), 0.0, []
    for f in todo:
        t = time.perf_counter()
        try:
            image = imageio.read_rgb(f, max_pixels=FLAGS.max_pixels)
        except imageio.ImageReadError as e:
            sys.stderr.write(f"\nskip: {f}: {e}\n")
            unreadable.append({"input": str(f), "error": str(e)})
            failed += 1
            progress.update("failed")
            continue
        decode_s = time.perf_counter() - t
        decode_total += decode_s
        run_batch(functools.partial(batcher.add, (f, decode_s), image))
    for size in list(batcher.pending):
        run_batch(functools.partial(batcher.flush, size))
    progress.close()
    finish()
    loop_s, total = time.perf_counter() - t_loop, time.perf_counter() - t0
    # Decoding runs before each batch, so the devices wait for it: its share of the loop.
    figures = {"processed": ok, "already_done": already, "failed": failed,
               "unreadable": unreadable, "load_seconds": round(load_s, 3),
               "loop_seconds": round(loop_s, 3),
               "images_per_second": round(ok / loop_s, 4) if loop_s else None,
               "input_wait_share": round(decode_total / loop_s, 4) if loop_s else None,
               "batch_per_device": FLAGS.batch_size, "devices": batcher.size // FLAGS.batch_size}
    imageio.atomic_write(out_dir / "summary.json",
                         lambda p: p.write_text(json.dumps(figures, indent=1)))
    sys.stderr.write(
        f"done: processed {ok}, skipped {already} (already done), failed {failed}, "
        f"{total:.1f} s ({ok / total if total else 0:.2f} img/s incl. loading; "
        f"{figures['images_per_second'] or 0:.2f} img/s segmenting, "
        f"{100 * (figures['input_wait_share'] or 0):.0f}% of it decoding)\n"
    )
    return 0 if ok or already else 1


cli = common.entry_point(run)

if __name__ == "__main__":
    cli()
