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


def test_merge_processes_keeps_large_counts_exact(monkeypatch):
    """Cross-process sums go through JAX without x64: counts past 2**31 must survive exactly."""
    import jax
    from jax.experimental import multihost_utils

    acc = MIoUAccumulator(3)
    acc.add(np.array([2.0**33 + 1, 5.0, 0.0]), np.array([7.0, 2.0**31 + 3, 0.0]), np.zeros(3), 2**34 + 9)
    other = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1], np.int64)  # tp, fp, fn, valid, images

    def fake_allgather(halves):
        halves = np.asarray(halves)
        assert halves.dtype == np.int32
        theirs = np.stack([other >> 31, other & (2**31 - 1)]).astype(np.int32)
        return np.stack([halves, theirs])

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", fake_allgather)
    acc.merge_processes()
    np.testing.assert_array_equal(acc.tp, [2.0**33 + 2, 7.0, 3.0])
    np.testing.assert_array_equal(acc.fp, [11.0, 2.0**31 + 8, 6.0])
    assert acc.valid_pixels == 2**34 + 9 + 10 and acc.images == 2
