"""Every option of a dataset run, declared once: `label_dataset`'s `options` and the `segment`
command's flags (launch/common.py makes one flag per field)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from diffcut_jax.io.imageio import DEFAULT_MAX_PIXELS
from diffcut_jax.options import option
from diffcut_jax.streaming.inputs import default_read_threads

FORMATS = ("png", "coco")


@dataclass(frozen=True)
class DatasetOptions:
    """How a dataset is labelled; none of these changes a label (within one process
    configuration), except `max_pixels`, which decides which inputs are skipped."""

    format: tuple[str, ...] = option(
        ("png",), "Outputs, comma-separated: png (label map and overlays per image), coco (COCO "
                  "RLE results in shards, merged into coco.json).")
    batch_size: int = option(
        1, "Images per device and step: images of one working size are batched and the batch is "
           "split over the devices. Within one process configuration (the same platform and "
           "device kind, and the same number of devices per process) the labels do not depend "
           "on the batch size; another configuration computes other round-off, which can move "
           "a pixel or, rarely, change a partition (docs/usage.md, \"Which results are "
           "reproducible\").")
    shard_size: int = option(1000, "With format coco: inputs per output shard (a killed run loses "
                                   "at most one shard per process).")
    read_threads: int = option(default_read_threads(),
                               "Threads decoding images ahead of the devices. 0: decode, segment "
                               "and write one after the other (no read-ahead, no write-behind).")
    read_ahead: int = option(0, "Decoded images buffered ahead of the devices (0: 2 batches, at "
                                "least read_threads).")
    window: int = option(0, "Images held at most between decoding and their outputs (0: 8 "
                            "batches, at least 16). A working size's batch is dispatched "
                            "part-full when its oldest image reaches the window's edge: more "
                            "fills rare sizes' batches, less bounds memory.")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "Larger images are skipped.")
    overwrite: bool = option(False, "Start afresh: redo every input and discard earlier results "
                                    "(and a run of other options) in the output directory.")

    def __post_init__(self):
        """Errors name the option as `name=value` (the command adds its `--`)."""
        given = self.format.split(",") if isinstance(self.format, str) else list(self.format)
        formats = tuple(f.strip() for f in given if f.strip())
        if not formats or set(formats) - set(FORMATS):
            raise ValueError(f"format={','.join(given)}: choose one or more of "
                             f"{', '.join(FORMATS)}")
        object.__setattr__(self, "format", tuple(dict.fromkeys(formats)))
        for name, low in (("batch_size", 1), ("shard_size", 1), ("read_threads", 0),
                          ("read_ahead", 0), ("window", 0), ("max_pixels", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: must be an integer of at least {low}")

    @property
    def png(self) -> bool:
        return "png" in self.format

    @property
    def coco(self) -> bool:
        return "coco" in self.format

    def replace(self, **changes) -> "DatasetOptions":
        return dataclasses.replace(self, **changes)
