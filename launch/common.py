"""Flags and helpers shared by the launch scripts."""
from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags


def _options_class(options):
    if options is not None:
        return options
    from diffcut_jax.segmentation import SegmenterOptions
    return SegmenterOptions


def define_option_flags(names=None, options=None):
    """One flag per field of an options dataclass (`SegmenterOptions` by default; or the named
    fields): name, type, default and help come from the dataclass, the one place options are
    declared."""
    import dataclasses

    for f in dataclasses.fields(_options_class(options)):
        if names is not None and f.name not in names:
            continue
        helptext, choices = f.metadata["help"], f.metadata.get("choices")
        if choices:
            flags.DEFINE_enum(f.name, f.default, list(choices), helptext)
        elif isinstance(f.default, bool):
            flags.DEFINE_bool(f.name, f.default, helptext)
        elif isinstance(f.default, int):
            flags.DEFINE_integer(f.name, f.default, helptext)
        elif isinstance(f.default, float):
            flags.DEFINE_float(f.name, f.default, helptext)
        elif isinstance(f.default, tuple):
            flags.DEFINE_list(f.name, [str(v) for v in f.default], helptext)
        else:
            flags.DEFINE_string(f.name, f.default, helptext)


def options_from_flags(names=None, options=None) -> dict:
    """The values of the flags `define_option_flags` made, typed as the dataclass fields."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(_options_class(options)):
        if names is not None and f.name not in names:
            continue
        value = flags.FLAGS[f.name].value
        if isinstance(f.default, tuple):  # a list flag, typed as the default's elements
            kind = type(f.default[0]) if f.default else str
            value = tuple(kind(v) for v in value)
        out[f.name] = value
    return out


def define_model_flags():
    flags.DEFINE_string("model", "segmind/SSD-1B", "Hub id or local diffusers directory.")
    flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                      "UNet dtype (default: float16 on GPUs, bfloat16 on TPUs, float32 on CPUs).")
    flags.DEFINE_integer("timestep", 50, "Diffusion timestep of the noisy latent.")
    flags.DEFINE_integer("seed", 0, "Seed of the shared noise draw.")


def define_distributed_flags():
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host runs); "
                      "on clusters it finds its settings itself, elsewhere pass the three flags "
                      "below.")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --distributed).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (with --distributed).")
    flags.DEFINE_integer("process_id", None, "This process's index (with --distributed).")


def initialize_distributed() -> None:
    """jax.distributed.initialize() with the flags of `define_distributed_flags`, if asked."""
    if flags.FLAGS.distributed:
        import jax

        jax.distributed.initialize(coordinator_address=flags.FLAGS.coordinator_address,
                                   num_processes=flags.FLAGS.num_processes,
                                   process_id=flags.FLAGS.process_id)


def clip_loading_message(clip_model, vocabulary) -> str:
    """What the (silent, up to a minute on a CPU) CLIP loading and text encoding is doing."""
    from diffcut_jax.naming.clip_model import VILD_TEMPLATES

    names = sum(len(c) for c in vocabulary.classes)
    return (f"loading CLIP {clip_model}; encoding {len(vocabulary)} classes ({names} names x "
            f"{len(VILD_TEMPLATES)} templates)\n")


def unavailable_model(model, clip_model=None) -> Exception | None:
    """Find every model a command needs before loading any (a missing CLIP is reported at once,
    not after the diffusion model has loaded); the first problem, or None."""
    from diffcut_jax.features import hub, saved
    from diffcut_jax.features.checkpoint import CheckpointError

    try:
        if not saved.is_saved(model):
            hub.resolve(model)
        if clip_model:
            hub.resolve_open_clip(clip_model)
    except CheckpointError as e:  # ModelNotAvailableError included
        return e
    return None


def model_error_exit(err: Exception) -> int:
    sys.stderr.write(f"error: {err}\n")
    return 2


def default_cache_dir() -> str:
    """The cache directory for compiled programs: JAX's own $JAX_COMPILATION_CACHE_DIR where set,
    else `jax_compilation_cache` under the project's cache root (`io/cache.py`)."""
    import os

    from diffcut_jax.io.cache import cache_root

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    return str(cache_root() / "jax_compilation_cache")


def text_cache_dir():
    """Where the commands keep text classifiers: beside the compilation cache (its parent's
    `text_classifiers`), or under the cache root when that cache is off."""
    from diffcut_jax.naming.labelling import text_cache_dir as default

    path = flags.FLAGS.compilation_cache_dir
    return Path(path).parent / "text_classifiers" if path else default()


flags.DEFINE_string(
    "compilation_cache_dir", default_cache_dir(),
    "JAX's persistent compilation cache: a warm start skips XLA compilation. Empty: off.")


flags.DEFINE_bool(
    "deterministic", True,
    "Fix XLA's numerical choices on NVIDIA GPUs (deterministic ops, no algorithm autotuning) so "
    "that reruns and device counts give the same labels; costs some speed "
    "(diffcut_jax/determinism.py). No effect on CPUs and TPUs.")


def enable_compilation_cache(path: str) -> None:
    if not path:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    # Cache every program that took a noticeable time to compile (the big ones do).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def command_help(module_name: str) -> str:
    """A command's usage (its module docstring) and its own flags with their defaults: those of
    its module and the shared ones it defined here; absl's logging flags stay in --helpfull."""
    module = sys.modules[module_name]
    parts = [(module.__doc__ or "").strip(), "flags:"]
    for name in (module_name, __name__):
        text = flags.FLAGS.module_help(name).strip()
        if text:
            parts.append(text)
    parts.append("(--helpfull also lists absl's own flags.)")
    return "\n\n".join(parts) + "\n"


def entry_point(run):
    """absl entry point for `run(positional_args) -> exit status`; `--help` lists the command's
    own flags."""

    def main(argv):
        import logging

        # absl shows INFO records; JAX's backend probing ("Unable to initialize backend 'tpu'")
        # is one on every machine without that accelerator, httpx logs every request of the
        # hub client and the demo, botocore where it found credentials. `-v 1` shows them again.
        if flags.FLAGS.verbosity <= 0:
            for name in ("jax", "httpx", "botocore", "aiobotocore", "s3fs", "gcsfs", "google.auth"):
                logging.getLogger(name).setLevel(logging.WARNING)
        if flags.FLAGS.deterministic:
            from diffcut_jax import determinism

            determinism.enable()
        enable_compilation_cache(flags.FLAGS.compilation_cache_dir)
        sys.exit(run(argv[1:]))

    def start():
        if any(a in ("-h", "--help", "-help", "--h") for a in sys.argv[1:]):
            sys.stdout.write(command_help(run.__module__))
            sys.exit(0)
        app.run(main)

    return start
