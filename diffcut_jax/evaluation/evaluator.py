"""Data-parallel benchmark evaluation: segment on every device, match on the host.

    evaluator = Evaluator(extractor, benchmarks.get("voc20"), options)
    result = evaluator.evaluate(batches)            # batches: dicts of NumPy arrays (pipeline.py)

The device step is `shard_map`ped over a 1-D `jax.sharding.Mesh` of all devices: the batch axis
is split across devices, the parameters are replicated, and each device runs the per-image
pipeline (features, NCut or AutoSC, concept assignment at the mask size, optional PAMR) on its
share and returns (classes x segments) histograms (matching.py). Only those histograms reach the
host, where the Hungarian matching runs while the device works on the next batch.

With refinement on a background dataset, the background merge (docs/protocol.md step 7) needs a
matching before PAMR, so that case takes a second device step per batch.
"""
from __future__ import annotations

import collections
import functools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from diffcut_jax.data.benchmarks import Benchmark
from diffcut_jax.evaluation.matching import (
    MIoUAccumulator,
    background_merge,
    class_segment_histogram,
    final_scores,
    histogram_rows,
    image_scores,
)
from diffcut_jax.features.extractor import DiffusionFeatureExtractor
from diffcut_jax.segmentation import FeatureModel, SegmenterOptions, predict_masks, refine_masks

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (of every process), axis 'data'."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def predict_histograms(params, images, labels, noise, tau, alpha, *, model: FeatureModel,
                       options: SegmenterOptions, mask_size, rows, columns, refine_now: bool,
                       feature_batch: int | None):
    """One device's share: images (b, S, S, 3), labels (b, M, M) -> masks (b, M, M),
    histograms (b, rows, columns) and max(mask) + 1 per image."""
    size = (options.image_size, options.image_size)
    masks, _ = predict_masks(params, images, noise, tau, alpha, model=model, options=options,
                             size=size, mask_size=mask_size, refine_now=refine_now,
                             feature_batch=feature_batch)
    hist, num_pred = jax.vmap(class_segment_histogram, in_axes=(0, 0, None, None))(
        masks, labels, rows, columns)
    return masks, hist, num_pred


def refine_merged_histograms(images, masks, mapping, labels, *, options: SegmenterOptions,
                             num_classes, columns):
    """Background datasets with refinement: merge (per-image id mapping), PAMR, final histogram
    with gt -1 as the background class n - 1."""
    merged = jnp.take_along_axis(mapping, masks.reshape(masks.shape[0], -1), axis=1).reshape(masks.shape)
    refined = refine_masks(images, merged, options=options, num_labels=columns)
    gt = jnp.where(labels == -1, num_classes - 1, labels)
    hist, num_pred = jax.vmap(class_segment_histogram, in_axes=(0, 0, None, None))(
        refined, gt, num_classes + 1, columns)
    return hist[:, 1:], num_pred


def device_steps(model: FeatureModel, benchmark: Benchmark, options: SegmenterOptions, *, mesh,
                 mask_size, rows: int, columns: int, feature_batch: int | None):
    """The evaluator's jitted device programs, `shard_map`ped over `mesh` (batch split, the rest
    replicated): `predict(params, images, labels, noise, tau, alpha)` and, for refinement on a
    background dataset (the merge needs a host matching first), `refine(images, masks, mapping,
    labels)`, else None. Pure: `benchmarks/memory_analysis.py` builds them on abstract weights.

    `feature_batch`: features in fixed chunks of this many images (the last one padded), so that
    results do not depend on the per-device batch or the device count. None: the whole batch.
    """
    refine_after_merge = options.refinement and benchmark.background
    step = functools.partial(
        predict_histograms, model=model, options=options.static, mask_size=tuple(mask_size),
        rows=rows, columns=columns, refine_now=options.refinement and not benchmark.background,
        feature_batch=feature_batch)
    batch = P(DATA_AXIS)
    predict = jax.jit(jax.shard_map(
        step, mesh=mesh, in_specs=(P(), batch, batch, P(), P(), P()),
        out_specs=(batch, batch, batch), check_vma=False))
    if not refine_after_merge:
        return predict, None
    second = functools.partial(refine_merged_histograms, options=options,
                               num_classes=benchmark.num_classes, columns=columns)
    refine = jax.jit(jax.shard_map(
        second, mesh=mesh, in_specs=(batch,) * 4, out_specs=(batch, batch), check_vma=False))
    return predict, refine


