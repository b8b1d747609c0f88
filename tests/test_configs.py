"""The shared config's defaults agree with the library functions' own defaults."""
import inspect

import diffcut_jax as dc
from configs import common


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


def test_segmentation_defaults_match_library():
    cfg = common.segmentation()
    assert cfg.tau == _default(dc.recursive_ncut, "tau")
    assert cfg.alpha == _default(dc.recursive_ncut, "alpha")
    assert tuple(cfg.mask_size) == tuple(_default(dc.assign_concepts, "size"))
    assert cfg.pamr_num_iter == _default(dc.refine, "num_iter")
    assert tuple(cfg.pamr_dilations) == tuple(_default(dc.refine, "dilations"))
    assert cfg.autosc_use_chosen_alpha == _default(dc.autosc, "use_chosen_alpha")
    assert cfg.refinement is False
