"""Open-vocabulary labelling: open_clip parity on both fixture models, the real model's tensor
list, the tokenizer, vocabularies, the labeller, the scores and the jitted steps."""
from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffcut_jax as dc
from diffcut_jax.evaluation.openvocab import image_confusion_scores
from diffcut_jax.features import checkpoint as ckpt
from diffcut_jax.models.open_clip import IGNORE_PATTERNS, OpenCLIP, OpenCLIPConfig, OpenCLIPSource
from diffcut_jax.naming.clip_model import VILD_TEMPLATES, load_clip, pool_masks, synonym_logits
from diffcut_jax.naming.clip_tokenizer import ClipTokenizer
from diffcut_jax.naming.labelling import Labeller, LabelOptions
from diffcut_jax.naming.vocabulary import PRESETS, parse_vocabulary
from tests.helpers import FIXTURES, SHARED

MODELS = ("tiny_convnext_clip", "small_convnext_tiny_clip")
RTOL = 1e-4


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    name = request.param
    z = np.load(FIXTURES / "openclip" / f"{name}.npz")
    return name, dc.load_clip(FIXTURES / "openclip" / name), z  # the public name


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def test_image_tower_parity(model):
    name, clip, z = model
    images = _nhwc(z["images"])
    stages = clip.stage_features(images)
    for i in range(4):
        assert _rel(_nhwc(z[f"stage{i}"]), stages[i]) < RTOL, (name, i)
    dense = clip.dense_features(images)
    chex.assert_shape(dense, (2, 2, 3, clip.config.trunk.num_features))
    assert _rel(_nhwc(z["dense"]), dense) < RTOL
    pooled = pool_masks(dense, jnp.asarray(z["masks"], jnp.int32), 5)
    assert _rel(z["pooled"], np.asarray(pooled).reshape(10, -1)) < RTOL
    emb = clip.segment_embeddings(dense, z["masks"], num_segments=5)
    chex.assert_shape(emb, (2, 5, clip.embed_dim))
    assert _rel(z["segment_embeddings"], np.asarray(emb).reshape(10, -1)) < RTOL


def test_text_tower_classifier_and_logits_parity(model):
    name, clip, z = model
    strings = json.loads(str(z["strings"]))
    ids = clip.tokenize(strings)
    assert ids.dtype == np.int32 and ids.shape == (8, 77)
    np.testing.assert_array_equal(ids, z["token_ids"])
    txt = clip.encode_text(ids)
    assert _rel(z["text_embeddings"], txt) < RTOL
    classes = json.loads(str(z["classes"]))
    tc = clip.text_classifier(classes)
    chex.assert_shape(tc.embeddings, (26, clip.embed_dim))
    assert _rel(z["text_classifier"], tc.embeddings) < RTOL
    assert tc.names == tuple(c.split(",")[0] for c in classes)
    emb = np.asarray(clip.segment_embeddings(clip.dense_features(_nhwc(z["images"])), z["masks"],
                                             num_segments=5)).reshape(10, -1)
    logits = clip.class_logits(emb, tc)
    chex.assert_shape(logits, (10, 6))
    assert _rel(z["class_logits"][:, :6], logits) < RTOL
    # The original's extra "void" column is the last synonym's un-maxed logit.
    assert _rel(z["class_logits"][:, 6], synonym_logits(emb, tc, clip.logit_scale)[:, -1]) < RTOL
    np.testing.assert_array_equal(np.argmax(logits, -1), z["predicted_class"])
    assert float(clip.logit_scale) == pytest.approx(float(z["logit_scale"]))


def test_tokenizer_cleaning_and_truncation():
    tok = ClipTokenizer()
    ids = tok(["  A   photo\tof a CAT.  ", "a photo of a cat.", "x " * 200, ""])
    np.testing.assert_array_equal(ids[0], ids[1])  # whitespace and case cleaned
    assert ids[2, 0] == tok.sot_id and ids[2, -1] == tok.eot_id and (ids[2] > 0).all()
    assert list(ids[3, :3]) == [tok.sot_id, tok.eot_id, 0]
    assert tok("caf&amp;amp;e").tolist() == tok("caf&e").tolist()  # HTML unescaped twice
    with pytest.raises(TypeError, match="texts must be str"):
        tok([3])


