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


BENCHMARK_CONFIGS = ["voc20", "context59", "coco_object", "coco_stuff", "cityscapes", "ade20k"]
PUBLISHED = {  # PROTOCOL.md: SSD-1B without / with PAMR refinement
    "voc20": (62.0, 65.2), "context59": (54.1, 56.5), "coco_object": (32.0, 34.1),
    "coco_stuff": (46.1, 49.1), "cityscapes": (28.4, 30.6), "ade20k": (42.4, 44.3),
}


def test_benchmark_configs_paper_defaults_and_docstrings():
    import importlib

    for name in BENCHMARK_CONFIGS:
        mod = importlib.import_module(f"configs.{name}")
        cfg = mod.get_config()
        assert cfg.benchmark == name and cfg.model == "segmind/SSD-1B"
        assert (cfg.tau, cfg.alpha, cfg.timestep, cfg.image_size, cfg.refinement) == (0.5, 10.0, 50, 1024, False)
        assert tuple(cfg.mask_size) == (128, 128) and cfg.label_convention == "original"
        doc = mod.__doc__
        assert f"python -m launch.eval --config=configs/{name}.py" in doc
        no_ref, pamr = PUBLISHED[name]
        assert f"{no_ref} (SSD-1B, no refinement)" in doc and f"{pamr} with" in doc
        assert common.published_miou(name, "ssd1b", "ncut", True) == pamr
        assert mod.get_config("sd14").tau == 0.2
        assert mod.get_config("vega").model == "segmind/Segmind-Vega"


def test_benchmark_config_rejects_unknown_model():
    import pytest

    with pytest.raises(ValueError, match="unknown model 'sd3'"):
        common.benchmark_config("voc20", "sd3")
    assert common.published_miou("voc20", "sdxl", "ncut", False) is None
