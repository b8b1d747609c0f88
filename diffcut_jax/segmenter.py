"""The segmenter: images in, segment labels out, one jitted program per (batch, working size,
options), whatever the input sizes.

    seg = DiffCut.from_pretrained("segmind/SSD-1B", tau=0.5, alpha=10, refinement=True)
    labels = seg(images)                     # (B, H, W, 3) in [0, 1] -> (B, H, W) int32
    for r in seg.segment_files(paths, batch_size=4):   # lazily, in input order
        r.labels, r.error

The batch path: a small program resizes the images to the working size
(`image_ops.resize_images`); the heavy one (`segmentation.segment_images`: features, NCut or
AutoSC, concept assignment at the working size, optional PAMR refinement, relabelling) is one
jitted function of `(params, images, noise, tau, alpha)` cached by the working size and the
static options (`segmentation.segment_fn`); a small program nearest-resizes the labels to the
output size. tau and alpha are traced, so `with_options(tau=...)` and a changed alpha do not
recompile.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diffcut_jax.features.extractor import DiffusionFeatureExtractor, load_extractor
from diffcut_jax.io.image_ops import resize_images, resize_labels_nearest, working_size
from diffcut_jax.io.imageio import DEFAULT_MAX_PIXELS
from diffcut_jax.io.paths import as_path
from diffcut_jax.segmentation import (
    FeatureModel,
    SegmenterOptions,
    segment_fn,
    segment_images,
)
from diffcut_jax.streaming.batcher import Batcher
from diffcut_jax.streaming.inputs import default_read_threads, iter_path_items
from diffcut_jax.streaming.ordered import OrderedStream


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
        self.model = FeatureModel.of(extractor)

    @classmethod
    def from_pretrained(cls, model="segmind/SSD-1B", *, dtype=None, timestep=50, seed=0, prompt=None,
                        **options):
        """Load `model` (hub id, local diffusers directory, or a directory written by `save`);
        `options` are `SegmenterOptions` fields (tau, alpha, method, refinement, pamr_num_iter, ...)."""
        options = SegmenterOptions(**options)
        extractor = load_extractor(model, dtype=dtype, timestep=timestep,
                                   image_size=options.image_size, seed=seed, prompt=prompt)
        return cls(extractor, options)

    def save(self, directory) -> "Path":
        """Save the converted parameters (features/saved.py): `from_pretrained(directory)` then loads them
        without conversion. The options are not saved; pass them to `from_pretrained`."""
        from diffcut_jax.features.saved import save_extractor
        return save_extractor(self.extractor, directory)

    def with_options(self, **changes) -> "DiffCut":
        """The same model with other options (shares the weights and, for tau/alpha, the program)."""
        return DiffCut(self.extractor, dataclasses.replace(self.options, **changes))

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return working_size(height, width, self.options.image_size, self.options.square)

    @property
    def params(self):
        """The weights and the prompt conditioning: a plain pytree of arrays (`function`'s first
        argument; shard or replicate it as any pytree)."""
        return self.extractor.params

    def function(self, *, traced_options: bool = False, feature_batch: int | None = None):
        """The segmenter as a pure function for your own transformations (`jax.jit`, `jax.vmap`,
        `NamedSharding` over the batch, `shard_map`):

            f = seg.function()
            labels = f(seg.params, images)           # (B, H, W, 3) in [0, 1] -> (B, H, W) int32
            f = seg.function(traced_options=True)
            labels = f(seg.params, images, tau, alpha)   # tau, alpha: traced float32 scalars

        Every static choice (model graphs, options, working size from the input shape, the noise
        draw) is bound here; the result equals `seg(images)`. Traced once per input shape by the
        caller's `jit`.

        `feature_batch=1` (or k): the UNet runs on fixed chunks of k images (`lax.map`), so its
        round-off, and with it the labels, no longer depend on how the batch is split over
        devices: sharded over 8 devices equals 1 device, bit for bit. None (as `seg(images)`):
        the whole batch (or each device's share) at once."""
        model, options = self.model, self.options.static

        def segment(params, images, tau=None, alpha=None):
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"images must be (B, H, W, 3) in [0, 1], got {images.shape}")
            h, w = images.shape[1:3]
            size = self.working_size(h, w)
            with jax.ensure_compile_time_eval():  # a constant of the program, not a traced value
                noise = self.extractor.noise_for(size)
            tau = jnp.float32(self.options.tau) if tau is None else tau
            alpha = jnp.float32(self.options.alpha) if alpha is None else alpha
            return segment_images(params, images, noise, tau, alpha, model=model, options=options,
                                  size=size, out_size=(h, w), feature_batch=feature_batch)

        if traced_options:
            return segment
        return lambda params, images: segment(params, images)

    def compiled(self, size, out_size):
        """The jitted batch function for a working size and an output size (cached by the static
        options, shared between segmenters of the same model)."""
        return segment_fn(self.model, self.options.static, tuple(size), tuple(out_size))

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
        # The heavy program (features, NCut, assignment, PAMR) is keyed by the batch and the
        # working size only; resizing in and out are small programs of their own, so inputs of
        # many sizes that share a working size compile it once.
        fn = self.compiled(size, size)
        labels = fn(self.extractor.params, resize_images(images, size),
                    self.extractor.noise_for(size), jnp.float32(self.options.tau),
                    jnp.float32(self.options.alpha))
        labels = resize_labels_nearest(labels, out)
        return labels[0] if single else labels

    def segment_files(self, paths: Iterable[str | Path], *, batch_size: int = 1, devices=None,
                      read_threads: int | None = None, read_ahead: int | None = None,
                      window: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                      keep_images: bool = False) -> Iterator[FileResult]:
        """Decode and segment files, lazily: a generator of one `FileResult` per path, in input
        order; unreadable files come back with `error` set (never raised).

        The engine of `label_dataset` and the `segment` command (`streaming/`): `paths` (any
        iterable, read a chunk at a time) are decoded ahead by `read_threads` Grain threads
        (default min(16, CPUs); 0: in this loop), grouped by working size and batched,
        `batch_size` per device, over `devices` (default every local device), at most `window`
        files held between reading and their result (default 8 batches; a group is dispatched
        part-full when its oldest file reaches the window's edge). Memory stays flat over any
        number of files; the labels equal `seg(image)`'s (one process configuration).
        """
        batcher = Batcher(self, batch_size, devices)
        threads = default_read_threads() if read_threads is None else int(read_threads)
        if threads < 0:
            raise ValueError(f"read_threads must be 0 or more, got {read_threads}")
        buffer = read_ahead or max(2 * batcher.size, threads, 1)
        items = iter_path_items(paths, max_pixels=max_pixels, threads=threads, buffer=buffer)
        for done in OrderedStream(batcher, items, window=window):
            item = done.item
            if done.labels is None:
                yield FileResult(as_path(item.key), error=done.error, seconds=item.seconds)
                continue
            yield FileResult(as_path(item.key), labels=done.labels,
                             image=done.image if keep_images else None,
                             num_segments=int(done.labels.max()) + 1, seconds=done.seconds)