def _real_model():
    ref = json.loads((SHARED / "reference" / "checkpoints" / "clip-convnext-large-d-320.json").read_text())
    return ref, OpenCLIPConfig.from_open_clip(ref)


class ShapeSource:
    """Names and shapes only (the real checkpoint's list): enough for the conversion plan."""

    def __init__(self, shapes):
        self.shapes = {k: tuple(v) for k, v in shapes.items()}

    def keys(self):
        return self.shapes.keys()

    def shape(self, key):
        return self.shapes[key]

    def read(self, key):
        raise AssertionError("the plan reads no data")


@pytest.fixture(scope="module")
def real_model():
    """The real model's tensor list and its abstract NNX state (built once: ~10 s)."""
    ref, cfg = _real_model()
    _, state = ckpt.abstract_module(lambda r: OpenCLIP(cfg, rngs=r))
    return ref, cfg, state


def test_real_model_every_tensor_mapped_and_every_parameter_filled(real_model):
    ref, cfg, state = real_model
    assert (cfg.trunk.depths, cfg.trunk.widths, cfg.trunk.conv_mlp) == ((3, 3, 27, 3), (192, 384, 768, 1536), False)
    assert (cfg.embed_dim, cfg.text.num_hidden_layers, cfg.text.hidden_size, cfg.text.hidden_act) == (768, 16, 768, "gelu")
    source = OpenCLIPSource(ShapeSource(ref["tensors"]))
    plan = ckpt.conversion_plan(source, state, ignore=IGNORE_PATTERNS)
    params = list(jax.tree_util.tree_leaves(state))
    assert len(plan) == len(params)  # every parameter filled
    used = {source.origin(name) for _, name in plan}
    assert used == set(ref["tensors"]) and len(used) == 543  # every tensor used (none ignored)


def test_conversion_errors_name_the_tensors(real_model):
    ref, _, state = real_model
    shapes = dict(ref["tensors"])
    del shapes["visual.trunk.stages.2.blocks.26.gamma"]
    shapes["transformer.resblocks.3.attn.in_proj_weight"] = [2300, 768]
    shapes["visual.trunk.stem.0.weight"] = [192, 3, 3, 3]
    shapes["visual.extra.weight"] = [4]
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.conversion_plan(OpenCLIPSource(ShapeSource(shapes)), state, ignore=IGNORE_PATTERNS)
    msg = str(err.value)
    assert "missing tensors: visual.trunk.stages.2.blocks.26.gamma" in msg
    assert "(from transformer.resblocks.3.attn.in_proj_weight)" in msg
    assert "visual.trunk.stem.0.weight [192, 3, 3, 3]" in msg
    assert "unexpected tensors (neither used nor ignored): visual.extra.weight" in msg


