"""The segmenter: images in, segment labels out, one jitted function per (batch, size).

    seg = DiffCut.from_pretrained("segmind/SSD-1B", tau=0.5, alpha=10, refinement=True)
    labels = seg(images)                     # (B, H, W, 3) in [0, 1] -> (B, H, W) int32
    results = seg.segment_files(paths)       # decode, run, per-file results

The batch path (resize to the working size, features, NCut or AutoSC, concept assignment at the
working size, optional PAMR refinement, relabelling, nearest resize to the output size) is one
jitted function of `(params, images, noise, tau, alpha)`: tau and alpha are traced, so changing
them does not recompile.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diffcut_jax.autosc import autosc
from diffcut_jax.batching import sequential_vmap
from diffcut_jax.concepts import assign_concepts
from diffcut_jax.extractor import DiffusionFeatureExtractor, extract, load_extractor
from diffcut_jax.image_ops import nearest_exact_indices, resize_bilinear
from diffcut_jax.imageio import ImageReadError, read_rgb
from diffcut_jax.labels import consecutive
from diffcut_jax.ncut import recursive_ncut
from diffcut_jax.pamr import refine


@dataclass(frozen=True)
class SegmenterOptions:
    tau: float = 0.5
    alpha: float = 10.0
    method: str = "ncut"  # "ncut" or "autosc"
    refinement: bool = False
    pamr_num_iter: int = 10
    pamr_dilations: tuple[int, ...] = (1, 2, 4, 8)
    image_size: int = 1024  # working size: the long side (or the square side)
    square: bool = False  # the paper resized every image to image_size x image_size
    autosc_use_chosen_alpha: bool = False

    def __post_init__(self):
        if self.method not in ("ncut", "autosc"):
            raise ValueError(f"method must be 'ncut' or 'autosc', got {self.method!r}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {self.image_size}")
        if self.pamr_num_iter < 0 or not self.pamr_dilations:
            raise ValueError("pamr_num_iter must be >= 0 and pamr_dilations non-empty")


def working_size(height: int, width: int, image_size: int, square: bool) -> tuple[int, int]:
    """Long side -> image_size, aspect kept, both sides rounded to multiples of 32 (at least 32)."""
    if square:
        return image_size, image_size
    scale = image_size / max(height, width)
    def r(x):
        return max(32, int(round(x * scale / 32)) * 32)
    return (image_size, r(width)) if height >= width else (r(height), image_size)


def coarse_segments(feats, tau, alpha, options: SegmenterOptions):
    """(B, h, w, C) features -> (B, h, w) labels by recursive NCut (tau, alpha traced) or AutoSC."""
    if options.method == "ncut":
        return recursive_ncut(feats, tau, alpha)
    return autosc(feats, use_chosen_alpha=options.autosc_use_chosen_alpha)


def refine_masks(image, masks, *, options: SegmenterOptions, capacity: int):
    """PAMR + argmax + median (`pamr.refine`) of one image's masks, values in [0, capacity).

    PAMR needs a static channel count, but the label count is known only at run time: the labels
    are made consecutive (the output, indices into the sorted distinct labels, is unchanged) and
    the smallest channel bucket that holds them is used.
    """
    masks = consecutive(masks, capacity)
    capacities = tuple(sorted({c for c in (8, 32, 128) if c < capacity} | {capacity}))
    which = jnp.minimum(jnp.sum(jnp.asarray(capacities) < jnp.max(masks) + 1), len(capacities) - 1)
    branches = [
        functools.partial(refine, num_iter=options.pamr_num_iter,
                          dilations=tuple(options.pamr_dilations), num_labels=c)
        for c in capacities
    ]
    return sequential_vmap(lambda w, im, m: jax.lax.switch(w, branches, im, m))(which, image, masks)


def segment_batch(params, images, noise, tau, alpha, *, unet_graph, vae_graph, timestep, schedule,
                  size, out_size, options: SegmenterOptions):
    """The pure batch path: (params, images (B, H, W, 3), noise, tau, alpha) -> labels (B, *out_size)."""
    images = images.astype(jnp.float32)
    if images.shape[1:3] != size:
        images = jax.vmap(lambda im: resize_bilinear(im, size))(images)
    feats = extract(params, images, noise, unet_graph=unet_graph, vae_graph=vae_graph,
                    size=size, timestep=timestep, schedule=schedule)
    masks = assign_concepts(feats, coarse_segments(feats, tau, alpha, options), size)
    n_nodes = feats.shape[1] * feats.shape[2]
    if options.refinement:
        masks = jax.vmap(functools.partial(refine_masks, options=options, capacity=n_nodes))(images, masks)
    masks = jax.vmap(functools.partial(consecutive, capacity=n_nodes))(masks)
    if out_size != size:
        rows = jnp.asarray(nearest_exact_indices(size[0], out_size[0]))
        cols = jnp.asarray(nearest_exact_indices(size[1], out_size[1]))
        masks = masks[:, rows][:, :, cols]
    return masks


@dataclass
class FileResult:
    path: Path
    labels: np.ndarray | None = None
    image: np.ndarray | None = None
    num_segments: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class DiffCut:
    """Zero-shot segmentation: diffusion features + recursive NCut (or AutoSC) + assignment."""

    def __init__(self, extractor: DiffusionFeatureExtractor, options: SegmenterOptions = SegmenterOptions()):
        self.extractor = extractor
        self.options = options
        self._compiled = {}

    @classmethod
    def from_pretrained(cls, model="segmind/SSD-1B", *, tau=0.5, alpha=10.0, refinement=False,
                        method="ncut", pamr_num_iter=10, pamr_dilations=(1, 2, 4, 8), image_size=1024,
                        square=False, dtype=None, timestep=50, seed=0, autosc_use_chosen_alpha=False,
                        prompt=None):
        options = SegmenterOptions(
            tau=tau, alpha=alpha, method=method, refinement=refinement, pamr_num_iter=pamr_num_iter,
            pamr_dilations=tuple(pamr_dilations), image_size=image_size, square=square,
            autosc_use_chosen_alpha=autosc_use_chosen_alpha,
        )
        extractor = load_extractor(model, dtype=dtype, timestep=timestep, image_size=image_size,
                                   seed=seed, prompt=prompt)
        return cls(extractor, options)

    def with_options(self, **changes) -> "DiffCut":
        """The same model with other options (shares the loaded weights)."""
        return DiffCut(self.extractor, dataclasses.replace(self.options, **changes))

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return working_size(height, width, self.options.image_size, self.options.square)

    def compiled(self, size, out_size):
        """The jitted batch function for a working size and an output size."""
        key = (size, out_size)
        if key not in self._compiled:
            ex = self.extractor
            fn = functools.partial(
                segment_batch, unet_graph=ex.unet_graph, vae_graph=ex.vae_graph, timestep=ex.timestep,
                schedule=ex.schedule,
                size=size, out_size=out_size, options=self.options,
            )
            self._compiled[key] = jax.jit(fn)
        return self._compiled[key]

    def __call__(self, images, output_size: Sequence[int] | None = None) -> jnp.ndarray:
        """images (B, H, W, 3) (or (H, W, 3)) in [0, 1] -> int32 labels at the input size
        (or `output_size`), consecutive from 0 per image."""
        images = jnp.asarray(images)
        single = images.ndim == 3
        if single:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (B, H, W, 3) or (H, W, 3) in [0, 1], got {images.shape}")
        h, w = images.shape[1:3]
        size = self.working_size(h, w)
        out = tuple(int(s) for s in output_size) if output_size is not None else (h, w)
        fn = self.compiled(size, out)
        labels = fn(self.extractor.params, images, self.extractor.noise_for(size),
                    jnp.float32(self.options.tau), jnp.float32(self.options.alpha))
        return labels[0] if single else labels

    def segment_files(self, paths: Iterable[str | Path], *, batch_size: int = 1,
                      keep_images: bool = False) -> list[FileResult]:
        """Decode and segment files; unreadable ones come back with `error` set (never raised).

        Consecutive files of identical size are batched together, up to `batch_size`.
        """
        results: list[FileResult] = []
        pending: list[tuple[FileResult, np.ndarray]] = []

        def flush():
            if not pending:
                return
            t = time.perf_counter()
            labels = np.asarray(self(np.stack([im for _, im in pending])))
            dt = (time.perf_counter() - t) / len(pending)
            for (res, im), lab in zip(pending, labels):
                res.labels, res.seconds = lab, dt
                res.num_segments = int(lab.max()) + 1
                res.image = im if keep_images else None
            pending.clear()

        for p in paths:
            res = FileResult(Path(p))
            results.append(res)
            try:
                image = read_rgb(p)
            except ImageReadError as e:
                res.error = str(e)
                continue
            if pending and (pending[0][1].shape != image.shape or len(pending) >= batch_size):
                flush()
            pending.append((res, image))
        flush()
        return results
