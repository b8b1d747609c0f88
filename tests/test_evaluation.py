"""The evaluation loop: padded batches, the data-parallel evaluator against a per-image
reference, and `launch.eval` end to end on a fake benchmark (1 device vs 8 simulated devices; two
processes through jax.distributed in tests/test_preemption.py)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from diffcut_jax.cut.ncut import recursive_ncut  # noqa: E402
from diffcut_jax.data import benchmarks, builders, fake_downloads, pipeline  # noqa: E402
from diffcut_jax.evaluation.evaluator import Evaluator, batches_from_tf  # noqa: E402
from diffcut_jax.evaluation.matching import (  # noqa: E402
    MIoUAccumulator,
    background_merge,
    final_scores,
    image_scores,
)
from diffcut_jax.features.extractor import load_extractor  # noqa: E402
from diffcut_jax.masks.concepts import assign_concepts  # noqa: E402
from diffcut_jax.masks.pamr import refine  # noqa: E402
from diffcut_jax.segmentation import FeatureModel, SegmenterOptions, predict_masks  # noqa: E402
from diffcut_jax.testing import tiny_spec, write_random_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
S, M = 128, 32  # tiny model: 4 x 4 feature nodes at 128


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    # std 0.2: features with structure (cosines down to ~0.6). At the default 0.02 they are
    # constant to 2e-5, and round-off (which differs between a 1-process and a 2-process XLA
    # program) decides the NCut's partitions.
    write_random_checkpoint(root / "ckpt", tiny_spec("sdxl"), seed=3, std=0.2)
    out = {"root": root}
    for name in ("voc20", "cityscapes"):
        fake_downloads.WRITERS[name](root / name / "raw")
        out[name] = builders.builder(name, root / "tfds")
        builders.prepare(out[name], root / name / "raw")
    return out


@pytest.mark.slow
def test_padded_batches_cover_split_once(data):
    b = data["voc20"]
    ds, n = pipeline.eval_batches(b, batch_size=4, image_size=S, mask_size=M)
    batches = [pipeline.as_numpy(x) for x in ds]
    assert n == len(batches) == 2
    assert [int(x["valid"].sum()) for x in batches] == [4, 2]
    ids = [i for x in batches for i, v in zip(x["image_id"], x["valid"]) if v]
    assert sorted(ids) == sorted(e["image_id"].decode() for e in b.as_dataset(split="validation").as_numpy_iterator())
    assert (batches[1]["label"][2:] == -1).all() and (batches[1]["image"][2:] == 0).all()
    # Three processes: disjoint parts covering the split, the same number of batches each.
    parts = []
    for p in range(3):
        ds, n = pipeline.eval_batches(b, batch_size=1, image_size=S, mask_size=M, process_index=p, process_count=3)
        got = [pipeline.as_numpy(x) for x in ds]
        assert len(got) == n == 2
        parts += [i for x in got for i, v in zip(x["image_id"], x["valid"]) if v]
    assert sorted(parts) == sorted(ids)


def _reference(extractor, benchmark, options, batches):
    """Per image, unbatched and unsharded: the protocol written out step by step."""
    n, bg = benchmark.num_classes, benchmark.background
    acc = MIoUAccumulator(n)
    for batch in batches:
        for image, gt, valid in zip(batch["image"], batch["label"], batch["valid"]):
            if not valid:
                continue
            feats = extractor(jnp.asarray(image)[None], size=(S, S))
            masks = np.asarray(assign_concepts(feats[0], recursive_ncut(feats[0], options.tau, options.alpha), (M, M)))
            if options.refinement and not bg:
                masks = np.asarray(refine(jnp.asarray(image), jnp.asarray(masks)))
            rows = n if bg else n + 1
            hist = np.zeros((rows, 2048), np.int64)
            ok = gt + 1 < rows
            np.add.at(hist, (gt[ok] + 1, masks[ok]), 1)
            if not (options.refinement and bg):
                acc.add(*image_scores(hist, int(masks.max()) + 1, n, bg))
                continue
            mapping = background_merge(hist[1:], int(masks.max()) + 1)
            merged = mapping[masks]
            refined = np.asarray(refine(jnp.asarray(image), jnp.asarray(merged)))
            g = np.where(gt == -1, n - 1, gt)
            final = np.zeros((n, 2048), np.int64)
            np.add.at(final, (g, refined), 1)
            acc.add(*final_scores(final, int(refined.max()) + 1, n))
    return acc


@pytest.mark.slow
@pytest.mark.parametrize("name,refinement", [("voc20", False), ("voc20", True), ("cityscapes", True)])
def test_evaluator_matches_per_image_reference(data, name, refinement):
    extractor = load_extractor(str(data["root"] / "ckpt"), image_size=S)
    options = SegmenterOptions(tau=0.99, alpha=1.0, image_size=S, square=True, refinement=refinement)
    bench = benchmarks.get(name)
    ds, _ = pipeline.eval_batches(data[name], batch_size=4, image_size=S, mask_size=M)
    batches = list(batches_from_tf(ds))
    result = Evaluator(extractor, bench, options, mask_size=M).evaluate(iter(batches))
    expected = _reference(extractor, bench, options, batches)
    assert result.accumulator.images == expected.images == 6
    np.testing.assert_array_equal(result.accumulator.tp, expected.tp)
    np.testing.assert_array_equal(result.accumulator.fp, expected.fp)
    np.testing.assert_array_equal(result.accumulator.fn, expected.fn)
    assert result.accumulator.valid_pixels == expected.valid_pixels
    assert result.accumulator.tp.sum() > 0


@pytest.mark.slow
def test_feature_chunks_make_results_independent_of_the_batch(data):
    """Per-device batch 4 and 8 with features in fixed chunks of 4: identical counts, and the
    features are computed 4 images at a time (not one at a time). (A batch of 1 runs in chunks
    of 1: test_features_run_on_the_batch_s_images_only.)"""
    extractor = load_extractor(str(data["root"] / "ckpt"), image_size=S)
    options = SegmenterOptions(tau=0.99, alpha=1.0, image_size=S, square=True)
    bench = benchmarks.get("voc20")
    results = []
    for batch in (4, 8):
        ds, _ = pipeline.eval_batches(data["voc20"], batch_size=batch, image_size=S, mask_size=M)
        evaluator = Evaluator(extractor, bench, options, mask_size=M, feature_batch=4)
        results.append(evaluator.evaluate(batches_from_tf(ds)).accumulator)
    for acc in results[1:]:
        assert acc.images == results[0].images == 6
        for field in ("tp", "fp", "fn"):
            np.testing.assert_array_equal(getattr(acc, field), getattr(results[0], field))
    chunked = jax.make_jaxpr(lambda im: predict_masks(
        extractor.params, im, extractor.noise_for((S, S)), 0.99, 1.0,
        model=FeatureModel.of(extractor), options=options, size=(S, S), mask_size=(M, M),
        refine_now=False, feature_batch=4))(jnp.zeros((8, S, S, 3)))
    scans = [e for e in chunked.jaxpr.eqns if e.primitive.name == "scan"]
    assert scans and scans[0].params["length"] == 2  # 8 images = 2 chunks of 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["voc20", "cityscapes"])
def test_results_are_read_only_behind_the_next_dispatched_step(data, name, monkeypatch):
    """The order of dispatches and reads: a step's results are read only once the next device
    step is queued behind it, so the device never idles while the host matches. With refinement
    after a background merge (voc20, a background dataset) the refine step of batch i is read
    after batch i + 1's predict step and refine step are dispatched; cityscapes (no background)
    refines inside its one step."""
    from diffcut_jax.evaluation import evaluator as evaluator_lib

    extractor = load_extractor(str(data["root"] / "ckpt"), image_size=S)
    options = SegmenterOptions(tau=0.99, alpha=1.0, image_size=S, square=True, refinement=True)
    bench = benchmarks.get(name)
    evaluator = Evaluator(extractor, bench, options, mask_size=M)
    assert (evaluator._refine is not None) == (name == "voc20")
    log, owner = [], {}

    def recorded(kind, step):
        def call(*args):
            i = sum(e.startswith(f"dispatch {kind}") for e in log)
            log.append(f"dispatch {kind} {i}")
            out = step(*args)
            for x in out:
                owner[id(x)] = f"{kind} {i}"
            return out
        return call

    evaluator._predict = recorded("predict", evaluator._predict)
    if evaluator._refine is not None:
        evaluator._refine = recorded("refine", evaluator._refine)
    real_local = evaluator_lib._process_local

    def read(x):
        if not log or log[-1] != f"read {owner[id(x)]}":
            log.append(f"read {owner[id(x)]}")
        return real_local(x)

    monkeypatch.setattr(evaluator_lib, "_process_local", read)
    ds, _ = pipeline.eval_batches(data[name], batch_size=2, image_size=S, mask_size=M)
    assert evaluator.evaluate(batches_from_tf(ds)).accumulator.images == 6
    if name == "cityscapes":
        assert log == ["dispatch predict 0", "dispatch predict 1", "read predict 0",
                       "dispatch predict 2", "read predict 1", "read predict 2"]
    else:
        assert log == ["dispatch predict 0",
                       "dispatch predict 1", "read predict 0", "dispatch refine 0",
                       "dispatch predict 2", "read predict 1", "dispatch refine 1", "read refine 0",
                       "read predict 2", "dispatch refine 2", "read refine 1", "read refine 2"]


@dataclasses.dataclass(frozen=True)
class _CountingModel(FeatureModel):
    """The feature model, reporting at run time how many images each extractor call gets."""

    def features(self, params, images, noise, size):
        jax.debug.callback(lambda seen: _SEEN.append(len(seen)), images[:, 0, 0, 0])
        return super().features(params, images, noise, size)


_SEEN: list[int] = []


@pytest.mark.slow
def test_features_run_on_the_batch_s_images_only(data, monkeypatch):
    """The images that reach the feature extractor per step: a per-device batch of 1 with
    `feature_batch` 8 (the open-vocabulary configs' batch with the common chunk) computes one
    image's features per step, not 8 (7 of them blank); batch 4 with chunks of 8, 4 per step."""
    from diffcut_jax.configs import common
    from diffcut_jax.evaluation import evaluator as evaluator_lib

    for cfg in (common.benchmark_config("voc20"), common.openvocab_config("voc20")):
        assert cfg.feature_batch <= cfg.per_device_batch_size, "a config asks for blank images"
    monkeypatch.setattr(evaluator_lib, "FeatureModel", _CountingModel)
    extractor = load_extractor(str(data["root"] / "ckpt"), image_size=S)
    options = SegmenterOptions(tau=0.99, alpha=1.0, image_size=S, square=True)
    for batch, steps in ((1, 6), (4, 2)):
        ds, _ = pipeline.eval_batches(data["voc20"], batch_size=batch, image_size=S, mask_size=M)
        _SEEN.clear()
        evaluator = Evaluator(extractor, benchmarks.get("voc20"), options, mask_size=M,
                              feature_batch=8)
        assert evaluator.evaluate(batches_from_tf(ds)).accumulator.images == 6
        jax.effects_barrier()
        assert _SEEN == [batch] * steps, (batch, _SEEN)


def _launch(args, devices=1):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([sys.executable, "-m", "diffcut_jax.launch.eval", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_launch_eval_one_vs_eight_devices(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    # std 0.2: features with structure (cosines down to ~0.6). At the default 0.02 they are
    # constant to 2e-5, and round-off (which differs between a 1-process and a 2-process XLA
    # program) decides the NCut's partitions.
    write_random_checkpoint(root / "ckpt", tiny_spec("sdxl"), seed=3, std=0.2)
    fake_downloads.write_voc2012(root / "raw", num_images=7)
    # The paper's tau and alpha on structured features (std 0.2): with tau 0.99 and alpha 1 the
    # 4 x 4 map splits into ~14 segments and round-off (a 2-process program is compiled apart
    # from a 1-process one) decides them.
    common = ["--config=voc20", f"--config.model.path={root / 'ckpt'}",
              f"--config.segmentation.image_size={S}", f"--config.mask_size={M}",
              "--config.segmentation.tau=0.5", "--config.segmentation.alpha=10.0",
              "--config.segmentation.pamr_num_iter=7", f"--data_dir={root / 'tfds'}"]
    one = _launch(common + [f"--manual_dir={root / 'raw'}", "--config.per_device_batch_size=4",
                            f"--workdir={root / 'one'}"], devices=1)
    assert one.returncode == 0, one.stderr[-3000:]
    eight = _launch(common + ["--config.per_device_batch_size=1", f"--workdir={root / 'eight'}"], devices=8)
    assert eight.returncode == 0, eight.stderr[-3000:]
    assert "mIoU" in one.stderr and "img/s" in one.stderr  # the progress line
    assert "background" in one.stdout and "published: 62.0%" in one.stdout
    r1 = json.loads((root / "one" / "results.json").read_text())
    r8 = json.loads((root / "eight" / "results.json").read_text())
    assert (r1["devices"], r8["devices"]) == (1, 8)
    assert r1["images"] == r8["images"] == 7
    assert r1["per_class"] == r8["per_class"]
    assert r1["miou"] == r8["miou"] and r1["pixel_accuracy"] == r8["pixel_accuracy"]
    assert 0 <= r1["input_wait_share"] <= 1 and r1["published_miou"] == 62.0
    assert (root / "one" / "per_class.csv").read_text() == (root / "eight" / "per_class.csv").read_text()
    cfg = json.loads((root / "eight" / "config.json").read_text())
    assert cfg["segmentation"]["pamr_num_iter"] == 7 and cfg["benchmark"] == "voc20"
    assert cfg["per_device_batch_size"] == 1
    per_image = [json.loads(line) for line in (root / "one" / "per_image.jsonl").read_text().splitlines()]
    assert len(per_image) == 7 and sum(r["correct_pixels"] for r in per_image) > 0

    # Two processes through jax.distributed give these results too: tests/test_preemption.py
    # (1 device each; interrupted and resumed, compared with a clean 1-process run).


@pytest.mark.slow
def test_launch_eval_missing_data(tmp_path):
    res = _launch(["--config=voc20", f"--data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'w'}"])
    assert res.returncode == 2
    assert "VOC-20: no manual_dir given" in res.stderr and "VOCdevkit/VOC2012/JPEGImages" in res.stderr
    res = _launch(["--config=voc20", f"--data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'w'}",
                   f"--manual_dir={tmp_path}"])
    assert res.returncode == 2 and "expected a folder at" in res.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_openvocab_evaluator_matches_per_image_reference(data):
    """Open vocabulary: segments named by CLIP, confusion against gt + 1 (background first),
    checked against the steps written out per image."""
    from diffcut_jax.evaluation.openvocab import OpenVocabEvaluator, image_confusion_scores
    from diffcut_jax.naming.clip_model import load_clip
    from diffcut_jax.naming.labelling import Labeller
    from tests.helpers import FIXTURES

    extractor = load_extractor(str(data["root"] / "ckpt"), image_size=S)
    options = SegmenterOptions(tau=0.5, alpha=10.0, image_size=S, square=True, refinement=True,
                               pamr_num_iter=3)
    labeller = Labeller(load_clip(FIXTURES / "openclip" / "tiny_convnext_clip"), "voc20",
                        image_size=S, square=True)
    ds, _ = pipeline.eval_batches(data["voc20"], batch_size=4, image_size=S, mask_size=M)
    batches = list(batches_from_tf(ds))
    result = OpenVocabEvaluator(extractor, benchmarks.get("voc20"), options, labeller,
                                mask_size=M).evaluate(iter(batches))
    assert result.benchmark.class_names[:2] == ("background", "aeroplane")
    n = 21
    acc, jaccards = MIoUAccumulator(n), []
    for batch in batches:
        for image, gt, valid in zip(batch["image"], batch["label"], batch["valid"]):
            if not valid:
                continue
            feats = extractor(jnp.asarray(image)[None], size=(S, S))
            masks = assign_concepts(feats[0], recursive_ncut(feats[0], options.tau, options.alpha), (M, M))
            masks = np.asarray(refine(jnp.asarray(image), masks, num_iter=3))
            named = labeller(image, masks, num_segments=16)
            hist = np.zeros((n, n), np.int64)
            np.add.at(hist, (gt.ravel() + 1, named.class_map[0].ravel()), 1)
            tp, fp, fn, pixels, jaccard = image_confusion_scores(hist)
            acc.add(tp, fp, fn, pixels)
            jaccards.append(jaccard)
    assert result.accumulator.images == acc.images == 6
    np.testing.assert_array_equal(result.accumulator.tp, acc.tp)
    np.testing.assert_array_equal(result.accumulator.fp, acc.fp)
    np.testing.assert_array_equal(result.accumulator.fn, acc.fn)
    assert result.accumulator.valid_pixels == acc.valid_pixels == 6 * M * M
    assert result.per_image_jaccard == pytest.approx(np.mean(jaccards))
    assert [r["jaccard"] for r in result.per_image] == pytest.approx(jaccards)
    assert result.accumulator.tp.sum() > 0


@pytest.mark.slow
def test_launch_eval_openvocab_config(tmp_path):
    write_random_checkpoint(tmp_path / "ckpt", tiny_spec("sdxl"), seed=3, std=0.2)
    fake_downloads.write_voc2012(tmp_path / "raw", num_images=3)
    from tests.helpers import FIXTURES

    clip_dir = FIXTURES / "openclip" / "tiny_convnext_clip"
    res = _launch(["--config=openvoc_voc20", f"--config.model.path={tmp_path / 'ckpt'}",
                   f"--config.clip_model.path={clip_dir}", f"--config.segmentation.image_size={S}",
                   f"--config.mask_size={M}", "--config.segmentation.pamr_num_iter=3",
                   f"--data_dir={tmp_path / 'tfds'}", f"--manual_dir={tmp_path / 'raw'}",
                   f"--workdir={tmp_path / 'work'}"])
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads((tmp_path / "work" / "results.json").read_text())
    assert r["protocol"] == "open-vocabulary" and r["images"] == 3 and r["num_classes"] == 21
    assert r["published_miou"] is None and 0 <= r["per_image_jaccard"] <= 1
    assert [c["name"] for c in r["per_class"]][:2] == ["background", "aeroplane"]
    assert r["config"]["openvocab"]["vocabulary"] == "voc20"
    assert r["config"]["segmentation"]["pamr_dilations"] == [1, 2, 4, 8, 12, 24, 32, 64]
    assert "per-image Jaccard" in res.stdout and "background" in res.stdout
    lines = (tmp_path / "work" / "per_image.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all("jaccard" in json.loads(line) for line in lines)