def test_config_rejects_unsupported_towers():
    ref, _ = _real_model()
    bad = json.loads(json.dumps(ref))
    bad["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_base_patch16_224"
    with pytest.raises(Exception, match="not a supported ConvNeXt"):
        OpenCLIPConfig.from_open_clip(bad)
    bad = json.loads(json.dumps(ref))
    bad["model_cfg"]["text_cfg"]["hf_model_name"] = "xlm-roberta-base"
    with pytest.raises(Exception, match="hf_model_name"):
        OpenCLIPConfig.from_open_clip(bad)


def test_loader_errors(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        load_clip(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ckpt.CheckpointError, match="no open_clip_config.json"):
        load_clip(tmp_path / "empty")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "open_clip_config.json").write_text("{}")
    with pytest.raises(ckpt.CheckpointError, match="no weights"):
        load_clip(tmp_path / "noweights")


def test_pytorch_pickle_weights_through_optional_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    src = FIXTURES / "openclip" / "tiny_convnext_clip"
    (tmp_path / "open_clip_config.json").write_text((src / "open_clip_config.json").read_text())
    weights = load_file(src / "open_clip_model.safetensors")
    torch.save({k: torch.from_numpy(v.copy()) for k, v in weights.items()},
               tmp_path / "open_clip_pytorch_model.bin")
    z = np.load(FIXTURES / "openclip" / "tiny_convnext_clip.npz")
    dense = load_clip(tmp_path).dense_features(_nhwc(z["images"]))
    assert _rel(_nhwc(z["dense"]), dense) < RTOL


def test_vocabularies(tmp_path):
    sizes = {name: len(parse_vocabulary(name)) for name in PRESETS}
    assert sizes == {"voc20": 21, "context59": 60, "coco_object": 81}
    voc = parse_vocabulary("voc20")
    assert voc.names[0] == "background" and voc.names[-1] == "tvmonitor"
    assert voc.classes[1] == ("aeroplane", "airplane", "aeroplanes", "airplanes")
    v = parse_vocabulary(" cat, kitty ;dog; grass")
    assert v.classes == (("cat", "kitty"), ("dog",), ("grass",)) and v.names == ("cat", "dog", "grass")
    f = tmp_path / "classes.txt"
    f.write_text("# my classes\ncat,kitty\ndog  # pets\n\nsky\n")
    assert parse_vocabulary(str(f)).names == ("cat", "dog", "sky")
    for spec, message in [("", "vocabulary is empty"), ("   ", "vocabulary is empty"),
                          ("voc21", "unknown vocabulary preset 'voc21'"),
                          ("cat;dog;Cat", "duplicate names across classes: 'cat'"),
                          ("cat,kitty;dog,kitty", r"'kitty' \(classes 1 and 2\)"),
                          ("cat;;dog", "class 2 is empty"), ("cat,,x;dog", "empty synonym"),
                          ("cat,kitty", "at least two classes")]:
        with pytest.raises(ValueError, match=message):
            parse_vocabulary(spec)
    with pytest.raises(ValueError, match="multiple of 32"):
        LabelOptions(clip_image_size=100)


@pytest.fixture(scope="module")
def tiny_clip():
    return load_clip(FIXTURES / "openclip" / "tiny_convnext_clip")


def test_labeller_matches_the_model_functions_and_compiles_once(tiny_clip, compile_counter):
    z = np.load(FIXTURES / "openclip" / "tiny_convnext_clip.npz")
    images, masks = _nhwc(z["images"]), z["masks"].astype(np.int32)
    lab = Labeller(tiny_clip, "background,crops;aeroplane,airplane;cat,kitty;person,child",
                   image_size=96)
    out = lab(images, masks, num_segments=8)
    tc = tiny_clip.text_classifier(lab.vocabulary.entries)
    emb = tiny_clip.segment_embeddings(tiny_clip.dense_features(images), masks, num_segments=8)
    logits = np.asarray(tiny_clip.class_logits(emb, tc))
    np.testing.assert_array_equal(out.segment_class, logits.argmax(-1))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(out.segment_score, (probs / probs.sum(-1, keepdims=True)).max(-1), rtol=1e-5)
    np.testing.assert_array_equal(out.class_map, np.take_along_axis(
        out.segment_class, masks.reshape(2, -1), 1).reshape(masks.shape))
    np.testing.assert_array_equal(out.segment_pixels[:, :5], [[np.sum(m == k) for k in range(5)] for m in masks])
    assert (out.segment_pixels[:, 5:] == 0).all()
    segs = out.segments(1)
    assert [s["segment"] for s in segs] == list(range(5)) and sum(s["pixels"] for s in segs) == masks[1].size
    assert all(s["class"] == lab.names[s["class_id"]] for s in segs)
    with pytest.raises(ValueError, match="masks must be"):
        lab(images, masks[0])
    # Repeated calls on new data of a seen shape compile nothing.
    rng = np.random.default_rng(0)
    lab(rng.random(images.shape, dtype=np.float32), rng.integers(0, 5, masks.shape))
    tiny_clip.dense_features(images)
    before = compile_counter.count
    for _ in range(3):
        lab(rng.random(images.shape, dtype=np.float32), rng.integers(0, 5, masks.shape))
        tiny_clip.segment_embeddings(tiny_clip.dense_features(images), masks, num_segments=8)
        tiny_clip.class_logits(emb, tc)
    assert compile_counter.count == before


def test_vild_templates_and_presets_are_the_originals():
    assert len(VILD_TEMPLATES) == 14 and VILD_TEMPLATES[0] == "a photo of a {}."
    shipped = json.loads((SHARED / "reference" / "openvocab" / "class_names.json").read_text())
    for name in PRESETS:
        assert parse_vocabulary(name).entries == tuple(c.replace(", ", ",") for c in shipped[name]["classes"])


def test_confusion_scores_and_the_original_per_image_jaccard():
    # rows: ground truth 0..2, columns: prediction 0..2 (class 2 absent from both).
    hist = np.array([[5, 1, 0], [2, 4, 0], [0, 0, 0]])
    tp, fp, fn, pixels, jaccard = image_confusion_scores(hist)
    np.testing.assert_array_equal(tp, [5, 4, 0])
    np.testing.assert_array_equal(fp, [2, 1, 0])
    np.testing.assert_array_equal(fn, [1, 2, 0])
    assert pixels == 12
    # torchmetrics' macro JaccardIndex on this image: classes present in prediction or truth only.
    assert jaccard == pytest.approx((5 / 8 + 4 / 7) / 2)


def test_random_open_clip_writer_tiny_and_full_size(tmp_path):
    """`testing.write_random_open_clip`: the hub layout that `load_clip` reads; the full-size
    tensor list is the real checkpoint's (the preset), the tiny one the open_clip fixture's."""
    from safetensors import safe_open

    from diffcut_jax import presets
    from diffcut_jax.testing import TINY_OPEN_CLIP, open_clip_tensors, write_random_open_clip

    real = presets.load("clip-convnext-large-d-320")
    assert open_clip_tensors(real["model_cfg"]) == {k: list(v) for k, v in real["tensors"].items()}
    fixture = FIXTURES / "openclip" / "tiny_convnext_clip" / "open_clip_model.safetensors"
    with safe_open(str(fixture), "np") as f:
        assert open_clip_tensors(TINY_OPEN_CLIP) == {k: list(f.get_slice(k).get_shape()) for k in f.keys()}

    root = write_random_open_clip(tmp_path / "clip", "tiny", seed=1)
    assert sorted(p.name for p in root.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    labeller = Labeller.from_pretrained(root, "cat;dog;sky", image_size=64)
    masks = np.repeat(np.arange(4, dtype=np.int32).reshape(2, 2), 32, 0).repeat(32, 1)
    named = labeller(np.random.default_rng(0).random((64, 64, 3), np.float32), masks)
    assert named.class_map.shape == (1, 64, 64) and len(named.segments(0)) == 4
    with pytest.raises(ValueError, match="not a CLIP preset"):
        write_random_open_clip(tmp_path / "x", "ssd-1b")


def test_labeller_runs_the_clip_trunk_once_per_clip_working_size(tiny_clip, compile_counter):
    """Inputs of 12 sizes sharing 3 CLIP working sizes compile the trunk program 3 times (the
    resizes, the heads and the per-pixel map are small or host work)."""
    from tests.helpers import MIXED_SIZES

    # normalize_input: a static setting no other test compiled (the jit caches are per process).
    lab = Labeller(tiny_clip, "cat;dog;sky", image_size=64, normalize_input=True)
    rng = np.random.default_rng(0)
    for h, w in MIXED_SIZES:
        named = lab(rng.random((h, w, 3), dtype=np.float32), rng.integers(0, 5, (h, w)))
        assert named.class_map.shape == (1, h, w) and named.segment_pixels.sum() == h * w
    assert compile_counter.by_name["jit(dense_features_fn)"] == 3, compile_counter.by_name
