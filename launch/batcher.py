"""`segment`'s device step: images of one working size batched over every local device.

One jitted program per (batch, working size): `DiffCut.function(feature_batch=1)` runs the UNet
one image at a time, so every image's labels are the same whatever batch and device it ran on.
It is `shard_map`ped over a mesh of this process's devices: parameters replicated, each device
runs its part of the batch (no collective: on a pod, one slow host does not stall the others). Images are resized to the
working size on the device in a small program per input size, and the labels back to the input
size on the host with the nearest-exact indices: the heavy program never sees an input size.

Dispatch is asynchronous: `add`/`flush` return a `Pending` batch at once, and its labels are
fetched (`Pending.result`) after the next batch has been dispatched, so the devices compute while
the host decodes and writes.
"""
from __future__ import annotations

import time

import numpy as np

from . import common


class BatchOutOfMemory(Exception):
    """A batch did not fit on the devices: its working size and its items."""

    def __init__(self, size, items):
        super().__init__(f"out of memory at working size {size}")
        self.size, self.items = size, items


class Pending:
    """A dispatched batch: its items and images, and the labels still on the devices."""

    def __init__(self, size, group, labels, started: float):
        self.size, self.group, self._labels, self._started = size, group, labels, started

    def result(self) -> list:
        """[(item, image, labels at the input size, seconds per image)]; waits for the devices."""
        from diffcut_jax.io.image_ops import nearest_exact_indices

        try:
            labels = np.asarray(self._labels)[: len(self.group)]
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not common.is_out_of_memory(e):
                raise
            raise BatchOutOfMemory(self.size, [item for item, _ in self.group]) from e
        seconds = (time.perf_counter() - self._started) / len(self.group)
        out = []
        for (item, image), lab in zip(self.group, labels):
            h, w = image.shape[:2]
            lab = lab[nearest_exact_indices(self.size[0], h)][:, nearest_exact_indices(self.size[1], w)]
            out.append((item, image, lab, seconds))
        return out


class Batcher:
    """Groups images by working size until a batch of `per_device` x local devices is full (or
    `flush`: the last batch of a size is padded with blank images, whose labels are dropped)."""

    def __init__(self, seg, per_device: int, devices=None):
        import jax
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        devices = list(devices or jax.local_devices())
        self.seg, self.devices, self.size = seg, len(devices), per_device * len(devices)
        mesh = Mesh(np.asarray(devices), ("batch",))
        self._params = jax.device_put(seg.params, NamedSharding(mesh, P()))
        self._batch_sharding = NamedSharding(mesh, P("batch"))
        # shard_map, not a sharded jit: each device runs the per-image program on its own images
        # (XLA's partitioner does not split the UNet's loop over images across devices).
        per_device = jax.shard_map(seg.function(feature_batch=1), mesh=mesh,
                                   in_specs=(P(), P("batch")), out_specs=P("batch"),
                                   check_vma=False)

        def segment_batch(params, images):
            return per_device(params, images)

        self._fn = jax.jit(segment_batch, in_shardings=(NamedSharding(mesh, P()), self._batch_sharding),
                           out_shardings=self._batch_sharding)
        self.pending: dict[tuple[int, int], list] = {}

    def add(self, item, image) -> Pending | None:
        """Queue one decoded image; dispatches (and returns) the batch it completes."""
        size = self.seg.working_size(*image.shape[:2])
        group = self.pending.setdefault(size, [])
        group.append((item, image))
        return self.flush(size) if len(group) == self.size else None

    def flush(self, size) -> Pending | None:
        """Dispatch the queued images of one working size (padded to a whole batch)."""
        import jax.numpy as jnp

        from diffcut_jax.io.image_ops import resize_images

        group = self.pending.pop(size, [])
        if not group:
            return None
        t = time.perf_counter()
        # Resized on the device, one small program per input size, with no host round trip.
        work = [resize_images(image[None], size) for _, image in group]
        if len(group) < self.size:
            work.append(jnp.zeros((self.size - len(group), *size, 3), jnp.float32))
        try:
            labels = self._fn(self._params, jnp.concatenate(work))
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not common.is_out_of_memory(e):
                raise
            raise BatchOutOfMemory(size, [item for item, _ in group]) from e
        return Pending(size, group, labels, t)

    def flush_all(self):
        """Dispatch every partial batch; yields them (an out-of-memory batch raises when reached)."""
        for size in list(self.pending):
            pending = self.flush(size)
            if pending is not None:
                yield pending


def stream(batcher: Batcher, pairs) -> dict:
    """Segment an iterable of (item, image) with one batch in flight, labels discarded (the
    benchmarks' loop: the command's, less its writing). Returns images, seconds, and the seconds
    spent waiting for the next input."""
    inflight, n, wait, t0 = [], 0, 0.0, time.perf_counter()
    it = iter(pairs)
    while True:
        t = time.perf_counter()
        pair = next(it, None)
        wait += time.perf_counter() - t
        if pair is None:
            break
        pending = batcher.add(*pair)
        if pending is not None:
            inflight.append(pending)
            if len(inflight) > 1:
                n += len(inflight.pop(0).result())
    for pending in [*inflight, *batcher.flush_all()]:
        n += len(pending.result())
    return {"images": n, "seconds": time.perf_counter() - t0, "input_wait_seconds": wait}
