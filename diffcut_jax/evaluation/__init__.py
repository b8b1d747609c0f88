"""Benchmark evaluation: the unsupervised matching protocol of the paper's Table 1."""
from diffcut_jax.evaluation.matching import (
    MIoUAccumulator, background_merge, class_segment_histogram, histogram_rows, image_scores, match,
)

__all__ = [
    "MIoUAccumulator", "background_merge", "class_segment_histogram", "histogram_rows",
    "image_scores", "match",
]
