r"""COCO-Object: DiffCut's unsupervised evaluation (the paper's Table 1).

    diffcut-jax eval --config=coco_object --workdir=runs/coco_object \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/coco

(or `python -m diffcut_jax.launch.eval ...`). manual_dir holds the raw download (val2017 + stuffthingmaps_trainval2017); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.segmentation.tau=0.35`,
`--config.segmentation.refinement=True`, `--config.max_images=100`; `--config=coco_object:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 32.0 (SSD-1B, no refinement), 34.1 with
`--config.segmentation.refinement=True`, 29.8 with `--config.segmentation.method=autosc`; with refinement
34.9 for `:vega`, 30.0 for `:sd14` (tau 0.2).
"""
from diffcut_jax.configs import common


def get_config(arg=None):
    return common.benchmark_config("coco_object", arg)
