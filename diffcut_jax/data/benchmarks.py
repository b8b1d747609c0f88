"""The benchmarks of the paper's Table 1, one record each: everything else is derived from it.

A record carries the classes, the background rule, the raw download layout, the label table and
the published numbers. The TFDS builders (`builders.py`), the configs (`configs/`, by name), the
command's validation and the tests all read `BENCHMARKS`. Adding a benchmark = one record here
(plus, if its files are laid out in a new way, a `raw_layouts.Layout`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np

from diffcut_jax.data import class_names, label_maps, raw_layouts

# The published settings (docs/protocol.md): (model, method, refinement).
_SETTINGS = (
    ("ssd1b", "ncut", False), ("ssd1b", "ncut", True), ("ssd1b", "autosc", False),
    ("sd14", "ncut", True), ("vega", "ncut", True),
)


@dataclass(frozen=True)
class Benchmark:
    name: str  # registry key, also the config name
    title: str  # as in the paper
    num_classes: int  # n of docs/protocol.md, background included where it applies
    background: bool  # many-to-one background step (docs/protocol.md step 7)
    class_names: tuple[str, ...]
    layout: Callable[[], raw_layouts.Layout]  # the official raw download under manual_dir
    label_table: Callable[[str], np.ndarray]  # label convention -> raw value -> class table
    published: tuple[float | None, ...]  # mIoU (%) per setting of _SETTINGS
    conventions: tuple[str, ...] = ("original",)  # label conventions (ADE20K has two)
    known_raw_values: tuple[int, ...] | None = None  # others are counted in a build warning
    renamed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # convention -> class names

    def __post_init__(self):
        assert len(self.class_names) == self.num_classes, self.name
        assert len(self.published) == len(_SETTINGS), self.name

    @property
    def builder_name(self) -> str:
        return f"diffcut_{self.name}"

    def published_miou(self, model: str, method: str, refinement: bool) -> float | None:
        """The paper's mIoU (%) for this setting, or None where it published none."""
        key = (model, method, bool(refinement))
        return self.published[_SETTINGS.index(key)] if key in _SETTINGS else None


def _bg(names):
    return tuple(names) + ("background",)


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("voc20", "VOC-20", 21, True, _bg(class_names.VOC20), raw_layouts.VOC2012,
                  label_maps.voc20, (62.0, 65.2, 61.5, 57.5, 62.2)),
        Benchmark("context59", "Context-59", 60, True, _bg(class_names.CONTEXT59),
                  raw_layouts.Context, label_maps.context59, (54.1, 56.5, 53.3, 52.8, 56.4),
                  known_raw_values=label_maps.CONTEXT59_IDS),
        Benchmark("coco_object", "COCO-Object", 81, True, _bg(class_names.COCO80),
                  lambda: raw_layouts.COCOStuffThingMaps("COCO-Object"),
                  label_maps.json_table("coco_object_80"), (32.0, 34.1, 29.8, 30.0, 34.9)),
        Benchmark("coco_stuff", "COCO-Stuff-27", 27, False, class_names.COCO_STUFF27,
                  lambda: raw_layouts.COCOStuffThingMaps("COCO-Stuff-27"),
                  label_maps.json_table("coco_stuff_27"), (46.1, 49.1, 46.9, 45.2, 49.5)),
        Benchmark("cityscapes", "Cityscapes-27", 27, False, class_names.CITYSCAPES27,
                  raw_layouts.Cityscapes, label_maps.json_table("cityscapes_27"),
                  (28.4, 30.6, 25.3, 24.5, 30.1)),
        Benchmark("ade20k", "ADE20K-150", 150, False, ("other",) + class_names.ADE150[:149],
                  raw_layouts.ADE20K, label_maps.ade20k, (42.4, 44.3, 38.9, 36.7, 45.7),
                  conventions=label_maps.ADE20K_CONVENTIONS,
                  renamed={"standard": class_names.ADE150}),
    )
}


def get(name: str, label_convention: str = "original") -> Benchmark:
    """The benchmark `name` with the class names of `label_convention`."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    b = BENCHMARKS[name]
    if label_convention not in b.conventions:
        raise ValueError(f"{name}: label convention must be one of {b.conventions}, "
                         f"got {label_convention!r}")
    if label_convention in b.renamed:
        return replace(b, class_names=b.renamed[label_convention])
    return b
