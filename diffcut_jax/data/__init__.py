"""Benchmark data: raw download layouts, TFDS builders, the tf.data evaluation pipeline, and the
images of any TFDS split for `segment --tfds` (`tfds_images`).

TensorFlow is needed only here (install the `data` extra); the rest of diffcut_jax does not
import it.
"""
