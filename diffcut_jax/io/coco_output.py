"""Segments as COCO-style results: RLE masks (pycocotools' compressed format), the exchange format
of segmentation tools (`pycocotools.mask.decode`, `COCO.loadRes`, detectron2, CutLER).

    anns = segment_annotations(labels)                   # one per segment: RLE, area, bbox (xywh)
    anns = segment_annotations(labels, named.segments())  # + category_id, class and score

Segment ids are kept (`segment_id`, the value in `<name>_labels.png`), so decoding every
annotation of an image and writing its `segment_id` gives the label PNG back. Without a
vocabulary every segment has the one category "segment" (id 1, class-agnostic as CutLER's);
with one, category ids are vocabulary positions + 1 (COCO ids start at 1).

All segments of an image are encoded in one pass over its pixels: the label map, read in COCO's
column-major order, is cut into runs of one label, and each label's runs give its RLE counts
directly; pycocotools only compresses them. No (segments x pixels) mask stack is formed.
"""
from __future__ import annotations

import numpy as np

AGNOSTIC = {"id": 1, "name": "segment"}


def _mask_api():
    try:
        from pycocotools import mask
    except ImportError as e:  # an optional output: say what to install
        raise ImportError("--format coco needs pycocotools (pip install pycocotools)") from e
    return mask


def label_runs(labels: np.ndarray) -> dict[int, list[int]]:
    """labels (H, W) int -> {label: uncompressed COCO RLE counts} (column-major, zeros first)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    flat = labels.ravel(order="F")
    n = flat.size
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    ends = np.r_[starts[1:], n]
    values = flat[starts]
    order = np.argsort(values, kind="stable")  # runs grouped by label, in pixel order
    values, starts, ends = values[order], starts[order], ends[order]
    uniq, first = np.unique(values, return_index=True)
    out: dict[int, list[int]] = {}
    for label, first, last in zip(uniq, first, np.r_[first[1:], len(values)]):
        s, e = starts[first:last], ends[first:last]
        gaps = s - np.r_[0, e[:-1]]  # zeros before each run of ones
        counts = np.empty(2 * len(s) + 1, np.int64)
        counts[0:-1:2], counts[1:-1:2], counts[-1] = gaps, e - s, n - e[-1]
        # pycocotools' own encoder ends at the last run of ones: no trailing empty run.
        out[int(label)] = counts[:-1].tolist() if counts[-1] == 0 else counts.tolist()
    return out


def segment_annotations(labels: np.ndarray, segments: list[dict] | None = None) -> list[dict]:
    """One COCO annotation per segment of `labels` (ids >= 0): compressed RLE, area, bbox [x, y,
    w, h], iscrowd 0, segment_id; with `segments` (`NamedSegments.segments()`), also category_id
    (class id + 1), class and score. Ids are set when the shards are merged (`io/shards.py`)."""
    mask = _mask_api()
    h, w = np.asarray(labels).shape
    named = {s["segment"]: s for s in segments} if segments is not None else None
    out = []
    for label, counts in sorted(label_runs(labels).items()):
        if label < 0:  # unlabelled pixels, if any
            continue
        rle = mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        ann = {"segment_id": label, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
               "area": int(mask.area(rle)), "bbox": [float(v) for v in mask.toBbox(rle)],
               "iscrowd": 0, "category_id": AGNOSTIC["id"]}
        if named is not None:
            s = named[label]
            ann.update(category_id=s["class_id"] + 1, **{"class": s["class"]}, score=s["score"])
        out.append(ann)
    return out


def categories(names: list[str] | None) -> list[dict]:
    if names is None:
        return [dict(AGNOSTIC)]
    return [{"id": i + 1, "name": n} for i, n in enumerate(names)]


def labels_from_annotations(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """The label map back from an image's annotations (-1 where none covers a pixel)."""
    mask = _mask_api()
    out = np.full((height, width), -1, np.int32)
    for ann in annotations:
        seg = dict(ann["segmentation"])
        seg["counts"] = seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]
        out[mask.decode(seg).astype(bool)] = ann["segment_id"]
    return out
