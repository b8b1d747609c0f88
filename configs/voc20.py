r"""VOC-20: DiffCut's unsupervised evaluation (the paper's Table 1).

    python -m launch.eval --config=configs/voc20.py --workdir=runs/voc20 \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/pascal

(or `diffcut-jax eval ...`). manual_dir holds the raw download (VOCdevkit/VOC2012 unpacked); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.tau=0.35`,
`--config.refinement=True`, `--config.max_images=100`; `configs/voc20.py:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 62.0 (SSD-1B, no refinement), 65.2 with
`--config.refinement=True`, 61.5 with `--config.method=autosc`; with refinement
62.2 for `:vega`, 57.5 for `:sd14` (tau 0.2).
"""
from configs import common


def get_config(arg=None):
    return common.benchmark_config("voc20", arg)
