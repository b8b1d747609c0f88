"""The images of a TFDS dataset for `segment --tfds=NAME[:VERSION]/SPLIT`, streamed by tf.data.

Any TFDS image dataset that is prepared under `data_dir` (`coco/2017:validation`,
`coco/2017:1.1.0/validation`, `mnist/test[:100]`), and this project's own benchmark builders by
benchmark or TFDS name (`voc20:validation`, `diffcut_voc20/validation`; built by `diffcut-jax
eval`). Each example is keyed by the dataset's image file name or id where it has one (else its
TFDS id). The records are read in order; process p of n takes the records i with i % n == p
(its positions i // n), so the share of every process is fixed by the split alone; the images
are decoded by the caller's `decode` (the same decoder as for files) in tf.data's parallel map,
after the skipped records of a resumed run, which are read but never decoded.
"""
from __future__ import annotations

import re

import numpy as np

from diffcut_jax.data.tf_host import tf, tfds

SPEC = re.compile(r"(?P<name>[^:/\s]+(?:/[^:/\s]+)?)(?::(?P<version>\d+(?:\.\d+)*))?[:/]"
                  r"(?P<split>[^:/\s][^/\s]*)")
KEY_FEATURES = ("image/filename", "file_name", "filename", "image_id", "image/id", "id")
IMAGE_FEATURE = "image"


def parse_spec(spec: str) -> tuple[str, str]:
    """`NAME[/CONFIG][:VERSION]/SPLIT` or `NAME[/CONFIG]:SPLIT` -> (TFDS name, split)."""
    m = SPEC.fullmatch(spec.strip())
    if not m:
        raise ValueError(f"--tfds={spec}: expected NAME[:VERSION]/SPLIT or NAME:SPLIT "
                         "(e.g. coco/2017:validation, coco/2017:1.1.0/validation)")
    name = m["name"] + (f":{m['version']}" if m["version"] else "")
    return name, m["split"]


def open_builder(name: str, data_dir=None):
    """The builder of `name`: one of this project's benchmarks (by name or `diffcut_<name>`),
    or any registered TFDS dataset. Raises ValueError naming the problem."""
    from diffcut_jax.data import builders
    from diffcut_jax.data.benchmarks import BENCHMARKS

    base = name.split(":")[0]
    own = base[len("diffcut_"):] if base.startswith("diffcut_") else base
    if own in BENCHMARKS:
        b = builders.builder(own, data_dir)
        if not builders.is_built(b):
            raise ValueError(f"--tfds={name}: not built under {b.data_dir} (build it with "
                             f"`diffcut-jax eval --config={own} --manual_dir=...`)")
        return b
    try:
        b = tfds.builder(name, data_dir=None if data_dir is None else str(data_dir))
    except Exception as e:  # noqa: BLE001 - TFDS raises several kinds; all mean "no such dataset"
        raise ValueError(f"--tfds={name}: {e}".splitlines()[0]) from e
    if not b.data_path.joinpath("dataset_info.json").exists():
        raise ValueError(f"--tfds={name}: not prepared under {b.data_dir} (prepare it with "
                         "`tfds build` or give its --data_dir)")
    return b


def _key_feature(builder) -> str | None:
    features = builder.info.features
    for k in KEY_FEATURES:
        if k in features and isinstance(features[k], (tfds.features.Text, tfds.features.Scalar)):
            return k
    return None


def _image_feature(builder) -> str:
    features = builder.info.features
    if IMAGE_FEATURE in features and isinstance(features[IMAGE_FEATURE], tfds.features.Image):
        return IMAGE_FEATURE
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if len(images) != 1:
        raise ValueError(f"{builder.info.full_name}: no single image feature to segment "
                         f"(features: {sorted(features)})")
    return images[0]


def num_examples(builder, split: str) -> int:
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{builder.info.full_name}: split {split!r}: {e}") from e


def examples(builder, split: str, *, process: int, count: int, start: int, decode, threads=None):
    """This process's examples from position `start`: an iterator of (position, index, key,
    image or None, error or "", decode seconds); `decode(bytes) -> image` raises ValueError
    with the reason for an unusable image."""
    import time

    image_key, key = _image_feature(builder), _key_feature(builder)
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={image_key: tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(add_tfds_id=key is None))
    ds = ds.enumerate().shard(count, process).skip(start)

    def py_decode(data):
        t = time.perf_counter()
        try:
            image, error = decode(data.numpy()), ""
        except ValueError as e:
            image, error = np.zeros((0, 0, 3), np.float32), str(e)
        return image, error, np.float32(time.perf_counter() - t)

    def prepare(i, ex):
        image, error, seconds = tf.py_function(py_decode, [ex[image_key]],
                                               [tf.float32, tf.string, tf.float32])
        name = ex[key or "tfds_id"]
        return i, tf.strings.as_string(name) if name.dtype != tf.string else name, image, error, seconds

    ds = ds.map(prepare, num_parallel_calls=threads or tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(2)  # decoded images are large: a little ahead of the parallel map
    for i, name, image, error, seconds in ds.as_numpy_iterator():
        i = int(i)
        error = error.decode()
        yield (i // count, i, name.decode(), None if error else image, error, float(seconds))
