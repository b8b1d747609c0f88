"""Items through the batcher, results back in input order, within a bounded window.

The batcher groups images by working size, so a batch completes out of input order: an image of
a rare size waits for others of its size. `OrderedStream` holds every item from its reading to
its result (`window` at most) and yields results strictly in input order: when the oldest held
item is still queued and the window is full, its group is dispatched part-full (padded). So the
memory of held images is bounded whatever the inputs, results come back as soon as they and
every earlier one are done, and a consumer can close a shard when the next one's first item
arrives. One batch is kept in flight while the host reads the next inputs (`depth`).
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .batcher import Batcher, BatchOutOfMemory


@dataclass
class Segmented:
    """One item's result: labels at its input size, or why it has none. `kind`: "" (segmented,
    or `item.skipped`), "unreadable" (`error` from decoding) or "failed" (out of memory)."""

    item: object
    image: np.ndarray | None = None
    labels: np.ndarray | None = None
    seconds: float = 0.0  # the device step's wall time per image of its batch
    error: str = ""
    kind: str = ""


class _Slot:
    __slots__ = ("item", "size", "result")

    def __init__(self, item):
        self.item, self.size, self.result = item, None, None


def default_window(batch: int) -> int:
    """Items held by default: 8 whole batches (at least 16), so that a rare working size still
    fills its batch on most datasets."""
    return max(8 * batch, 16)


class OrderedStream:
    """Iterate to segment `items` (`inputs.Item`s, in position order) with `batcher`; yields a
    `Segmented` per item in the same order.

    window: most items held between reading and yielding (default `default_window`).
    stop: checked before each read; once true, nothing more is read and what is held is
      finished and yielded (the engine's SIGTERM path).
    out_of_memory: BatchOutOfMemory -> the message its items fail with.
    depth: batches left in flight while the host goes on (1; 0 runs each batch to completion).
    `input_wait_seconds`: time spent blocked on the next item, an upper bound of the devices'
    wait for input; `stopped`: whether `stop` ended it."""

    def __init__(self, batcher: Batcher, items: Iterable, *, window: int | None = None,
                 stop: Callable[[], bool] | None = None,
                 out_of_memory: Callable[[BatchOutOfMemory], str] = str, depth: int = 1):
        self.batcher, self.items, self.stop = batcher, items, stop
        self.window = max(int(window or default_window(batcher.size)), batcher.size, 1)
        self.out_of_memory, self.depth = out_of_memory, int(depth)
        self.input_wait_seconds = 0.0
        self.stopped = False  # ended by `stop`, with inputs left unread
        self._held: collections.deque = collections.deque()
        self._inflight: collections.deque = collections.deque()

    def _fail(self, err: BatchOutOfMemory) -> None:
        message = self.out_of_memory(err)
        for slot in err.items:
            slot.result = Segmented(slot.item, error=message, kind="failed")

    def _dispatch(self, make) -> None:
        try:
            pending = make()
        except BatchOutOfMemory as e:
            self._fail(e)
            return
        if pending is not None:
            self._inflight.append(pending)

    def _collect(self) -> None:
        pending = self._inflight.popleft()
        try:
            results = pending.result()
        except BatchOutOfMemory as e:
            self._fail(e)
            return
        for slot, image, labels, seconds in results:
            slot.result = Segmented(slot.item, image, labels, seconds)

    def _ready(self):
        held = self._held
        while held and held[0].result is not None:
            yield held.popleft().result

    def _add(self, item) -> None:
        slot = _Slot(item)
        self._held.append(slot)
        if item.image is None:  # unreadable, or done by an earlier run
            slot.result = Segmented(item, error=item.error, kind="unreadable" if item.error else "")
            return
        slot.size = self.batcher.seg.working_size(*item.image.shape[:2])
        self._dispatch(lambda: self.batcher.add(slot, item.image))
        while len(self._inflight) > self.depth:
            self._collect()

    def _finish(self, slot) -> None:
        """Get `slot` its result: dispatch its group if still queued, collect up to its batch."""
        if slot.result is None and slot.size in self.batcher.pending and any(
                s is slot for s, _ in self.batcher.pending[slot.size]):
            self._dispatch(lambda: self.batcher.flush(slot.size))
        while slot.result is None:
            self._collect()

    def __iter__(self):
        it = iter(self.items)
        while True:
            if self.stop is not None and self.stop():
                self.stopped = True
                break
            t = time.perf_counter()
            item = next(it, None)
            self.input_wait_seconds += time.perf_counter() - t
            if item is None:
                break
            self._add(item)
            yield from self._ready()
            while len(self._held) > self.window:
                self._finish(self._held[0])
                yield from self._ready()
        while self._held:  # the end (or a stop): every held item finished, in order
            self._finish(self._held[0])
            yield from self._ready()
