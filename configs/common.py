"""The paper's segmentation settings, shared by every benchmark and model config.

Defaults = DiffCut's Table 1 setting: tau 0.5, alpha 10, masks at 128 x 128, refinement off
(PAMR with 10 iterations and dilations 1, 2, 4, 8 when on).
"""
from __future__ import annotations

import ml_collections


def segmentation() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.method = "ncut"  # or "autosc"
    cfg.tau = 0.5
    cfg.alpha = 10.0
    cfg.mask_size = (128, 128)
    cfg.refinement = False
    cfg.pamr_num_iter = 10
    cfg.pamr_dilations = (1, 2, 4, 8)
    cfg.autosc_use_chosen_alpha = False  # False reproduces the original (see README)
    return cfg


# Backbones: config argument -> (hub id, tau). The SD1.4 authors' advice is tau = 0.2.
MODELS = {
    "ssd1b": ("segmind/SSD-1B", 0.5),
    "vega": ("segmind/Segmind-Vega", 0.5),
    "sd14": ("CompVis/stable-diffusion-v1-4", 0.2),
    "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", 0.5),
}

_ORDER = ("voc20", "context59", "coco_object", "coco_stuff", "cityscapes", "ade20k")
# Published mIoU (%), PROTOCOL.md / the paper's Table 1: (model, method, refinement) -> per benchmark.
_PUBLISHED_ROWS = {
    ("ssd1b", "ncut", False): (62.0, 54.1, 32.0, 46.1, 28.4, 42.4),
    ("ssd1b", "ncut", True): (65.2, 56.5, 34.1, 49.1, 30.6, 44.3),
    ("ssd1b", "autosc", False): (61.5, 53.3, 29.8, 46.9, 25.3, 38.9),
    ("sd14", "ncut", True): (57.5, 52.8, 30.0, 45.2, 24.5, 36.7),
    ("vega", "ncut", True): (62.2, 56.4, 34.9, 49.5, 30.1, 45.7),
}


def published_miou(benchmark: str, model: str, method: str, refinement: bool) -> float | None:
    """The paper's mIoU (%) for this setting, or None where it published none."""
    row = _PUBLISHED_ROWS.get((model, method, bool(refinement)))
    return None if row is None else row[_ORDER.index(benchmark)]


def benchmark_config(benchmark: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """The evaluation config of `benchmark`; `arg` picks the backbone (ssd1b by default)."""
    model = arg or "ssd1b"
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} (config argument); choose from {sorted(MODELS)}")
    hub_id, tau = MODELS[model]
    cfg = segmentation()
    cfg.benchmark = benchmark
    cfg.model_name = model
    cfg.model = hub_id  # hub id or a local diffusers directory
    cfg.tau = tau
    cfg.dtype = ml_collections.config_dict.placeholder(str)  # None: float32 on CPU, bfloat16 else
    cfg.timestep = 50
    cfg.seed = 0
    cfg.image_size = 1024  # S: every image resized to S x S
    cfg.split = "validation"
    cfg.max_images = 0  # 0: the whole split; n: its first n images (quick checks)
    cfg.per_device_batch_size = 1
    cfg.label_convention = "original"  # ADE20K only: "original" (the paper) or "standard"
    cfg.prefetch = 2  # batches transferred ahead of the device
    # Features one image at a time: scores independent of batch size and device count. False
    # runs the UNet on the whole per-device batch (faster on accelerators; round-off, and so
    # occasionally a segment, then depends on the batch size).
    cfg.batch_invariant = True
    return cfg
