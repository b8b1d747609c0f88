"""The six TFDS builders on fake raw downloads (real layouts and formats), and the tf.data
preprocessing, checked against values computed here from the files the fakes wrote."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_datasets")

from diffcut_jax.data import builders, fake_downloads, pipeline  # noqa: E402
from diffcut_jax.data.label_maps import CONTEXT59_IDS  # noqa: E402

# Model, TFDS or torch work per test: left out of the quick subset (-m "not slow").
pytestmark = pytest.mark.slow

S, M = 48, 16  # small working and mask sizes keep the check fast; the maths is size-agnostic


def expected_classes(benchmark: str, raw: np.ndarray, convention: str = "original") -> np.ndarray:
    """docs/protocol.md's raw value -> class table, written out independently of label_maps.py."""
    raw = raw.astype(np.int64)
    if benchmark == "voc20":
        return np.where((raw >= 1) & (raw <= 20), raw - 1, -1)
    if benchmark == "context59":
        out = np.full(raw.shape, -1)
        for k, cid in enumerate(CONTEXT59_IDS[1:]):
            out[raw == cid] = k
        return out
    if benchmark == "cityscapes":
        return np.where((raw >= 7) & (raw <= 33), raw - 7, -1)
    if benchmark == "ade20k":
        if convention == "original":
            return np.where(raw < 150, raw, -1)
        return np.where(raw >= 1, raw - 1, -1)
    table = json.loads(open(f"{builders.__file__.rsplit('/', 1)[0]}/label_maps/"
                            f"{'coco_object_80' if benchmark == 'coco_object' else 'coco_stuff_27'}.json").read())
    lut = {int(k): v for k, v in table["fine_to_coarse"].items()}
    return np.vectorize(lambda v: lut.get(int(v), -1))(raw)


def reference_preprocess(image_u8: np.ndarray, classes: np.ndarray):
    """Crop, bilinear resize (torch align_corners=False, no antialias) and label maps, in float64."""
    h, w = classes.shape
    c = min(h, w) - 1
    top, left = round((h - c) / 2), round((w - c) / 2)  # Python's round: half to even
    img = image_u8[top : top + c, left : left + c].astype(np.float64) / 255.0
    lab = classes[top : top + c, left : left + c]

    def axis_weights(n_in, n_out):
        out = np.zeros((n_out, n_in))
        for i in range(n_out):
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = int(np.floor(src))
            i1 = min(i0 + 1, n_in - 1)
            frac = src - i0
            out[i, i0] += 1 - frac
            out[i, i1] += frac
        return out

    wy = axis_weights(c, S)
    resized = np.einsum("oh,hwc->owc", wy, img)
    resized = np.einsum("pw,owc->opc", wy, resized)
    at_s = [i * S // M for i in range(M)]
    src = [min(int(np.floor((j + 0.5) * c / S)), c - 1) for j in at_s]
    return resized, lab[np.ix_(src, src)], (top, left, c)


CASES = ["voc20", "context59", "coco_object", "coco_stuff", "cityscapes", "ade20k", "ade20k:standard"]


@pytest.fixture(scope="module")
def coco_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco-raw")
    return root, fake_downloads.write_coco(root)


@pytest.mark.parametrize("case", CASES)
def test_builder_images_labels_crop_resize(case, tmp_path, coco_raw):
    benchmark, _, convention = case.partition(":")
    convention = convention or "original"
    if benchmark.startswith("coco"):
        raw_dir, written = coco_raw
    else:
        raw_dir = tmp_path / "raw"
        written = fake_downloads.WRITERS[benchmark](raw_dir)
    b = builders.builder(benchmark, tmp_path / "tfds", convention)
    builders.prepare(b, raw_dir)
    b = builders.builder(benchmark, tmp_path / "tfds", convention)  # a fresh builder reads what was stored
    assert b.info.splits["validation"].num_examples == len(written)
    by_id = {e.image_id: e for e in written}
    stored = list(pipeline.read_dataset(b, "validation").as_numpy_iterator())
    assert sorted(ex["image_id"].decode() for ex in stored) == sorted(by_id)  # no train images

    checked = 0
    pre = pipeline.read_dataset(b, "validation").map(lambda ex: pipeline.preprocess(ex, image_size=S, mask_size=M))
    for ex, out in zip(stored, pre.as_numpy_iterator()):
        fake = by_id[ex["image_id"].decode()]
        with Image.open(fake.image_path) as im:
            decoded = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(pipeline.decode_rgb(ex["image"]).numpy(), decoded)
        with open(fake.image_path, "rb") as fh:  # stored untouched: the original file's bytes
            assert ex["image"] == fh.read()
        classes = expected_classes(benchmark, fake.raw_label, convention)
        np.testing.assert_array_equal(ex["label"][..., 0], np.where(classes < 0, 255, classes))
        image_s, label_m, _ = reference_preprocess(decoded, classes)
        assert out["image"].shape == (S, S, 3) and out["label"].shape == (M, M)
        np.testing.assert_allclose(out["image"], image_s, atol=2e-6)
        np.testing.assert_array_equal(out["label"], label_m)
        assert out["valid"]
        checked += 1
        if checked == 12:  # COCO holds all 2175 curated ids; a dozen covers every size
            break
    # Void and background values and at least one real class reached the stored labels.
    values = np.unique(np.concatenate([ex["label"].ravel() for ex in stored[:12]]))
    assert 255 in values and values.min() < 255


def test_context_unexpected_category_is_void(tmp_path):
    written = fake_downloads.write_context(tmp_path / "raw", num_images=6, seed=1)
    assert any((e.raw_label == 1).any() for e in written)  # category 1 is not one of the 59
    b = builders.builder("context59", tmp_path / "tfds")
    builders.prepare(b, tmp_path / "raw")
    for ex in b.as_dataset(split="validation").as_numpy_iterator():
        raw = {e.image_id: e.raw_label for e in written}[ex["image_id"].decode()]
        assert (ex["label"][..., 0][raw == 1] == 255).all()


def test_crop_offsets_round_half_to_even():
    for (h, w), (top, left) in {(40, 42): (0, 2), (40, 44): (0, 2), (45, 37): (4, 0),
                                (36, 50): (0, 8), (33, 33): (0, 0), (40, 48): (0, 4)}.items():
        t, l, c = pipeline.crop_box(tf.constant(h), tf.constant(w))
        assert (int(t), int(l), int(c)) == (top, left, min(h, w) - 1), (h, w)


def test_label_indices_at_paper_sizes():
    # S = 1024, M = 128: gt pixel i reads the S-map at 8 i, which reads the crop at floor((8i + .5) c / 1024).
    for c in (374, 499, 1023, 2047):
        idx = pipeline.label_indices(tf.constant(c), 1024, 128).numpy()
        expected = np.minimum(np.floor((np.arange(128) * 8 + 0.5) * c / 1024).astype(int), c - 1)
        np.testing.assert_array_equal(idx, expected)
