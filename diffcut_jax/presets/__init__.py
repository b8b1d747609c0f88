"""Model presets: the real architectures (config.json of every part) and tensor lists.

`ssd-1b`, `segmind-vega`, `sdxl-base-1.0`, `sd-1.4`: each JSON holds `hub_id`, the diffusers /
transformers `config` of `unet`, `vae`, `text_encoder` (and `text_encoder_2` for the SDXL family)
and `tensors`: every tensor name and shape of the real checkpoint. Benchmarks build full-size
models from them with random weights; `diffcut_jax.testing` writes full-size random checkpoints.

`clip-convnext-large-d-320` (`CLIP_NAMES`): the default open-vocabulary CLIP, open_clip's
`model_cfg`, `preprocess` and tensor list (for the memory analysis of the labelling programs).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

NAMES = ("ssd-1b", "segmind-vega", "sdxl-base-1.0", "sd-1.4")
CLIP_NAMES = ("clip-convnext-large-d-320",)
_DIR = Path(__file__).parent


@lru_cache(maxsize=None)
def load(name: str) -> dict:
    if name not in NAMES + CLIP_NAMES:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(NAMES + CLIP_NAMES)}")
    return json.loads((_DIR / f"{name}.json").read_text())


def config(name: str, part: str) -> dict:
    preset = load(name)
    if part not in preset:
        raise KeyError(f"preset {name!r} has no part {part!r}")
    return preset[part]
