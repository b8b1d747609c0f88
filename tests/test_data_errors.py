"""Missing or incomplete raw downloads: clear errors naming what is missing and where."""
from __future__ import annotations

import re
import shutil

import pytest

pytest.importorskip("tensorflow_datasets")

from diffcut_jax.data import builders, fake_downloads  # noqa: E402
from diffcut_jax.data.benchmarks import BENCHMARKS  # noqa: E402
from diffcut_jax.data.raw_layouts import MissingDataError  # noqa: E402

# Model, TFDS or torch work per test: left out of the quick subset (-m "not slow").
pytestmark = pytest.mark.slow


def layout_for(name):
    return BENCHMARKS[name].layout()


@pytest.mark.parametrize("name", sorted(builders.BUILDERS))
def test_no_manual_dir(name, tmp_path):
    with pytest.raises(MissingDataError, match="no manual_dir given"):
        layout_for(name).examples(None)
    missing = tmp_path / "nowhere"
    with pytest.raises(MissingDataError, match=re.escape(str(missing)) + " does not exist"):
        builders.prepare(builders.builder(name, tmp_path / "tfds"), missing)


@pytest.mark.parametrize("name", sorted(builders.BUILDERS))
def test_empty_manual_dir_names_expected_folder(name, tmp_path):
    with pytest.raises(MissingDataError, match="expected|not found") as err:
        layout_for(name).examples(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_voc_missing_split_list(tmp_path):
    fake_downloads.write_voc2012(tmp_path)
    val = tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    val.unlink()
    with pytest.raises(MissingDataError, match="split list " + re.escape(str(val)) + " not found"):
        layout_for("voc20").examples(tmp_path)


def test_context_missing_annotations(tmp_path):
    fake_downloads.write_context(tmp_path)
    (tmp_path / "VOCdevkit/VOC2010/trainval_merged.json").unlink()
    with pytest.raises(MissingDataError, match="trainval_merged.json not found"):
        layout_for("context59").examples(tmp_path)


def test_voc_image_without_label(tmp_path):
    written = fake_downloads.write_voc2012(tmp_path)
    label = tmp_path / f"VOCdevkit/VOC2012/SegmentationClass/{written[2].image_id}.png"
    label.unlink()
    with pytest.raises(MissingDataError, match=f"1 image\\(s\\) have no label file:\n  {written[2].image_id}: "
                       f"expected {re.escape(str(label))}"):
        layout_for("voc20").examples(tmp_path)


def test_split_image_missing(tmp_path):
    written = fake_downloads.write_voc2012(tmp_path)
    image = tmp_path / f"VOCdevkit/VOC2012/JPEGImages/{written[0].image_id}.jpg"
    image.unlink()
    with pytest.raises(MissingDataError, match="image\\(s\\) of the split are missing"):
        layout_for("voc20").examples(tmp_path)


def test_cityscapes_image_without_label(tmp_path):
    written = fake_downloads.write_cityscapes(tmp_path)
    city = written[0].image_id.split("_")[0]
    label = tmp_path / "gtFine/val" / city / f"{written[0].image_id}_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(MissingDataError, match=re.escape(str(label))):
        layout_for("cityscapes").examples(tmp_path)


def test_ade_and_coco_label_folders_missing(tmp_path):
    fake_downloads.write_ade20k(tmp_path / "ade")
    shutil.rmtree(tmp_path / "ade/ADEChallengeData2016/annotations")
    with pytest.raises(MissingDataError, match="label folder .*annotations/validation not found"):
        layout_for("ade20k").examples(tmp_path / "ade")
    some = fake_downloads.write_coco(tmp_path / "coco", ids=["000000000139", "000000000724"])
    assert len(some) == 2
    with pytest.raises(MissingDataError, match="2173 image\\(s\\) of the split are missing"):
        layout_for("coco_stuff").examples(tmp_path / "coco")


def test_corrupt_image_or_label_fails_the_build_naming_the_file(tmp_path):
    written = fake_downloads.write_voc2012(tmp_path / "raw")
    image = written[1].image_path
    image.write_bytes(image.read_bytes()[:200])  # truncated JPEG: the header still reads
    b = builders.builder("voc20", tmp_path / "tfds")
    with pytest.raises(ValueError, match=f"VOC-20: image {re.escape(str(image))} cannot be decoded"):
        builders.prepare(b, tmp_path / "raw")
    assert not builders.is_built(b)

    written = fake_downloads.write_voc2012(tmp_path / "raw2")
    label = tmp_path / f"raw2/VOCdevkit/VOC2012/SegmentationClass/{written[3].image_id}.png"
    label.write_bytes(b"not a png")
    b = builders.builder("voc20", tmp_path / "tfds2")
    with pytest.raises(ValueError, match=f"label of {written[3].image_id} \\({re.escape(str(label))}\\) cannot be read"):
        builders.prepare(b, tmp_path / "raw2")
