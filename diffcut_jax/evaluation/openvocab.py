"""Open-vocabulary benchmark evaluation (the original's `eval_diffcut_openvoc.py` mode).

    evaluator = OpenVocabEvaluator(extractor, benchmark, options, labeller, mask_size=1024)
    result = evaluator.evaluate(batches)

Per image, on device: features, NCut, concept assignment at `mask_size`, PAMR (when
`options.refinement`), then every segment named by CLIP (`labelling.label_segments`) and the
(classes x classes) confusion matrix against the ground truth. No matching: the predicted class is
the class. Classes are the vocabulary's, background first; ground truth -1 (background and void,
as the original's annotations have them) is class 0 and class c is c + 1: the original's label
offsets (docs/protocol.md, "Open vocabulary").

Scores: the dataset-level mIoU over all classes from the summed confusion matrices (the standard
metric, `result.miou`), and the original's number beside it: the per-image Jaccard index (macro
over the classes present in the prediction or the ground truth of that image), averaged over the
images (`result.per_image_jaccard`).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from diffcut_jax.data.benchmarks import Benchmark
from diffcut_jax.evaluation.evaluator import DATA_AXIS, EvalResult, Evaluator, _process_local
from diffcut_jax.evaluation.matching import MIoUAccumulator, class_segment_histogram
from diffcut_jax.naming.labelling import Labeller
from diffcut_jax.segmentation import FeatureModel, SegmenterOptions, predict_masks


def openvocab_benchmark(benchmark: Benchmark, labeller: Labeller) -> Benchmark:
    """The benchmark with the vocabulary's class order (background first) for the reports."""
    if len(labeller.names) != benchmark.num_classes:
        raise ValueError(f"{benchmark.title} has {benchmark.num_classes} classes (background "
                         f"included) but the vocabulary {labeller.vocabulary.source!r} has "
                         f"{len(labeller.names)}")
    return dataclasses.replace(benchmark, class_names=tuple(labeller.names))


def predict_confusion(params, clip_params, images, labels, noise, tau, alpha, classifier,
                      logit_scale, *, model: FeatureModel, options: SegmenterOptions, mask_size,
                      label_step, num_classes: int, feature_batch: int | None):
    """One device's share -> (b, n, n) confusion matrices, rows = ground truth + 1."""
    size = (options.image_size, options.image_size)
    masks, _ = predict_masks(params, images, noise, tau, alpha, model=model, options=options,
                             size=size, mask_size=mask_size, refine_now=options.refinement,
                             feature_batch=feature_batch)
    class_map, *_ = label_step(clip_params, images, masks, classifier, logit_scale)
    hist, _ = jax.vmap(class_segment_histogram, in_axes=(0, 0, None, None))(
        class_map, labels, num_classes, num_classes)
    return hist


def confusion_step(model: FeatureModel, options: SegmenterOptions, label_step, *, mesh, mask_size,
                   num_classes: int, feature_batch: int | None):
    """The jitted device program, `shard_map`ped over `mesh`: (params, clip_params, images,
    labels, noise, tau, alpha, classifier, logit_scale) -> (b, n, n) confusion matrices."""
    step = functools.partial(
        predict_confusion, model=model, options=options.static, mask_size=tuple(mask_size),
        label_step=label_step, num_classes=num_classes, feature_batch=feature_batch)
    batch = P(DATA_AXIS)
    return jax.jit(jax.shard_map(
        step, mesh=mesh, in_specs=(P(), P(), batch, batch, P(), P(), P(), P(), P()),
        out_specs=batch, check_vma=False))


def image_confusion_scores(hist: np.ndarray):
    """tp, fp, fn per class, valid pixels and the image's Jaccard index (torchmetrics' macro
    JaccardIndex on one image: the mean IoU of the classes in its prediction or ground truth)."""
    hist = np.asarray(hist, np.int64)
    tp = np.diag(hist).astype(np.float64)
    fp = hist.sum(axis=0) - tp
    fn = hist.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    jaccard = float(np.mean(tp[present] / (tp + fp + fn)[present])) if present.any() else float("nan")
    return tp, fp, fn, int(hist.sum()), jaccard


