"""The evaluation protocol against the original's per-image and dataset scores (metrics_reference.npz)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcut_jax.evaluation import MIoUAccumulator, class_segment_histogram, histogram_rows, image_scores
from tests.helpers import load_fixture, meta

Z = load_fixture("metrics_reference.npz")
DATASETS = ["VOC20", "Context", "COCO-Object", "COCO-Stuff", "Cityscapes", "ADE20K"]
SEGMENT_CAPACITY = 1024  # 32 x 32 feature nodes: the most segments an image can have


@pytest.mark.parametrize("dataset", DATASETS)
def test_per_image_and_dataset_scores_exact(dataset):
    summary = meta(Z, f"{dataset}_summary")
    n, bg = summary["n_class"], summary["background_many_to_one"]
    rows = histogram_rows(n, bg)
    preds = jnp.asarray(np.stack([Z[f"{dataset}_{i}_pred"] for i in range(summary["n_images"])]))
    gts = jnp.asarray(np.stack([Z[f"{dataset}_{i}_label"] for i in range(summary["n_images"])]))
    # On device, batched: only the (rows x segments) histograms come back.
    hists, num_pred = jax.jit(
        jax.vmap(class_segment_histogram, in_axes=(0, 0, None, None)), static_argnums=(2, 3)
    )(preds, gts, rows, SEGMENT_CAPACITY)
    acc = MIoUAccumulator(n)
    for i in range(summary["n_images"]):
        tp, fp, fn, valid = image_scores(np.asarray(hists[i]), int(num_pred[i]), n, bg)
        key = f"{dataset}_{i}"
        np.testing.assert_array_equal(tp, Z[f"{key}_tp"])
        np.testing.assert_array_equal(fp, Z[f"{key}_fp"])
        np.testing.assert_array_equal(fn, Z[f"{key}_fn"])
        acc.add(tp, fp, fn, valid)
    assert acc.miou() == summary["miou"]
    assert acc.pixel_accuracy() == summary["pixel_accuracy"]


def test_histogram_counts_against_numpy():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 9, size=(16, 16))
    gt = rng.integers(-1, 5, size=(16, 16))
    hist, num_pred = class_segment_histogram(jnp.asarray(pred), jnp.asarray(gt), 5, 12)
    expected = np.zeros((5, 12), np.int64)
    for g, p in zip(gt.ravel(), pred.ravel()):
        if g + 1 < 5:
            expected[g + 1, p] += 1
    np.testing.assert_array_equal(np.asarray(hist), expected)
    assert int(num_pred) == pred.max() + 1
