r"""ADE20K-150: DiffCut's unsupervised evaluation (the paper's Table 1).

    diffcut-jax eval --config=ade20k --workdir=runs/ade20k \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/ade

(or `python -m diffcut_jax.launch.eval ...`). manual_dir holds the raw download (ADEChallengeData2016); the first run
builds the TFDS dataset into data_dir. Overrides: `--config.segmentation.tau=0.35`,
`--config.segmentation.refinement=True`, `--config.max_images=100`; `--config=ade20k:vega` (or sd14, sdxl)
picks another backbone.

Published mIoU to expect (%): 42.4 (SSD-1B, no refinement), 44.3 with
`--config.segmentation.refinement=True`, 38.9 with `--config.segmentation.method=autosc`; with refinement
45.7 for `:vega`, 36.7 for `:sd14` (tau 0.2).

Labels: the default `label_convention=original` reproduces the paper (raw value 0 "other" is
class 0, raw 150 ignored); `--config.label_convention=standard` gives the usual 0-ignored,
k -> k - 1 classes (a separate TFDS build).
"""
from diffcut_jax.configs import common


def get_config(arg=None):
    return common.benchmark_config("ade20k", arg)
