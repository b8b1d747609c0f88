"""Open-vocabulary CLIP (open_clip ConvNeXt): dense features, mask pooling, text classifier.

    clip = load_clip("laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup")  # or a folder
    dense = clip.dense_features(images)              # (B, H, W, 3) as given -> (B, H/32, W/32, C)
    emb = clip.segment_embeddings(dense, masks, num_segments=K)   # masks (B, H, W) in [0, K)
    tc = clip.text_classifier(["cat,cats", "dog"])   # synonyms x the 14 ViLD templates
    tc = clip.text_classifier(names, cache_dir=cache_root() / "text_classifiers")  # kept on disk
    logits = clip.class_logits(emb, tc)              # (B, K, num_classes)

This is the original's `tools/clip_classifier.py` (fc-clip's recipe), docs/algorithm.md §7:
- dense features are the ConvNeXt trunk's output, the image fed as given (the original feeds
  [0, 1] pixels without CLIP's mean/std; `normalize_input=True` applies them);
- a segment's embedding: its mask resized nearest-exact to the dense grid, `> 0`, divided by its
  sum + 1e-8, the dense map pooled with it, then the trunk head (LayerNorm) and the projection head;
- the text classifier: every synonym in every ViLD template, each embedding L2-normalised,
  averaged over the templates and normalised again; the text tower runs over each prompt's
  tokens only (length buckets, `TEXT_BUCKETS`), and a classifier can be kept on disk;
- a class's logit: min(exp(logit_scale), 100) x the largest cosine over its synonyms.

Every function is jitted once per static setting (the model's graph, `num_segments`).
"""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffcut_jax.features import checkpoint as ckpt
from diffcut_jax.features import hub
from diffcut_jax.io.cache import CacheEntry
from diffcut_jax.io.image_ops import nearest_exact_indices, resize_bilinear
from diffcut_jax.models.layers import Numerics
from diffcut_jax.models.open_clip import IGNORE_PATTERNS, OpenCLIP, OpenCLIPConfig, OpenCLIPSource
from diffcut_jax.naming.clip_tokenizer import ClipTokenizer
from diffcut_jax.naming.vocabulary import split_synonyms

HIGHEST = jax.lax.Precision.HIGHEST
DEFAULT_CLIP = "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
VILD_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)
_TEXT_BATCH = 128  # texts per encoder call (padded): one compiled program per length bucket
# The text tower runs over a prompt's tokens only, rounded up to one of these lengths (and the
# model's context): its attention is causal and the embedding is read at the end-of-text token, so
# positions after that token change nothing. The presets' prompts have at most 16 tokens.
TEXT_BUCKETS = (16, 32)
CLASSIFIER_CACHE_FORMAT = 1


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class TextClassifier:
    """One row per synonym: `embeddings` (S, E) unit vectors, `synonym_class` (S,) the class each
    belongs to (classes in order); `names` and `synonyms` are static."""

    embeddings: jnp.ndarray
    synonym_class: jnp.ndarray
    names: tuple[str, ...]
    synonyms: tuple[tuple[str, ...], ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def tree_flatten(self):
        return (self.embeddings, self.synonym_class), (self.names, self.synonyms)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)


