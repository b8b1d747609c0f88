"""The official raw downloads of the six benchmarks, as found under a TFDS `manual_dir`.

Each layout lists the validation examples (image file + where its label comes from) and reads a
raw label map. Anything missing gives a `MissingDataError` that names what is missing and where
it was expected; nothing is silently skipped (an evaluation on part of a benchmark is not that
benchmark).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from diffcut_jax.data.detail_masks import DetailAnnotations, DetailImage


class MissingDataError(FileNotFoundError):
    """A benchmark's raw download is missing or incomplete."""


@dataclass(frozen=True)
class RawExample:
    image_id: str
    image: Path
    label: Path | DetailImage  # a label image, or a Context entry of trainval_merged.json


def _need_manual_dir(manual_dir, title: str, layout: str) -> Path:
    if manual_dir is None or str(manual_dir) == "":
        raise MissingDataError(
            f"{title}: no manual_dir given. It is built from the official raw download; pass "
            f"--manual_dir=<folder> holding:\n{layout}"
        )
    from diffcut_jax.io.paths import as_path, is_url

    # A bucket (gs://, s3://) is read in place, through the path layer (io/paths.py).
    root = as_path(manual_dir) if is_url(manual_dir) else Path(manual_dir).expanduser()
    if not root.is_dir():
        raise MissingDataError(f"{title}: manual_dir {root} does not exist. It should hold:\n{layout}")
    return root


def _find_dir(root: Path, candidates: Sequence[str], title: str, layout: str) -> Path:
    """The first of root/candidate that exists (users unpack one level up or down)."""
    for c in candidates:
        p = root / c
        if p.is_dir():
            return p
    tried = ", ".join(str(root / c) for c in candidates)
    raise MissingDataError(f"{title}: expected a folder at {tried}; not found. manual_dir should hold:\n{layout}")


def _need_dir(p: Path, title: str, what: str) -> Path:
    if not p.is_dir():
        raise MissingDataError(f"{title}: {what} folder {p} not found")
    return p


def _need_file(p: Path, title: str, what: str) -> Path:
    if not p.is_file():
        raise MissingDataError(f"{title}: {what} {p} not found")
    return p


def _report_missing(title: str, missing: list[tuple[str, Path]], what: str) -> None:
    if missing:
        shown = "\n".join(f"  {i}: expected {p}" for i, p in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MissingDataError(f"{title}: {len(missing)} {what}:\n{shown}{more}")


def _pair(title, ids, image_of: Callable[[str], Path], label_of: Callable[[str], Path]) -> list[RawExample]:
    no_image = [(i, image_of(i)) for i in ids if not image_of(i).is_file()]
    _report_missing(title, no_image, "image(s) of the split are missing")
    no_label = [(i, label_of(i)) for i in ids if not label_of(i).is_file()]
    _report_missing(title, no_label, "image(s) have no label file")
    return [RawExample(i, image_of(i), label_of(i)) for i in ids]


def read_png_values(path: Path) -> np.ndarray:
    """The stored values of a label PNG: palette indices for palette images (VOC), else the gray
    value. Multi-channel label images are an error."""
    from diffcut_jax.io.paths import as_path

    with as_path(path).open("rb") as fh, Image.open(fh) as im:
        if im.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"label image {path} has mode {im.mode}; expected one channel (P or L)")
        return np.array(im)


class Layout:
    title: str
    layout: str  # what manual_dir must hold, for instructions and errors

    def examples(self, manual_dir) -> list[RawExample]:
        raise NotImplementedError

    def raw_label(self, example: RawExample) -> np.ndarray:
        return read_png_values(example.label)


class VOC2012(Layout):
    title = "VOC-20"
    layout = (
        "  VOCdevkit/VOC2012/JPEGImages/<id>.jpg\n"
        "  VOCdevkit/VOC2012/SegmentationClass/<id>.png   (palette PNGs)\n"
        "  VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt\n"
        "(VOCtrainval_11-May-2012.tar unpacked)"
    )

    def examples(self, manual_dir):
        root = _need_manual_dir(manual_dir, self.title, self.layout)
        voc = _find_dir(root, ["VOCdevkit/VOC2012", "VOC2012"], self.title, self.layout)
        split = _need_file(voc / "ImageSets/Segmentation/val.txt", self.title, "split list")
        ids = [line.strip() for line in split.read_text().splitlines() if line.strip()]
        _need_dir(voc / "JPEGImages", self.title, "image")
        _need_dir(voc / "SegmentationClass", self.title, "label")
        return _pair(self.title, ids, lambda i: voc / "JPEGImages" / f"{i}.jpg",
                     lambda i: voc / "SegmentationClass" / f"{i}.png")


