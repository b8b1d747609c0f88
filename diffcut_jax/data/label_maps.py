"""Raw label value -> evaluation class (-1 = void / unlabelled) tables (docs/protocol.md).

Each mapping is a lookup table indexed by the raw value found in the official label files; each
`Benchmark` record (benchmarks.py) names its table. The COCO and Cityscapes tables are the original's JSON files, shipped in `label_maps/`.
"""
from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

# PASCAL-Context 59: the sorted "PASCAL in Detail" category ids (0 = unlabelled); the k-th listed
# id is class k - 1.
CONTEXT59_IDS = (
    0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105,
    113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308,
    324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)
ADE20K_CONVENTIONS = ("original", "standard")


@functools.cache
def _json_table(name: str) -> dict[int, int]:
    text = resources.files("diffcut_jax.data").joinpath("label_maps").joinpath(f"{name}.json").read_text()
    return {int(k): int(v) for k, v in json.loads(text)["fine_to_coarse"].items()}


def _table(size: int, pairs) -> np.ndarray:
    lut = np.full(size, -1, np.int16)
    for raw, cls in pairs:
        if 0 <= raw < size:
            lut[raw] = cls
    return lut


def voc20(convention: str = "original") -> np.ndarray:
    """0 background and 255 void -> -1; 1..20 -> 0..19."""
    return _table(256, ((k, k - 1) for k in range(1, 21)))


def context59(convention: str = "original") -> np.ndarray:
    """The k-th sorted Detail id -> k - 1 (0 = unlabelled -> -1)."""
    return _table(max(CONTEXT59_IDS) + 1, ((cid, k - 1) for k, cid in enumerate(CONTEXT59_IDS) if k))


def json_table(name: str):
    """A table shipped in `label_maps/<name>.json` (the original's fine -> coarse files)."""
    def table(convention: str = "original") -> np.ndarray:
        return _table(256, _json_table(name).items())
    table.__name__ = name
    return table


def ade20k(convention: str = "original") -> np.ndarray:
    if convention == "original":  # raw values are the classes; 150 falls outside [0, 150)
        return _table(256, ((k, k) for k in range(150)))
    if convention == "standard":  # 0 ("other") ignored, k -> k - 1
        return _table(256, ((k, k - 1) for k in range(1, 151)))
    raise ValueError(f"ADE20K label convention must be one of {ADE20K_CONVENTIONS}, got {convention!r}")


def apply(lut: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Map raw label values through `lut`; values outside the table become -1."""
    raw = np.asarray(raw).astype(np.int64)
    ok = (raw >= 0) & (raw < lut.size)
    return np.where(ok, lut[np.clip(raw, 0, lut.size - 1)], -1).astype(np.int16)
