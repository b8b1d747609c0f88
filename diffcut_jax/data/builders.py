"""TFDS builders of the six benchmarks' validation splits, from the raw downloads in `manual_dir`.

    builder = builders.builder("voc20", data_dir="~/tensorflow_datasets")
    builders.prepare(builder, manual_dir="/data/pascal")      # checks the layout first
    ds = builder.as_dataset(split="validation")

Each example: `image` (the original encoded file, decoded to uint8 RGB), `label` (uint8, same
size: the evaluation class, 255 = void / unlabelled, i.e. class -1 of PROTOCOL.md) and
`image_id`. The label mapping is applied while building; ADE20K has one builder config per label
convention ("original", the default, reproduces the paper's numbers; "standard").
"""
from __future__ import annotations

import contextlib
import sys

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from diffcut_jax.data import label_maps
from diffcut_jax.data.benchmarks import BENCHMARKS
from diffcut_jax.data.raw_layouts import MissingDataError, layout_for

VOID = 255  # stored value of class -1
VERSION = tfds.core.Version("1.0.0")


class _RawBenchmarkBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared body: list the raw examples, map each label, store image bytes untouched."""

    benchmark: str
    VERSION = VERSION
    RELEASE_NOTES = {"1.0.0": "Validation split from the official raw download."}

    def _convention(self) -> str:
        return "original"

    def _info(self):
        b = BENCHMARKS[self.benchmark]
        return self.dataset_info_from_configs(
            description=f"{b.title} validation split for DiffCut's unsupervised evaluation "
                        f"({b.num_classes} classes, label {VOID} = void / unlabelled).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8, encoding_format="png"),
                "image_id": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
        )

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if getattr(cls, "benchmark", None):
            layout = layout_for(cls.benchmark)
            cls.MANUAL_DOWNLOAD_INSTRUCTIONS = (
                f"Unpack the official {layout.title} download in manual_dir:\n{layout.layout}\n")

    # Set by `prepare`, which lists (and so checks) the raw examples before TFDS starts: reused
    # here rather than listed twice (Context parses the large trainval_merged.json to list them).
    _listed: tuple | None = None

    def _split_generators(self, dl_manager):
        if self._listed is not None:
            layout, examples = self._listed
        else:
            layout = layout_for(self.benchmark)
            examples = layout.examples(dl_manager.manual_dir)
        return {"validation": self._generate_examples(layout, examples)}

    def _generate_examples(self, layout, examples):
        lut = label_maps.lookup_table(self.benchmark, self._convention())
        unexpected = 0
        for ex in examples:
            try:
                raw = layout.raw_label(ex)
            except OSError as e:  # unreadable or truncated label file
                raise ValueError(f"{layout.title}: label of {ex.image_id} ({ex.label}) cannot be read: {e}") from e
            try:  # decode fully now: a corrupt file must fail the build, naming the file
                with Image.open(ex.image) as im:
                    im.load()
                    width, height = im.size
            except OSError as e:
                raise ValueError(f"{layout.title}: image {ex.image} cannot be decoded: {e}") from e
            if raw.shape != (height, width):
                raise ValueError(
                    f"{layout.title}: label of {ex.image_id} is {raw.shape[1]}x{raw.shape[0]}, "
                    f"its image {ex.image} is {width}x{height}"
                )
            classes = label_maps.apply(lut, raw)
            if self.benchmark == "context59":
                unexpected += int(np.count_nonzero(~np.isin(raw, label_maps.CONTEXT59_IDS)))
            label = np.where(classes < 0, VOID, classes).astype(np.uint8)[..., None]
            yield ex.image_id, {"image": ex.image, "label": label, "image_id": ex.image_id}
        if unexpected:
            logging.warning("%s: %d pixel(s) had a category outside the 59 classes (set to void)",
                            layout.title, unexpected)


class DiffcutVoc20(_RawBenchmarkBuilder):
    benchmark = "voc20"


class DiffcutContext59(_RawBenchmarkBuilder):
    benchmark = "context59"


class DiffcutCocoObject(_RawBenchmarkBuilder):
    benchmark = "coco_object"


class DiffcutCocoStuff(_RawBenchmarkBuilder):
    benchmark = "coco_stuff"


class DiffcutCityscapes(_RawBenchmarkBuilder):
    benchmark = "cityscapes"


class DiffcutAde20k(_RawBenchmarkBuilder):
    benchmark = "ade20k"
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="original", description="Raw values are the classes (as the paper)."),
        tfds.core.BuilderConfig(name="standard", description="0 ignored, raw k -> class k - 1."),
    ]

    def _convention(self) -> str:
        return self.builder_config.name


BUILDERS = {cls.benchmark: cls for cls in (
    DiffcutVoc20, DiffcutContext59, DiffcutCocoObject, DiffcutCocoStuff, DiffcutCityscapes, DiffcutAde20k,
)}


def builder(benchmark: str, data_dir=None, label_convention: str = "original") -> tfds.core.DatasetBuilder:
    if benchmark not in BUILDERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(BUILDERS)}")
    kwargs = {"data_dir": None if data_dir is None else str(data_dir)}
    if benchmark == "ade20k":
        if label_convention not in label_maps.ADE20K_CONVENTIONS:
            raise ValueError(f"label_convention must be one of {label_maps.ADE20K_CONVENTIONS}, "
                             f"got {label_convention!r}")
        kwargs["config"] = label_convention
    return BUILDERS[benchmark](**kwargs)


def is_built(b: tfds.core.DatasetBuilder) -> bool:
    return b.data_path.joinpath("dataset_info.json").exists()


def prepare(b: tfds.core.DatasetBuilder, manual_dir=None) -> None:
    """Build the validation split unless already built. The raw layout is checked first, so a
    missing or incomplete download fails at once with what is missing and where."""
    if is_built(b):
        return
    layout = layout_for(b.benchmark)
    b._listed = (layout, layout.examples(manual_dir))  # raises MissingDataError
    # TFDS announces the build on stdout; keep stdout for results.
    with contextlib.redirect_stdout(sys.stderr):
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))


__all__ = ["BUILDERS", "MissingDataError", "VOID", "builder", "is_built", "prepare"]
