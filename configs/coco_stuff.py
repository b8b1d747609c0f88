r"""COCO-Stuff-27: DiffCut's unsupervised evaluation (the paper's Table 1).

    diffcut-jax eval --config=coco_stuff --workdir=runs/coco_stuff \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/coco

(or `python -m diffcut_jax.launch.eval ...`). manual_dir holds the raw download (val2017 + stuffthingmaps_trainval2017); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.segmentation.tau=0.35`,
`--config.segmentation.refinement=True`, `--config.max_images=100`; `--config=coco_stuff:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 46.1 (SSD-1B, no refinement), 49.1 with
`--config.segmentation.refinement=True`, 46.9 with `--config.segmentation.method=autosc`; with refinement
49.5 for `:vega`, 45.2 for `:sd14` (tau 0.2).
"""
from diffcut_jax.configs import common


def get_config(arg=None):
    return common.benchmark_config("coco_stuff", arg)
