"""Benchmark data: raw download layouts, TFDS builders, the tf.data evaluation pipeline.

TensorFlow is needed only here (install the `data` extra); the rest of diffcut_jax does not
import it.
"""
