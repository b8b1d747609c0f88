r"""Cityscapes-27: DiffCut's unsupervised evaluation (the paper's Table 1).

    python -m launch.eval --config=configs/cityscapes.py --workdir=runs/cityscapes \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/cityscapes

(or `diffcut-jax eval ...`). manual_dir holds the raw download (leftImg8bit + gtFine); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.tau=0.35`,
`--config.refinement=True`, `--config.max_images=100`; `configs/cityscapes.py:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 28.4 (SSD-1B, no refinement), 30.6 with
`--config.refinement=True`, 25.3 with `--config.method=autosc`; with refinement
30.1 for `:vega`, 24.5 for `:sd14` (tau 0.2).
"""
from configs import common


def get_config(arg=None):
    return common.benchmark_config("cityscapes", arg)
