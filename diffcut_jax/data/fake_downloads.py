"""Tiny fake copies of the six raw downloads, in the real layouts and file formats.

For tests and benchmarks (the real datasets are not available offline). Each writer returns the
examples it wrote with their raw label arrays, so a test can compute the expected classes
itself. Sizes are chosen to exercise the centre crop's rounding (odd and even margins, both
orientations).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from diffcut_jax.data.label_maps import CONTEXT59_IDS
from diffcut_jax.data.raw_layouts import curated_coco_ids

# (height, width): margins of 1 and odd/even margins of both parities on the long side.
SIZES = ((40, 42), (40, 44), (45, 37), (36, 50), (33, 33), (48, 41))


@dataclass
class FakeExample:
    image_id: str
    image_path: Path
    raw_label: np.ndarray  # the raw values as written (before any class mapping)


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), 256 entries."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _image(rng, size) -> np.ndarray:
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(h + w, 1)], -1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _blocky(rng, size, values, block=4) -> np.ndarray:
    h, w = size
    coarse = rng.choice(np.asarray(values), size=(-(-h // block), -(-w // block)))
    return np.repeat(np.repeat(coarse, block, 0), block, 1)[:h, :w]


def _save_jpeg(path: Path, array: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


def _save_png(path: Path, array: np.ndarray, palette=None):
    """A one-channel PNG of `array`'s values: grayscale, or palette indices with `palette`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array.astype(np.uint8), mode="L")
    if palette is not None:
        im = Image.frombytes("P", im.size, im.tobytes())
        im.putpalette(palette)
    im.save(path)


def write_voc2012(root: Path, num_images: int = 6, seed: int = 0) -> list[FakeExample]:
    """VOCdevkit/VOC2012 with JPEGImages, palette SegmentationClass PNGs and val.txt (plus a
    train image that must not appear)."""
    rng = np.random.default_rng(seed)
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    out = []
    ids = [f"2007_{i:06d}" for i in range(num_images + 1)]
    for k, i in enumerate(ids):
        size = SIZES[k % len(SIZES)]
        _save_jpeg(voc / "JPEGImages" / f"{i}.jpg", _image(rng, size))
        raw = _blocky(rng, size, [0, 0, 1, 5, 15, 20, 255])
        _save_png(voc / "SegmentationClass" / f"{i}.png", raw, palette=voc_palette())
        out.append(FakeExample(i, voc / "JPEGImages" / f"{i}.jpg", raw))
    split = voc / "ImageSets" / "Segmentation"
    split.mkdir(parents=True, exist_ok=True)
    (split / "val.txt").write_text("".join(f"{i}\n" for i in ids[1:]))
    (split / "train.txt").write_text(f"{ids[0]}\n")
    return out[1:]


