"""The shared part of every benchmark config: the paper's settings, nested as the library takes them.

`config.segmentation` holds the `SegmenterOptions` fields (declared once, in
`diffcut_jax/segmentation.py`; here only the paper's evaluation values differ from them) and goes
straight into `SegmenterOptions(**config.segmentation)`. `config.model` holds `load_extractor`'s
arguments. Published numbers live with the benchmark records (`diffcut_jax/data/benchmarks.py`).
"""
from __future__ import annotations

import dataclasses

import ml_collections

from diffcut_jax.data.benchmarks import BENCHMARKS
from diffcut_jax.segmentation import SegmenterOptions

# Backbones: config argument -> (hub id, tau). The SD1.4 authors' advice is tau = 0.2.
MODELS = {
    "ssd1b": ("segmind/SSD-1B", 0.5),
    "vega": ("segmind/Segmind-Vega", 0.5),
    "sd14": ("CompVis/stable-diffusion-v1-4", 0.2),
    "sdxl": ("stabilityai/stable-diffusion-xl-base-1.0", 0.5),
}


def segmentation(**overrides) -> ml_collections.ConfigDict:
    """`SegmenterOptions` as a config: every image resized to S x S (square), as the paper did."""
    fields = dataclasses.asdict(SegmenterOptions(square=True, **overrides))
    return ml_collections.ConfigDict(fields)


def benchmark_config(benchmark: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """The evaluation config of `benchmark`; `arg` picks the backbone (ssd1b by default)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(BENCHMARKS)}")
    backbone = arg or "ssd1b"
    if backbone not in MODELS:
        raise ValueError(f"unknown model {backbone!r} (config argument); choose from {sorted(MODELS)}")
    hub_id, tau = MODELS[backbone]
    cfg = ml_collections.ConfigDict()
    cfg.benchmark = benchmark
    cfg.backbone = backbone  # picks the published numbers to compare with
    cfg.segmentation = segmentation(tau=tau)
    cfg.model = ml_collections.ConfigDict({
        "path": hub_id,  # hub id or a local diffusers directory
        "dtype": ml_collections.config_dict.placeholder(str),  # None: float32 on CPU, bf16 else
        "timestep": 50,
        "seed": 0,
    })
    cfg.mask_size = 128  # M: masks and ground truth at M x M
    cfg.split = "validation"
    cfg.max_images = 0  # 0: the whole split; n: its first n images (quick checks)
    cfg.per_device_batch_size = 8
    cfg.label_convention = "original"  # ADE20K only: "original" (the paper) or "standard"
    cfg.prefetch = 2  # batches transferred ahead of the device
    # Features in fixed chunks of this many images (the last padded): scores do not depend on the
    # per-device batch or the device count, and accelerators work on whole chunks. 0: the whole
    # per-device batch at once (round-off, and so occasionally a segment, then depends on it).
    # A chunk never exceeds the per-device batch (the command says so if asked for more).
    cfg.feature_batch = 8
    return cfg


def get_config(arg: str):
    """`common.py:<benchmark>[,<backbone>]`: the config of any benchmark record, also one without
    a file of its own (`diffcut-jax eval --config=<name>` falls back to it)."""
    benchmark, _, backbone = arg.partition(",")
    return benchmark_config(benchmark, backbone or None)


def openvocab_config(benchmark: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """The open-vocabulary evaluation of `benchmark` (the original's `eval_diffcut_openvoc.py`):
    PAMR on (15 iterations, dilations 1..64), masks at the working size, segments named by CLIP
    with the benchmark's class list, scored against the classes directly (no matching)."""
    import dataclasses as dc

    from diffcut_jax.naming.clip_model import DEFAULT_CLIP
    from diffcut_jax.naming.labelling import LabelOptions

    cfg = benchmark_config(benchmark, arg)
    cfg.segmentation.refinement = True
    cfg.segmentation.pamr_num_iter = 15
    cfg.segmentation.pamr_dilations = (1, 2, 4, 8, 12, 24, 32, 64)
    cfg.mask_size = cfg.segmentation.image_size  # masks assigned at the working size (1024)
    # CLIP sees the working-size image as given ([0, 1]); COCO-Object's is upsampled to 2048.
    clip_size = 2048 if benchmark == "coco_object" else 0
    cfg.openvocab = ml_collections.ConfigDict(dc.asdict(LabelOptions(
        vocabulary=benchmark, clip_image_size=clip_size)))
    cfg.clip_model = ml_collections.ConfigDict({"path": DEFAULT_CLIP, "dtype": "float32"})
    cfg.per_device_batch_size = 1  # 1024 x 1024 masks, PAMR and CLIP per image
    cfg.feature_batch = 1  # a chunk of 8 would run the VAE and UNet on 7 blank images per image
    return cfg
