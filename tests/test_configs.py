"""Configs: paper defaults taken from the one declaration of each option, the published numbers
from the benchmark records, configs by name, and the wheel's namespace."""
import dataclasses
import importlib
import os
import subprocess
import sys
import zipfile

import pytest

from diffcut_jax.configs import common
from diffcut_jax.data.benchmarks import BENCHMARKS
from diffcut_jax.segmentation import SegmenterOptions
from tests.helpers import REPO

PUBLISHED = {  # docs/protocol.md: SSD-1B without / with PAMR refinement
    "voc20": (62.0, 65.2), "context59": (54.1, 56.5), "coco_object": (32.0, 34.1),
    "coco_stuff": (46.1, 49.1), "cityscapes": (28.4, 30.6), "ade20k": (42.4, 44.3),
}


def test_segmentation_config_is_the_options_dataclass():
    cfg = common.segmentation()
    assert dict(cfg) == dataclasses.asdict(SegmenterOptions(square=True))
    SegmenterOptions(**cfg)  # goes straight in


def test_benchmark_configs_paper_defaults_and_docstrings():
    assert sorted(PUBLISHED) == sorted(BENCHMARKS)
    for name in BENCHMARKS:
        mod = importlib.import_module(f"diffcut_jax.configs.{name}")
        cfg = mod.get_config()
        seg = cfg.segmentation
        assert cfg.benchmark == name and cfg.model.path == "segmind/SSD-1B"
        assert (seg.tau, seg.alpha, cfg.model.timestep, seg.image_size, seg.refinement, seg.square) == (
            0.5, 10.0, 50, 1024, False, True)
        assert cfg.mask_size == 128 and cfg.label_convention == "original"
        doc = mod.__doc__
        assert f"diffcut-jax eval --config={name} " in doc
        no_ref, pamr = PUBLISHED[name]
        assert f"{no_ref} (SSD-1B, no refinement)" in doc and f"{pamr} with" in doc
        assert BENCHMARKS[name].published_miou("ssd1b", "ncut", True) == pamr
        assert BENCHMARKS[name].published_miou("ssd1b", "ncut", False) == no_ref
        assert mod.get_config("sd14").segmentation.tau == 0.2
        assert mod.get_config("vega").model.path == "segmind/Segmind-Vega"


def test_benchmark_config_rejects_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'sd3'"):
        common.benchmark_config("voc20", "sd3")
    assert BENCHMARKS["voc20"].published_miou("sdxl", "ncut", False) is None


@pytest.mark.slow
def test_wheel_holds_only_the_package_and_configs_work_by_name_outside_the_repo(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(wheels), str(REPO)], check=True, capture_output=True)
    (wheel,) = wheels.glob("diffcut_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"diffcut_jax"}
    assert "diffcut_jax/configs/voc20.py" in names and "diffcut_jax/launch/eval.py" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu")
    where = subprocess.run([sys.executable, "-c", "import diffcut_jax; print(diffcut_jax.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(site))
    res = subprocess.run([sys.executable, "-m", "diffcut_jax.launch.eval", "--config=voc20:vega",
                          f"--workdir={work / 'w'}", f"--data_dir={work / 'tfds'}"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    # The config was found by name and loaded; the run stops at the missing raw download.
    assert res.returncode == 2 and "VOC-20: no manual_dir given" in res.stderr, res.stderr[-2000:]
    res = subprocess.run([sys.executable, "-m", "diffcut_jax.launch.eval", "--config=voc21",
                          f"--workdir={work / 'w'}"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "no config named 'voc21'" in res.stderr
    # The open-vocabulary assets (BPE vocabulary, class lists) ship in the wheel and load from it.
    assert {"diffcut_jax/assets/bpe_simple_vocab_16e6.txt.gz",
            "diffcut_jax/assets/openvocab_class_names.json"} <= set(names)
    code = ("from diffcut_jax.naming.clip_tokenizer import ClipTokenizer; "
            "from diffcut_jax.naming.vocabulary import parse_vocabulary; "
            "print(len(parse_vocabulary('coco_object')), ClipTokenizer()('a cat')[0, :4].tolist())")
    res = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert res.stdout.split() == ["81", "[49406,", "320,", "2368,", "49407]"], res.stderr[-2000:]


def test_openvocab_configs_follow_the_original_script():
    from diffcut_jax.naming.labelling import LabelOptions
    from diffcut_jax.naming.vocabulary import parse_vocabulary

    for name in ("voc20", "context59", "coco_object"):
        mod = importlib.import_module(f"diffcut_jax.configs.openvoc_{name}")
        cfg = mod.get_config()
        seg = cfg.segmentation
        assert f"diffcut-jax eval --config=openvoc_{name} " in mod.__doc__
        assert cfg.benchmark == name and (seg.tau, seg.alpha, seg.image_size) == (0.5, 10.0, 1024)
        assert seg.refinement and seg.pamr_num_iter == 15
        assert tuple(seg.pamr_dilations) == (1, 2, 4, 8, 12, 24, 32, 64)
        assert cfg.mask_size == 1024  # masks assigned at the working size
        label = LabelOptions(**cfg.openvocab)
        assert label.vocabulary == name and not label.clip_normalize
        assert label.clip_image_size == (2048 if name == "coco_object" else 0)
        assert len(parse_vocabulary(label.vocabulary)) == BENCHMARKS[name].num_classes
        assert cfg.clip_model.path == "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
        SegmenterOptions(**seg)