@dataclass
class EvalResult:
    benchmark: Benchmark
    accumulator: MIoUAccumulator
    seconds: float = 0.0
    input_wait_seconds: float = 0.0
    per_image: list[dict] = field(default_factory=list)  # this process's images, in order

    @property
    def miou(self) -> float:
        return self.accumulator.miou()

    @property
    def pixel_accuracy(self) -> float:
        return self.accumulator.pixel_accuracy()

    def per_class(self) -> list[dict]:
        acc = self.accumulator
        iou = acc.iou()
        return [
            {"class": i, "name": name, "iou": None if np.isnan(iou[i]) else float(iou[i]),
             "tp": float(acc.tp[i]), "fp": float(acc.fp[i]), "fn": float(acc.fn[i])}
            for i, name in enumerate(self.benchmark.class_names)
        ]


def _process_local(x) -> np.ndarray:
    """This process's rows of a batch-sharded array, in order."""
    if jax.process_count() == 1:
        return np.asarray(x)
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return np.concatenate([np.asarray(s.data) for s in shards])


class Evaluator:
    """Benchmark evaluation of one model and segmentation setting, data-parallel over a mesh."""

    def __init__(self, extractor: DiffusionFeatureExtractor, benchmark: Benchmark,
                 options: SegmenterOptions, *, mask_size: int = 128, mesh: Mesh | None = None,
                 feature_batch: int | None = 1):
        self.extractor, self.benchmark, self.options = extractor, benchmark, options
        self.mask_size = (int(mask_size), int(mask_size))
        self.mesh = data_mesh() if mesh is None else mesh
        size = (options.image_size, options.image_size)
        h, w, _ = extractor.feature_shape_for(size)
        self.columns = h * w + 1  # segment ids < h*w, plus the merged background id
        self.rows = histogram_rows(benchmark.num_classes, benchmark.background)
        self._replicated = NamedSharding(self.mesh, P())
        self._batch = NamedSharding(self.mesh, P(DATA_AXIS))
        self._params = jax.device_put(extractor.params, self._replicated)
        self._noise = jax.device_put(extractor.noise_for(size), self._replicated)
        self._build_steps(feature_batch)

    def _build_steps(self, feature_batch):
        """The jitted, `shard_map`ped device steps (`_predict`, and `_refine` where needed)."""
        self._predict, self._refine = device_steps(
            FeatureModel.of(self.extractor), self.benchmark, self.options, mesh=self.mesh,
            mask_size=self.mask_size, rows=self.rows, columns=self.columns,
            feature_batch=feature_batch)

    @property
    def num_devices(self) -> int:
        return self.mesh.devices.size

    def local_batch_multiple(self) -> int:
        """Per-process batch sizes must be multiples of this (the local device count)."""
        return self.num_devices // jax.process_count()

    def _to_device(self, batch: dict) -> dict:
        n = len(batch["valid"])
        if n % self.local_batch_multiple():
            raise ValueError(f"batch of {n} does not split over {self.local_batch_multiple()} "
                             "local devices; use a multiple of the local device count")
        put = lambda x: jax.make_array_from_process_local_data(self._batch, np.asarray(x))  # noqa: E731
        return {"image": put(batch["image"]), "label": put(batch["label"]),
                "valid": np.asarray(batch["valid"]), "image_id": list(batch["image_id"])}

    def _dispatch(self, dev: dict):
        tau = jnp.float32(self.options.tau)
        alpha = jnp.float32(self.options.alpha)
        return self._predict(self._params, dev["image"], dev["label"], self._noise, tau, alpha)

    def _match(self, dev: dict, out):
        """First host stage of a scored batch: read the predict step's histograms. Without the
        refinement after a background merge that is all, else the merge's matching runs and the
        refine step is dispatched (asynchronous); `_finish` reads it a batch later."""
        masks, hist, num_pred = out
        hist, num_pred = _process_local(hist), _process_local(num_pred)
        if self._refine is None:
            return dev, num_pred, (hist, None)
        valid = dev["valid"]
        mapping = np.zeros((len(valid), self.columns), np.int32)
        for i in range(len(valid)):
            if valid[i]:
                m = background_merge(hist[i][1:], int(num_pred[i]))[: self.columns]
                mapping[i, : m.size] = m
        mapping = jax.make_array_from_process_local_data(self._batch, mapping)
        return dev, num_pred, (None, self._refine(dev["image"], masks, mapping, dev["label"]))

    def _finish(self, matched, acc: MIoUAccumulator, on_image) -> None:
        """Second host stage: the scores of every real image of the batch."""
        dev, num_pred, (hist, refined) = matched
        valid = dev["valid"]
        n, bg = self.benchmark.num_classes, self.benchmark.background
        if refined is None:
            scores = [image_scores(hist[i], int(num_pred[i]), n, bg) if valid[i] else None
                      for i in range(len(valid))]
        else:
            hist2, num2 = (_process_local(x) for x in refined)
            scores = [final_scores(hist2[i], int(num2[i]), n) if valid[i] else None
                      for i in range(len(valid))]
        for i, s in enumerate(scores):
            if s is not None:
                acc.add(*s)
                tp, _, _, valid_pixels = s
                on_image({"image_id": dev["image_id"][i], "segments": int(num_pred[i]),
                          "valid_pixels": valid_pixels, "correct_pixels": int(tp.sum())})

    def local_state(self, result: EvalResult) -> dict:
        """This process's progress as JSON-able data (its counts are summed over processes only
        at the end): what a checkpoint holds for it (resume.py)."""
        acc = result.accumulator
        return {"tp": acc.tp.tolist(), "fp": acc.fp.tolist(), "fn": acc.fn.tolist(),
                "valid_pixels": int(acc.valid_pixels), "images": int(acc.images),
                "per_image": list(result.per_image)}

    def restore_state(self, result: EvalResult, state: dict) -> None:
        """Inverse of `local_state`: continue from a checkpoint's counts and records."""
        acc = result.accumulator
        acc.tp, acc.fp, acc.fn = (np.asarray(state[k], np.float64) for k in ("tp", "fp", "fn"))
        acc.valid_pixels, acc.images = int(state["valid_pixels"]), int(state["images"])
        result.per_image[:] = state["per_image"]

    def evaluate(self, batches: Iterable[dict], *, on_image: Callable[[str, MIoUAccumulator], None] | None = None,
                 prefetch: int = 2, overlap: bool = True, resume: tuple[int, dict] | None = None,
                 after_batch: Callable[[int, EvalResult], None] | None = None) -> EvalResult:
        """Run every batch; `on_image(image_id, accumulator)` after each real image is scored.

        While the device computes batch i, the host scores batch i - 1 (with refinement after a
        background merge: matches batch i - 1 and scores batch i - 2, whose refine step ran
        behind) and the next `prefetch` batches are already transferred. `overlap=False` runs the steps one after another (the
        baseline of benchmarks/eval_throughput.py).

        Preemption (resume.py): `resume` is (batches done, this process's `local_state` then),
        and `batches` must start after them; `after_batch(batches_done, result)` runs once each
        batch is scored, in order (checkpoints; it may raise to stop).
        """
        acc = MIoUAccumulator(self.benchmark.num_classes)
        result = EvalResult(self.benchmark, acc)
        done = 0
        if resume is not None:
            done = int(resume[0])
            self.restore_state(result, resume[1])
        prefetch = max(1, prefetch) if overlap else 1

        def scored(record):
            result.per_image.append(record)
            if on_image is not None:
                on_image(record["image_id"], acc)

        def finish(matched):
            nonlocal done
            self._finish(matched, acc, scored)
            done += 1
            if after_batch is not None:
                after_batch(done, result)

        start = time.perf_counter()
        source = iter(batches)
        queue: collections.deque = collections.deque()

        def fill():
            while len(queue) < prefetch:
                t = time.perf_counter()
                batch = next(source, None)
                result.input_wait_seconds += time.perf_counter() - t
                if batch is None:
                    return
                queue.append(self._to_device(batch))

        # A software pipeline: results are read only once the next device step is queued, so the
        # device always has work while the host matches and scores. The predict step of batch i
        # is dispatched, then batch i - 1's predict results are read (and, with refinement after
        # a background merge, its refine step dispatched), then batch i - 2's refine results are
        # read (a batch later than they were dispatched).
        predicted = matched = None
        fill()
        while queue:
            dev = queue.popleft()
            out = self._dispatch(dev)  # asynchronous
            if not overlap:
                finish(self._match(dev, out))
                fill()
                continue
            fill()  # transfer ahead while the device works
            if predicted is not None:
                newly = self._match(*predicted)
                if self._refine is None:
                    finish(newly)
                else:
                    if matched is not None:
                        finish(matched)
                    matched = newly
            predicted = (dev, out)
        if predicted is not None:
            newly = self._match(*predicted)
            if matched is not None:
                finish(matched)
            matched = newly
        if matched is not None:
            finish(matched)
        acc.merge_processes()
        result.seconds = time.perf_counter() - start
        return result


def batches_from_tf(dataset) -> Iterator[dict]:
    """NumPy batches from the tf.data pipeline (image ids as str)."""
    from diffcut_jax.data.pipeline import as_numpy
    for batch in dataset:
        yield as_numpy(batch)