@dataclass
class OpenVocabResult(EvalResult):
    jaccard_sum: float = 0.0
    jaccard_images: int = 0

    @property
    def per_image_jaccard(self) -> float:
        """The original's score: per-image Jaccard averaged over the images."""
        return self.jaccard_sum / max(self.jaccard_images, 1)


class OpenVocabEvaluator(Evaluator):
    """Segments, names the segments with CLIP, scores classes directly (no matching)."""

    def __init__(self, extractor, benchmark: Benchmark, options: SegmenterOptions,
                 labeller: Labeller, *, mask_size: int = 1024, mesh=None,
                 feature_batch: int | None = 1):
        self.labeller = labeller
        benchmark = openvocab_benchmark(benchmark, labeller)
        super().__init__(extractor, benchmark, options, mask_size=mask_size, mesh=mesh,
                         feature_batch=feature_batch)
        self._clip_params = jax.device_put(labeller.clip.params, self._replicated)
        self._classifier = jax.device_put(labeller.classifier, self._replicated)
        self._logit_scale = jax.device_put(labeller.clip.logit_scale, self._replicated)

    def _build_steps(self, feature_batch):
        size = (self.options.image_size, self.options.image_size)
        h, w, _ = self.extractor.feature_shape_for(size)
        label_step = self.labeller.step(h * w, self.labeller.working_size(*size))
        self._predict = confusion_step(
            FeatureModel.of(self.extractor), self.options, label_step, mesh=self.mesh,
            mask_size=self.mask_size, num_classes=self.benchmark.num_classes,
            feature_batch=feature_batch)
        self._refine = None

    def _dispatch(self, dev: dict):
        tau = np.float32(self.options.tau)
        alpha = np.float32(self.options.alpha)
        return self._predict(self._params, self._clip_params, dev["image"], dev["label"],
                             self._noise, tau, alpha, self._classifier, self._logit_scale)

    def _match(self, dev: dict, out):
        return dev, _process_local(out)  # no matching: classes are named

    def _finish(self, matched, acc: MIoUAccumulator, on_image) -> None:
        dev, hist = matched
        for i, valid in enumerate(dev["valid"]):
            if not valid:
                continue
            tp, fp, fn, pixels, jaccard = image_confusion_scores(hist[i])
            acc.add(tp, fp, fn, pixels)
            self._jaccard[0] += 0.0 if np.isnan(jaccard) else jaccard
            self._jaccard[1] += 1
            on_image({"image_id": dev["image_id"][i], "valid_pixels": pixels,
                      "correct_pixels": int(tp.sum()), "jaccard": jaccard,
                      "classes_predicted": int((hist[i].sum(axis=0) > 0).sum())})

    def local_state(self, result) -> dict:
        return {**super().local_state(result), "jaccard": list(self._jaccard)}

    def restore_state(self, result, state: dict) -> None:
        super().restore_state(result, state)
        self._jaccard = [float(state["jaccard"][0]), int(state["jaccard"][1])]

    def evaluate(self, batches, *, on_image=None, prefetch: int = 2, overlap: bool = True,
                 resume=None, after_batch=None):
        self._jaccard = [0.0, 0]
        base = super().evaluate(batches, on_image=on_image, prefetch=prefetch, overlap=overlap,
                                resume=resume, after_batch=after_batch)
        total, count = self._jaccard
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            gathered = np.asarray(multihost_utils.process_allgather(
                np.asarray([total, count], np.float32)))
            total, count = float(gathered[:, 0].sum()), int(gathered[:, 1].sum())
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(EvalResult)}
        return OpenVocabResult(**fields, jaccard_sum=total, jaccard_images=count)

