"""The evaluation input pipeline (docs/protocol.md steps 1-4 and 6) in tf.data, feeding JAX.

Per example: the image as float32 RGB in [0, 1]; centre crop to c x c, c = min(H, W) - 1, offsets
rounded half to even; bilinear resize to S x S (half-pixel centres, no antialiasing). The label
(already mapped to classes by the builder) gets the same crop, then nearest-exact to S x S, then
plain nearest to the mask size M (source index floor(i * S / M)): both index maps are composed
into one gather, so the S x S label map is never materialised. Void becomes -1.

Batches have a fixed shape: the last one is padded with `valid = False` entries (evaluated never,
dropped never: the real ones in it count). With several processes each reads its own part of the
split, and all yield the same number of batches.
"""
from __future__ import annotations

import math

import numpy as np

from diffcut_jax.data.builders import VOID
from diffcut_jax.data.tf_host import tf, tfds


def decode_rgb(encoded):
    """Encoded image bytes -> uint8 (H, W, 3), pixel-identical to PIL's `convert("RGB")` (the
    original's decoder). TensorFlow's default JPEG decoding (fast integer DCT) differs from it by
    up to a few levels, so JPEGs use the accurate integer DCT."""
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False),
    )


def read_dataset(builder, split: str):
    """The builder's split with images left encoded (decoded by `preprocess`)."""
    return builder.as_dataset(split=split, shuffle_files=False,
                              decoders={"image": tfds.decode.SkipDecoding()})


def crop_box(height, width):
    """(top, left, c): c = min(H, W) - 1, offsets round((H - c) / 2) half to even (Python's round)."""
    c = tf.minimum(height, width) - 1
    top = tf.cast(tf.round(tf.cast(height - c, tf.float64) / 2.0), tf.int32)  # tf.round: half to even
    left = tf.cast(tf.round(tf.cast(width - c, tf.float64) / 2.0), tf.int32)
    return top, left, c


def label_indices(c, image_size: int, mask_size: int):
    """Source rows (or columns) in the c-pixel crop of the mask_size ground truth: nearest-exact
    c -> S (floor((j + 0.5) * c / S), at most c - 1) at the plain-nearest positions floor(i * S / M)."""
    at_s = tf.range(mask_size, dtype=tf.int64) * image_size // mask_size
    src = tf.floor((tf.cast(at_s, tf.float64) + 0.5) * tf.cast(c, tf.float64) / image_size)
    return tf.minimum(tf.cast(src, tf.int32), c - 1)


def preprocess(example, *, image_size: int, mask_size: int):
    image, label = example["image"], example["label"]
    if image.dtype == tf.string:
        image = decode_rgb(image)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    tf.debugging.assert_equal(
        tf.shape(label)[:2], shape[:2],
        message=tf.strings.join(["image and label sizes differ for ", example["image_id"]]))
    tf.debugging.assert_greater_equal(
        tf.minimum(h, w), 2, message=tf.strings.join(["image too small to crop: ", example["image_id"]]))
    top, left, c = crop_box(h, w)
    crop = tf.cast(image[top : top + c, left : left + c], tf.float32) / 255.0  # exact, as torch's /255
    resized = tf.image.resize(crop, (image_size, image_size), method="bilinear", antialias=False)
    idx = label_indices(c, image_size, mask_size)
    lab = tf.gather(tf.gather(label[top : top + c, left : left + c, 0], idx, axis=0), idx, axis=1)
    lab = tf.cast(lab, tf.int32)
    lab = tf.where(lab == VOID, -1, lab)
    return {"image": resized, "label": lab, "image_id": example["image_id"], "valid": tf.constant(True)}


def _pad_batch(batch, batch_size: int):
    n = tf.shape(batch["valid"])[0]
    pad = batch_size - n

    def pad0(x, value):
        paddings = tf.concat([[[0, pad]], tf.zeros((tf.rank(x) - 1, 2), tf.int32)], axis=0)
        return tf.pad(x, paddings, constant_values=value)

    return {
        "image": pad0(batch["image"], 0.0),
        "label": pad0(batch["label"], -1),
        "image_id": pad0(batch["image_id"], ""),
        "valid": pad0(batch["valid"], False),
    }


def _empty_batch(batch_size: int, image_size: int, mask_size: int) -> dict:
    return {
        "image": tf.zeros((batch_size, image_size, image_size, 3), tf.float32),
        "label": tf.fill((batch_size, mask_size, mask_size), -1),
        "image_id": tf.fill((batch_size,), ""),
        "valid": tf.zeros((batch_size,), tf.bool),
    }


def split_for_process(split: str, process_index: int, process_count: int):
    """This process's part of `split` (even, contiguous; sizes differ by at most one), as a split
    that `as_dataset` and `builder.info.splits[...]` accept."""
    if process_count == 1:
        return split
    return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def num_examples(builder, split) -> int:
    """Examples in a split, sliced ('validation[:100]') or a process's part."""
    return int(builder.info.splits[split].num_examples)


def eval_batches(builder, *, batch_size: int, image_size: int = 1024, mask_size: int = 128,
                 split: str = "validation", process_index: int = 0, process_count: int = 1,
                 parallel_calls: int | None = None, skip_batches: int = 0) -> tuple[tf.data.Dataset, int]:
    """(dataset of padded batches for this process, number of batches). Every process gets the
    same number of batches (the shorter ones end with all-invalid batches).

    `skip_batches`: start after that many batches (a resumed evaluation), the same batches as
    an uninterrupted run's from there on; the skipped records are not decoded. The number
    returned stays the whole count."""
    total = num_examples(builder, split)
    per_process = math.ceil(total / process_count)
    num_batches = max(1, math.ceil(per_process / batch_size))
    if not 0 <= skip_batches <= num_batches:
        raise ValueError(f"skip_batches={skip_batches}: the split has {num_batches} batch(es)")
    autotune = tf.data.AUTOTUNE if parallel_calls is None else parallel_calls
    ds = read_dataset(builder, split_for_process(split, process_index, process_count))
    ds = ds.skip(skip_batches * batch_size)  # still encoded: skipping reads, never decodes
    ds = ds.map(lambda ex: preprocess(ex, image_size=image_size, mask_size=mask_size),
                num_parallel_calls=autotune, deterministic=True)
    ds = ds.batch(batch_size).map(lambda b: _pad_batch(b, batch_size))
    empty = tf.data.Dataset.from_tensors(_empty_batch(batch_size, image_size, mask_size))
    ds = ds.concatenate(empty.repeat()).take(num_batches - skip_batches)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
    return ds, num_batches


def as_numpy(batch) -> dict:
    """A batch as NumPy (image ids decoded to str)."""
    out = {k: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for k, v in batch.items()}
    out["image_id"] = [s.decode() for s in out["image_id"]]
    return out
