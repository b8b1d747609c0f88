r"""COCO-Object: DiffCut's unsupervised evaluation (the paper's Table 1).

    python -m launch.eval --config=configs/coco_object.py --workdir=runs/coco_object \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/coco

(or `diffcut-jax eval ...`). manual_dir holds the raw download (val2017 + stuffthingmaps_trainval2017); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.tau=0.35`,
`--config.refinement=True`, `--config.max_images=100`; `configs/coco_object.py:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 32.0 (SSD-1B, no refinement), 34.1 with
`--config.refinement=True`, 29.8 with `--config.method=autosc`; with refinement
34.9 for `:vega`, 30.0 for `:sd14` (tau 0.2).
"""
from configs import common


def get_config(arg=None):
    return common.benchmark_config("coco_object", arg)
