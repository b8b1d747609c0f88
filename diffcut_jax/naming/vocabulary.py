"""Class vocabularies for open-vocabulary labelling: presets, or the user's own.

    parse_vocabulary("voc20")                         # the original's VOC-20 list (21 classes)
    parse_vocabulary("cat,kitty;dog;grass")           # ';' between classes, ',' between synonyms
    parse_vocabulary("classes.txt")                   # a file: one class per line, same syntax

A class is named by its first synonym. The presets are the original's lists with their synonyms
(`diffcut_jax/assets/openvocab_class_names.json`), background first.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

PRESETS = ("voc20", "context59", "coco_object")


@dataclass(frozen=True)
class Vocabulary:
    classes: tuple[tuple[str, ...], ...]  # per class, its synonyms (the first is its name)
    source: str = "custom"  # preset name, file path or "custom"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c[0] for c in self.classes)

    @property
    def entries(self) -> tuple[str, ...]:
        """The classes as the original writes them: "name,synonym,...". """
        return tuple(",".join(c) for c in self.classes)

    def __len__(self) -> int:
        return len(self.classes)


def split_synonyms(entry: str | Sequence[str]) -> tuple[str, ...]:
    """"cat, cats,kitty" -> ("cat", "cats", "kitty"): the original's split (", " -> ",", then
    ","); a sequence of synonyms is kept as it is."""
    if isinstance(entry, str):
        return tuple(entry.replace(", ", ",").split(","))
    return tuple(entry)


@functools.cache
def _presets() -> dict:
    text = resources.files("diffcut_jax").joinpath("assets", "openvocab_class_names.json").read_text()
    return json.loads(text)


def preset(name: str) -> Vocabulary:
    if name not in PRESETS:
        raise ValueError(f"unknown vocabulary preset {name!r}; presets: {', '.join(PRESETS)}")
    entry = _presets()[name]
    classes = tuple(split_synonyms(c) for c in entry["classes"])
    assert len(classes) == entry["num_classes"], name
    return Vocabulary(classes, name)


def _parse_classes(items: list[str], where: str) -> Vocabulary:
    classes = []
    for i, item in enumerate(items):
        synonyms = tuple(s.strip() for s in item.split(","))
        if not item.strip():
            raise ValueError(f"{where}: class {i + 1} is empty (two ';' in a row, or a trailing ';'?)")
        if any(not s for s in synonyms):
            raise ValueError(f"{where}: class {i + 1} ({item.strip()!r}) has an empty synonym")
        classes.append(synonyms)
    if len(classes) < 2:
        raise ValueError(f"{where}: a vocabulary needs at least two classes (separate classes "
                         f"with ';', synonyms with ','), got {len(classes)}")
    owner: dict[str, int] = {}
    dupes = []
    for i, synonyms in enumerate(classes):
        for s in dict.fromkeys(x.lower() for x in synonyms):
            if s in owner:
                dupes.append(f"{s!r} (classes {owner[s] + 1} and {i + 1})")
            owner.setdefault(s, i)
    if dupes:
        raise ValueError(f"{where}: duplicate names across classes: {', '.join(dupes)}")
    return Vocabulary(tuple(classes), where)


def parse_vocabulary(spec: str | Vocabulary) -> Vocabulary:
    """A preset name, a file (one class per line, '#' comments), or "a,b;c;d" -> `Vocabulary`."""
    if isinstance(spec, Vocabulary):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"vocabulary is empty; give a preset ({', '.join(PRESETS)}), a file, or "
                         f"classes such as 'cat,kitty;dog;grass'")
    spec = spec.strip()
    if spec in PRESETS:
        return preset(spec)
    from diffcut_jax.io.paths import as_path, is_url

    path = as_path(spec) if is_url(spec) else Path(spec).expanduser()
    if path.is_file():
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
        return _parse_classes([ln for ln in lines if ln], str(path))
    if re.fullmatch(r"[\w\-.]+", spec) and ";" not in spec:
        raise ValueError(f"unknown vocabulary preset {spec!r} (and no such file); presets: "
                         f"{', '.join(PRESETS)}; or list at least two classes: 'cat,kitty;dog'")
    return _parse_classes(spec.split(";"), "vocabulary")