class Context(Layout):
    title = "Context-59"
    layout = (
        "  VOCdevkit/VOC2010/JPEGImages/<name>.jpg\n"
        "  VOCdevkit/VOC2010/trainval_merged.json   (PASCAL in Detail annotations; or at manual_dir/)\n"
        "(VOCtrainval_03-May-2010.tar unpacked, plus trainval_merged.json)"
    )

    def examples(self, manual_dir):
        root = _need_manual_dir(manual_dir, self.title, self.layout)
        voc = _find_dir(root, ["VOCdevkit/VOC2010", "VOC2010"], self.title, self.layout)
        candidates = [voc / "trainval_merged.json", root / "trainval_merged.json"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise MissingDataError(
                f"{self.title}: split list and annotations trainval_merged.json not found at "
                + " or ".join(str(p) for p in candidates)
            )
        self.annotations = DetailAnnotations(found[0], phase="val")
        if not self.annotations.images:
            raise MissingDataError(f"{self.title}: {found[0]} lists no image with phase 'val'")
        images = _need_dir(voc / "JPEGImages", self.title, "image")
        by_id = {Path(im.file_name).stem: im for im in self.annotations.images}
        ids = sorted(by_id)
        no_image = [(i, images / by_id[i].file_name) for i in ids if not (images / by_id[i].file_name).is_file()]
        _report_missing(self.title, no_image, "image(s) of the split are missing")
        return [RawExample(i, images / by_id[i].file_name, by_id[i]) for i in ids]

    def raw_label(self, example):
        return self.annotations.mask(example.label)


def curated_coco_ids() -> list[str]:
    text = resources.files("diffcut_jax.data").joinpath("label_maps").joinpath("coco_val2017_curated.json").read_text()
    return list(json.loads(text)["image_ids"])


class COCOStuffThingMaps(Layout):
    title = "COCO"
    layout = (
        "  val2017/<id>.jpg                             (val2017.zip)\n"
        "  stuffthingmaps_trainval2017/val2017/<id>.png (stuffthingmaps_trainval2017.zip)\n"
        "(or both under manual_dir/coco/); the curated 2175 ids ship with diffcut_jax"
    )

    def __init__(self, title: str):
        self.title = title

    def examples(self, manual_dir):
        root = _need_manual_dir(manual_dir, self.title, self.layout)
        base = root / "coco" if (root / "coco").is_dir() and not (root / "val2017").is_dir() else root
        images = _need_dir(base / "val2017", self.title, "image")
        labels = _need_dir(base / "stuffthingmaps_trainval2017" / "val2017", self.title, "label")
        return _pair(self.title, curated_coco_ids(), lambda i: images / f"{i}.jpg",
                     lambda i: labels / f"{i}.png")


class Cityscapes(Layout):
    title = "Cityscapes-27"
    layout = (
        "  leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png   (leftImg8bit_trainvaltest.zip)\n"
        "  gtFine/val/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png    (gtFine_trainvaltest.zip)"
    )
    suffix = "_leftImg8bit.png"

    def examples(self, manual_dir):
        root = _need_manual_dir(manual_dir, self.title, self.layout)
        images = _need_dir(root / "leftImg8bit" / "val", self.title, "image")
        labels = _need_dir(root / "gtFine" / "val", self.title, "label")
        files = sorted(images.glob(f"*/*{self.suffix}"))
        if not files:
            raise MissingDataError(f"{self.title}: no <city>/*{self.suffix} under {images}")
        where = {f.name[: -len(self.suffix)]: f for f in files}
        return _pair(self.title, sorted(where), lambda i: where[i],
                     lambda i: labels / where[i].parent.name / f"{i}_gtFine_labelIds.png")


class ADE20K(Layout):
    title = "ADE20K-150"
    layout = (
        "  ADEChallengeData2016/images/validation/ADE_val_<n>.jpg\n"
        "  ADEChallengeData2016/annotations/validation/ADE_val_<n>.png\n"
        "(ADEChallengeData2016.zip unpacked)"
    )

    def examples(self, manual_dir):
        root = _need_manual_dir(manual_dir, self.title, self.layout)
        unpacked_here = (root / "images" / "validation").is_dir()
        ade = root if unpacked_here else _find_dir(root, ["ADEChallengeData2016"], self.title, self.layout)
        images = _need_dir(ade / "images" / "validation", self.title, "image")
        labels = _need_dir(ade / "annotations" / "validation", self.title, "label")
        ids = sorted(p.stem for p in images.glob("*.jpg"))
        if not ids:
            raise MissingDataError(f"{self.title}: no .jpg images in {images}")
        return _pair(self.title, ids, lambda i: images / f"{i}.jpg", lambda i: labels / f"{i}.png")