def _normalize(x, eps=1e-12):
    """torch's F.normalize: x / max(||x||, eps)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


# ---------------------------------------------------------------- pure, jitted functions


def dense_map(model: OpenCLIP, images, *, size=None, normalize=None, all_stages=False):
    """(B, H, W, 3) -> the trunk's output (B, h, w, C) float32 (or every stage's output).

    Each image is resized bilinearly to `size` (if given) and, with `normalize` = (mean, std),
    standardised (the original does neither). One image at a time (`lax.map`): at 2048 x 2048 a
    ConvNeXt-L stage holds ~1 GB of activations per image, and one image is enough work for an
    accelerator (benchmarks/labelling.py).
    """
    def one(image):
        image = image.astype(jnp.float32)
        if size is not None:
            image = resize_bilinear(image, tuple(size))
        if normalize is not None:
            image = (image - jnp.asarray(normalize[0])) / jnp.asarray(normalize[1])
        outs = tuple(o[0].astype(jnp.float32) for o in model.visual.trunk.stage_outputs(image[None]))
        return outs if all_stages else outs[-1]

    return jax.lax.map(one, images)


@functools.partial(jax.jit, static_argnames=("graph", "normalize", "all_stages"))
def dense_features_fn(params, images, *, graph, normalize=None, all_stages=False):
    return dense_map(nnx.merge(graph, params), images, normalize=normalize, all_stages=all_stages)


def pool_masks(dense, masks, num_segments: int):
    """Mask pooling: (B, h, w, C) dense, (B, H, W) int masks in [0, K) -> (B, K, C).

    Each mask is resized nearest-exact to the dense grid (the same as resizing its one-hot map),
    binarised and divided by its pixel count + 1e-8. Values outside [0, K) pool nowhere; a segment
    with no pixel on the grid pools to zeros.
    """
    h, w = dense.shape[1:3]
    rows = nearest_exact_indices(masks.shape[1], h)
    cols = nearest_exact_indices(masks.shape[2], w)
    small = masks[:, rows][:, :, cols]
    onehot = jax.nn.one_hot(small, num_segments, dtype=jnp.float32)  # (B, h, w, K)
    weights = onehot / (onehot.sum(axis=(1, 2), keepdims=True) + 1e-8)
    return jnp.einsum("bhwc,bhwk->bkc", dense.astype(jnp.float32), weights, precision=HIGHEST)


def embed_segments(model: OpenCLIP, dense, masks, num_segments: int):
    """Mask pooling, then the trunk head and the projection head: (B, K, E) float32."""
    pooled = pool_masks(dense, masks, num_segments)
    return model.visual.embed_pooled(pooled).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("graph", "num_segments"))
def segment_embeddings_fn(params, dense, masks, *, graph, num_segments):
    return embed_segments(nnx.merge(graph, params), dense, masks, num_segments)


@functools.partial(jax.jit, static_argnames=("graph",))
def encode_text_fn(params, ids, *, graph):
    return nnx.merge(graph, params).encode_text(ids).astype(jnp.float32)


def synonym_logits(embeddings, classifier: TextClassifier, logit_scale):
    """(..., E) -> (..., S): min(exp(logit_scale), 100) x cosine with every synonym row."""
    scale = jnp.minimum(jnp.exp(logit_scale.astype(jnp.float32)), 100.0)
    return scale * jnp.einsum("...e,se->...s", _normalize(embeddings.astype(jnp.float32)),
                              classifier.embeddings, precision=HIGHEST)


def class_logits(embeddings, classifier: TextClassifier, logit_scale):
    """(..., E) -> (..., num_classes): the max over each class's synonyms."""
    logits = synonym_logits(embeddings, classifier, logit_scale)
    member = classifier.synonym_class[None, :] == jnp.arange(classifier.num_classes)[:, None]
    return jnp.max(jnp.where(member, logits[..., None, :], -jnp.inf), axis=-1)


class_logits_fn = jax.jit(class_logits)


# ---------------------------------------------------------------- the model object


