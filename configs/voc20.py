r"""VOC-20: DiffCut's unsupervised evaluation (the paper's Table 1).

    diffcut-jax eval --config=voc20 --workdir=runs/voc20 \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/pascal

(or `python -m diffcut_jax.launch.eval ...`). manual_dir holds the raw download (VOCdevkit/VOC2012 unpacked); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.segmentation.tau=0.35`,
`--config.segmentation.refinement=True`, `--config.max_images=100`; `--config=voc20:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 62.0 (SSD-1B, no refinement), 65.2 with
`--config.segmentation.refinement=True`, 61.5 with `--config.segmentation.method=autosc`; with refinement
62.2 for `:vega`, 57.5 for `:sd14` (tau 0.2).
"""
from diffcut_jax.configs import common


def get_config(arg=None):
    return common.benchmark_config("voc20", arg)
