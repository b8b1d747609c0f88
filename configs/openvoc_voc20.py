r"""VOC-20, open vocabulary: DiffCut's segments named by CLIP (the original's eval_diffcut_openvoc.py).

    diffcut-jax eval --config=openvoc_voc20 --workdir=runs/openvoc_voc20 \
        --data_dir=~/tensorflow_datasets --manual_dir=/data/<raw download>

Every segment gets the class of the benchmark's vocabulary (`--vocabulary voc20`, background
first) that an open_clip ConvNeXt-L CLIP (`config.clip_model.path`) scores highest; no matching.
Scored by the dataset-level mIoU over all classes, with the original's per-image Jaccard average
beside it (docs/protocol.md, "Open vocabulary"). Overrides as for `voc20`, plus
`--config.openvocab.clip_normalize=True` (CLIP's mean/std, which the original skips) and
`--config.clip_model.path=/local/dir`.
"""
from diffcut_jax.configs import common


def get_config(arg=None):
    return common.openvocab_config("voc20", arg)
