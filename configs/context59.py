r"""Context-59: DiffCut's unsupervised evaluation (the paper's Table 1).

    python -m launch.eval --config=configs/context59.py --workdir=runs/context59 \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/pascal

(or `diffcut-jax eval ...`). manual_dir holds the raw download (VOCdevkit/VOC2010 + trainval_merged.json); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.tau=0.35`,
`--config.refinement=True`, `--config.max_images=100`; `configs/context59.py:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 54.1 (SSD-1B, no refinement), 56.5 with
`--config.refinement=True`, 53.3 with `--config.method=autosc`; with refinement
56.4 for `:vega`, 52.8 for `:sd14` (tau 0.2).
"""
from configs import common


def get_config(arg=None):
    return common.benchmark_config("context59", arg)
