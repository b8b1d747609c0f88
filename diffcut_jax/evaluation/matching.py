"""Unsupervised matching of predicted segments to classes (docs/protocol.md steps 7, 9 and 10).

Histograms are computed on device (`class_segment_histogram`, jittable, batched); only the small
(classes x segments) histograms reach the host, where `scipy.optimize.linear_sum_assignment`
matches them exactly as the original did.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment


def class_segment_histogram(pred: jnp.ndarray, gt: jnp.ndarray, num_rows: int, num_segments: int):
    """hist[g + 1, p] = #pixels with ground truth g (-1 .. num_rows - 2) and prediction p.

    Row 0 counts the pixels whose ground truth is -1 (void or background). Ground truth outside
    [-1, num_rows - 1) and predictions outside [0, num_segments) are not counted. Also returns
    max(pred) + 1 over all pixels (the original pads its histogram to that many columns).
    """
    g = gt.reshape(-1).astype(jnp.int32) + 1
    p = pred.reshape(-1).astype(jnp.int32)
    ok = (g >= 0) & (g < num_rows) & (p >= 0) & (p < num_segments)
    flat = jnp.where(ok, g * num_segments + p, num_rows * num_segments)
    hist = jnp.zeros((num_rows * num_segments + 1,), jnp.int32).at[flat].add(1)
    return hist[:-1].reshape(num_rows, num_segments), jnp.max(pred) + 1


def _pad_columns(hist: np.ndarray, columns: int) -> np.ndarray:
    if hist.shape[1] >= columns:
        return hist[:, :columns]
    return np.pad(hist, ((0, 0), (0, columns - hist.shape[1])))


def match(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hungarian matching of rows (classes) to columns (segments): per-class tp, fp, fn."""
    rows, cols = linear_sum_assignment(hist, maximize=True)
    matched = np.zeros(hist.shape[0], np.int64)
    matched[rows] = cols
    tp = hist[np.arange(hist.shape[0]), matched].astype(np.float64)
    fn = hist.sum(axis=1) - tp
    fp = hist.sum(axis=0)[matched] - tp
    return tp, fp, fn


def background_merge(hist_fg: np.ndarray, num_pred: int) -> np.ndarray:
    """Step 7: segment id -> new id. Segments matched to a present foreground class keep their id;
    all others merge into one new id (max id + 1)."""
    n_fg = hist_fg.shape[0]
    columns = max(n_fg, num_pred)
    h = _pad_columns(hist_fg, columns)
    rows, cols = linear_sum_assignment(h, maximize=True)
    present = h.sum(axis=1) > 0
    keep = np.zeros(columns, bool)
    keep[cols[present[rows]]] = True
    merged_id = num_pred  # max id + 1
    mapping = np.where(keep, np.arange(columns), merged_id)
    return mapping


def image_scores(hist: np.ndarray, num_pred: int, num_classes: int, background: bool):
    """tp, fp, fn (num_classes,) and valid pixels of one image from its device histogram.

    hist: (num_rows, S) from `class_segment_histogram` with num_rows = num_classes (background
    datasets: row 0 = gt -1 = background) or num_classes + 1 (row 0 = void, not counted).
    """
    hist = np.asarray(hist, np.int64)
    if background:
        fg = hist[1:]
        mapping = background_merge(fg, num_pred)
        new_num = int(mapping.max()) + 1
        merged = np.zeros((hist.shape[0], new_num), np.int64)
        cols = min(hist.shape[1], mapping.size)
        np.add.at(merged, (slice(None), mapping[:cols]), hist[:, :cols])
        # Rows: classes 0 .. n-2, then background (gt -1) as class n - 1.
        final = np.concatenate([merged[1:], merged[:1]], axis=0)
        num_pred = new_num
    else:
        final = hist[1:]
    return final_scores(final, num_pred, num_classes)


def final_scores(final: np.ndarray, num_pred: int, num_classes: int):
    """Step 9 on a (num_classes, S) histogram whose rows are the n evaluation classes:
    columns padded (or cut) to P = max(n, num_pred), then Hungarian matching."""
    final = _pad_columns(np.asarray(final, np.int64), max(num_classes, num_pred))
    tp, fp, fn = match(final)
    return tp, fp, fn, int(final.sum())


@dataclass
class MIoUAccumulator:
    """Dataset-level tp/fp/fn per class, pixel accuracy and mIoU (docs/protocol.md step 10)."""

    num_classes: int
    tp: np.ndarray = field(init=False)
    fp: np.ndarray = field(init=False)
    fn: np.ndarray = field(init=False)
    valid_pixels: int = 0
    images: int = 0

    def __post_init__(self):
        self.tp = np.zeros(self.num_classes)
        self.fp = np.zeros(self.num_classes)
        self.fn = np.zeros(self.num_classes)

    def add(self, tp, fp, fn, valid):
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.valid_pixels += valid
        self.images += 1

    def iou(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.tp / (self.tp + self.fp + self.fn)

    def miou(self) -> float:
        return float(np.nanmean(self.iou()))

    def pixel_accuracy(self) -> float:
        return float(self.tp.sum() / max(self.valid_pixels, 1))

    def merge_processes(self) -> None:
        """Sum the counts of every process (multi-host runs); a no-op with one process."""
        import jax
        if jax.process_count() == 1:
            return
        from jax.experimental import multihost_utils
        # Counts are whole numbers; without x64 JAX would carry them as float32 / int32, which
        # loses exactness past 2**24 pixels. Gather them as two 31-bit int32 halves instead.
        local = np.concatenate([self.tp, self.fp, self.fn, [self.valid_pixels, self.images]])
        local = np.rint(local).astype(np.int64)
        halves = np.stack([local >> 31, local & (2**31 - 1)]).astype(np.int32)
        gathered = np.asarray(multihost_utils.process_allgather(halves)).astype(np.int64)
        total = ((gathered[:, 0] << 31) + gathered[:, 1]).sum(axis=0).astype(np.float64)
        n = self.num_classes
        self.tp, self.fp, self.fn = total[:n], total[n : 2 * n], total[2 * n : 3 * n]
        self.valid_pixels, self.images = int(total[3 * n]), int(total[3 * n + 1])


def histogram_rows(num_classes: int, background: bool) -> int:
    """Rows of the device histogram: gt -1 .. num_classes - 2 (background) or - 1 (void)."""
    return num_classes if background else num_classes + 1

