r"""Cityscapes-27: DiffCut's unsupervised evaluation (the paper's Table 1).

    diffcut-jax eval --config=cityscapes --workdir=runs/cityscapes \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/cityscapes

(or `python -m diffcut_jax.launch.eval ...`). manual_dir holds the raw download (leftImg8bit + gtFine); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.segmentation.tau=0.35`,
`--config.segmentation.refinement=True`, `--config.max_images=100`; `--config=cityscapes:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 28.4 (SSD-1B, no refinement), 30.6 with
`--config.segmentation.refinement=True`, 25.3 with `--config.segmentation.method=autosc`; with refinement
30.1 for `:vega`, 24.5 for `:sd14` (tau 0.2).
"""
from diffcut_jax.configs import common


def get_config(arg=None):
    return common.benchmark_config("cityscapes", arg)