class ClipModel:
    """A loaded open_clip ConvNeXt CLIP: explicit parameters, jitted pure functions."""

    def __init__(self, graph, params, config: OpenCLIPConfig, *, normalize_input: bool = False,
                 tokenizer: ClipTokenizer | None = None, dtype=jnp.float32,
                 weights_identity: str | None = None, source: str | None = None):
        """`weights_identity`: what names the weights (file, size, modification time), for the
        text classifier cache; None (weights made in memory) caches nothing."""
        self.graph, self.params, self.config = graph, params, config
        self.normalize_input = normalize_input
        self.dtype = jnp.dtype(dtype)
        self.weights_identity = weights_identity
        self.source = source  # the hub id or directory it was loaded from (run fingerprints)
        self.tokenizer = tokenizer or ClipTokenizer(config.text.max_position_embeddings)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def logit_scale(self):
        """The raw parameter (the scale is min(exp(.), 100))."""
        var = self.params["logit_scale"]
        return jnp.asarray(var.get_value() if hasattr(var, "get_value") else var.value)

    def normalization(self, enabled: bool | None = None):
        """(mean, std) when CLIP is to see standardised pixels, else None (the original)."""
        enabled = self.normalize_input if enabled is None else enabled
        return (tuple(self.config.mean), tuple(self.config.std)) if enabled else None

    def _images(self, images):
        images = jnp.asarray(images, jnp.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (B, H, W, 3), got shape {images.shape}")
        return images

    def dense_features(self, images):
        return dense_features_fn(self.params, self._images(images), graph=self.graph,
                                 normalize=self.normalization())

    def stage_features(self, images) -> tuple:
        return dense_features_fn(self.params, self._images(images), graph=self.graph,
                                 normalize=self.normalization(), all_stages=True)

    def segment_embeddings(self, dense, masks, *, num_segments: int):
        dense, masks = jnp.asarray(dense), jnp.asarray(masks)
        if dense.ndim != 4 or masks.ndim != 3 or dense.shape[0] != masks.shape[0]:
            raise ValueError(f"dense must be (B, h, w, C) and masks (B, H, W) with the same B, "
                             f"got {dense.shape} and {masks.shape}")
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        return segment_embeddings_fn(self.params, dense, masks.astype(jnp.int32), graph=self.graph,
                                     num_segments=int(num_segments))

    def tokenize(self, texts) -> np.ndarray:
        return self.tokenizer(texts)

    def encode_text(self, ids):
        ids = np.asarray(ids, np.int32)
        if ids.ndim != 2:
            raise ValueError(f"token ids must be (n, context_length), got {ids.shape}")
        return encode_text_fn(self.params, ids, graph=self.graph)  # numpy in: no staging program

    def text_buckets(self) -> tuple[int, ...]:
        """The token lengths the text tower is compiled for (one program each)."""
        context = self.tokenizer.context_length
        return tuple(sorted({b for b in TEXT_BUCKETS if b < context} | {context}))

    def _encode_texts(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Many texts, sorted by token count into the length buckets, in padded batches of a fixed
        size: one compiled program per bucket whatever the vocabulary."""
        from tqdm.auto import tqdm

        ids = self.tokenize(texts)
        # Tokens up to and including end-of-text (the largest id, where the embedding is read).
        lengths = np.argmax(ids, axis=1) + 1
        out = np.zeros((len(ids), self.embed_dim), np.float32)
        bar = tqdm(total=len(ids), desc="text classifier", unit="prompt", delay=2.0,
                   disable=not progress, leave=False)
        lower = 0
        for bucket in self.text_buckets():
            rows = np.flatnonzero((lengths > lower) & (lengths <= bucket))
            lower = bucket
            for start in range(0, len(rows), _TEXT_BATCH):
                chunk = rows[start : start + _TEXT_BATCH]
                padded = np.zeros((_TEXT_BATCH, bucket), np.int32)
                padded[: len(chunk)] = ids[chunk, :bucket]
                out[chunk] = np.asarray(self.encode_text(padded))[: len(chunk)]
                bar.update(len(chunk))
        bar.close()
        return out

    def classifier_key(self, synonyms, templates) -> dict | None:
        """What determines a text classifier, or None when the weights' identity is unknown."""
        if self.weights_identity is None:
            return None
        leaf = jax.tree_util.tree_leaves(self.params)[0]
        return {"format": CLASSIFIER_CACHE_FORMAT, "weights": self.weights_identity,
                "param_dtype": str(leaf.dtype), "dtype": str(self.dtype),
                "context": self.tokenizer.context_length, "synonyms": [list(s) for s in synonyms],
                "templates": list(templates)}

    def text_classifier(self, classes: Sequence[str | Sequence[str]],
                        templates: Sequence[str] = VILD_TEMPLATES, *, cache_dir=None,
                        progress: bool = False) -> TextClassifier:
        """Classes ("a,b,c" synonym strings, or lists of synonyms) -> the synonym classifier.

        `cache_dir`: a folder where classifiers are kept, keyed by the weights file, the synonyms,
        the templates and the dtypes (`io/cache.py`); None computes it every time. `progress`: a
        progress bar when encoding takes more than two seconds, and a line when the cache served.
        """
        synonyms = tuple(split_synonyms(c) for c in classes)
        if not synonyms:
            raise ValueError("text_classifier: no classes")
        flat = [s for syn in synonyms for s in syn]
        key = self.classifier_key(synonyms, templates) if cache_dir is not None else None
        entry = CacheEntry(Path(cache_dir), key) if key is not None else None
        stored = entry.read() if entry is not None else None
        emb = None if stored is None else stored.get("embeddings")
        if emb is not None and emb.shape == (len(flat), self.embed_dim):
            if progress:
                sys.stderr.write(f"text classifier ({len(synonyms)} classes, {len(flat)} synonyms) "
                                 f"from the cache: {entry.path}\n")
        else:
            texts = [t.format(s) for s in flat for t in templates]
            emb = self._encode_texts(texts, progress).reshape(len(flat), len(templates), -1)
            emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
            emb = emb.mean(axis=1)
            emb = (emb / np.linalg.norm(emb, axis=-1, keepdims=True)).astype(np.float32)
            if entry is not None:
                entry.write({"embeddings": emb})
        owner = np.repeat(np.arange(len(synonyms)), [len(s) for s in synonyms]).astype(np.int32)
        return TextClassifier(jnp.asarray(emb, jnp.float32), jnp.asarray(owner),
                              tuple(s[0] for s in synonyms), synonyms)

    def class_logits(self, embeddings, classifier: TextClassifier):
        return class_logits_fn(jnp.asarray(embeddings), classifier, self.logit_scale)


def load_clip(model: str | Path = DEFAULT_CLIP, *, dtype=jnp.float32, param_dtype=None,
              normalize_input: bool = False) -> ClipModel:
    """Load an open_clip ConvNeXt CLIP from a hub id or a local directory holding
    `open_clip_config.json` and `open_clip_model.safetensors` (the hub layout).

    Args:
      dtype: compute dtype (float32 by default: labels follow from argmaxes over close logits).
      param_dtype: parameter dtype (default: dtype).
      normalize_input: apply CLIP's mean/std to the images (the original does not).
    """
    files = hub.resolve_open_clip(model)
    try:
        config_json = json.loads(files.config.read_text())
    except ValueError as e:
        raise ckpt.CheckpointError(f"{files.config}: not valid JSON ({e})") from e
    cfg = OpenCLIPConfig.from_open_clip(config_json)
    numerics = Numerics(param_dtype=param_dtype or dtype, dtype=dtype)
    graph, params = ckpt.load_module(
        lambda r: OpenCLIP(cfg, numerics=numerics, rngs=r), OpenCLIPSource(files.source()),
        ignore=IGNORE_PATTERNS, part=str(files.weights))
    stat = Path(files.weights).stat()
    identity = f"{Path(files.weights).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return ClipModel(graph, params, cfg, normalize_input=normalize_input, dtype=dtype,
                     weights_identity=identity, source=str(model))
