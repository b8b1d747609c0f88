"""The paper's segmentation settings, shared by every benchmark and model config.

Defaults = DiffCut's Table 1 setting: tau 0.5, alpha 10, masks at 128 x 128, refinement off
(PAMR with 10 iterations and dilations 1, 2, 4, 8 when on).
"""
from __future__ import annotations

import ml_collections


def segmentation() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.method = "ncut"  # or "autosc"
    cfg.tau = 0.5
    cfg.alpha = 10.0
    cfg.mask_size = (128, 128)
    cfg.refinement = False
    cfg.pamr_num_iter = 10
    cfg.pamr_dilations = (1, 2, 4, 8)
    cfg.autosc_use_chosen_alpha = False  # False reproduces the original (see README)
    return cfg
