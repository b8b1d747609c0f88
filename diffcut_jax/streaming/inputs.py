"""Inputs, streamed: decoded ahead of the devices, one process's share, resumable.

Files go through Grain (no TensorFlow needed): a random-access source of paths, decoded by
`ReadOptions.num_threads` threads into a buffer of `prefetch_buffer_size` images, so memory is
bounded by the buffer, not by the number of inputs. Two sources: a listed share of one process
(`path_items`: index = process + position x processes over a `PathList`, `io/input_list.py`),
or any iterable of paths, taken lazily a chunk at a time (`iter_path_items`: the iterable is
never read far ahead of the decoding). A TFDS split goes through tf.data (`data/tfds_images.py`),
which TFDS reads anyway. All yield `Item`s in position order; items a resumed run already has
are yielded undecoded (`skipped`), so that shard boundaries still show.
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Iterable, NamedTuple

import numpy as np

# Paths taken from a lazy iterable per Grain source: small against any read-ahead buffer, so
# the decoding threads rarely wait at a chunk's end, and far below any input list's length.
CHUNK = 1024


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


def default_read_threads() -> int:
    """Decoding threads by default: one per CPU, at most 16."""
    return min(16, os.cpu_count() or 1)


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
        source = getattr(self.paths, "source", None)
        key = self.paths[index]
        return position, index, key if source is None else (key, source(index))


def _reader(max_pixels: int, skip=frozenset()):
    """(position, index, path) -> Item: decoded, or the reason it is unreadable."""
    from diffcut_jax.io.imageio import ImageReadError, read_rgb

    def read(record) -> Item:
        position, index, path = record
        # (key, where it is read from) for a relative line of a bucket's list (io/input_list.py)
        path, source = (str(path[0]), str(path[1])) if isinstance(path, tuple) else (str(path),) * 2
        if position in skip:
            return Item(position, index, path, None, "", 0.0)
        t = time.perf_counter()
        try:
            image, error = read_rgb(source, max_pixels=max_pixels), ""
        except ImageReadError as e:
            image, error = None, str(e)
        return Item(position, index, path, image, error, time.perf_counter() - t)

    return read


def _decoded(source, read, threads: int, buffer: int):
    """`read` over a random-access `source`, in order: by Grain's threads, or (threads=0) in the
    caller's loop with no read-ahead."""
    if threads == 0:
        return (read(source[j]) for j in range(len(source)))
    import grain

    ds = grain.MapDataset.source(source).map(read)
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=buffer)
    return iter(ds.to_iter_dataset(options))


def path_items(paths, *, process: int, count: int, start: int, skip, max_pixels: int,
               threads: int, buffer: int):
    """Items of this process's share of `paths` (a `PathList`) from position `start`; `skip`:
    positions to yield undecoded. threads=0: decoded in the caller's loop, no read-ahead."""
    return _decoded(_Share(paths, process, count, start), _reader(max_pixels, skip), threads, buffer)


def iter_path_items(paths: Iterable, *, max_pixels: int, threads: int, buffer: int,
                    chunk: int = CHUNK):
    """Items of any iterable of paths (position = index = its place in the iterable), taken from
    it `chunk` paths at a time: memory stays that of one chunk and the read-ahead buffer, and
    the first items are decoded before the iterable's end is reached."""
    read, it, offset = _reader(max_pixels), iter(paths), 0
    chunk = max(int(chunk), buffer, 1)
    while block := list(itertools.islice(it, chunk)):
        records = [(offset + j, offset + j, p) for j, p in enumerate(block)]
        yield from _decoded(records, read, threads, buffer)
        offset += len(block)


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
