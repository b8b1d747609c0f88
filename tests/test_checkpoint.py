"""The loader: real checkpoints' names and shapes covered, bad checkpoints give errors naming them."""
from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import diffcut_jax as dc
from diffcut_jax import presets
from diffcut_jax.features import checkpoint as ckpt
from diffcut_jax.features import hub
from diffcut_jax.models import ArchitectureError, clip, unet, vae
from diffcut_jax.testing import tiny_spec, write_random_checkpoint
from tests.helpers import SHARED, CompileCounter


class ShapeOnly:
    """Names and shapes of a real checkpoint, no data (reading is an error)."""

    def __init__(self, tensors):
        self._t = tensors

    def keys(self):
        return self._t.keys()

    def shape(self, key):
        return tuple(self._t[key])

    def read(self, key):
        raise AssertionError(f"coverage check read {key}")


def _reference(model, part):
    path = SHARED / "reference" / "checkpoints" / model / f"{part}.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.slow
@pytest.mark.parametrize("model", presets.NAMES)
def test_real_checkpoint_names_and_shapes_are_covered(model):
    """Every tensor of the real checkpoint is mapped onto the full-size model or ignored, and every
    parameter is covered (eval_shape only, no weights materialised)."""
    checked = 0
    for part in hub.PARTS:
        ref = _reference(model, part)
        if ref is None:
            continue
        assert ref["config"] == presets.config(model, part), "preset config differs from the reference"
        if part == "unet":
            cfg = unet.UNetConfig.from_diffusers(ref["config"])
            factory, kw = (lambda r: unet.UNetEncoder(cfg, rngs=r)), dict(ignore=unet.ignore_patterns(cfg))
        elif part == "vae":
            cfg = vae.VAEConfig.from_diffusers(ref["config"])
            factory, kw = (lambda r: vae.VAEEncoder(cfg, rngs=r)), dict(ignore=vae.IGNORE_PATTERNS)
        else:
            cfg = clip.CLIPTextConfig.from_transformers(ref["config"], with_projection=part == "text_encoder_2")
            factory = lambda r: clip.CLIPTextModel(cfg, rngs=r)  # noqa: E731
            kw = dict(ignore=clip.IGNORE_PATTERNS, rename=clip.strip_text_model_prefix)
        _, state = ckpt.abstract_module(factory)
        plan = ckpt.conversion_plan(ShapeOnly(ref["tensors"]), state, part=f"{model}/{part}", **kw)
        n_params = len(list(jax.tree.leaves(state)))
        assert len(plan) == n_params  # every parameter filled
        used = {k for _, k in plan}
        ignored = set(ref["tensors"]) - used
        assert len(used) + len(ignored) == ref["n_tensors"]
        checked += 1
    assert checked == (3 if model == "sd-1.4" else 4)


def test_feature_layer_is_the_last_built_module():
    cfg = unet.UNetConfig.from_diffusers(presets.config("ssd-1b", "unet"))
    ignored = unet.ignore_patterns(cfg)
    assert r"^down_blocks\.2\.attentions\.1\.transformer_blocks\.3\.(norm2|attn2|norm3|ff)\." in ignored
    cfg = unet.UNetConfig.from_diffusers(presets.config("sd-1.4", "unet"))
    assert cfg.feature_block == 2 and r"^down_blocks\.3\." in unet.ignore_patterns(cfg)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_random_checkpoint(root, tiny_spec("sdxl"))
    return root


def _copy(tiny_root, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_root, dst)
    return dst


def test_missing_directory(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="model directory not found: .*nowhere"):
        dc.load_extractor(tmp_path / "nowhere")


def test_not_a_diffusers_directory(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ckpt.CheckpointError, match=r"missing folder\(s\) \['vae', 'text_encoder'\]"):
        dc.load_extractor(tmp_path)


