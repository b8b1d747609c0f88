"""Converted parameters saved and loaded without conversion (features/saved.py): same pytree, same
features and labels, dtypes kept or asked for, and errors that name the key."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.flax import load_file, save_file

from diffcut_jax.features import saved
from diffcut_jax.features.checkpoint import CheckpointError
from diffcut_jax.features.extractor import load_extractor
from diffcut_jax.segmenter import DiffCut
from diffcut_jax.testing import tiny_spec, write_random_checkpoint

pytestmark = pytest.mark.slow  # two tiny models converted, saved, loaded and run


@pytest.fixture(scope="module", params=["sdxl", "sd"])
def pair(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"saved-{request.param}")
    write_random_checkpoint(root / "diffusers", tiny_spec(request.param), seed=3, std=0.2)
    seg = DiffCut.from_pretrained(root / "diffusers", image_size=64, tau=0.5, alpha=10.0)
    seg.save(root / "jax")
    return root, seg, DiffCut.from_pretrained(root / "jax", image_size=64, tau=0.5, alpha=10.0)


def test_same_pytree_features_and_labels(pair):
    root, seg, again = pair
    a, b = jax.tree_util.tree_leaves_with_path(seg.params), jax.tree_util.tree_leaves_with_path(again.params)
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape, path
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 80, 3))
    np.testing.assert_array_equal(np.asarray(seg.extractor(images)), np.asarray(again.extractor(images)))
    np.testing.assert_array_equal(np.asarray(seg(images)), np.asarray(again(images)))
    manifest = json.loads((root / "jax" / saved.MANIFEST).read_text())
    assert manifest["source_model"] == str(root / "diffusers") and manifest["prompt"] is None
    assert manifest["tensors"] == len(load_file(str(root / "jax" / saved.WEIGHTS)))


def test_dtypes_and_options_at_load(pair):
    root, _, _ = pair
    ex = load_extractor(root / "jax", param_dtype=jnp.bfloat16, dtype=jnp.bfloat16, timestep=100,
                        image_size=96)
    unet_leaves = jax.tree_util.tree_leaves(ex.params["unet"])
    assert {x.dtype for x in unet_leaves} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree_util.tree_leaves(ex.params["vae"])} == {jnp.dtype(jnp.float32)}
    assert ex.timestep == 100 and ex.image_size == (96, 96)
    with pytest.raises(ValueError, match="saved with prompt None"):
        load_extractor(root / "jax", prompt="a photo")


def _rewrite(src, dst, change):
    dst.mkdir()
    (dst / saved.MANIFEST).write_text((src / saved.MANIFEST).read_text())
    tensors = load_file(str(src / saved.WEIGHTS))
    change(tensors)
    save_file(tensors, str(dst / saved.WEIGHTS))


def test_errors_name_the_key(pair, tmp_path):
    root, _, _ = pair
    src = root / "jax"
    key = "unet/conv_in.kernel"

    _rewrite(src, tmp_path / "missing", lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=f"missing tensors: {key}"):
        load_extractor(tmp_path / "missing")

    _rewrite(src, tmp_path / "shape", lambda t: t.update({key: t[key][..., :1]}))
    with pytest.raises(CheckpointError, match=rf"misshaped tensors: {key} \[3, 3, 4, 1\]"):
        load_extractor(tmp_path / "shape")

    _rewrite(src, tmp_path / "extra", lambda t: t.update({"unet/stray": t[key]}))
    with pytest.raises(CheckpointError, match="unexpected tensors .*: unet/stray"):
        load_extractor(tmp_path / "extra")

    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / saved.MANIFEST).write_text((src / saved.MANIFEST).read_text())
    (tmp_path / "corrupt" / saved.WEIGHTS).write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_extractor(tmp_path / "corrupt")
