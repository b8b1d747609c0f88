"""Open-vocabulary labelling: every segment gets a class of a vocabulary and a score.

    seg = DiffCut.from_pretrained("segmind/SSD-1B")
    labeller = Labeller.from_pretrained(DEFAULT_CLIP, "cat,kitty;dog;grass")   # or "voc20"
    labels = seg(images)                                  # (B, H, W) segments
    named = labeller(images, labels)                      # classes per segment and per pixel

The jitted step (`label_segments`) is pure: (CLIP params, images, masks, text classifier) ->
per-segment class, softmax score and pixel count, and the per-pixel class map. Segments of an
image are a static-capacity batch (`num_segments`); the text classifier is computed once per
vocabulary. The image CLIP sees is resized (bilinear) to its working size, the masks are pooled on
CLIP's dense grid (docs/algorithm.md §7). `Labeller.__call__` runs the same arithmetic in steps
keyed so that inputs of many sizes share the CLIP trunk's program (one per CLIP working size).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffcut_jax.io.cache import cache_root
from diffcut_jax.io.image_ops import resize_images, resize_labels_nearest, working_size
from diffcut_jax.naming.clip_model import (
    ClipModel,
    TextClassifier,
    class_logits,
    dense_features_fn,
    dense_map,
    embed_segments,
    load_clip,
)
from diffcut_jax.naming.vocabulary import Vocabulary, parse_vocabulary
from diffcut_jax.options import option


def text_cache_dir() -> Path:
    """Where `Labeller` keeps text classifiers by default."""
    return cache_root() / "text_classifiers"


@dataclass(frozen=True)
class LabelOptions:
    """Every labelling option, declared once (command flags and configs are built from these)."""

    vocabulary: str = option("", "Name the segments: a preset (voc20, context59, coco_object), "
                                  "a file (one class per line) or 'cat,kitty;dog;grass' (';' "
                                  "between classes, ',' between synonyms). Empty: no labelling.")
    clip_image_size: int = option(0, "Long side of the image CLIP sees (a multiple of 32); 0: the "
                                      "segmenter's working size. The original: 1024 (2048 for "
                                      "COCO-Object).")
    clip_normalize: bool = option(False, "Give CLIP mean/std-normalised pixels (the original "
                                          "gives it [0, 1] pixels).")

    def __post_init__(self):
        if self.clip_image_size < 0 or self.clip_image_size % 32:
            raise ValueError(f"clip_image_size must be 0 or a positive multiple of 32, "
                             f"got {self.clip_image_size}")


@dataclass
class Labelling:
    """Per image b and segment k: class id, score (softmax probability) and pixel count;
    `class_map` (B, H, W) is the class of every pixel (-1 where the segment id is out of range)."""

    names: tuple[str, ...]
    class_map: np.ndarray
    segment_class: np.ndarray
    segment_score: np.ndarray
    segment_pixels: np.ndarray

    def segments(self, b: int = 0) -> list[dict]:
        """Image b's segments that have pixels: segment id, class id and name, score, pixels."""
        out = []
        for k in np.flatnonzero(self.segment_pixels[b] > 0):
            c = int(self.segment_class[b, k])
            out.append({"segment": int(k), "class_id": c, "class": self.names[c],
                        "score": float(self.segment_score[b, k]),
                        "pixels": int(self.segment_pixels[b, k])})
        return out


def label_segments(params, images, masks, classifier: TextClassifier, logit_scale, *, graph,
                   num_segments: int, size, normalize=None):
    """images (B, H, W, 3), masks (B, H', W') int in [0, num_segments) -> (class_map (B, H', W'),
    segment_class, segment_score, segment_pixels (B, num_segments)).

    `size`: CLIP's working size (static); `normalize`: (mean, std) or None (as the original).
    """
    model = nnx.merge(graph, params)
    dense = dense_map(model, images, size=size, normalize=normalize)
    emb = embed_segments(model, dense, masks, num_segments)
    probs = jax.nn.softmax(class_logits(emb, classifier, logit_scale), axis=-1)
    seg_class = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    seg_score = jnp.max(probs, axis=-1)
    flat = masks.reshape(masks.shape[0], -1).astype(jnp.int32)
    inside = (flat >= 0) & (flat < num_segments)
    pixels = jax.vmap(lambda m, ok: jnp.zeros((num_segments,), jnp.int32).at[m].add(
        ok.astype(jnp.int32), mode="drop"))(flat, inside)
    cls = jnp.take_along_axis(seg_class, jnp.clip(flat, 0, num_segments - 1), axis=1)
    class_map = jnp.where(inside, cls, -1).reshape(masks.shape)
    return class_map, seg_class, seg_score, pixels


_label_fn = jax.jit(label_segments, static_argnames=("graph", "num_segments", "size", "normalize"))


def label_step(graph, num_segments: int, size, normalize=None):
    """The jitted pure step `(params, images, masks, classifier, logit_scale) -> ...` of
    `label_segments` for one CLIP graph, capacity, CLIP size and normalisation (cached)."""
    return functools.partial(_label_fn, graph=graph, num_segments=int(num_segments),
                             size=tuple(size), normalize=normalize)


