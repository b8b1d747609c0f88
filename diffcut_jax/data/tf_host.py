"""TensorFlow for host-side input only: the project's one way in to TensorFlow and TFDS.

    from diffcut_jax.data.tf_host import tf, tfds

tf.data decodes and resizes on the host; JAX owns the accelerators. Once TensorFlow has run
anything it cannot be told to leave a GPU alone any more, and it may already have reserved most
of the GPU's memory, which then makes JAX run out of it on a first run. So the accelerators are
hidden from TensorFlow here, at import, before any TensorFlow or TFDS call of the project (builders,
pipelines, the commands and the benchmarks all import TensorFlow through this module;
tests/test_tf_host.py checks both). If TensorFlow was already running GPUs or TPUs when this
module was first imported (the user's own code), a warning says so.
"""
from __future__ import annotations

import warnings

import tensorflow as tf

HIDDEN_KINDS = ("GPU", "TPU")


def hide_accelerators() -> list[str]:
    """Hide GPUs and TPUs from TensorFlow; returns the device kinds it still sees (CPU alone
    when hiding worked)."""
    for kind in HIDDEN_KINDS:
        try:
            tf.config.set_visible_devices([], kind)
        except (RuntimeError, ValueError):  # already initialised, or no such device type
            pass
    return sorted({d.device_type for d in tf.config.get_visible_devices()})


_SEEN = hide_accelerators()
if set(_SEEN) - {"CPU"}:
    warnings.warn(f"TensorFlow was initialised before diffcut_jax could hide the accelerators and "
                  f"uses {', '.join(k for k in _SEEN if k != 'CPU')}: it may hold accelerator "
                  "memory that JAX needs. Import diffcut_jax.data before running TensorFlow, or "
                  "start TensorFlow with tf.config.set_visible_devices([], 'GPU').", stacklevel=2)

import tensorflow_datasets as tfds  # noqa: E402  (after the hiding: TFDS may run TensorFlow)

__all__ = ["HIDDEN_KINDS", "hide_accelerators", "tf", "tfds"]
