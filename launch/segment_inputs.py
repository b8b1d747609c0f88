"""`segment`'s inputs, streamed: decoded ahead of the devices, one process's share, resumable.

Files go through Grain (no TensorFlow needed): a random-access source over the listed paths
(`io/input_list.py`), this process's positions only (index = process + position x processes),
decoded by `read_options.num_threads` threads into a buffer of `prefetch_buffer_size` images:
memory is bounded by the buffer, not by the number of inputs. A TFDS split goes through tf.data
(`data/tfds_images.py`), which TFDS reads anyway. Both yield `Item`s in position order; items a
resumed run already has are yielded undecoded (`skipped`), so that shard boundaries still show.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np


class Item(NamedTuple):
    position: int  # in this process's share (shard = position // shard size)
    index: int  # in the whole input list (the merged output's order)
    key: str  # the path, or the dataset's image id or file name
    image: np.ndarray | None  # float32 (H, W, 3) in [0, 1]; None when unreadable or skipped
    error: str  # why it is unreadable ("" otherwise)
    seconds: float  # decoding time

    @property
    def skipped(self) -> bool:
        return self.image is None and not self.error


def share_size(total: int, process: int, count: int) -> int:
    """Inputs of process `process` of `count` (indices process, process + count, ...)."""
    return max(0, (total - process + count - 1) // count)


class _Share:
    """Grain source: this process's (position, index, path) from position `start`."""

    def __init__(self, paths, process: int, count: int, start: int):
        self.paths, self.process, self.count, self.start = paths, process, count, start
        self.len = max(0, share_size(len(paths), process, count) - start)

    def __len__(self) -> int:
        return self.len

    def __getitem__(self, j: int):
        position = self.start + j
        index = self.process + position * self.count
        return position, index, self.paths[index]


def path_items(paths, *, process: int, count: int, start: int, skip, max_pixels: int,
               threads: int, buffer: int):
    """Items of this process's share of `paths` (a `PathList`) from position `start`; `skip`:
    positions to yield undecoded. threads=0: decoded in the caller's loop, no read-ahead."""
    from diffcut_jax.io.imageio import ImageReadError, read_rgb

    def read(record) -> Item:
        position, index, path = record
        if position in skip:
            return Item(position, index, path, None, "", 0.0)
        t = time.perf_counter()
        try:
            image, error = read_rgb(path, max_pixels=max_pixels), ""
        except ImageReadError as e:
            image, error = None, str(e)
        return Item(position, index, path, image, error, time.perf_counter() - t)

    source = _Share(paths, process, count, start)
    if threads == 0:
        return (read(source[j]) for j in range(len(source)))
    import grain

    ds = grain.MapDataset.source(source).map(read)
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer)
    return iter(ds.to_iter_dataset(options))


def tfds_items(builder, split: str, *, process: int, count: int, start: int, skip,
               max_pixels: int, threads: int):
    """Items of this process's share of a TFDS split from position `start`."""
    from diffcut_jax.data import tfds_images
    from diffcut_jax.io.imageio import decode_rgb

    for position, index, key, image, error, seconds in tfds_images.examples(
            builder, split, process=process, count=count, start=start, threads=threads or None,
            decode=lambda data: decode_rgb(data, max_pixels=max_pixels)):
        if position in skip:
            image, error = None, ""
        yield Item(position, index, key, image, error, seconds)
