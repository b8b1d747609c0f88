r"""Segment images: `diffcut-jax segment` = `python -m diffcut_jax.launch.segment`.

    diffcut-jax segment --output_dir out/ photos/ 'more/*.jpg' one.png [--refinement] [--tau 0.5]

Per image, into --output_dir: `<name>_labels.png` (the label map at the input size, 16-bit where
there are more than 255 segments) and `<name>_overlay.png` (colours over the photo), plus one JSON
line in `summary.jsonl` (segments, timings). Unreadable inputs are skipped with a one-line reason;
the exit status is non-zero only if nothing succeeded. A re-run skips images whose outputs exist
(--overwrite redoes them); outputs are written atomically.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from absl import flags

from . import common

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", None, "Where the outputs go (created if needed).")
flags.DEFINE_bool("overwrite", False, "Redo images whose outputs exist.")
flags.DEFINE_integer("max_pixels", 178_956_970, "Larger images are skipped.")
common.define_model_flags()
common.define_option_flags()


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


def run(inputs: list[str]) -> int:
    from diffcut_jax import imageio
    from diffcut_jax.hub import ModelNotAvailableError
    from diffcut_jax.checkpoint import CheckpointError
    from diffcut_jax.segmenter import DiffCut

    if not FLAGS.output_dir:
        sys.stderr.write("error: --output_dir is required\n")
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

    def outputs(f):
        base = out_dir / names[f]
        return base.with_name(base.name + "_labels.png"), base.with_name(base.name + "_overlay.png")

    todo = [f for f in files if FLAGS.overwrite or not all(p.exists() for p in outputs(f))]
    already = len(files) - len(todo)
    if already:
        sys.stderr.write(f"{already} image(s) already done (outputs exist; --overwrite to redo)\n")
    if not todo:
        return 0

    t0 = time.perf_counter()
    try:
        seg = DiffCut.from_pretrained(
            FLAGS.model, dtype=FLAGS.dtype, timestep=FLAGS.timestep, seed=FLAGS.seed,
            **common.options_from_flags(),
        )
    except (ModelNotAvailableError, CheckpointError, ValueError) as e:
        return common.model_error_exit(e)
    load_s = time.perf_counter() - t0
    sys.stderr.write(f"model loaded in {load_s:.1f} s; {len(todo)} image(s) to segment\n")

    progress = common.Progress(len(todo))
    ok = failed = 0
    summary = out_dir / "summary.jsonl"
    for f in todo:
        labels_path, overlay_path = outputs(f)
        t = time.perf_counter()
        try:
            image = imageio.read_rgb(f, max_pixels=FLAGS.max_pixels)
        except imageio.ImageReadError as e:
            sys.stderr.write(f"\nskip: {f}: {e}\n")
            failed += 1
            progress.update("failed")
            continue
        decode_s = time.perf_counter() - t
        t = time.perf_counter()
        labels = np.asarray(seg(image))
        run_s = time.perf_counter() - t
        t = time.perf_counter()
        imageio.write_labels_png(labels_path, labels)
        imageio.write_rgb_png(overlay_path, imageio.overlay(image, labels))
        write_s = time.perf_counter() - t
        record = {
            "input": str(f), "labels": labels_path.name, "overlay": overlay_path.name,
            "height": int(labels.shape[0]), "width": int(labels.shape[1]),
            "working_size": list(seg.working_size(*labels.shape)),
            "segments": int(labels.max()) + 1,
            "seconds": {"decode": round(decode_s, 4), "segment": round(run_s, 4), "write": round(write_s, 4)},
        }
        with open(summary, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        ok += 1
        progress.update("ok")
    total = time.perf_counter() - t0
    sys.stderr.write(
        f"done: processed {ok}, skipped {already} (already done), failed {failed}, "
        f"{total:.1f} s ({ok / total if total else 0:.2f} img/s incl. loading)\n"
    )
    return 0 if ok or already else 1


cli = common.entry_point(run)

if __name__ == "__main__":
    cli()
