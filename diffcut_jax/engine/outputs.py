"""Per-image outputs of a dataset run: names, files, records and COCO entries.

PNG (`format` png): `<name>_labels.png` (the label map at the input size, 16-bit where there
are more than 255 segments) and `<name>_overlay.png`; with a labeller also `<name>_classes.png`,
`<name>_classes.json` and `<name>_classes_overlay.png`. Names are the input's stem, with a
short path hash where stems collide (`png_names`), or a dataset key made file-safe. Every file
is written atomically, so an output that exists is complete (what a resumed PNG run checks).
"""
from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

import numpy as np

from diffcut_jax.io import coco_output, imageio, paths

SUFFIXES = {"labels": "_labels.png", "overlay": "_overlay.png"}
CLASS_SUFFIXES = {"class_png": "_classes.png", "class_json": "_classes.json",
                  "class_overlay": "_classes_overlay.png"}


def png_names(paths) -> callable:
    """Output base name of a path: its stem, plus a short path hash where stems collide."""
    stems = collections.Counter(Path(p).stem for p in paths)

    def name(key: str) -> str:
        stem = Path(key).stem
        if stems.get(stem, 0) <= 1:
            return stem
        where = key if paths.is_url(key) else str(Path(key).resolve())
        return f"{stem}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"

    return name


def dataset_key_name(key: str) -> str:
    """Output base name of a dataset key (a file name or an id)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(key).stem) or "image"


class ImageFiles:
    """The PNG outputs of each input (none without format png)."""

    def __init__(self, out_dir: Path, name_of, *, png: bool, named: bool):
        self.out_dir, self.name_of, self.png, self.named = paths.as_path(out_dir), name_of, png, named

    def paths(self, key: str) -> dict[str, Path]:
        if not self.png:
            return {}
        base = self.out_dir / self.name_of(key)
        suffixes = {**SUFFIXES, **(CLASS_SUFFIXES if self.named else {})}
        return {k: base.with_name(base.name + v) for k, v in suffixes.items()}

    def exist(self, key: str) -> bool:
        return all(p.exists() for p in self.paths(key).values())

    def write(self, key: str, image, labels) -> dict[str, str]:
        """The label map and its overlay; returns their names (for the record)."""
        files = self.paths(key)
        if not files:
            return {}
        imageio.write_labels_png(files["labels"], labels)
        imageio.write_rgb_png(files["overlay"], imageio.overlay(image, labels))
        return {k: files[k].name for k in SUFFIXES}

    def write_classes(self, key: str, image, named, vocabulary) -> dict:
        """The class PNG, the per-image JSON and the overlay with a legend; returns a summary."""
        files = self.paths(key)
        png, js, overlay = (files[k] for k in CLASS_SUFFIXES)
        class_map = named.class_map[0]
        imageio.write_labels_png(png, np.maximum(class_map, 0))
        segments = named.segments(0)
        present: dict[str, int] = {}
        for s in segments:
            present[s["class"]] = present.get(s["class"], 0) + s["pixels"]
        doc = {
            "input": key, "class_png": png.name, "vocabulary": list(vocabulary.names),
            "synonyms": [list(c) for c in vocabulary.classes], "segments": segments,
            "classes": dict(sorted(present.items(), key=lambda kv: -kv[1])),
        }
        paths.write_text(js, json.dumps(doc, indent=1))
        imageio.write_rgb_png(overlay, imageio.overlay_with_legend(image, class_map, vocabulary.names))
        return {"png": png.name, "json": js.name, "overlay": overlay.name, "present": len(present)}


def record(item, labels, *, working_size, written: dict, seconds: dict, classes=None) -> dict:
    """One segmented input's line of `summary.jsonl` (and its shard entry's `record`)."""
    out = {"input": item.key, **written,
           "height": int(labels.shape[0]), "width": int(labels.shape[1]),
           "working_size": list(working_size), "segments": int(labels.max()) + 1,
           "seconds": seconds}
    if classes is not None:
        out["classes"] = classes
    return out


def coco_entry(item, labels, rec: dict, named=None) -> dict:
    """A segmented input's shard entry: its image, one annotation per segment, its record."""
    anns = coco_output.segment_annotations(labels, None if named is None else named.segments(0))
    return {"position": item.position, "index": item.index, "input": item.key,
            "image": {"file_name": item.key, "height": int(labels.shape[0]),
                      "width": int(labels.shape[1])},
            "annotations": anns, "record": rec}


def failure_entry(item, kind: str, message: str) -> dict:
    """A failed input's shard entry."""
    return {"position": item.position, "index": item.index, "input": item.key,
            "error": message, "kind": kind}
