"""PASCAL-Context semantic masks straight from `trainval_merged.json` ("PASCAL in Detail" format).

The mask of an image starts at 0 (unlabelled); every segmentation annotation of that image, in
file order, writes its `category_id` over its decoded pixels (later ones win, crowd included).
RLE (compressed or not) and polygons are decoded with pycocotools.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DetailFormatError(ValueError):
    """trainval_merged.json is not in the expected format."""


@dataclass(frozen=True)
class DetailImage:
    image_id: int
    file_name: str
    height: int
    width: int


class DetailAnnotations:
    """The images of one phase and their segmentation annotations, from trainval_merged.json."""

    def __init__(self, path: Path, phase: str = "val"):
        from diffcut_jax.io.paths import as_path

        self.path = as_path(path)
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise DetailFormatError(f"{self.path}: cannot read as JSON ({e})") from e
        for key in ("images", "annos_segmentation"):
            if key not in data:
                raise DetailFormatError(
                    f"{self.path}: no {key!r} list (keys: {sorted(data)[:10]}); expected the "
                    "PASCAL in Detail trainval_merged.json"
                )
        try:
            self.images = [
                DetailImage(int(im["image_id"]), str(im["file_name"]), int(im["height"]), int(im["width"]))
                for im in data["images"] if im.get("phase") == phase
            ]
        except KeyError as e:
            raise DetailFormatError(f"{self.path}: an image entry lacks {e}") from e
        wanted = {im.image_id for im in self.images}
        self._annotations = defaultdict(list)
        for ann in data["annos_segmentation"]:
            if ann.get("image_id") in wanted:
                self._annotations[ann["image_id"]].append(ann)

    def mask(self, image: DetailImage) -> np.ndarray:
        """(height, width) int32 category ids; 0 where no annotation covers the pixel."""
        from pycocotools import mask as mask_utils

        out = np.zeros((image.height, image.width), np.int32)
        for ann in self._annotations.get(image.image_id, ()):
            seg = ann["segmentation"]
            if isinstance(seg, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, image.height, image.width))
            elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, *seg["size"])
            else:
                rle = dict(seg)
                if isinstance(rle["counts"], str):
                    rle["counts"] = rle["counts"].encode("ascii")
            pixels = mask_utils.decode(rle).astype(bool)
            if pixels.shape != out.shape:
                raise DetailFormatError(
                    f"{self.path}: annotation {ann.get('id')} of image {image.file_name} decodes to "
                    f"{pixels.shape}, the image is {out.shape}"
                )
            out[pixels] = int(ann["category_id"])
        return out
