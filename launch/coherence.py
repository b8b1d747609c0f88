r"""Semantic coherence heat map: `diffcut-jax coherence` = `python -m diffcut_jax.launch.coherence`.

    diffcut-jax coherence photo.jpg --patch 12,20 [--output coherence.png]

Cosine similarity of one patch's feature (row, column in feature coordinates: the image is
`image_size / 32` patches on its long side) to every patch, drawn over the image
(docs/algorithm.md §6). The chosen patch is outlined.
"""
from __future__ import annotations

import sys

import numpy as np
from absl import flags

from . import common

FLAGS = flags.FLAGS
flags.DEFINE_list("patch", None, "Patch as ROW,COL in feature coordinates.")
flags.DEFINE_string("output", None, "Output PNG (default: <image stem>_coherence.png beside it).")
flags.DEFINE_float("opacity", 0.6, "Heat map opacity over the photo.")
common.define_model_flags()
common.define_option_flags(("image_size", "square"))


def run(argv: list[str]) -> int:

    from diffcut_jax.coherence import coherence_map, coherence_overlay
    from diffcut_jax.features.checkpoint import CheckpointError
    from diffcut_jax.features.extractor import load_extractor
    from diffcut_jax.features.hub import ModelNotAvailableError
    from diffcut_jax.io import imageio
    from diffcut_jax.io.image_ops import resize_images, working_size

    if len(argv) != 1:
        sys.stderr.write("error: pass exactly one image\n")
        return 2
    if not FLAGS.patch or len(FLAGS.patch) != 2:
        sys.stderr.write("error: --patch ROW,COL is required\n")
        return 2
    try:
        patch = (int(FLAGS.patch[0]), int(FLAGS.patch[1]))
    except ValueError:
        sys.stderr.write(f"error: --patch must be two integers, got {','.join(FLAGS.patch)}\n")
        return 2
    from diffcut_jax.io import paths

    path = paths.as_path(argv[0])
    output = paths.as_path(FLAGS.output) if FLAGS.output else path.with_name(f"{path.stem}_coherence.png")
    try:
        paths.check_output(output.parent, "--output")
    except paths.OutputLocationError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    try:
        image = imageio.read_rgb(path)
    except imageio.ImageReadError as e:
        sys.stderr.write(f"error: {path}: {e}\n")
        return 1
    size = working_size(image.shape[0], image.shape[1], FLAGS.image_size, FLAGS.square)
    try:
        ex = load_extractor(FLAGS.model, dtype=FLAGS.dtype, timestep=FLAGS.timestep,
                            image_size=size, seed=FLAGS.seed)
    except (ModelNotAvailableError, CheckpointError, ValueError) as e:
        return common.model_error_exit(e)
    # Resized in a small program of its own: the extractor's program is keyed by the working size.
    feats = ex(resize_images(image[None], size), size=size)[0]
    try:
        sim = coherence_map(feats, patch)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    out = coherence_overlay(image, np.asarray(sim), patch, FLAGS.opacity)
    fh, fw = feats.shape[:2]
    imageio.write_rgb_png(output, out)
    sys.stderr.write(f"wrote {output} (feature map {fh} x {fw}, patch {patch}, "
                     f"similarity range [{float(sim.min()):.3f}, {float(sim.max()):.3f}])\n")
    return 0


cli = common.entry_point(run)

if __name__ == "__main__":
    cli()
