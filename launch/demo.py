r"""Local web demo: `diffcut-jax demo` = `python -m diffcut_jax.launch.demo` (needs the `demo` extra).

    pip install -e ".[demo]"
    diffcut-jax demo [--model segmind/SSD-1B] [--clip_model ...] [--samples photos/] [--port 7860]

Serves a page on http://127.0.0.1:7860: upload an image or pick a sample, see its segments over
it with tau and refinement as controls, optionally name them with a vocabulary (a legend), and
click a point for its semantic coherence map (diffcut_jax/demo.py). The model loads once at
start; each working size compiles once, with a progress note on the page.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from absl import flags

from . import common

FLAGS = flags.FLAGS


def _default_clip():
    from diffcut_jax.naming.clip_model import DEFAULT_CLIP
    return DEFAULT_CLIP


flags.DEFINE_string("clip_model", _default_clip(), "open_clip CLIP for naming segments (hub id or "
                    "local directory); loaded at the first vocabulary. Empty: no naming.")
flags.DEFINE_integer("clip_image_size", 0, "CLIP's working size (0: the segmenter's).")
flags.DEFINE_string("samples", None, "A folder of images offered as samples, besides the drawn ones.")
flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 7860, "Port to serve on.")
flags.DEFINE_integer("max_pixels", 40_000_000, "Larger uploads are refused with a message.")
common.define_model_flags()
DEMO_OPTIONS = ("tau", "alpha", "refinement", "image_size", "square", "method", "kway_start",
                "kway_threshold")
common.define_option_flags(DEMO_OPTIONS)


def run(argv: list[str]) -> int:
    if argv:
        sys.stderr.write(f"error: unexpected arguments {argv}\n")
        return 2
    try:
        import gradio  # noqa: F401 - fail before loading the model
    except ImportError:
        sys.stderr.write('error: the demo needs Gradio: pip install -e ".[demo]"\n')
        return 2
    from diffcut_jax.demo import DemoSession, build_app, sample_images, serve
    from diffcut_jax.features.checkpoint import CheckpointError
    from diffcut_jax.features.hub import ModelNotAvailableError
    from diffcut_jax.segmenter import DiffCut

    from diffcut_jax.io.paths import as_path

    if FLAGS.samples and not as_path(FLAGS.samples).is_dir():
        sys.stderr.write(f"error: --samples={FLAGS.samples}: no such folder\n")
        return 2
    problem = common.unavailable_model(FLAGS.model, FLAGS.clip_model or None)
    if problem is not None:
        return common.model_error_exit(problem)
    try:
        seg = DiffCut.from_pretrained(FLAGS.model, dtype=FLAGS.dtype, timestep=FLAGS.timestep,
                                      seed=FLAGS.seed, **common.options_from_flags(DEMO_OPTIONS))
    except (ModelNotAvailableError, CheckpointError, ValueError) as e:
        return common.model_error_exit(e)
    session = DemoSession(seg, clip_model=FLAGS.clip_model or None,
                          clip_image_size=FLAGS.clip_image_size, max_pixels=FLAGS.max_pixels)
    samples = sample_images(Path(tempfile.gettempdir()) / "diffcut_jax_demo_samples", FLAGS.samples)
    app = build_app(session, samples)
    sys.stderr.write(f"serving on http://{FLAGS.host}:{FLAGS.port} (Ctrl-C to stop)\n")
    serve(app, host=FLAGS.host, port=FLAGS.port)
    return 0


cli = common.entry_point(run)

if __name__ == "__main__":
    cli()