def test_missing_weights_file(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    (root / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"no safetensors weights in .*vae"):
        dc.load_extractor(root, image_size=64)


def test_missing_config(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    (root / "unet" / "config.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"missing config: .*unet/config.json"):
        dc.load_extractor(root, image_size=64)


def test_wrong_architecture(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    cfg = json.loads((root / "unet" / "config.json").read_text())
    cfg["down_block_types"][1] = "AttnDownBlock2D"
    (root / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArchitectureError, match="'AttnDownBlock2D' is not supported"):
        dc.load_extractor(root, image_size=64)


def _edit_weights(root, part, fn):
    name = "model.safetensors" if part.startswith("text") else "diffusion_pytorch_model.safetensors"
    path = root / part / name
    tensors = load_file(str(path))
    fn(tensors)
    save_file(tensors, str(path))


def test_missing_tensor_is_named(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    key = "down_blocks.1.attentions.0.proj_in.weight"
    _edit_weights(root, "unet", lambda t: t.pop(key))
    with pytest.raises(ckpt.CheckpointError, match=rf"unet: .*missing tensors: {key}"):
        dc.load_extractor(root, image_size=64)


def test_misshaped_tensor_is_named(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    key = "text_model.encoder.layers.1.mlp.fc1.weight"
    _edit_weights(root, "text_encoder", lambda t: t.__setitem__(key, np.zeros((5, 16), np.float32)))
    with pytest.raises(ckpt.CheckpointError, match=rf"text_encoder: .*misshaped tensors: {key} \[5, 16\]"):
        dc.load_extractor(root, image_size=64)


def test_unexpected_tensor_is_named(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    _edit_weights(root, "vae", lambda t: t.__setitem__("encoder.extra.weight", np.zeros(3, np.float32)))
    with pytest.raises(ckpt.CheckpointError, match=r"vae: .*unexpected tensors .*encoder.extra.weight"):
        dc.load_extractor(root, image_size=64)


def test_corrupt_safetensors_file(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ckpt.CheckpointError, match="cannot be read as safetensors"):
        dc.load_extractor(root, image_size=64)


def test_offline_hub_id_explains_how_to_get_weights(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # The hub client reads these at import time: patch the constants too, so the test never
    # touches the network even where it exists.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"), raising=False)
    with pytest.raises(hub.ModelNotAvailableError) as err:
        hub.resolve("segmind/SSD-1B")
    text = str(err.value)
    assert "hf download segmind/SSD-1B" in text and "local" in text


@pytest.mark.slow
def test_fp16_variant_preferred_and_sharded_index(tiny_root, tmp_path):
    root = _copy(tiny_root, tmp_path)
    vae_dir = root / "vae"
    tensors = load_file(str(vae_dir / "diffusion_pytorch_model.safetensors"))
    names = sorted(tensors)
    half = {k: v.astype(np.float16) for k, v in tensors.items()}
    # A sharded fp16 variant: two files and an index.
    save_file({k: half[k] for k in names[::2]}, str(vae_dir / "diffusion_pytorch_model.fp16-00001-of-00002.safetensors"))
    save_file({k: half[k] for k in names[1::2]}, str(vae_dir / "diffusion_pytorch_model.fp16-00002-of-00002.safetensors"))
    index = {"weight_map": {k: f"diffusion_pytorch_model.fp16-0000{1 + i % 2}-of-00002.safetensors" for i, k in enumerate(names)}}
    (vae_dir / "diffusion_pytorch_model.fp16.safetensors.index.json").write_text(json.dumps(index))
    files = hub.resolve(root)
    assert files.weights("vae").name == "diffusion_pytorch_model.fp16.safetensors.index.json"
    src = ckpt.SafetensorsSource(files.weights("vae"))
    assert sorted(src.keys()) == names
    assert src.read(names[3]).dtype == np.float16
    ex = dc.load_extractor(root, image_size=64)
    assert ex.params["vae"]["encoder"]["conv_in"]["kernel"].dtype == jnp.float32


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_jit_with_batch_axis_float32_and_bfloat16(tiny_root, dtype):
    ex = dc.load_extractor(tiny_root, dtype=dtype, image_size=64)
    images = jax.random.uniform(jax.random.PRNGKey(0), (3, 80, 48, 3))
    feats = ex(images)
    assert feats.shape == (3, 2, 2, 32) and feats.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(feats)))
    leaves = jax.tree.leaves(ex.params["unet"])
    assert all(x.dtype == dtype for x in leaves)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(ex.params["vae"]))
    if dtype == jnp.bfloat16:
        ref = dc.load_extractor(tiny_root, dtype=jnp.float32, image_size=64)(images)
        assert float(jnp.linalg.norm(feats - ref) / jnp.linalg.norm(ref)) < 5e-2
    # Same shape, new data: no recompilation.
    other = images * 0.5
    with CompileCounter() as counter:
        ex(other).block_until_ready()
    assert counter.count == 0


@pytest.mark.slow
def test_bfloat16_vae(tiny_root):
    """The XL VAE overflows in fp16 but has the range in bf16: parameters and compute in bf16."""
    ex = dc.load_extractor(tiny_root, vae_dtype=jnp.bfloat16, dtype=jnp.float32, image_size=64)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(ex.params["vae"]))
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3))
    latent = ex.encode_latent(images)
    ref = dc.load_extractor(tiny_root, dtype=jnp.float32, image_size=64).encode_latent(images)
    assert bool(jnp.all(jnp.isfinite(latent)))
    assert float(jnp.linalg.norm(latent.astype(jnp.float32) - ref) / jnp.linalg.norm(ref)) < 5e-2
    assert bool(jnp.all(jnp.isfinite(ex(images))))


@pytest.mark.slow
def test_explicit_noise_is_used(tiny_root):
    ex = dc.load_extractor(tiny_root, image_size=64)
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3))
    a = ex(images)
    b = ex(images, noise=ex.noise)
    c = ex(images, noise=jax.random.normal(jax.random.PRNGKey(9), ex.noise.shape))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    with pytest.raises(ValueError, match="noise must be"):
        ex(images, noise=jnp.zeros((1, 4, 4, 4)))
    with pytest.raises(ValueError, match="images must be"):
        ex(images[0])


@pytest.mark.slow
def test_working_size_per_call(tiny_root):
    ex = dc.load_extractor(tiny_root, image_size=64)
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 50, 70, 3))
    feats = ex(images, size=(64, 96))
    assert feats.shape == (2, 2, 3, 32)
    assert ex.noise_for((64, 96)).shape == (1, 8, 12, 4)
    with pytest.raises(ValueError, match="multiples of 32"):
        ex(images, size=(60, 96))
