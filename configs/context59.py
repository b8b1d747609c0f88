r"""Context-59: DiffCut's unsupervised evaluation (the paper's Table 1).

    diffcut-jax eval --config=context59 --workdir=runs/context59 \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/pascal

(or `python -m diffcut_jax.launch.eval ...`). manual_dir holds the raw download (VOCdevkit/VOC2010 + trainval_merged.json); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.segmentation.tau=0.35`,
`--config.segmentation.refinement=True`, `--config.max_images=100`; `--config=context59:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 54.1 (SSD-1B, no refinement), 56.5 with
`--config.segmentation.refinement=True`, 53.3 with `--config.segmentation.method=autosc`; with refinement
56.4 for `:vega`, 52.8 for `:sd14` (tau 0.2).
"""
from diffcut_jax.configs import common


def get_config(arg=None):
    return common.benchmark_config("context59", arg)
