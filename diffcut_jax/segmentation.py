"""The pure segmentation pipeline shared by the segmenter (`DiffCut`) and the `Evaluator`.

    masks = predict_masks(params, images, noise, tau, alpha, model=..., options=..., size=...,
                          mask_size=...)

images (B, S_h, S_w, 3) in [0, 1] at the working size -> features -> NCut (or AutoSC) ->
concept assignment at `mask_size` -> optional PAMR refinement. `tau` and `alpha` are traced;
everything else is static and lives in two frozen, hashable descriptions: `FeatureModel` (the
diffusion model's graphs, timestep and noise schedule) and `SegmenterOptions` minus tau/alpha
(`options.static`). Jitted programs are cached by those (`segment_fn`), so `with_options(tau=...)`
and a changed alpha reuse the compiled program.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from diffcut_jax.cut.autosc import autosc
from diffcut_jax.cut.kway import DEFAULT_THRESHOLD, SUBSPACE_ITERS, kway_ncut
from diffcut_jax.cut.labels import consecutive
from diffcut_jax.cut.ncut import recursive_ncut
from diffcut_jax.features.extractor import extract
from diffcut_jax.io.image_ops import nearest_exact_indices, resize_bilinear
from diffcut_jax.masks.concepts import assign_concepts
from diffcut_jax.masks.pamr import refine
from diffcut_jax.options import option

METHODS = ("ncut", "autosc", "kway")
KWAY_STARTS = ("spectral", "ncut")


@dataclass(frozen=True)
class SegmenterOptions:
    """Every segmentation option, declared once: the command flags (`launch/common.py`) and the
    configs' `config.segmentation` (`configs/common.py`) are built from these fields."""

    tau: float = option(0.5, "NCut threshold: a split is kept if its NCut < tau (traced).")
    alpha: float = option(10.0, "Affinity exponent (traced).")
    method: str = option("ncut", "The cut: recursive NCut, AutoSC (no tau), or the K-way NCut "
                                 "(docs/algorithm.md §8).", choices=METHODS)
    refinement: bool = option(False, "PAMR refinement + 3x3 median.")
    pamr_num_iter: int = option(10, "PAMR iterations.")
    pamr_dilations: tuple[int, ...] = option((1, 2, 4, 8), "PAMR dilations.")
    image_size: int = option(1024, "Working size: the long side (a multiple of 32); with "
                                     "`square`, both sides.")
    square: bool = option(False, "Resize to image_size x image_size, as the paper did.")
    autosc_use_chosen_alpha: bool = option(
        False, "AutoSC: cluster with the chosen alpha's eigenvectors (False reproduces the "
               "original's bug, docs/algorithm.md §5).")
    kway_start: str = option("spectral", "K-way: start from the spectrum (K = eigenvalues above "
                                         "kway_threshold; no tau), or polish the recursive NCut's "
                                         "partition (K = its segments; tau applies).",
                             choices=KWAY_STARTS)
    kway_threshold: float = option(DEFAULT_THRESHOLD, "K-way spectral start: K = eigenvalues of "
                                   "D^-1/2 W D^-1/2 above this.")
    kway_min_segments: int = option(2, "K-way spectral start: the least K.")
    kway_max_segments: int = option(32, "K-way: the largest K (the solver's static width; a "
                                        "polished partition with more is kept as it is).")
    kway_max_iter: int = option(100, "K-way: solver iterations (one trial step each).")
    kway_subspace_iters: int = option(SUBSPACE_ITERS, "K-way spectral start: the most subspace "
                                      "steps for the leading eigenpairs (an image stops once they "
                                      "converge; more for nearly uniform features).")
    formulation: str = option("auto", "NCut formulation (docs/algorithm.md §2.3): stack on CPU, "
                                        "level on GPU/TPU by default.",
                               choices=("auto", "stack", "level"))

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {self.image_size}")
        if self.pamr_num_iter < 0 or not self.pamr_dilations:
            raise ValueError("pamr_num_iter must be >= 0 and pamr_dilations non-empty")
        if self.kway_start not in KWAY_STARTS:
            raise ValueError(f"kway_start must be one of {KWAY_STARTS}, got {self.kway_start!r}")
        if not 1 <= self.kway_min_segments <= self.kway_max_segments or self.kway_max_iter < 1:
            raise ValueError("need 1 <= kway_min_segments <= kway_max_segments and "
                             f"kway_max_iter >= 1, got {self.kway_min_segments}, "
                             f"{self.kway_max_segments}, {self.kway_max_iter}")
        if self.kway_subspace_iters < 1:
            raise ValueError(f"kway_subspace_iters must be >= 1, got {self.kway_subspace_iters}")
        object.__setattr__(self, "pamr_dilations", tuple(int(d) for d in self.pamr_dilations))

    @property
    def static(self) -> "SegmenterOptions":
        """The options that shape the program (tau and alpha, which are traced, left at defaults)."""
        return dataclasses.replace(self, tau=SegmenterOptions.tau, alpha=SegmenterOptions.alpha)


