"""The six benchmarks of the paper's Table 1: classes, background handling, class names."""
from __future__ import annotations

from dataclasses import dataclass, replace

from diffcut_jax.data import class_names


@dataclass(frozen=True)
class Benchmark:
    name: str  # registry key, also the config file name
    title: str  # as in the paper
    num_classes: int  # n of PROTOCOL.md, background included where it applies
    background: bool  # many-to-one background step (PROTOCOL.md step 7)
    class_names: tuple[str, ...]
    builder: str  # TFDS builder name

    def __post_init__(self):
        assert len(self.class_names) == self.num_classes, self.name


def _bg(names):
    return tuple(names) + ("background",)


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("voc20", "VOC-20", 21, True, _bg(class_names.VOC20), "diffcut_voc20"),
        Benchmark("context59", "Context-59", 60, True, _bg(class_names.CONTEXT59), "diffcut_context59"),
        Benchmark("coco_object", "COCO-Object", 81, True, _bg(class_names.COCO80), "diffcut_coco_object"),
        Benchmark("coco_stuff", "COCO-Stuff-27", 27, False, class_names.COCO_STUFF27, "diffcut_coco_stuff"),
        Benchmark("cityscapes", "Cityscapes-27", 27, False, class_names.CITYSCAPES27, "diffcut_cityscapes"),
        Benchmark("ade20k", "ADE20K-150", 150, False, ("other",) + class_names.ADE150[:149], "diffcut_ade20k"),
    )
}


def get(name: str, label_convention: str = "original") -> Benchmark:
    """The benchmark `name`; for ADE20K, `label_convention="standard"` names classes 1..150."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    b = BENCHMARKS[name]
    if name == "ade20k" and label_convention == "standard":
        return replace(b, class_names=class_names.ADE150)
    return b