def write_context(root: Path, num_images: int = 6, seed: int = 0) -> list[FakeExample]:
    """VOCdevkit/VOC2010/JPEGImages + trainval_merged.json with compressed-RLE, uncompressed-RLE
    and polygon annotations, overlapping (later wins), one train image, and one unexpected
    category (not among the 59)."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    voc = Path(root) / "VOCdevkit" / "VOC2010"
    images, annos, out = [], [], []
    categories = list(CONTEXT59_IDS[1:])
    for k in range(num_images + 1):
        name = f"2008_{k:06d}"
        size = SIZES[k % len(SIZES)]
        h, w = size
        _save_jpeg(voc / "JPEGImages" / f"{name}.jpg", _image(rng, size))
        images.append({"image_id": 1000 + k, "file_name": f"{name}.jpg", "height": h, "width": w,
                       "phase": "train" if k == 0 else "val"})
        raw = np.zeros(size, np.int32)
        for a in range(4):
            cat = 1 if (k, a) == (1, 3) else int(rng.choice(categories))  # 1: not one of the 59
            m = np.zeros(size, np.uint8)
            y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
            m[y0 : y0 + rng.integers(4, h), x0 : x0 + rng.integers(4, w)] = 1
            if a == 1:  # uncompressed RLE (column-major run lengths)
                flat = m.ravel(order="F")
                change = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
                counts = np.diff(np.r_[0, change]).tolist()
                seg = {"size": [h, w], "counts": counts}
            elif a == 2:  # polygon: the rectangle's outline (pycocotools rasterises it)
                ys, xs = np.nonzero(m)
                y1, x1 = ys.max() + 1, xs.max() + 1
                seg = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]
                m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
            else:
                rle = mask_utils.encode(np.asfortranarray(m))
                seg = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
            annos.append({"id": len(annos) + 1, "image_id": 1000 + k, "category_id": cat,
                          "iscrowd": int(a == 3), "segmentation": seg})
            raw[m.astype(bool)] = cat
        if k:
            out.append(FakeExample(name, voc / "JPEGImages" / f"{name}.jpg", raw))
    cats = [{"category_id": c, "name": f"category{c}"} for c in sorted(set(categories) | {1})]
    (voc / "trainval_merged.json").write_text(json.dumps(
        {"info": {"description": "fake PASCAL in Detail"}, "images": images, "categories": cats,
         "annos_segmentation": annos}))
    return out


def write_coco(root: Path, seed: int = 0, ids: list[str] | None = None) -> list[FakeExample]:
    """val2017 JPEGs and stuffthingmaps_trainval2017/val2017 PNGs for the curated ids (all 2175
    by default: the builders require the whole curated list), plus one id outside it."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    ids = curated_coco_ids() if ids is None else ids
    out = []
    values = [0, 1, 11, 12, 40, 90, 91, 120, 181, 255]
    for k, i in enumerate(list(ids) + ["000000999999"]):
        size = SIZES[k % len(SIZES)]
        _save_jpeg(root / "val2017" / f"{i}.jpg", _image(rng, size))
        raw = _blocky(rng, size, values)
        _save_png(root / "stuffthingmaps_trainval2017" / "val2017" / f"{i}.png", raw)
        out.append(FakeExample(i, root / "val2017" / f"{i}.jpg", raw))
    return out[:-1]


def write_cityscapes(root: Path, cities=("frankfurt", "lindau", "munster"), per_city: int = 2,
                     seed: int = 0) -> list[FakeExample]:
    """leftImg8bit/val/<city>/..._leftImg8bit.png and gtFine/val/<city>/..._gtFine_labelIds.png
    (with the other gtFine files beside them, and a train city that must not appear)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    out = []
    for split, names in (("train", ("aachen",)), ("val", cities)):
        for c, city in enumerate(names):
            for k in range(per_city):
                stem = f"{city}_{c:06d}_{k * 19 + 19:06d}"
                size = SIZES[(c * per_city + k) % len(SIZES)]
                image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
                image.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_image(rng, size)).save(image)
                raw = _blocky(rng, size, [0, 1, 4, 6, 7, 8, 20, 26, 33])
                gt = root / "gtFine" / split / city
                _save_png(gt / f"{stem}_gtFine_labelIds.png", raw)
                _save_png(gt / f"{stem}_gtFine_instanceIds.png", raw)
                _save_png(gt / f"{stem}_gtFine_color.png", raw)
                if split == "val":
                    out.append(FakeExample(stem, image, raw))
    return sorted(out, key=lambda e: e.image_id)


def write_ade20k(root: Path, num_images: int = 6, seed: int = 0) -> list[FakeExample]:
    """ADEChallengeData2016/{images,annotations}/validation (and a training image)."""
    rng = np.random.default_rng(seed)
    ade = Path(root) / "ADEChallengeData2016"
    out = []
    for split, prefix, n in (("training", "ADE_train", 1), ("validation", "ADE_val", num_images)):
        for k in range(n):
            stem = f"{prefix}_{k + 1:08d}"
            size = SIZES[k % len(SIZES)]
            _save_jpeg(ade / "images" / split / f"{stem}.jpg", _image(rng, size))
            raw = _blocky(rng, size, [0, 1, 2, 75, 149, 150])
            _save_png(ade / "annotations" / split / f"{stem}.png", raw)
            if split == "validation":
                out.append(FakeExample(stem, ade / "images" / split / f"{stem}.jpg", raw))
    return out


WRITERS = {
    "voc20": write_voc2012, "context59": write_context, "coco_object": write_coco,
    "coco_stuff": write_coco, "cityscapes": write_cityscapes, "ade20k": write_ade20k,
}