@dataclass(frozen=True)
class FeatureModel:
    """What the jitted feature forward needs besides the weights: static and hashable."""

    unet_graph: Any
    vae_graph: Any
    timestep: int
    schedule: tuple[float, float]

    @classmethod
    def of(cls, extractor) -> "FeatureModel":
        return cls(extractor.unet_graph, extractor.vae_graph, extractor.timestep,
                   tuple(float(s) for s in extractor.schedule))

    def features(self, params, images, noise, size):
        return extract(params, images, noise, unet_graph=self.unet_graph, vae_graph=self.vae_graph,
                       size=size, timestep=self.timestep, schedule=self.schedule)


def coarse_segments(feats, tau, alpha, options: SegmenterOptions):
    """(B, h, w, C) features -> (B, h, w) labels by recursive NCut (tau, alpha traced), AutoSC,
    or the K-way NCut (alpha traced; tau only when it polishes the recursive partition)."""
    if options.method == "ncut":
        return recursive_ncut(feats, tau, alpha, formulation=options.formulation)
    if options.method == "kway":
        init = (recursive_ncut(feats, tau, alpha, formulation=options.formulation)
                if options.kway_start == "ncut" else None)
        return kway_ncut(feats, alpha, init=init, threshold=options.kway_threshold,
                         min_segments=options.kway_min_segments,
                         max_segments=options.kway_max_segments, max_iter=options.kway_max_iter,
                         subspace_iters=options.kway_subspace_iters)
    return autosc(feats, use_chosen_alpha=options.autosc_use_chosen_alpha)


def refine_masks(images, masks, *, options: SegmenterOptions, num_labels: int):
    """PAMR + argmax + median (`pamr.refine`) of a batch of masks with values in [0, num_labels).

    The label channels are propagated a block at a time for the batch's actual label count, so
    neither memory nor time depends on the capacity `num_labels`.
    """
    return refine(images, masks, options.pamr_num_iter, options.pamr_dilations,
                  num_labels=num_labels)


def predict_masks(params, images, noise, tau, alpha, *, model: FeatureModel,
                  options: SegmenterOptions, size, mask_size, refine_now: bool,
                  feature_batch: int | None = None):
    """(B, *size, 3) images at the working size -> (B, *mask_size) int32 masks with values below
    the number of feature nodes (also returned, static).

    `feature_batch`: compute features in fixed chunks of this many images (None: the whole batch
    at once). Round-off in the UNet depends on the batch it runs in; fixed chunks make the results
    independent of the batch size and the device count. A chunk never exceeds the batch: padding
    a batch of 1 to a chunk of 8 would run the VAE and the UNet on 7 blank images.
    """
    forward = functools.partial(model.features, params, noise=noise, size=size)
    if feature_batch is None:
        feats = forward(images)
    else:
        b = images.shape[0]
        chunk = min(int(feature_batch), b)
        chunks = -(-b // chunk)
        padded = jnp.concatenate(
            [images, jnp.zeros((chunks * chunk - b,) + images.shape[1:], images.dtype)])
        feats = jax.lax.map(forward, padded.reshape((chunks, chunk) + images.shape[1:]))
        feats = feats.reshape((chunks * chunk,) + feats.shape[2:])[:b]
    masks = assign_concepts(feats, coarse_segments(feats, tau, alpha, options), mask_size)
    if refine_now:
        h, w = feats.shape[1:3]
        masks = refine_masks(images, masks, options=options, num_labels=h * w)
    return masks, feats.shape[1] * feats.shape[2]


def segment_images(params, images, noise, tau, alpha, *, model: FeatureModel,
                   options: SegmenterOptions, size, out_size, feature_batch: int | None = None):
    """The segmenter's batch path: any-size images -> (B, *out_size) labels, consecutive from 0.
    `feature_batch` as in `predict_masks`."""
    images = images.astype(jnp.float32)
    if images.shape[1:3] != size:
        images = jax.vmap(lambda im: resize_bilinear(im, size))(images)
    masks, n_nodes = predict_masks(params, images, noise, tau, alpha, model=model,
                                   options=options, size=size, mask_size=size,
                                   refine_now=options.refinement, feature_batch=feature_batch)
    masks = jax.vmap(functools.partial(consecutive, num_labels=n_nodes))(masks)
    if out_size != size:
        rows = jnp.asarray(nearest_exact_indices(size[0], out_size[0]))
        cols = jnp.asarray(nearest_exact_indices(size[1], out_size[1]))
        masks = masks[:, rows][:, :, cols]
    return masks


@functools.lru_cache(maxsize=64)
def segment_fn(model: FeatureModel, options: SegmenterOptions, size, out_size):
    """The jitted `segment_images` for one static setting (`options.static`), cached."""
    return jax.jit(functools.partial(segment_images, model=model, options=options.static,
                                     size=tuple(size), out_size=tuple(out_size)))
