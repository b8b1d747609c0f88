"""TFDS builders of the six benchmarks' validation splits, from the raw downloads in `manual_dir`.

    builder = builders.builder("voc20", data_dir="~/tensorflow_datasets")
    builders.prepare(builder, manual_dir="/data/pascal")      # checks the layout first
    ds = builder.as_dataset(split="validation")

Each example: `image` (the original encoded file, decoded to uint8 RGB), `label` (uint8, same
size: the evaluation class, 255 = void / unlabelled, i.e. class -1 of docs/protocol.md) and
`image_id`. The label mapping is applied while building; ADE20K has one builder config per label
convention ("original", the default, reproduces the paper's numbers; "standard").
"""
from __future__ import annotations

import contextlib
import sys

import numpy as np
from absl import logging
from PIL import Image

from diffcut_jax.data import label_maps
from diffcut_jax.data.benchmarks import BENCHMARKS, Benchmark
from diffcut_jax.data.raw_layouts import MissingDataError
from diffcut_jax.data.tf_host import tfds
from diffcut_jax.io.paths import as_path, is_url

VOID = 255  # stored value of class -1
VERSION = tfds.core.Version("1.0.0")


class _RawBenchmarkBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared body: list the raw examples, map each label, store image bytes untouched."""

    benchmark: str
    record: Benchmark
    VERSION = VERSION
    RELEASE_NOTES = {"1.0.0": "Validation split from the official raw download."}

    def _convention(self) -> str:
        return self.builder_config.name if self.BUILDER_CONFIGS else "original"

    def _info(self):
        b = self.record
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
            layout = cls.record.layout()
            cls.MANUAL_DOWNLOAD_INSTRUCTIONS = (
                f"Unpack the official {layout.title} download in manual_dir:\n{layout.layout}\n")

    # Set by `prepare`, which lists (and so checks) the raw examples before TFDS starts: reused
    # here rather than listed twice (Context parses the large trainval_merged.json to list them).
    _listed: tuple | None = None

    def _split_generators(self, dl_manager):
        if self._listed is not None:
            layout, examples = self._listed
        else:
            layout = self.record.layout()
            examples = layout.examples(dl_manager.manual_dir)
        return {"validation": self._generate_examples(layout, examples)}

    def _generate_examples(self, layout, examples):
        lut = self.record.label_table(self._convention())
        known = self.record.known_raw_values
        unexpected = 0
        for ex in examples:
            try:
                raw = layout.raw_label(ex)
            except OSError as e:  # unreadable or truncated label file
                raise ValueError(f"{layout.title}: label of {ex.image_id} ({ex.label}) cannot be read: {e}") from e
            try:  # decode fully now: a corrupt file must fail the build, naming the file
                with as_path(ex.image).open("rb") as fh, Image.open(fh) as im:
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
            if known is not None:
                unexpected += int(np.count_nonzero(~np.isin(raw, known)))
            label = np.where(classes < 0, VOID, classes).astype(np.uint8)[..., None]
            # On a bucket the bytes are read here (TFDS would read a URL with TensorFlow's own
            # GCS client, which only reaches Google's endpoint).
            image = as_path(ex.image).read_bytes() if is_url(ex.image) else ex.image
            yield ex.image_id, {"image": image, "label": label, "image_id": ex.image_id}
        if unexpected:
            logging.warning("%s: %d pixel(s) had a category outside the %d classes (set to void)",
                            layout.title, unexpected, self.record.num_classes - self.record.background)


def _builder_class(record: Benchmark) -> type:
    """The TFDS builder of a record: class `Diffcut<Name>`, registered as `diffcut_<name>`."""
    configs = [tfds.core.BuilderConfig(name=c, description=f"label convention {c!r}")
               for c in record.conventions] if len(record.conventions) > 1 else []
    name = "Diffcut" + "".join(part.capitalize() for part in record.name.split("_"))
    return type(name, (_RawBenchmarkBuilder,), {
        "benchmark": record.name, "record": record, "BUILDER_CONFIGS": configs,
        "__module__": __name__, "__doc__": f"{record.title} validation split (raw download)."})


BUILDERS = {name: _builder_class(record) for name, record in BENCHMARKS.items()}


def builder(benchmark: str, data_dir=None, label_convention: str = "original") -> tfds.core.DatasetBuilder:
    if benchmark not in BUILDERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(BUILDERS)}")
    kwargs = {"data_dir": None if data_dir is None else str(data_dir)}
    conventions = BENCHMARKS[benchmark].conventions
    if label_convention not in conventions:
        raise ValueError(f"{benchmark}: label_convention must be one of {conventions}, "
                         f"got {label_convention!r}")
    if len(conventions) > 1:
        kwargs["config"] = label_convention
    return BUILDERS[benchmark](**kwargs)


def is_built(b: tfds.core.DatasetBuilder) -> bool:
    return b.data_path.joinpath("dataset_info.json").exists()


def prepare(b: tfds.core.DatasetBuilder, manual_dir=None) -> None:
    """Build the validation split unless already built. The raw layout is checked first, so a
    missing or incomplete download fails at once with what is missing and where."""
    if is_built(b):
        return
    layout = b.record.layout()
    b._listed = (layout, layout.examples(manual_dir))  # raises MissingDataError
    # TFDS announces the build on stdout; keep stdout for results.
    with contextlib.redirect_stdout(sys.stderr):
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))


__all__ = ["BUILDERS", "MissingDataError", "VOID", "builder", "is_built", "prepare"]