class Labeller:
    """A CLIP model and a vocabulary's text classifier (computed once); callable on images and
    their segment maps."""

    def __init__(self, clip: ClipModel, vocabulary: str | Vocabulary, *, image_size: int = 1024,
                 square: bool = False, normalize_input: bool | None = None,
                 cache: bool | str | Path = True, progress: bool = False):
        """`cache`: keep the vocabulary's text classifier on disk, keyed by the CLIP weights file,
        the synonyms, the templates and the dtypes: True under `cache_root()/text_classifiers`,
        a folder, or False to compute it every time. `progress`: show the encoding's progress
        (when it takes more than two seconds) and say when the cache served it."""
        if image_size < 32 or image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
        self.clip = clip
        self.vocabulary = parse_vocabulary(vocabulary)
        self.image_size, self.square = int(image_size), bool(square)
        self.normalize_input = clip.normalize_input if normalize_input is None else normalize_input
        folder = text_cache_dir() if cache is True else (Path(cache) if cache else None)
        self.classifier = clip.text_classifier(self.vocabulary.entries, cache_dir=folder,
                                               progress=progress)

    @classmethod
    def from_pretrained(cls, clip_model, vocabulary, *, dtype=jnp.float32, image_size: int = 1024,
                        square: bool = False, normalize_input: bool = False,
                        cache: bool | str | Path = True, progress: bool = False) -> "Labeller":
        clip = load_clip(clip_model, dtype=dtype, normalize_input=normalize_input)
        return cls(clip, vocabulary, image_size=image_size, square=square, cache=cache,
                   progress=progress)

    @property
    def names(self) -> tuple[str, ...]:
        return self.vocabulary.names

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        return working_size(height, width, self.image_size, self.square)

    def step(self, num_segments: int, size):
        """The jitted pure step for a capacity and a CLIP size (for composing into programs)."""
        return label_step(self.clip.graph, num_segments, size,
                          self.clip.normalization(self.normalize_input))

    @property
    def params(self):
        """The CLIP weights: a plain pytree (`function`'s first argument)."""
        return self.clip.params

    def function(self, num_segments: int):
        """The labelling step as a pure function for your own transformations:
        `f(labeller.params, images, masks) -> (class_map, segment_class, segment_score,
        segment_pixels)`, masks in [0, num_segments); the vocabulary's classifier, the logit scale
        and CLIP's working size (from the image shape) are bound."""
        def label(params, images, masks):
            step = self.step(num_segments, self.working_size(*images.shape[1:3]))
            return step(params, images, masks, self.classifier, self.clip.logit_scale)

        return label

    def __call__(self, images, masks, *, num_segments: int | None = None) -> Labelling:
        """images (B, H, W, 3) (or (H, W, 3)) in [0, 1]; masks (B, H', W') segment ids from 0.
        `num_segments`: the capacity (default: the next power of two above the largest id)."""
        images, masks = np.asarray(images), np.asarray(masks)
        if images.ndim == 3:
            images, masks = images[None], masks[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (B, H, W, 3) in [0, 1], got {images.shape}")
        if masks.ndim != 3 or masks.shape[0] != images.shape[0]:
            raise ValueError(f"masks must be (B, H, W) with B = {images.shape[0]}, got {masks.shape}")
        if not np.issubdtype(masks.dtype, np.integer):
            raise ValueError(f"masks must hold integer segment ids, got {masks.dtype}")
        if num_segments is None:  # powers of two: few compiled programs over many images
            num_segments = max(8, 1 << int(max(int(masks.max()), 0)).bit_length())
        # Steps keyed so that inputs of many sizes share the heavy program: the CLIP trunk runs
        # once per (batch, CLIP working size); resizing the images in and the masks down to the
        # dense grid are small programs, the heads and the classifier a light one per grid and
        # capacity, and the per-pixel map is a host gather.
        size = self.working_size(*images.shape[1:3])
        dense = dense_features_fn(self.clip.params, resize_images(images, size), graph=self.clip.graph,
                                  normalize=self.clip.normalization(self.normalize_input))
        grid = resize_labels_nearest(jnp.asarray(masks, jnp.int32), dense.shape[1:3])
        seg_class, score = (np.asarray(x) for x in _named_fn(
            self.clip.params, dense, grid, self.classifier, self.clip.logit_scale,
            graph=self.clip.graph, num_segments=int(num_segments)))
        inside = (masks >= 0) & (masks < num_segments)
        safe = np.where(inside, masks, 0)
        class_map = np.where(inside, np.take_along_axis(
            seg_class, safe.reshape(len(masks), -1), axis=1).reshape(masks.shape), -1)
        pixels = np.stack([np.bincount(m[ok], minlength=num_segments)[:num_segments]
                           for m, ok in zip(safe, inside)]).astype(np.int32)
        return Labelling(self.names, class_map.astype(np.int32), seg_class, score, pixels)


@functools.partial(jax.jit, static_argnames=("graph", "num_segments"))
def _named_fn(params, dense, grid_masks, classifier, logit_scale, *, graph, num_segments):
    """Segments pooled on the dense grid (masks already there), heads, classes and scores."""
    emb = embed_segments(nnx.merge(graph, params), dense, grid_masks, num_segments)
    probs = jax.nn.softmax(class_logits(emb, classifier, logit_scale), axis=-1)
    return jnp.argmax(probs, axis=-1).astype(jnp.int32), jnp.max(probs, axis=-1)
