"""Attention kernels: query-chunked equals unchunked, the "auto" choice, and the models' products
all at HIGHEST precision in float32 (the GPU default would be TF32)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcut_jax.models import layers
from diffcut_jax.models.layers import Numerics, attention, resolve_attention
from tests.test_precision import default_precision_ops


def _qkv(t=300, s=300, heads=2, d=16, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    return [jax.random.normal(k, (2, n, heads * d)) for k, n in zip(keys, (t, s, s))]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [64, 100, 512])
def test_chunked_equals_unchunked(causal, chunk):
    q, k, v = _qkv()
    full = attention(q, k, v, 2, causal=causal, numerics=Numerics(attention="xla"))
    chunked = attention(q, k, v, 2, causal=causal,
                        numerics=Numerics(attention="chunked", attention_chunk=chunk))
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(full), rtol=1e-5, atol=1e-5)


def test_vae_mid_block_attention_chunked_equals_unchunked():
    from flax import nnx

    from diffcut_jax.models import vae

    x = jax.random.normal(jax.random.PRNGKey(1), (1, 24, 24, 32))
    outs = []
    for numerics in (Numerics(attention="xla"), Numerics(attention="chunked", attention_chunk=128)):
        module = vae.VAEAttention(32, 8, numerics, nnx.Rngs(0))
        outs.append(np.asarray(module(x)))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_auto_choice(monkeypatch):
    from types import SimpleNamespace

    kw = dict(head_dim=64, queries=4096, keys=4096, heads=10)
    assert resolve_attention("auto", dtype=jnp.float32, **{**kw, "queries": 16}) == "xla"
    assert resolve_attention("auto", dtype=jnp.float32, **kw) == "chunked"
    assert resolve_attention("xla", dtype=jnp.float32, **kw) == "xla"
    assert resolve_attention("auto", dtype=jnp.bfloat16, **kw) == "chunked"  # CPU: no cuDNN
    with pytest.raises(ValueError, match="'cudnn' cannot run: it needs an NVIDIA GPU, and this "
                                         "device is cpu"):
        resolve_attention("cudnn", dtype=jnp.bfloat16, **kw)
    ampere = SimpleNamespace(platform="gpu", compute_capability="8.0")
    hopper = SimpleNamespace(platform="gpu", compute_capability="9.0")
    monkeypatch.setattr(layers, "_cudnn_version", lambda: 91000)
    monkeypatch.setattr(layers.jax, "devices", lambda: [ampere])
    assert resolve_attention("auto", dtype=jnp.bfloat16, **kw) == "cudnn"
    assert resolve_attention("auto", dtype=jnp.float16, **kw) == "cudnn"
    assert resolve_attention("auto", dtype=jnp.float32, **kw) == "chunked"  # cuDNN: no fp32
    assert resolve_attention("auto", dtype=jnp.bfloat16, **{**kw, "head_dim": 12}) == "chunked"
    # SD 1.4's deepest level: head dim 160 runs on Hopper only.
    sd14 = {**kw, "head_dim": 160}
    assert resolve_attention("auto", dtype=jnp.bfloat16, **sd14) == "chunked"
    with pytest.raises(ValueError, match=r"head dim 160 must be a multiple of 8 and at most 128 on "
                                         r"this GPU \(compute capability 8.0\) \(256 from Hopper"):
        resolve_attention("cudnn", dtype=jnp.bfloat16, **sd14)
    monkeypatch.setattr(layers.jax, "devices", lambda: [hopper])
    assert resolve_attention("auto", dtype=jnp.bfloat16, **sd14) == "cudnn"
    assert resolve_attention("cudnn", dtype=jnp.bfloat16, **sd14) == "cudnn"
    assert resolve_attention("auto", dtype=jnp.bfloat16, **{**kw, "head_dim": 512}) == "chunked"
    with pytest.raises(ValueError, match="float32"):
        resolve_attention("cudnn", dtype=jnp.float32, **kw)
    monkeypatch.setattr(layers, "_cudnn_version", lambda: None)
    assert resolve_attention("auto", dtype=jnp.bfloat16, **kw) == "chunked"
    with pytest.raises(ValueError, match="cuDNN is not detected"):
        resolve_attention("cudnn", dtype=jnp.bfloat16, **kw)
    with pytest.raises(ValueError, match="attention must be one of"):
        Numerics(attention="flash")


def test_float32_models_state_highest_precision(tmp_path):
    from diffcut_jax.features.extractor import load_extractor
    from diffcut_jax.testing import tiny_spec, write_random_checkpoint

    write_random_checkpoint(tmp_path, tiny_spec("sdxl"), seed=0)
    ex = load_extractor(tmp_path, image_size=64, dtype=jnp.float32)
    jaxpr = jax.make_jaxpr(lambda im: ex(im))(jnp.zeros((1, 64, 64, 3))).jaxpr
    assert default_precision_ops(jaxpr) == []
