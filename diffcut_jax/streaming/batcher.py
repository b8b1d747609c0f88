"""The device step: images of one working size batched over a mesh of local devices.

One jitted program per (model, static options, devices) and per (batch, working size) shape:
`segmentation.segment_images` with `feature_batch=1` runs the UNet one image at a time, so
every image's labels are the same whatever batch and device it ran on (within one process
configuration: docs/usage.md, "Which results are reproducible"). It is `shard_map`ped over a
mesh of the given devices: parameters replicated, each device runs its part of the batch (no
collective: on a pod, one slow host does not stall the others). tau and alpha are traced, so
`with_options(tau=...)` reuses the program. Images are resized to the working size on the
device in a small program per input size, and the labels back to the input size on the host
with the nearest-exact indices: the heavy program never sees an input size.

Dispatch is asynchronous: `add`/`flush` return a `Pending` batch at once, and its labels are
fetched (`Pending.result`) later, so the devices compute while the host decodes and writes.
"""
from __future__ import annotations

import functools
import time

import numpy as np

from .memory import is_out_of_memory


class BatchOutOfMemory(Exception):
    """A batch did not fit on the devices: its working size and its items."""

    def __init__(self, size, items):
        super().__init__(f"out of memory at working size {size}")
        self.size, self.items = size, items


@functools.lru_cache(maxsize=16)
def batch_program(model, options, devices: tuple):
    """(jitted `segment_batch(params, images, noise, tau, alpha)`, replicated sharding) for a
    feature model, static options and a tuple of devices; cached, so every `Batcher` of the same
    segmenter and devices shares one compiled program per shape."""
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from diffcut_jax.segmentation import segment_images

    mesh = Mesh(np.asarray(devices), ("batch",))
    replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))

    def per_device(params, images, noise, tau, alpha):
        size = tuple(images.shape[1:3])
        return segment_images(params, images, noise, tau, alpha, model=model, options=options,
                              size=size, out_size=size, feature_batch=1)

    # shard_map, not a sharded jit: each device runs the per-image program on its own images
    # (XLA's partitioner does not split the UNet's loop over images across devices).
    mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("batch"), P(), P(), P()),
                           out_specs=P("batch"), check_vma=False)

    def segment_batch(params, images, noise, tau, alpha):
        return mapped(params, images, noise, tau, alpha)

    fn = jax.jit(segment_batch, in_shardings=(replicated, batched, replicated, replicated, replicated),
                 out_shardings=batched)
    return fn, replicated


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
            if not is_out_of_memory(e):
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
    """Groups images by working size until a batch of `per_device` x devices is full (or
    `flush`: the last batch of a size is padded with blank images, whose labels are dropped).
    `devices`: default every local device of this process."""

    def __init__(self, seg, per_device: int, devices=None):
        import jax
        import jax.numpy as jnp

        if int(per_device) < 1:
            raise ValueError(f"batch_size must be at least 1 image per device, got {per_device}")
        devices = tuple(devices or jax.local_devices())
        if not devices:
            raise ValueError("devices: no device given")
        self.seg, self.devices, self.size = seg, len(devices), int(per_device) * len(devices)
        self._fn, replicated = batch_program(seg.model, seg.options.static, devices)
        self._params = jax.device_put(seg.params, replicated)
        self._replicated = replicated
        self._scalars = jax.device_put((jnp.float32(seg.options.tau), jnp.float32(seg.options.alpha)),
                                       replicated)
        self._noise: dict[tuple[int, int], object] = {}
        self.pending: dict[tuple[int, int], list] = {}

    def add(self, item, image) -> Pending | None:
        """Queue one decoded image; dispatches (and returns) the batch it completes."""
        size = self.seg.working_size(*image.shape[:2])
        group = self.pending.setdefault(size, [])
        group.append((item, image))
        return self.flush(size) if len(group) == self.size else None

    def flush(self, size) -> Pending | None:
        """Dispatch the queued images of one working size (padded to a whole batch)."""
        import jax
        import jax.numpy as jnp

        from diffcut_jax.io.image_ops import resize_images

        group = self.pending.pop(size, [])
        if not group:
            return None
        t = time.perf_counter()
        if size not in self._noise:
            self._noise[size] = jax.device_put(self.seg.extractor.noise_for(size), self._replicated)
        # Resized on the device, one small program per input size, with no host round trip.
        work = [resize_images(image[None], size) for _, image in group]
        if len(group) < self.size:
            work.append(jnp.zeros((self.size - len(group), *size, 3), jnp.float32))
        try:
            labels = self._fn(self._params, jnp.concatenate(work), self._noise[size], *self._scalars)
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_out_of_memory(e):
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
    benchmarks' device-alone loop). Returns images, seconds, and the seconds spent waiting for
    the next input."""
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
